//! Each thread's private state in each arena, and epoch-based reclamation
//! of old record places (one collector per arena).
//!
//! The insert and remove paths touch only the calling thread's [`Local`]
//! for this arena, plus the one CAS of the slot protocol: its
//! [`OwnedSlab`] (bump allocation with no lock), its stash of vacant slot
//! indices, its count of records, and its batch of retired places. Nothing
//! there is shared with another writer, so two threads never write the same
//! cache line on those paths. A thread leaving leaves its slabs to the next
//! thread to arrive (up to two threads' worth wait), so a pool of
//! short-lived threads keeps reusing resident slabs.
//!
//! A reader pins this arena's epoch for as long as it holds a reference to
//! a record. A writer that retires a place (remove, replace, or a
//! compaction move) keeps it in its batch and, every `RETIRE_BATCH`
//! records, defers the batch's free through crossbeam-epoch, which runs the
//! deferred function once every thread pinned at that moment has unpinned.
//! Deferring later than the unlink is always safe: a reader that could
//! still hold the place pinned before it left its slot, so it is pinned at
//! the defer too or has already gone. The deferred function frees nothing
//! itself: it pushes the places onto the arena's [`ReadyQueue`], which
//! writers and the compactor drain, so a reader's `get` never ends up in
//! `madvise` on behalf of someone else.
//!
//! Each arena has its own `Collector`, so a long-pinned reader of another
//! arena (or of anything else using crossbeam's global collector) never
//! holds back this arena's frees. Entries of dropped arenas are pruned when
//! a thread meets a new arena.
//!
//! Invariants:
//!
//! 1. A `Local` is reached only by its own thread, through `with_local`,
//!    and only once at a time: while `f` runs, `LAST` reads `(0, ptr)`
//!    (reset on return and on unwind alike); a re-entrant call for the
//!    same arena finds it so and runs on a temporary `Local` rather than
//!    alias it (no arena code calls back in; a `tracing` subscriber that
//!    used the same arena would), as does a call from a thread-local
//!    destructor once `LOCALS` is gone.
//! 2. A place in a `Local`'s retired batch left its slot and belongs to no
//!    one else: it is freed only after its deferred function ran.
//! 3. A thread's record count is written by that thread only (a load and a
//!    store, no read-modify-write); the arena's `len` is the sum over the
//!    registered counts plus what departed threads left.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_epoch::{Collector, Guard, LocalHandle};
use crossbeam_utils::CachePadded;
use ebb_slab::{OwnedSlab, SlabArena};
use parking_lot::Mutex;

use crate::slots::{SlotTable, StashedSlot};

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Retired places a thread gathers before deferring them as one batch (one
/// pin, one deferred function, one flush of the collector per batch).
/// Bounds how many removed records wait per thread and arena.
pub(crate) const RETIRE_BATCH: usize = 512;
/// ...or this many bytes of them, whichever comes first.
const RETIRE_BYTES: u64 = 256 << 10;

/// Vacant slot indices a thread keeps for its own inserts. Large enough
/// that a thread's freed slots come back to it rather than through the
/// shared free lists: two threads reusing each other's slots write the same
/// cache lines of the slot table (four 16-byte slots to a line).
pub(crate) const SLOT_STASH: usize = 4096;

/// Retired records of one slab, freed together: the slab layer needs only
/// the bytes per slab (a bump allocator keeps no per-place free lists), so
/// a thread's run of removes from one slab is one entry and one free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub struct Retired {
    pub slab: u32,
    pub records: u32,
    pub bytes: u64,
}

/// Appends a retired record to `runs`, merging it into the last run if it
/// is of the same slab.
#[inline]
pub(crate) fn push_retired(runs: &mut Vec<Retired>, slab: u32, bytes: u64) {
    // A run never nears u32::MAX records: a thread's batch is deferred at
    // RETIRE_BATCH, and compaction's one run per slab holds at most a
    // slab's records (2^30 one-byte records in the largest slab).
    if let Some(last) = runs.last_mut()
        && last.slab == slab
    {
        last.records += 1;
        last.bytes += bytes;
    } else {
        runs.push(Retired {
            slab,
            records: 1,
            bytes,
        });
    }
}

/// Owned slabs of threads that left, kept for threads that arrive.
const ORPHANS: usize = 2;

/// One thread's count of records (inserts minus removes) in one arena.
type Count = Arc<CachePadded<AtomicI64>>;

