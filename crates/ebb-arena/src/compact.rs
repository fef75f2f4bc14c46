//! Compaction: [`CompactionPolicy`], [`CompactionReport`], and the pass
//! that moves live records out of sparse slabs (the move protocol is in the
//! `raw` module docs; invariants cited by number are that module's).

use std::time::{Duration, Instant};

use ebb_core::sync::{AtomicU64, Ordering};
use ebb_slab::{SlabAddr, SlabId, TargetSlab};
use tokio_util::sync::CancellationToken;

use crate::copy::{PREFETCH_AHEAD, PREFETCH_LINES, copy_streaming, prefetch, store_fence};
use crate::error::CompactionError;
use crate::raw::RawArena;
use crate::reclaim::push_retired;
use crate::slots::{SlotTable, unpack};

/// When and how much to compact.
///
/// ```
/// use ebb_arena::CompactionPolicy;
/// let policy = CompactionPolicy::default().with_max_live_ratio(0.3);
/// assert_eq!(policy.max_live_ratio, 0.3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionPolicy {
    /// Sealed slabs whose live bytes are under this share of the slab are
    /// emptied (default 0.5).
    pub max_live_ratio: f64,
    /// The share of the sealed slabs' bytes that may be waste (not live)
    /// before denser slabs are emptied too (default 0.1): when it is
    /// passed, the sparsest sealed slabs (under [`WASTE_SLAB_MAX_LIVE`] of
    /// the slab, beyond those under `max_live_ratio`) are added until the
    /// waste left would be within it. Under uniform random deletes a
    /// `max_live_ratio` alone settles where slabs die at that ratio, about
    /// 1.39x the live bytes at 0.5; this bounds the arena as a whole
    /// (about 1.11x at 0.1), copying the least for it (sparsest first:
    /// about 4.6 bytes moved per byte given back at 0.1 under uniform
    /// churn, against a move rate of GB/s). 1.0 turns it off.
    pub max_waste_ratio: f64,
    /// Do nothing unless at least this many bytes would be reclaimed
    /// (default 4 MiB): a compaction that frees little is not worth its copy.
    pub min_reclaim_bytes: u64,
    /// Empty at most this many slabs per call (default: no limit).
    pub max_slabs: Option<usize>,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            max_live_ratio: 0.5,
            max_waste_ratio: 0.1,
            min_reclaim_bytes: 4 << 20,
            max_slabs: None,
        }
    }
}

impl CompactionPolicy {
    /// Sets [`max_live_ratio`](Self::max_live_ratio).
    pub fn with_max_live_ratio(mut self, ratio: f64) -> Self {
        self.max_live_ratio = ratio;
        self
    }

    /// Sets [`max_waste_ratio`](Self::max_waste_ratio).
    pub fn with_max_waste_ratio(mut self, ratio: f64) -> Self {
        self.max_waste_ratio = ratio;
        self
    }

    /// Sets [`min_reclaim_bytes`](Self::min_reclaim_bytes).
    pub fn with_min_reclaim_bytes(mut self, bytes: u64) -> Self {
        self.min_reclaim_bytes = bytes;
        self
    }

    /// Sets [`max_slabs`](Self::max_slabs).
    pub fn with_max_slabs(mut self, slabs: usize) -> Self {
        self.max_slabs = Some(slabs);
        self
    }
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompactionReport {
    /// Sparse slabs whose live records were all moved out.
    pub slabs_compacted: usize,
    /// Bytes copied.
    pub bytes_moved: u64,
    /// Resident bytes given back to the OS (resident before minus after).
    pub bytes_released: u64,
    /// Records moved.
    pub records_moved: u64,
    /// Wall time.
    pub duration: Duration,
    /// True if the token was cancelled before the pass ended (checked
    /// before each slab: at most one slab is moved after the cancel). What
    /// was moved stays moved; every record is readable.
    pub cancelled: bool,
    /// Threads whose idle state (slabs, stash, retired records) this pass
    /// took over.
    pub threads_taken: u64,
}

/// The policy an arena compacts under when its maintenance runs, readable
/// and replaceable at run time without a lock (one atomic per field).
#[derive(Debug)]
pub(crate) struct PolicyCell {
    max_live_ratio_bits: AtomicU64,
    max_waste_ratio_bits: AtomicU64,
    min_reclaim_bytes: AtomicU64,
    /// `max_slabs + 1`; 0 for none.
    max_slabs: AtomicU64,
}

impl PolicyCell {
    pub(crate) fn new(policy: CompactionPolicy) -> PolicyCell {
        let cell = PolicyCell {
            max_live_ratio_bits: AtomicU64::new(0),
            max_waste_ratio_bits: AtomicU64::new(0),
            min_reclaim_bytes: AtomicU64::new(0),
            max_slabs: AtomicU64::new(0),
        };
        cell.set(policy);
        cell
    }

