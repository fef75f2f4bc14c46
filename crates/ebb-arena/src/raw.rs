//! The core shared by [`TypedArena`](crate::TypedArena) and
//! [`BlobArena`](crate::BlobArena): records in a `SlabArena`, a handle
//! table, epoch reclamation, and compaction.
//!
//! ```text
//!   Handle{index, gen} ──► slots[index] = {generation, place = (slab, offset)}
//!                                                   │
//!                                                   ▼
//!                                 SlabArena: slab ── bytes of the record
//! ```
//!
//! The move protocol (compaction): pin; check the slot still holds the old
//! place; copy the record into a target slab; CAS the slot's place from old
//! to new. If the CAS wins, the old place is retired (freed once no reader
//! pinned before can see it); if it loses (a remove or replace got there
//! first), the copy was never visible and is freed at once. Readers pin
//! before they load a place, so whatever place they load stays valid and
//! unchanged while they hold the guard.
//!
//! Invariants (cited below):
//!
//! 1. Records are immutable once published: no byte of a place changes
//!    between its publication and its free.
//! 2. A place is freed only after it left its slot (removed, replaced or
//!    moved) *and* every reader pinned at that moment has unpinned.
//! 3. Every occupied slot's place is a live allocation of `slab`, and each
//!    live allocation is referenced by at most one slot.
//! 4. At most one compaction runs at a time (`compacting`).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_epoch::Guard;
use crossbeam_utils::CachePadded;
use ebb_slab::{RawSlabAlloc, SlabAddr, SlabArena, SlabConfig, SlabId, SlabStats, TargetSlab};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::compact::{CompactionPolicy, CompactionReport};
use crate::error::{CompactionError, Error, Result};
use crate::reclaim::Reclaimer;
use crate::slots::{MAX_SLOTS, SlotTable, pack, thread_stripe, unpack};

/// The maintenance methods shared by [`TypedArena`](crate::TypedArena) and
/// [`BlobArena`](crate::BlobArena) (both wrap a `RawArena` named `raw`).
macro_rules! arena_maintenance {
    () => {
        /// Live records.
        pub fn len(&self) -> usize {
            self.raw.len()
        }

        /// True if no record is live.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// A snapshot of the arena and its slabs.
        pub fn stats(&self) -> $crate::ArenaStats {
            self.raw.stats()
        }

        /// True if compacting under `policy` would reclaim at least
        /// `policy.min_reclaim_bytes` (walks the slab table; no record is
        /// touched).
        pub fn needs_compaction(&self, policy: &$crate::CompactionPolicy) -> bool {
            self.raw.needs_compaction(policy)
        }

        /// Moves the live records out of sealed slabs under
        /// `policy.max_live_ratio`, so those slabs empty and go back to the
        /// OS. Readers are never blocked; writers proceed concurrently.
        ///
        /// # Errors
        ///
        /// [`CompactionError::Cancelled`]($crate::CompactionError::Cancelled)
        /// (checked before each slab: at most one slab is moved after the
        /// cancel), `OverBudget`, `Os`; each leaves every record readable and
        /// the stats exact.
        pub fn compact(
            &self,
            policy: &$crate::CompactionPolicy,
            token: &$crate::CancellationToken,
        ) -> Result<$crate::CompactionReport, $crate::CompactionError> {
            self.raw.compact(policy, token)
        }

        /// Bytes of this arena's slabs resident according to the kernel
        /// (`mincore`). Slow: for tests and reports.
        ///
        /// # Errors
        ///
        /// If `mincore` fails.
        pub fn kernel_resident_bytes(&self) -> $crate::Result<u64> {
            self.raw.kernel_resident_bytes()
        }

        /// Frees retired places whose readers are gone (normally done by
        /// writers and compaction as they go).
        pub fn reclaim(&self) {
            self.raw.reclaim_now();
        }
    };
}

pub(crate) use arena_maintenance;

/// How a record's length is known.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RecordFormat {
    /// Every record is `len` bytes aligned to `align` (TypedArena).
    Fixed { len: usize, align: usize },
    /// A little-endian `u32` length, then that many bytes (BlobArena).
    Prefixed,
}

/// Retired places that wait before writers free them as a batch (the
/// compactor and `reclaim` free any number). Bounds the lag between a
/// remove and the free of its place at this many records per arena.
const READY_BATCH: usize = 64;

/// Fresh slot indices a thread takes at once.
const SLOT_BLOCK: u32 = 32;

/// Stripes of the live-record counter (matches the slot table's
/// `thread_stripe`).
const LEN_STRIPES: usize = 16;