/// What an arena shares with the thread-local entries of the threads that
/// use it (they hold it weakly, to give their state back when they exit).
pub(crate) struct Shared {
    pub slab: SlabArena,
    pub slots: SlotTable,
    /// The counts of the threads registered with this arena.
    counts: Mutex<Vec<Count>>,
    /// The counts of threads that left.
    departed: AtomicI64,
    /// The slabs of threads that left (at most `ORPHANS`), adopted by the
    /// next threads to arrive: a pool of short-lived threads then reuses
    /// resident slabs instead of faulting in fresh ones. Sealed by
    /// compaction, and when there is no room for them.
    orphans: Mutex<Vec<OwnedSlab>>,
}

impl Shared {
    pub fn new(slab: SlabArena, slots: SlotTable) -> Shared {
        Shared {
            slab,
            slots,
            counts: Mutex::new(Vec::new()),
            departed: AtomicI64::new(0),
            orphans: Mutex::new(Vec::new()),
        }
    }

    /// Slabs for a thread arriving: a departed thread's, or none yet.
    fn adopt(&self) -> OwnedSlab {
        self.orphans
            .lock()
            .pop()
            .unwrap_or_else(|| self.slab.owned_slab())
    }

    /// Keeps a departing thread's slabs for the next arrival, or seals them
    /// if `ORPHANS` are already waiting.
    fn orphan(&self, mut owned: OwnedSlab) {
        let mut orphans = self.orphans.lock();
        if orphans.len() < ORPHANS {
            orphans.push(owned);
        } else {
            drop(orphans);
            self.slab.seal_owned(&mut owned);
        }
    }

    /// Seals the slabs of departed threads (so compaction can empty them).
    pub fn seal_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.lock());
        for mut owned in orphans {
            self.slab.seal_owned(&mut owned);
        }
    }

    /// Live records: every thread's count summed (invariant 3). Exact when
    /// no insert or remove is in flight.
    pub fn len(&self) -> usize {
        let counts = self.counts.lock();
        let sum = self.departed.load(Ordering::Relaxed)
            + counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<i64>();
        sum.max(0) as usize
    }
}

/// One thread's state in one arena. Field order is drop order: the epoch
/// handle goes before `_collector`, which keeps the collector's global
/// state alive; otherwise, when the arena has dropped first, the handle's
/// drop would free that state from inside one of its own `&self` methods
/// (Miri's Tree Borrows flags exactly that).
pub(crate) struct Local {
    uid: u64,
    shared: Weak<Shared>,
    /// The slabs this thread bump-allocates in.
    pub owned: OwnedSlab,
    /// Vacant slots for this thread's next inserts (at most `SLOT_STASH`),
    /// with their generations and addresses.
    pub free_slots: Vec<StashedSlot>,
    /// Retired records not yet deferred, as runs per slab (invariant 2).
    retired: Vec<Retired>,
    /// Records and bytes in `retired`.
    retired_records: usize,
    retired_bytes: u64,
    count: Count,
    ready: Arc<ReadyQueue>,
    handle: LocalHandle,
    _collector: Collector,
}

impl Local {
    /// Adds `delta` to this thread's record count (invariant 3).
    #[inline]
    pub fn add_records(&self, delta: i64) {
        let c = &self.count;
        c.store(c.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// Keeps a place that left its slot for freeing once its readers are
    /// gone (invariant 2).
    /// Returns true if that completed a batch, which was deferred: the
    /// caller then frees what became ready (`RawArena::drain_ready`), so
    /// the other operations never look at the ready queue.
    #[inline]
    #[must_use]
    pub fn retire(&mut self, slab: u32, bytes: usize) -> bool {
        push_retired(&mut self.retired, slab, bytes as u64);
        self.retired_records += 1;
        self.retired_bytes += bytes as u64;
        if self.retired_records >= RETIRE_BATCH || self.retired_bytes >= RETIRE_BYTES {
            self.defer_retired();
            return true;
        }
        false
    }

    /// Pins this arena's epoch.
    #[inline]
    pub fn pin(&self) -> Guard {
        self.handle.pin()
    }

    /// Defers this thread's retired batch and lets the collector run what
    /// has expired (pushing earlier batches to the ready queue).
    #[cold]
    pub fn defer_retired(&mut self) {
        let guard = self.handle.pin();
        if !self.retired.is_empty() {
            let batch = std::mem::take(&mut self.retired);
            self.retired_records = 0;
            self.retired_bytes = 0;
            let ready = Arc::clone(&self.ready);
            guard.defer(move || ready.push_all(batch));
        }
        guard.flush();
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // A thread leaving (or pruning a dropped arena) hands its pending
        // retirements to the collector like any other batch.
        if !self.retired.is_empty() {
            self.defer_retired();
        }
        let Some(shared) = self.shared.upgrade() else {
            return; // the arena is gone, and its memory with it
        };
        for entry in self.free_slots.drain(..) {
            shared.slots.release(entry.index());
        }
        shared.orphan(std::mem::take(&mut self.owned));
        let mut counts = shared.counts.lock();
        shared
            .departed
            .fetch_add(self.count.load(Ordering::Relaxed), Ordering::Relaxed);
        counts.retain(|c| !Arc::ptr_eq(c, &self.count));
    }
}

/// This thread's entries, boxed so their addresses stay put while the list
/// grows (`LAST` points at one).
#[expect(
    clippy::vec_box,
    reason = "LAST points into the boxes: they must not move"
)]
struct LocalList(Vec<Box<Local>>);

