//! Epoch-based reclamation of old record places, one collector per arena.
//!
//! A reader pins this arena's epoch for as long as it holds a reference to a
//! record. A writer that retires a place (remove, replace, or a compaction
//! move) defers its free; crossbeam-epoch runs the deferred function only
//! once every reader pinned at retirement has unpinned. The deferred
//! function does not free anything itself: it pushes the place onto the
//! arena's `ready` queue, which writers and the compactor drain. So a
//! reader's `get` never ends up in `madvise` on behalf of someone else.
//!
//! Each arena has its own `Collector`, so a long-pinned reader of another
//! arena (or of anything else using crossbeam's global collector) never
//! holds back this arena's frees. Threads keep one `LocalHandle` per arena
//! in a thread-local list; entries of dropped arenas are pruned when a
//! thread meets a new arena.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_epoch::{Collector, Guard, LocalHandle};
use parking_lot::Mutex;

use crate::slots::SlotTable;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// One thread's registration with one arena's collector. Field order is
/// drop order: the handle goes first, while `_collector` still keeps the
/// collector's global state alive. Otherwise, when the arena has dropped
/// first, the handle's drop would free that state from inside one of its own
/// `&self` methods (Miri's Tree Borrows flags exactly that).
struct LocalEntry {
    uid: u64,
    alive: Weak<()>,
    /// Places this thread retired, deferred together once `RETIRE_BATCH`
    /// accumulate (one deferred function and one queue push per batch
    /// instead of per record). Flushed by `Reclaimer::flush` and on drop.
    retired: Vec<(u64, usize)>,
    ready: Arc<ReadyQueue>,
    /// Vacant slot indices this thread freed, reused by its next inserts
    /// before the shared free list (which two busy threads would fight
    /// over). At most `SLOT_STASH`; given back to the table on drop.
    free_slots: Vec<u32>,
    slots: Weak<SlotTable>,
    handle: LocalHandle,
    _collector: Collector,
}

impl LocalEntry {
    fn defer_retired(&mut self, guard: &Guard) {
        if self.retired.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.retired, Vec::with_capacity(RETIRE_BATCH));
        let ready = Arc::clone(&self.ready);
        guard.defer(move || ready.push_all(batch));
    }
}

impl Drop for LocalEntry {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.upgrade() {
            for index in self.free_slots.drain(..) {
                slots.release(index);
            }
        }
        // A thread leaving (or pruning a dropped arena) hands its pending
        // retirements to the collector like any other batch.
        if !self.retired.is_empty() {
            let guard = self.handle.pin();
            self.defer_retired(&guard);
        }
    }
}

/// Retirements a thread gathers before deferring them as one batch: bounds
/// how long a removed record's place waits, per thread and arena.
const RETIRE_BATCH: usize = 32;

/// Vacant slot indices a thread keeps for its own inserts. Large enough
/// that a thread's freed slots come back to it rather than through the
/// shared free lists: two threads reusing each other's slots write the same
/// cache lines of the slot table (four 16-byte slots to a line), which cost
/// the 2-thread insert+remove bench 20 % at a stash of 64.
const SLOT_STASH: usize = 4096;

thread_local! {
    static LOCALS: RefCell<Vec<LocalEntry>> = const { RefCell::new(Vec::new()) };
}

/// Places whose readers are gone, waiting to be freed: (place, bytes).
/// Deferred functions push from whichever thread collects; writers swap the
/// whole batch out and free it (see `RawArena::drain_ready`).
#[derive(Default)]
pub(crate) struct ReadyQueue {
    items: Mutex<Vec<(u64, usize)>>,
    len: AtomicUsize,
}

impl ReadyQueue {
    fn push_all(&self, batch: Vec<(u64, usize)>) {
        let n = batch.len();
        self.items.lock().extend(batch);
        self.len.fetch_add(n, Ordering::Release);
    }