/// How many records ahead compaction prefetches.
const PREFETCH_AHEAD: usize = 2;
/// Cache lines of each such record prefetched.
const PREFETCH_LINES: usize = 16;

/// Hints the CPU to load the cache line at `p` (no effect on other targets).
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Emptied slabs a compaction keeps warm to reuse as its targets.
const COMPACTION_WARM_SLABS: usize = 4;

/// Bytes of the length prefix of a blob record.
pub(crate) const PREFIX: usize = 4;

impl RecordFormat {
    fn align(self) -> usize {
        match self {
            RecordFormat::Fixed { align, .. } => align,
            RecordFormat::Prefixed => PREFIX,
        }
    }

    /// Length of the record at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` is a published record's place, and the caller is pinned (or
    /// otherwise knows the place is not freed), so its bytes are readable.
    unsafe fn record_len(self, ptr: *const u8) -> usize {
        match self {
            RecordFormat::Fixed { len, .. } => len,
            RecordFormat::Prefixed => {
                // SAFETY: a prefixed record starts with its 4-byte length
                // (written by `insert` before publication, invariant 1),
                // aligned to 4; the caller guarantees the place is live.
                let n = unsafe { ptr.cast::<u32>().read() };
                PREFIX + n as usize
            }
        }
    }
}

/// A snapshot of an arena, plain data for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ArenaStats {
    /// Live records.
    pub records: u64,
    /// The slab layer underneath (live, resident, reserved bytes, slabs).
    pub slab: SlabStats,
    /// Retired places whose readers are gone, not yet freed.
    pub pending_frees: u64,
    /// Compactions run to completion or stopped.
    pub compactions_total: u64,
    /// Bytes moved by compactions since creation.
    pub bytes_moved_total: u64,
    /// Slabs emptied by compactions since creation (updated per slab, so it
    /// shows a running compaction's progress).
    pub slabs_compacted_total: u64,
}

pub(crate) struct RawArena {
    slab: SlabArena,
    slots: Arc<SlotTable>,
    reclaim: Reclaimer,
    format: RecordFormat,
    /// Live records, striped so writers on different threads do not share
    /// one contended counter; `len()` sums the stripes.
    len: Box<[CachePadded<AtomicI64>]>,
    compactions: AtomicU64,
    bytes_moved: AtomicU64,
    /// Slabs emptied by compactions since creation, counted as they go.
    slabs_compacted: AtomicU64,
    /// Invariant 4.
    compacting: Mutex<()>,
    /// The drainer's buffer, swapped with the ready queue's (no allocation
    /// in steady state); its lock also makes draining single-threaded.
    drain_scratch: Mutex<Vec<(u64, usize)>>,
}

impl RawArena {
    pub fn new(config: SlabConfig, format: RecordFormat) -> Result<RawArena> {
        let slots = Arc::new(SlotTable::new());
        Ok(RawArena {
            slab: SlabArena::new(config)?,
            reclaim: Reclaimer::new(Arc::downgrade(&slots)),
            slots,
            format,
            len: (0..LEN_STRIPES)
                .map(|_| CachePadded::new(AtomicI64::new(0)))
                .collect(),
            compactions: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            slabs_compacted: AtomicU64::new(0),
            compacting: Mutex::new(()),
            drain_scratch: Mutex::new(Vec::new()),
        })
    }

    pub fn len(&self) -> usize {
        let sum: i64 = self.len.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        sum.max(0) as usize
    }

    #[inline]
    fn ptr_of(&self, place: u64) -> NonNull<u8> {
        let (slab, offset) = unpack(place);
        self.slab
            .ptr_at(SlabAddr {
                slab: SlabId(slab),
                offset,
            })
            .expect("an occupied slot's place is a live allocation (invariant 3)")
    }

    fn place_of(&self, raw: &RawSlabAlloc) -> u64 {
        let addr = self.slab.addr_of(raw);
        pack(addr.slab.0, addr.offset)
    }

    fn layout(&self, len: usize) -> Result<Layout> {
        Layout::from_size_align(len, self.format.align()).map_err(|_| Error::BlobTooLarge {
            len,
            max: u32::MAX as usize,
        })
    }

    /// Frees a place no slot references and no reader can see.
    fn free_place(&self, place: u64, bytes: usize) {
        let raw = RawSlabAlloc {
            ptr: self.ptr_of(place),
            len: bytes,
            slab: SlabId(unpack(place).0),
        };
        // SAFETY: the place was an allocation of this arena's slab arena,
        // it left its slot and its readers are gone (invariant 2), so this
        // is the only owner being rebuilt.
        let alloc = unsafe { self.slab.from_raw(raw) };
        if self.slab.free(alloc).is_err() {
            debug_assert!(false, "own allocation refused");
        }
    }