    pub(crate) fn set(&self, policy: CompactionPolicy) {
        // A ratio in [0, 1], or the default's for one that is not finite.
        let ratio = |r: f64, default: f64| {
            if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                default
            }
        };
        let defaults = CompactionPolicy::default();
        let live = ratio(policy.max_live_ratio, defaults.max_live_ratio);
        let waste = ratio(policy.max_waste_ratio, defaults.max_waste_ratio);
        self.max_live_ratio_bits
            .store(live.to_bits(), Ordering::Relaxed);
        self.max_waste_ratio_bits
            .store(waste.to_bits(), Ordering::Relaxed);
        self.min_reclaim_bytes
            .store(policy.min_reclaim_bytes, Ordering::Relaxed);
        self.max_slabs.store(
            policy.max_slabs.map_or(0, |n| (n as u64).saturating_add(1)),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn get(&self) -> CompactionPolicy {
        let max_slabs = self.max_slabs.load(Ordering::Relaxed);
        CompactionPolicy {
            max_live_ratio: f64::from_bits(self.max_live_ratio_bits.load(Ordering::Relaxed)),
            max_waste_ratio: f64::from_bits(self.max_waste_ratio_bits.load(Ordering::Relaxed)),
            min_reclaim_bytes: self.min_reclaim_bytes.load(Ordering::Relaxed),
            max_slabs: (max_slabs > 0).then(|| (max_slabs - 1) as usize),
        }
    }
}

/// The densest slab (live share) the waste bound empties: past it a move
/// copies nine bytes or more for each one it gives back.
pub const WASTE_SLAB_MAX_LIVE: f64 = 0.9;

/// How many of `sealed` (live bytes per slab, sparsest first) `policy`
/// empties: every slab under `max_live_ratio`, then the next sparsest
/// while the waste left (each emptied slab's live bytes counted again in a
/// full target) is over `max_waste_ratio`, none past [`WASTE_SLAB_MAX_LIVE`];
/// at most `max_slabs`.
pub(crate) fn waste_candidates(
    sealed: &[(u64, SlabId)],
    slab_bytes: u64,
    policy: &CompactionPolicy,
) -> usize {
    let sparse_limit = (slab_bytes as f64 * policy.max_live_ratio) as u64;
    let mut count = sealed.partition_point(|(live, _)| *live < sparse_limit);
    if policy.max_waste_ratio < 1.0 {
        let live = sealed
            .iter()
            .fold(0u64, |sum, (l, _)| sum.saturating_add(*l));
        let dense_limit = (slab_bytes as f64 * WASTE_SLAB_MAX_LIVE) as u64;
        // Resident bytes after emptying the first `count`: their slabs go,
        // their live bytes land in (full) targets.
        // (Saturating: the live counts are read while frees go on.)
        let gives_back = |live: u64| slab_bytes.saturating_sub(live);
        let mut resident = (sealed.len() as u64).saturating_mul(slab_bytes);
        for (l, _) in &sealed[..count] {
            resident = resident.saturating_sub(gives_back(*l));
        }
        let over = |resident: u64| {
            resident.saturating_sub(live) as f64 > policy.max_waste_ratio * resident as f64
        };
        while count < sealed.len() && over(resident) && sealed[count].0 < dense_limit {
            resident = resident.saturating_sub(gives_back(sealed[count].0));
            count += 1;
        }
    }
    policy.max_slabs.map_or(count, |max| count.min(max))
}

// ---- the compaction pass --------------------------------------------------

/// Records a compaction locks, then copies, at a time (see `compact`):
/// bounds how long a remove of one of them may wait (a few microseconds).
const MOVE_GROUP: usize = 16;

/// Emptied slabs a compaction keeps warm to reuse as its targets.
const COMPACTION_WARM_SLABS: usize = 4;

impl RawArena {
    /// The maintenance contract's check: sparse slabs under the current
    /// policy (the slab table's counters; no lock).
    pub(crate) fn maintenance_due(&self) -> Option<ebb_core::maintenance::Due> {
        let policy = self.policy.get();
        let (slabs, reclaim) = self.candidates(&policy);
        (!slabs.is_empty() && reclaim >= policy.min_reclaim_bytes).then_some(
            ebb_core::maintenance::Due {
                reason: "sparse_slabs",
                reclaimable_bytes: reclaim,
            },
        )
    }