impl Drop for LocalList {
    fn drop(&mut self) {
        // The entries are about to go: nothing may reach them through LAST.
        LAST.set((0, std::ptr::null_mut()));
    }
}

thread_local! {
    static LOCALS: RefCell<LocalList> = const { RefCell::new(LocalList(Vec::new())) };
    /// The entry this thread used last, `(arena uid, entry)`: the fast path
    /// of `with_local` is two thread-local loads and a compare. `(0, ptr)`
    /// while `ptr`'s entry is in use (uids start at 1). No destructor, so it
    /// stays readable while `LOCALS` is being torn down.
    static LAST: Cell<(u64, *mut Local)> = const { Cell::new((0, std::ptr::null_mut())) };
}

/// Retired records whose readers are gone, waiting to be freed.
/// Deferred functions push from whichever thread collects; writers swap the
/// whole batch out and free it (see `RawArena::drain_ready`). On the sync
/// shim's atomics and mutex, so the loom model runs this code.
#[doc(hidden)]
pub struct ReadyQueue {
    /// Whole batches as they were retired (moved in, never copied).
    batches: ebb_core::sync::Mutex<Vec<Vec<Retired>>>,
    /// Records in `batches`: changed only under `batches`' lock, so it
    /// never counts a batch that is not there, nor misses one that is.
    len: ebb_core::sync::AtomicUsize,
}

impl Default for ReadyQueue {
    fn default() -> Self {
        ReadyQueue {
            batches: ebb_core::sync::Mutex::new(Vec::new()),
            len: ebb_core::sync::AtomicUsize::new(0),
        }
    }
}

impl ReadyQueue {
    /// Queues a batch whose readers are gone.
    pub fn push_all(&self, batch: Vec<Retired>) {
        let n: usize = batch.iter().map(|r| r.records as usize).sum();
        // The count changes under the lock, with the batches: a swap that
        // takes this batch also subtracts what was added for it, never
        // before it was added (`len` stays exact between the two).
        let mut batches = self.batches.lock();
        batches.push(batch);
        self.len.fetch_add(n, Ordering::Release);
    }