    /// Swaps the queued places into `out` (empty, keeping its capacity), so
    /// neither side reallocates in steady state.
    pub fn swap_into(&self, out: &mut Vec<(u64, usize)>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut *self.items.lock(), out);
        self.len.fetch_sub(out.len(), Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

pub(crate) struct Reclaimer {
    uid: u64,
    collector: Collector,
    /// Dropped with the arena; thread-local entries holding a dead `Weak`
    /// belong to a dropped arena and are pruned.
    alive: Arc<()>,
    pub ready: Arc<ReadyQueue>,
    slots: Weak<SlotTable>,
}

impl Reclaimer {
    pub fn new(slots: Weak<SlotTable>) -> Reclaimer {
        Reclaimer {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            collector: Collector::new(),
            alive: Arc::new(()),
            ready: Arc::new(ReadyQueue::default()),
            slots,
        }
    }

    /// Runs `f` on this thread's entry for this arena, registering it with
    /// the collector on first use.
    #[inline]
    fn with_local<R>(&self, f: impl FnOnce(&mut LocalEntry) -> R) -> R {
        LOCALS.with(|locals| {
            let mut locals = locals.borrow_mut();
            if let Some(e) = locals.iter_mut().find(|e| e.uid == self.uid) {
                return f(e);
            }
            locals.retain(|e| e.alive.strong_count() > 0);
            locals.push(LocalEntry {
                uid: self.uid,
                alive: Arc::downgrade(&self.alive),
                retired: Vec::with_capacity(RETIRE_BATCH),
                ready: Arc::clone(&self.ready),
                free_slots: Vec::new(),
                slots: self.slots.clone(),
                handle: self.collector.register(),
                _collector: self.collector.clone(),
            });
            let last = locals.len() - 1;
            f(&mut locals[last])
        })
    }

    /// Adds fresh indices to this thread's stash (a block from
    /// `SlotTable::grow_block`); what does not fit goes to the free lists.
    pub fn stash_slots(&self, indices: impl Iterator<Item = u32>, slots: &SlotTable) {
        let mut rest = self.with_local(|e| {
            let mut rest = Vec::new();
            for i in indices {
                if e.free_slots.len() < SLOT_STASH {
                    e.free_slots.push(i);
                } else {
                    rest.push(i);
                }
            }
            rest
        });
        for i in rest.drain(..) {
            slots.release(i);
        }
    }

    /// A vacant slot index from this thread's stash, if it has one.
    #[inline]
    pub fn take_stashed_slot(&self) -> Option<u32> {
        self.with_local(|e| e.free_slots.pop())
    }

    /// Pins this arena's epoch on the calling thread.
    #[inline]
    pub fn pin(&self) -> Guard {
        self.with_local(|e| e.handle.pin())
    }

    /// Defers queuing `place` for freeing until no reader pinned now can
    /// still see it.
    /// Retires a removed record: its place is freed once no reader pinned
    /// now can see it, and its vacant slot `index` is stashed for this
    /// thread's next insert (or handed to `slots` when the stash is full).
    /// `guard` is the caller's pin of this arena.
    pub fn retire(
        &self,
        guard: &Guard,
        place: u64,
        bytes: usize,
        index: Option<u32>,
        slots: &SlotTable,
    ) {
        let overflow = self.with_local(|e| {
            e.retired.push((place, bytes));
            if e.retired.len() >= RETIRE_BATCH {
                e.defer_retired(guard);
            }
            let index = index?;
            if e.free_slots.len() < SLOT_STASH {
                e.free_slots.push(index);
                None
            } else {
                Some(index)
            }
        });
        if let Some(index) = overflow {
            slots.release(index);
        }
    }

    /// As [`retire`](Self::retire) for many places at once: one deferred
    /// function for the batch (compaction retires a slab's worth at a time).
    pub fn retire_batch(&self, guard: &Guard, batch: Vec<(u64, usize)>) {
        if batch.is_empty() {
            return;
        }
        let ready = Arc::clone(&self.ready);
        guard.defer(move || ready.push_all(batch));
    }

    /// Pushes this thread's deferred frees to the collector and tries to
    /// advance the epoch a few times, so frees whose readers are gone
    /// become ready now rather than after many more pins.
    pub fn flush(&self, rounds: usize) {
        self.with_local(|e| {
            let guard = e.handle.pin();
            e.defer_retired(&guard);
        });
        for _ in 0..rounds {
            let guard = self.pin();
            guard.flush();
        }
    }
}