    /// The maintenance contract's run: a compaction under the current
    /// policy.
    pub(crate) fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> Result<ebb_core::maintenance::MaintenanceReport, ebb_core::maintenance::MaintenanceError>
    {
        use ebb_core::maintenance::{MaintenanceError, MaintenanceKind, MaintenanceReport};
        let kind = MaintenanceKind::Arena;
        match self.compact(&self.policy.get(), token) {
            Ok(r) => Ok(MaintenanceReport {
                kind: Some(kind),
                cancelled: r.cancelled,
                skipped: r.slabs_compacted == 0 && !r.cancelled,
                bytes_released: r.bytes_released,
                bytes_moved: r.bytes_moved,
                items: r.records_moved,
                duration_secs: r.duration.as_secs_f64(),
                deferred: None,
            }),
            Err(CompactionError::AlreadyRunning) => Err(MaintenanceError::AlreadyRunning { kind }),
            Err(CompactionError::OverBudget { source, .. }) => {
                Err(MaintenanceError::OverBudget(source))
            }
            Err(e) => Err(MaintenanceError::Failed {
                kind,
                message: e.to_string(),
            }),
        }
    }

    /// The slabs to empty and the bytes emptying them would reclaim: those
    /// under `max_live_ratio`, and, while the sealed slabs' waste passes
    /// `max_waste_ratio`, the next sparsest (see [`CompactionPolicy`]).
    fn candidates(&self, policy: &CompactionPolicy) -> (Vec<SlabId>, u64) {
        let slab_bytes = self.slab().slab_bytes() as u64;
        let sealed = self.slab().sealed_slabs_by_live();
        let count = waste_candidates(&sealed, slab_bytes, policy);
        let slabs: Vec<SlabId> = sealed[..count].iter().map(|(_, id)| *id).collect();
        let reclaim = sealed[..count]
            .iter()
            .map(|(live, _)| slab_bytes.saturating_sub(*live))
            .sum();
        (slabs, reclaim)
    }

    pub fn needs_compaction(&self, policy: &CompactionPolicy) -> bool {
        let (slabs, reclaim) = self.candidates(policy);
        !slabs.is_empty() && reclaim >= policy.min_reclaim_bytes
    }