    /// Frees the places whose readers are gone.
    /// Frees the places whose readers are gone once at least
    /// `READY_BATCH` are waiting (`force`: any number). One thread drains at
    /// a time; others skip rather than wait.
    pub fn drain_ready(&self, force: bool) {
        let waiting = self.reclaim.ready.len();
        if waiting == 0 || (!force && waiting < READY_BATCH) {
            return;
        }
        let Some(mut batch) = self.drain_scratch.try_lock() else {
            return;
        };
        self.reclaim.ready.swap_into(&mut batch);
        for (place, bytes) in batch.drain(..) {
            self.free_place(place, bytes);
        }
    }

    /// Stores a record of `len` bytes written by `write`, returns (index,
    /// generation).
    ///
    /// # Safety
    ///
    /// `write` must initialize the record's bytes as the format requires (a
    /// `T`, or the prefix and the blob), writing only inside `len` bytes
    /// from the pointer it is given (aligned to the format's alignment).
    pub unsafe fn insert(&self, len: usize, write: impl FnOnce(*mut u8)) -> Result<(u32, u32)> {
        let alloc = self.slab.alloc(self.layout(len)?)?;
        write(alloc.as_ptr());
        let raw = alloc.into_raw();
        let Some(index) = self.claim_slot() else {
            // SAFETY: `raw` was just made from this arena's allocation and
            // is rebuilt once.
            let _ = self.slab.free(unsafe { self.slab.from_raw(raw) });
            return Err(Error::TooManyRecords { max: MAX_SLOTS });
        };
        let slot = self.slots.get(index).expect("claimed index has a slot");
        let generation = slot.publish(self.place_of(&raw));
        self.len[thread_stripe()].fetch_add(1, Ordering::Relaxed);
        self.drain_ready(false);
        Ok((index, generation))
    }

    /// A vacant slot index: this thread's stash, the free lists, or a fresh
    /// block (its first index, the rest stashed).
    fn claim_slot(&self) -> Option<u32> {
        if let Some(i) = self.reclaim.take_stashed_slot() {
            return Some(i);
        }
        if let Some(i) = self.slots.claim_free() {
            return Some(i);
        }
        let mut block = self.slots.grow_block(SLOT_BLOCK);
        let first = block.next()?;
        self.reclaim.stash_slots(block, &self.slots);
        Some(first)
    }

    /// Pins and returns a pointer to the record, if the handle is current.
    #[inline]
    pub fn read(&self, index: u32, generation: u32) -> Option<(Guard, NonNull<u8>)> {
        let slot = self.slots.get(index)?;
        // Pin before loading the place, so it cannot be freed under us.
        let guard = self.reclaim.pin();
        let place = slot.read(generation)?;
        Some((guard, self.ptr_of(place)))
    }

    pub fn remove(&self, index: u32, generation: u32) -> bool {
        let Some(slot) = self.slots.get(index) else {
            return false;
        };
        let guard = self.reclaim.pin();
        let Some(place) = slot.remove(generation) else {
            return false;
        };
        // SAFETY: `place` was this slot's live record and we are pinned, so
        // it is not freed yet (invariant 2).
        let bytes = unsafe { self.format.record_len(self.ptr_of(place).as_ptr()) };
        self.reclaim
            .retire(&guard, place, bytes, Some(index), &self.slots);
        self.len[thread_stripe()].fetch_sub(1, Ordering::Relaxed);
        drop(guard);
        self.drain_ready(false);
        true
    }

    /// Writes a new record and repoints the slot to it; `Ok(false)` (and
    /// nothing stored) if the handle is not current.
    ///
    /// # Safety
    ///
    /// As for [`insert`](Self::insert).
    pub unsafe fn replace(
        &self,
        index: u32,
        generation: u32,
        len: usize,
        write: impl FnOnce(*mut u8),
    ) -> Result<bool> {
        if generation & 1 == 0 {
            return Ok(false);
        }
        let Some(slot) = self.slots.get(index) else {
            return Ok(false);
        };
        let alloc = self.slab.alloc(self.layout(len)?)?;
        write(alloc.as_ptr());
        let raw = alloc.into_raw();
        let new_place = self.place_of(&raw);
        let guard = self.reclaim.pin();
        match slot.replace(generation, new_place) {
            Some(old) => {
                // SAFETY: `old` was the slot's record and we are pinned.
                let bytes = unsafe { self.format.record_len(self.ptr_of(old).as_ptr()) };
                self.reclaim.retire(&guard, old, bytes, None, &self.slots);
                drop(guard);
                self.drain_ready(false);
                Ok(true)
            }
            None => {
                drop(guard);
                // Never published: free at once.
                // SAFETY: `raw` is this arena's allocation, rebuilt once.
                let _ = self.slab.free(unsafe { self.slab.from_raw(raw) });
                Ok(false)
            }
        }
    }

