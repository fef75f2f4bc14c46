//! Epoch-based reclamation of old record places (one collector per
//! arena), the batches retired places wait in, and the takeover of idle
//! threads' state.
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
//! holds back this arena's frees.
//!
//! Invariant 2 (numbering shared with `local`): a place in a thread's
//! retired batch left its slot and belongs to no one else: it is freed only
//! after its deferred function ran.

use std::sync::Arc;
use std::sync::Weak;

use crossbeam_epoch::{Collector, Guard};
use ebb_core::sync::Ordering;

use crate::local::Shared;

/// std's atomic, not the shim's: a static needs a const constructor (the
/// uid counter is not loom-modelled state).
static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Retired places a thread gathers before deferring them as one batch (one
/// pin, one deferred function, one flush of the collector per batch).
/// Bounds how many removed records wait per thread and arena.
pub(crate) const RETIRE_BATCH: usize = 512;
/// ...or this many bytes of them, whichever comes first.
pub(crate) const RETIRE_BYTES: u64 = 256 << 10;

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

/// An arena's epoch collector and its way to each thread's
/// [`Local`](crate::local::Local) (the access paths are in `local`).
pub(crate) struct Reclaimer {
    pub(crate) uid: u64,
    pub(crate) collector: Collector,
    pub ready: Arc<ReadyQueue>,
    /// Held strongly by the arena only; entries keep it weakly.
    pub(crate) shared: Weak<Shared>,
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