    pub fn compact(
        &self,
        policy: &CompactionPolicy,
        token: &CancellationToken,
    ) -> Result<CompactionReport, CompactionError> {
        // Invariant 4; a second caller is told at once, never made to wait.
        let Some(_one) = self.compacting.try_lock() else {
            return Err(CompactionError::AlreadyRunning);
        };
        let started = Instant::now();
        let resident_before = self.slab().stats().resident_bytes;
        // The caller's own slabs, those departed threads left, and those of
        // threads idle since the last pass become candidates like any other
        // (a busy thread's stay with it until it fills them, leaves, or
        // idles through a pass).
        self.reclaim
            .with_local(|local| self.shared.slab.seal_owned(&mut local.owned));
        self.shared.seal_orphans();
        let threads_taken = self.reclaim_threads(false).taken;
        let mut report = CompactionReport {
            threads_taken,
            ..CompactionReport::default()
        };
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
        let mut by_slab: Vec<Vec<(u32, u32, u64)>> = vec![Vec::new(); slabs.len()];
        self.shared.slots.scan_occupied(|index, generation, place| {
            // Vacant slots on the free list carry slab id u32::MAX, out of
            // range here like any slab that is not a candidate.
            if let Some(&pos) = wanted.get(unpack(place).0 as usize)
                && pos > 0
            {
                by_slab[pos as usize - 1].push((index, generation, place));
            }
        });
        let mut target: Option<TargetSlab<'_>> = None;
        // Slabs this pass empties stay warm and become its next targets.
        self.slab().set_extra_warm_slabs(COMPACTION_WARM_SLABS);
        let outcome = (|| {
            for records in by_slab {
                if token.is_cancelled() {
                    return Err(Stop::Cancelled);
                }
                let guard = self.reclaim.pin();
                let mut retired = Vec::new();
                let mut locked = LockedGroup::new(&self.shared.slots);
                let mut copied: Vec<(u64, usize)> = Vec::with_capacity(MOVE_GROUP);
                for (g, group) in records.chunks(MOVE_GROUP).enumerate() {
                    // Lock the group's records first, then copy them all,
                    // then publish them all: a locked instruction waits for
                    // every earlier store to drain, so one CAS after each
                    // copy stalled the copying on the copy before (a quarter
                    // of the time of a 1 GiB compaction); this way the CASes
                    // come in a row, and one fence covers the group's
                    // streaming stores.
                    copied.clear();
                    let mut failed = None;
                    locked.lock(group);
                    for (k, &(_, _, place)) in locked.held().iter().enumerate() {
                        // The next records' first lines are DRAM misses:
                        // start them now so they overlap this record's copy.
                        // Not validated: a record past this group may be
                        // gone and its slab unmapped since the scan, so no
                        // `ptr_of` (which insists on a live place); a
                        // prefetch of a stale address is harmless.
                        let ahead = g * MOVE_GROUP + k + PREFETCH_AHEAD;
                        if let Some(&(_, _, ahead)) = records.get(ahead) {
                            let (slab, offset) = unpack(ahead);
                            if let Some(p) = self.slab().ptr_at(SlabAddr {
                                slab: SlabId(slab),
                                offset,
                            }) {
                                for line in 0..PREFETCH_LINES {
                                    prefetch(p.as_ptr().wrapping_add(line * 64));
                                }
                            }
                        }
                        match self.copy_record(place, &mut target) {
                            Ok((new_place, len)) => copied.push((new_place, len)),
                            Err(stop) => {
                                failed = Some(stop);
                                break;
                            }
                        }
                    }
                    // The copies' streaming stores reach every core before
                    // any of them is published: one fence for the group.
                    store_fence();
                    for &(new_place, len) in &copied {
                        let old_place = locked.finish_next(new_place);
                        push_retired(&mut retired, unpack(old_place).0, len as u64);
                        report.records_moved += 1;
                        report.bytes_moved += len as u64;
                    }
                    if let Some(stop) = failed {
                        // Unlock the rest of the group unmoved, then stop.
                        locked.unlock_rest();
                        self.reclaim.retire_batch(&guard, retired);
                        return Err(stop);
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
        self.slab().set_extra_warm_slabs(0);
        report.bytes_released = resident_before.saturating_sub(self.slab().stats().resident_bytes);
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
            Err(Stop::Cancelled) => {
                report.cancelled = true;
                Ok(report)
            }
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

    /// Copies the record at `place` (locked by the caller, who is pinned)
    /// into `target`; returns the copy's place and the record's length.
    fn copy_record<'a>(
        &'a self,
        place: u64,
        target: &mut Option<TargetSlab<'a>>,
    ) -> Result<(u64, usize), Stop> {
        let src = self.ptr_of(place);
        // SAFETY: the place is the slot's record, locked (no remove or
        // replace can retire it) and we are pinned (invariant 2).
        let len = unsafe { self.format.record_len(src.as_ptr()) };
        let layout = self
            .layout(len)
            .map_err(|_| Stop::Slab(ebb_slab::Error::ZeroSize))?;
        let alloc = loop {
            if target.is_none() {
                *target = Some(self.slab().reserve_target().map_err(Stop::Slab)?);
            }
            let t = target.as_mut().expect("target just reserved");
            match self.slab().alloc_in(t, layout).map_err(Stop::Slab)? {
                Some(a) => break a,
                None => *target = None, // full: sealed on drop
            }
        };
        // SAFETY:
        // - `src` holds `len` readable bytes (locked and pinned, invariant
        //   2) that no one writes (invariant 1);
        // - `alloc` is a fresh allocation of `len` bytes nobody else can see;
        // - the two do not overlap (different slabs).
        unsafe { copy_streaming(alloc.as_ptr(), src.as_ptr(), len) };
        let new_place = self.place_of(&alloc);
        let _ = alloc.into_raw(); // owned by the slot once the move finishes
        Ok((new_place, len))
    }
}

enum Stop {
    Cancelled,
    Slab(ebb_slab::Error),
}

/// The slots of one move group a compaction holds locked, in order: the
/// first `done` are finished (repointed and unlocked), the rest still
/// locked. Dropping it unlocks the rest unmoved, so a panic in the middle
/// of a group (a broken invariant) never leaves a slot locked, where
/// removes and replaces of its record would wait forever.
pub(crate) struct LockedGroup<'a> {
    slots: &'a SlotTable,
    held: Vec<(u32, u32, u64)>,
    done: usize,
}

impl<'a> LockedGroup<'a> {
    pub(crate) fn new(slots: &'a SlotTable) -> LockedGroup<'a> {
        LockedGroup {
            slots,
            held: Vec::with_capacity(MOVE_GROUP),
            done: 0,
        }
    }

    /// Locks each record of `group` (index, generation, place) that still
    /// holds the place the scan saw; the previous group must be finished.
    pub(crate) fn lock(&mut self, group: &[(u32, u32, u64)]) {
        debug_assert_eq!(self.done, self.held.len(), "previous group still locked");
        self.held.clear();
        self.done = 0;
        let slots = self.slots;
        self.held
            .extend(group.iter().copied().filter(|&(index, generation, place)| {
                slots
                    .get(index)
                    .is_some_and(|slot| slot.lock_if_at(generation, place))
            }));
    }

    /// The locked records, in the order they are finished.
    pub(crate) fn held(&self) -> &[(u32, u32, u64)] {
        &self.held
    }

    /// Points the next locked record at its copy `new` and unlocks it;
    /// returns its old place (to retire).
    pub(crate) fn finish_next(&mut self, new: u64) -> u64 {
        let (index, generation, place) = self.held[self.done];
        self.done += 1;
        if let Some(slot) = self.slots.get(index) {
            slot.finish_move(generation, Some(new));
        }
        place
    }

    /// Unlocks every record not yet finished, unmoved.
    fn unlock_rest(&mut self) {
        while let Some(&(index, generation, _)) = self.held.get(self.done) {
            self.done += 1;
            if let Some(slot) = self.slots.get(index) {
                slot.finish_move(generation, None);
            }
        }
    }
}

impl Drop for LockedGroup<'_> {
    fn drop(&mut self) {
        self.unlock_rest();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(lives: &[u64]) -> Vec<(u64, SlabId)> {
        lives
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, SlabId(i as u32)))
            .collect()
    }

    /// The resident and live bytes after emptying the first `n`.
    fn after(s: &[(u64, SlabId)], slab: u64, n: usize) -> (u64, u64) {
        let live: u64 = s.iter().map(|x| x.0).sum();
        let resident = s.len() as u64 * slab - s[..n].iter().map(|x| slab - x.0).sum::<u64>();
        (resident, live)
    }

    #[test]
    fn the_waste_bound_takes_the_fewest_sparsest_slabs_that_meet_it() {
        let slab = 100;
        let policy = CompactionPolicy::default()
            .with_max_live_ratio(0.5)
            .with_max_waste_ratio(0.2);
        // Sorted sparsest first, as the slab arena lists them.
        let s = sealed(&[30, 55, 60, 65, 70, 75, 80, 85, 92, 95]);
        let n = waste_candidates(&s, slab, &policy);
        let (resident, live) = after(&s, slab, n);
        assert!((resident - live) as f64 <= 0.2 * resident as f64, "{n}");
        let (r1, l1) = after(&s, slab, n - 1);
        assert!((r1 - l1) as f64 > 0.2 * r1 as f64, "{n} is not the fewest");
        // Off: only those under max_live_ratio.
        assert_eq!(
            waste_candidates(&s, slab, &policy.with_max_waste_ratio(1.0)),
            1
        );
        // Never past WASTE_SLAB_MAX_LIVE, however high the waste.
        let tight = policy.with_max_waste_ratio(0.0);
        assert_eq!(waste_candidates(&s, slab, &tight), 8);
        // max_slabs caps both.
        assert_eq!(
            waste_candidates(&s, slab, &policy.with_max_slabs(2)),
            2.min(n)
        );
        // Dense already: nothing.
        assert_eq!(waste_candidates(&sealed(&[90, 95, 99]), slab, &policy), 0);
        assert_eq!(waste_candidates(&[], slab, &policy), 0);
        // Any policy a caller builds is an answer, never a panic: NaN is
        // off, a negative bound takes what the dense limit allows, live
        // counts past the slab (read while frees go on) saturate.
        assert_eq!(
            waste_candidates(&s, slab, &policy.with_max_waste_ratio(f64::NAN)),
            1
        );
        assert_eq!(
            waste_candidates(&s, slab, &policy.with_max_waste_ratio(-1.0)),
            8
        );
        let odd = sealed(&[10, 150, u64::MAX]);
        assert!(waste_candidates(&odd, slab, &policy.with_max_live_ratio(f64::NAN)) <= 3);
    }
}