    /// Swaps the queued batches into `out` (empty, keeping its capacity).
    pub fn swap_into(&self, out: &mut Vec<Vec<Retired>>) {
        debug_assert!(out.is_empty());
        let mut batches = self.batches.lock();
        std::mem::swap(&mut *batches, out);
        let n: usize = out.iter().flatten().map(|r| r.records as usize).sum();
        self.len.fetch_sub(n, Ordering::Release);
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

/// An arena's epoch collector and its way to each thread's [`Local`].
pub(crate) struct Reclaimer {
    uid: u64,
    collector: Collector,
    pub ready: Arc<ReadyQueue>,
    /// Held strongly by the arena only; entries keep it weakly.
    shared: Weak<Shared>,
}

impl Reclaimer {
    pub fn new(shared: &Arc<Shared>) -> Reclaimer {
        Reclaimer {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            collector: Collector::new(),
            ready: Arc::new(ReadyQueue::default()),
            shared: Arc::downgrade(shared),
        }
    }

    /// This arena's unique id (never reused in a process).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Runs `f` on this thread's entry for this arena, registering it with
    /// the collector on first use. Never panics of its own: where the
    /// thread's entry cannot be had (the thread-locals are being torn down,
    /// so this is a call from a thread-local destructor; or the entry is in
    /// use by an outer call on this thread, a re-entrant call), `f` runs on
    /// a temporary entry that hands everything back as it drops
    /// (invariant 1). If `f` panics, the entry is released all the same.
    #[inline(always)]
    pub fn with_local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        let (uid, entry) = LAST.get();
        if uid == self.uid {
            return self.run_on(entry, f);
        }
        match self.find_local() {
            Some(entry) => self.run_on(entry, f),
            None => self.run_on_temporary(f),
        }
    }

    /// Runs `f` on `entry`, marked in use in `LAST` until `f` returns or
    /// unwinds (invariant 1).
    #[inline(always)]
    fn run_on<R>(&self, entry: *mut Local, f: impl FnOnce(&mut Local) -> R) -> R {
        /// Marks the entry free again, on return and on unwind alike.
        struct Release(u64, *mut Local);
        impl Drop for Release {
            #[inline(always)]
            fn drop(&mut self) {
                LAST.set((self.0, self.1));
            }
        }
        LAST.set((0, entry));
        let _release = Release(self.uid, entry);
        // SAFETY: `entry` points at a boxed `Local` of this thread's list
        // (it stays there while this arena lives, and this arena is alive:
        // we are in one of its methods), and no other reference to it exists
        // while `f` runs: `LAST` reads `(0, entry)` meanwhile, which both
        // paths of `with_local` refuse to hand out again (invariant 1).
        f(unsafe { &mut *entry })
    }

    /// Runs `f` on an entry made for this call alone (see `with_local`).
    /// Slow (a registration with the collector), and only for calls from
    /// thread-local destructors and re-entrant calls.
    #[cold]
    #[inline(never)]
    fn run_on_temporary<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        let mut entry = self.new_local();
        f(&mut entry)
    }

    /// This thread's entry for this arena, registered on first use; `None`
    /// if the thread-locals are gone (a call from a thread-local
    /// destructor) or the entry is in use by an outer call.
    #[cold]
    #[inline(never)]
    fn find_local(&self) -> Option<*mut Local> {
        let busy = LAST.get();
        LOCALS
            .try_with(|locals| {
                let mut locals = locals.try_borrow_mut().ok()?;
                let entry: *mut Local = match locals.0.iter_mut().find(|e| e.uid == self.uid) {
                    Some(e) => &mut **e,
                    None => {
                        locals.0.retain(|e| e.shared.strong_count() > 0);
                        locals.0.push(Box::new(self.new_local()));
                        &mut **locals.0.last_mut().expect("just pushed")
                    }
                };
                (busy != (0, entry)).then_some(entry)
            })
            .ok()
            .flatten()
    }

    /// A new entry for the calling thread, registered with the collector
    /// and counted in the arena.
    #[cold]
    fn new_local(&self) -> Local {
        let shared = self
            .shared
            .upgrade()
            .expect("the arena calling in keeps its shared state alive");
        let count: Count = Arc::new(CachePadded::new(AtomicI64::new(0)));
        shared.counts.lock().push(Arc::clone(&count));
        Local {
            uid: self.uid,
            shared: Arc::downgrade(&shared),
            owned: shared.adopt(),
            free_slots: Vec::new(),
            retired: Vec::new(),
            retired_records: 0,
            retired_bytes: 0,
            count,
            ready: Arc::clone(&self.ready),
            handle: self.collector.register(),
            _collector: self.collector.clone(),
        }
    }

    /// Pins this arena's epoch on the calling thread.
    #[inline]
    pub fn pin(&self) -> Guard {
        self.with_local(|e| e.pin())
    }

    /// Retires many places at once under `guard`: one deferred function for
    /// the batch (compaction retires a slab's worth at a time).
    pub fn retire_batch(&self, guard: &Guard, batch: Vec<Retired>) {
        if batch.is_empty() {
            return;
        }
        let ready = Arc::clone(&self.ready);
        guard.defer(move || ready.push_all(batch));
    }

    /// Pushes this thread's retired places to the collector and tries to
    /// advance the epoch a few times, so frees whose readers are gone
    /// become ready now rather than after many more pins.
    pub fn flush(&self, rounds: usize) {
        self.with_local(|e| {
            e.defer_retired();
            for _ in 0..rounds {
                e.pin().flush();
            }
        });
    }
}