    pub fn stats(&self) -> ArenaStats {
        ArenaStats {
            records: self.len() as u64,
            slab: self.slab.stats(),
            pending_frees: self.reclaim.ready.len() as u64,
            compactions_total: self.compactions.load(Ordering::Relaxed),
            bytes_moved_total: self.bytes_moved.load(Ordering::Relaxed),
            slabs_compacted_total: self.slabs_compacted.load(Ordering::Relaxed),
        }
    }

    /// Sparse slabs and the bytes emptying them would reclaim.
    fn candidates(&self, policy: &CompactionPolicy) -> (Vec<SlabId>, u64) {
        let slab_bytes = self.slab.slab_bytes() as u64;
        let mut slabs = self.slab.sparse_slabs(policy.max_live_ratio);
        if let Some(max) = policy.max_slabs {
            slabs.truncate(max);
        }
        let reclaim = slabs
            .iter()
            .filter_map(|id| self.slab.slab_info(*id)?.live_bytes)
            .map(|live| slab_bytes.saturating_sub(live))
            .sum();
        (slabs, reclaim)
    }

    pub fn needs_compaction(&self, policy: &CompactionPolicy) -> bool {
        let (slabs, reclaim) = self.candidates(policy);
        !slabs.is_empty() && reclaim >= policy.min_reclaim_bytes
    }

    pub fn kernel_resident_bytes(&self) -> Result<u64> {
        Ok(self.slab.kernel_resident_bytes()?)
    }

    /// Flushes deferred frees and frees what became ready.
    pub fn reclaim_now(&self) {
        // Enough rounds for the epoch to advance past everything retired
        // (it needs two advances) even when another thread pins meanwhile.
        self.reclaim.flush(8);
        self.drain_ready(true);
    }

    pub fn compact(
        &self,
        policy: &CompactionPolicy,
        token: &CancellationToken,
    ) -> Result<CompactionReport, CompactionError> {
        let _one = self.compacting.lock();
        let started = Instant::now();
        let resident_before = self.slab.stats().resident_bytes;
        let mut report = CompactionReport::default();
        let (slabs, reclaim) = self.candidates(policy);
        if slabs.is_empty() || reclaim < policy.min_reclaim_bytes {
            report.duration = started.elapsed();
            return Ok(report);
        }
        // Slab id -> position in `slabs` (+1; 0 = not wanted): a flat
        // lookup for the one pass over the handle table.
        let max_id = slabs.iter().map(|s| s.0 as usize).max().unwrap_or(0);
        let mut wanted = vec![0u32; max_id + 1];
        for (i, s) in slabs.iter().enumerate() {
            wanted[s.0 as usize] = i as u32 + 1;
        }
        let mut by_slab: Vec<Vec<(u32, u64)>> = vec![Vec::new(); slabs.len()];
        self.slots.for_each(|index, slot| {
            if let Some(place) = slot.occupied_place()
                && let Some(&pos) = wanted.get(unpack(place).0 as usize)
                && pos > 0
            {
                by_slab[pos as usize - 1].push((index, place));
            }
        });
        let mut target: Option<TargetSlab<'_>> = None;
        // Slabs this pass empties stay warm and become its next targets.
        self.slab.set_extra_warm_slabs(COMPACTION_WARM_SLABS);
        let outcome = (|| {
            for records in by_slab {
                if token.is_cancelled() {
                    return Err(Stop::Cancelled);
                }
                let guard = self.reclaim.pin();
                let mut retired = Vec::with_capacity(records.len());
                for (i, &(index, place)) in records.iter().enumerate() {
                    // The next records' first lines are DRAM misses: start
                    // them now so they overlap this record's copy.
                    // Not validated: the record may be gone and its slab
                    // unmapped since the scan, so no `ptr_of` (which insists
                    // on a live place); a prefetch of a stale address is
                    // harmless.
                    if let Some(&(_, ahead)) = records.get(i + PREFETCH_AHEAD) {
                        let (slab, offset) = unpack(ahead);
                        if let Some(p) = self.slab.ptr_at(SlabAddr {
                            slab: SlabId(slab),
                            offset,
                        }) {
                            for line in 0..PREFETCH_LINES {
                                prefetch(p.as_ptr().wrapping_add(line * 64));
                            }
                        }
                    }
                    let moved = self.move_record(index, place, &mut target, &mut report);
                    match moved {
                        Ok(Some(old)) => retired.push(old),
                        Ok(None) => {}
                        Err(stop) => {
                            self.reclaim.retire_batch(&guard, retired);
                            return Err(stop);
                        }
                    }
                }
                self.reclaim.retire_batch(&guard, retired);
                drop(guard);
                report.slabs_compacted += 1;
                self.slabs_compacted.fetch_add(1, Ordering::Relaxed);
                // Let the emptied slab go back as soon as its readers leave
                // (a few rounds; whatever lags is freed after the loop).
                self.reclaim.flush(3);
                self.drain_ready(true);
            }
            Ok(())
        })();
        drop(target);
        self.reclaim_now();
        self.slab.set_extra_warm_slabs(0);
        report.bytes_released = resident_before.saturating_sub(self.slab.stats().resident_bytes);
        report.duration = started.elapsed();
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.bytes_moved
            .fetch_add(report.bytes_moved, Ordering::Relaxed);
        tracing::info!(
            slabs_compacted = report.slabs_compacted,
            records_moved = report.records_moved,
            bytes_moved = report.bytes_moved,
            bytes_released = report.bytes_released,
            duration_ms = report.duration.as_secs_f64() * 1e3,
            stopped = outcome.is_err(),
            "compaction finished"
        );
        match outcome {
            Ok(()) => Ok(report),
            Err(Stop::Cancelled) => Err(CompactionError::Cancelled { report }),
            Err(Stop::Slab(ebb_slab::Error::BudgetExceeded(source))) => {
                Err(CompactionError::OverBudget {
                    source: Box::new(source),
                    report,
                })
            }
            Err(Stop::Slab(source)) => Err(CompactionError::Os {
                source: Box::new(source),
                report,
            }),
        }
    }

