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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_epoch::{Collector, Guard, LocalHandle};
use crossbeam_queue::SegQueue;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// One thread's registration with one arena's collector. Field order is
/// drop order: the handle goes first, while `_collector` still keeps the
/// collector's global state alive. Otherwise, when the arena has dropped
/// first, the handle's drop would free that state from inside one of its own
/// `&self` methods (Miri's Tree Borrows flags exactly that).
struct LocalEntry {
    uid: u64,
    alive: Weak<()>,
    handle: LocalHandle,
    _collector: Collector,
}

thread_local! {
    static LOCALS: RefCell<Vec<LocalEntry>> = const { RefCell::new(Vec::new()) };
}

/// Places whose readers are gone, waiting to be freed: (place, bytes).
/// Lock-free: deferred functions push from whichever thread collects.
#[derive(Default)]
pub(crate) struct ReadyQueue {
    items: SegQueue<(u64, usize)>,
}

impl ReadyQueue {
    fn push(&self, place: u64, bytes: usize) {
        self.items.push((place, bytes));
    }

    fn push_all(&self, batch: Vec<(u64, usize)>) {
        for item in batch {
            self.items.push(item);
        }
    }

    /// Pops one ready place.
    pub fn pop(&self) -> Option<(u64, usize)> {
        self.items.pop()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }
}

pub(crate) struct Reclaimer {
    uid: u64,
    collector: Collector,
    /// Dropped with the arena; thread-local entries holding a dead `Weak`
    /// belong to a dropped arena and are pruned.
    alive: Arc<()>,
    pub ready: Arc<ReadyQueue>,
}

impl Reclaimer {
    pub fn new() -> Reclaimer {
        Reclaimer {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            collector: Collector::new(),
            alive: Arc::new(()),
            ready: Arc::new(ReadyQueue::default()),
        }
    }

    /// Pins this arena's epoch on the calling thread.
    #[inline]
    pub fn pin(&self) -> Guard {
        LOCALS.with(|locals| {
            let mut locals = locals.borrow_mut();
            if let Some(e) = locals.iter().find(|e| e.uid == self.uid) {
                return e.handle.pin();
            }
            locals.retain(|e| e.alive.strong_count() > 0);
            let handle = self.collector.register();
            let guard = handle.pin();
            locals.push(LocalEntry {
                uid: self.uid,
                alive: Arc::downgrade(&self.alive),
                handle,
                _collector: self.collector.clone(),
            });
            guard
        })
    }

    /// Defers queuing `place` for freeing until no reader pinned now can
    /// still see it.
    pub fn retire(&self, guard: &Guard, place: u64, bytes: usize) {
        let ready = Arc::clone(&self.ready);
        guard.defer(move || ready.push(place, bytes));
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
        for _ in 0..rounds {
            let guard = self.pin();
            guard.flush();
        }
    }
}