    /// Moves one record by the protocol in the module docs; returns the old
    /// place (and its length) to retire if the move won. The caller is
    /// pinned for the whole call.
    fn move_record<'a>(
        &'a self,
        index: u32,
        place: u64,
        target: &mut Option<TargetSlab<'a>>,
        report: &mut CompactionReport,
    ) -> Result<Option<(u64, usize)>, Stop> {
        let Some(slot) = self.slots.get(index) else {
            return Ok(None);
        };
        if slot.current_place() != place {
            return Ok(None); // removed or replaced since the scan
        }
        let src = self.ptr_of(place);
        // SAFETY: the place is (or was an instant ago) the slot's record and
        // we are pinned, so it is not freed (invariant 2).
        let len = unsafe { self.format.record_len(src.as_ptr()) };
        let layout = self
            .layout(len)
            .map_err(|_| Stop::Slab(ebb_slab::Error::ZeroSize))?;
        let alloc = loop {
            if target.is_none() {
                *target = Some(self.slab.reserve_target().map_err(Stop::Slab)?);
            }
            let t = target.as_mut().expect("target just reserved");
            match self.slab.alloc_in(t, layout).map_err(Stop::Slab)? {
                Some(a) => break a,
                None => *target = None, // full: sealed on drop
            }
        };
        // SAFETY:
        // - `src` holds `len` readable bytes (pinned, invariant 2) that no
        //   one writes (invariant 1);
        // - `alloc` is a fresh allocation of `len` bytes nobody else can see;
        // - the two do not overlap (different slabs).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), alloc.as_ptr(), len) };
        let raw = alloc.into_raw();
        let new_place = self.place_of(&raw);
        if slot.move_place(place, new_place) {
            report.records_moved += 1;
            report.bytes_moved += len as u64;
            Ok(Some((place, len)))
        } else {
            // A remove or replace won: our copy was never visible.
            // SAFETY: `raw` is this arena's allocation, rebuilt once.
            let _ = self.slab.free(unsafe { self.slab.from_raw(raw) });
            Ok(None)
        }
    }
}

enum Stop {
    Cancelled,
    Slab(ebb_slab::Error),
}

impl Drop for RawArena {
    fn drop(&mut self) {
        // Pending frees need no work: the slab arena unmaps everything as it
        // drops. Deferred functions still queued in the collector only push
        // onto the orphaned ready queue.
        tracing::debug!(records = self.len(), "arena dropped");
    }
}
