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
//! The move protocol (compaction): pin; lock the slot if it still holds
//! the place the scan saw (a CAS of its generation to `LOCKED`; a removed
//! or replaced record fails it and is skipped); copy the record into a
//! target slab; store the new place and unlock with a plain store; retire
//! the old place (freed once no reader pinned before can see it). Readers
//! pin before they load a place and ignore the lock, so whatever place they
//! load stays valid and unchanged while they hold the guard.
//!
//! Inserts and removes touch only the calling thread's state (see
//! `reclaim`) and one slot: an insert bumps in the thread's own slab, takes
//! a slot from its stash and publishes with plain stores; a remove is one
//! CAS of the slot's generation, and the place joins the thread's retired
//! batch.
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
//! 5. A handle's bits are `(index << 32 | generation) ^ id_salt`, the salt
//!    unique to this arena with the generation's parity bit clear: every
//!    handle this arena issues carries it, and another arena's handle
//!    decodes to a scrambled index and generation, which find nothing but
//!    by a coincidence of about one in 2^35 (and then a live record of this
//!    arena, never freed memory: slot invariant 2).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_epoch::Guard;
use ebb_core::sync::{AtomicU64, Ordering};
use ebb_slab::{SlabAddr, SlabAlloc, SlabArena, SlabConfig, SlabId, SlabStats};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::local::{Local, Shared, ThreadsReclaimed};
use crate::reclaim::{Reclaimer, Retired};
use crate::slots::{SlotTable, StashedSlot, pack, unpack};

/// The maintenance methods shared by [`TypedArena`](crate::TypedArena) and
/// [`BlobArena`](crate::BlobArena) (both wrap a `RawArena` named `raw`).
macro_rules! arena_maintenance {
    () => {
        /// Live records: the sum of every thread's count (a short lock and
        /// one load per thread that used the arena; exact when no insert or
        /// remove is in flight). For stats, not for a hot loop.
        pub fn len(&self) -> usize {
            self.raw.len()
        }

        /// True if no record is live.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// A snapshot of the arena and its slabs, flat (docs/metrics.md).
        pub fn stats(&self) -> $crate::ArenaStats {
            self.raw.stats()
        }

        /// Names the arena (the `arena` label of its metrics; default the
        /// [`SlabConfig`](ebb_slab::SlabConfig)'s name, `"default"`). Keep
        /// names few and stable. The slab arena underneath keeps the
        /// config's name.
        #[must_use]
        pub fn with_name(mut self, name: impl Into<String>) -> Self {
            self.raw.name = name.into();
            self
        }

        /// The instance name ([`with_name`](Self::with_name)).
        pub fn name(&self) -> &str {
            &self.raw.name
        }

        /// True if compacting under `policy` would reclaim at least
        /// `policy.min_reclaim_bytes` (walks the slab table; no record is
        /// touched).
        pub fn needs_compaction(&self, policy: &$crate::CompactionPolicy) -> bool {
            self.raw.needs_compaction(policy)
        }

        /// Moves the live records out of sealed slabs under
        /// `policy.max_live_ratio`, so those slabs empty and go back to the
        /// OS. Readers are never blocked; writers proceed concurrently. A
        /// cancelled token stops it before the next slab, with
        /// `cancelled: true` in the report.
        ///
        /// # Errors
        ///
        /// [`CompactionError::AlreadyRunning`]($crate::CompactionError::AlreadyRunning)
        /// at once if another compaction of this arena runs; `OverBudget`,
        /// `Os` when a target slab cannot be had; each leaves every record
        /// readable and the stats exact.
        pub fn compact(
            &self,
            policy: &$crate::CompactionPolicy,
            token: &$crate::CancellationToken,
        ) -> Result<$crate::CompactionReport, $crate::CompactionError> {
            self.raw.compact(policy, token)
        }

        /// The policy [`run_maintenance`](ebb_core::maintenance::Maintenance::run_maintenance)
        /// and [`maintenance_due`](ebb_core::maintenance::Maintenance::maintenance_due)
        /// use (default: [`CompactionPolicy::default`]($crate::CompactionPolicy)).
        pub fn compaction_policy(&self) -> $crate::CompactionPolicy {
            self.raw.policy.get()
        }

        /// Replaces that policy, at run time (a pressure controller
        /// tightens `max_live_ratio`). A ratio that is not finite keeps the
        /// default; others are clamped to `0..=1`.
        pub fn set_compaction_policy(&self, policy: $crate::CompactionPolicy) {
            self.raw.policy.set(policy);
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

        /// Reaches the arena state of other threads: every thread that is
        /// not inside an arena call right now (`all`), or only those that
        /// made none since the previous pass, has its slabs sealed (released
        /// at once if empty, compactable otherwise), its stashed slots
        /// returned and its retired records handed to the collector, so an
        /// idle thread pins no memory. Each compaction does this for idle
        /// threads. The threads notice nothing but a fresh slab at their
        /// next insert; a thread coming back meanwhile waits a few
        /// microseconds. Costs one `membarrier(2)` per call that finds a
        /// thread to take over; where the kernel has none, nothing is taken
        /// (`available` is false).
        pub fn reclaim_threads(&self, all: bool) -> $crate::ThreadsReclaimed {
            self.raw.reclaim_threads(all)
        }

        /// Releases every warm slab (empty slabs kept resident for reuse,
        /// up to `max_warm_slabs`) to the OS; returns the bytes released.
        /// For a pressure controller: reuse then costs a page fault again.
        pub fn release_warm_slabs(&self) -> u64 {
            self.raw.release_warm_slabs()
        }
    };
}

pub(crate) use arena_maintenance;

/// Compaction through the maintenance contract, under the arena's
/// run-time `compaction_policy()`, for either arena type.
macro_rules! impl_maintenance {
    ($ty:ty $(, $param:ident : $($bound:tt)+)?) => {
        impl$(<$param: $($bound)+>)? ebb_core::maintenance::Maintenance for $ty {
            fn maintenance_kind(&self) -> ebb_core::maintenance::MaintenanceKind {
                ebb_core::maintenance::MaintenanceKind::Arena
            }

            fn maintenance_due(&self) -> Option<ebb_core::maintenance::Due> {
                self.raw.maintenance_due()
            }

            fn run_maintenance(
                &self,
                token: &$crate::CancellationToken,
            ) -> Result<
                ebb_core::maintenance::MaintenanceReport,
                ebb_core::maintenance::MaintenanceError,
            > {
                self.raw.run_maintenance(token)
            }
        }
    };
}

pub(crate) use impl_maintenance;

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
    pub(crate) unsafe fn record_len(self, ptr: *const u8) -> usize {
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

/// A snapshot of an arena, flat plain data for metrics (docs/metrics.md
/// maps each field to its Prometheus metric).
///
/// Bytes are `*_bytes`, counters (only ever rising) `*_total`, other
/// counts are gauges. The slab fields are the [`SlabStats`] of the slab
/// arena underneath, copied flat (see [`slab_stats`](Self::slab_stats)),
/// exact when no insert, remove or compaction is in flight.
///
/// ```
/// use ebb_arena::BlobArena;
/// use ebb_slab::SlabConfig;
/// let arena = BlobArena::new(SlabConfig::default().with_slab_bytes(64 << 10))?
///     .with_name("values");
/// let _h = arena.insert(&[7u8; 12])?;
/// let s = arena.stats();
/// assert_eq!(s.name, "values");
/// assert_eq!((s.records, s.live_bytes, s.slabs_active), (1, 16, 1)); // 4-byte length prefix
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ArenaStats {
    /// The instance name (`with_name`; the `arena` label).
    pub name: String,
    /// Live records.
    pub records: u64,
    /// Bytes of live records (a blob's 4-byte length prefix included).
    pub live_bytes: u64,
    /// Bytes handed out by the slabs and not released, page-rounded per
    /// slab: what the arena holds resident once its records are written.
    pub resident_bytes: u64,
    /// Mapped address space: every slab, including released ones kept
    /// mapped for reuse, and dedicated large mappings.
    pub reserved_bytes: u64,
    /// Slabs being filled (one per shard at most, plus compaction targets).
    pub slabs_active: u64,
    /// Full slabs holding live records.
    pub slabs_sealed: u64,
    /// Empty slabs kept resident for immediate reuse.
    pub slabs_warm: u64,
    /// Empty slabs released to the OS and kept mapped for reuse.
    pub slabs_released: u64,
    /// Dedicated mappings of records over half a slab.
    pub large_mappings: u64,
    /// Slabs released to the OS since creation, and dedicated mappings
    /// unmapped.
    pub releases_total: u64,
    /// Releases whose `madvise` failed (the slab was unmapped instead).
    pub release_failures_total: u64,
    /// Retired places whose readers are gone, not yet freed.
    pub pending_frees: u64,
    /// Bytes of the handle table: 16 per handle ever issued, kept while
    /// the arena lives, since handles are stable.
    /// Charged to the arena's budget consumer with its slabs.
    pub slot_table_bytes: u64,
    /// Compactions run to completion or stopped.
    pub compactions_total: u64,
    /// Bytes moved by compactions since creation (was `bytes_moved_total`).
    pub moved_bytes_total: u64,
    /// Slabs emptied by compactions since creation (updated per slab, so it
    /// shows a running compaction's progress).
    pub slabs_compacted_total: u64,
}

impl ArenaStats {
    /// The slab-layer fields as a [`SlabStats`] (what `stats.slab` was
    /// before the stats went flat).
    pub fn slab_stats(&self) -> SlabStats {
        SlabStats {
            slabs_active: self.slabs_active,
            slabs_sealed: self.slabs_sealed,
            slabs_released: self.slabs_released,
            slabs_warm: self.slabs_warm,
            large_mappings: self.large_mappings,
            reserved_bytes: self.reserved_bytes,
            resident_bytes: self.resident_bytes,
            live_bytes: self.live_bytes,
            releases_total: self.releases_total,
            release_failures_total: self.release_failures_total,
        }
    }

    /// `1 - live / resident` ([`SlabStats::fragmentation`]).
    pub fn fragmentation(&self) -> f64 {
        self.slab_stats().fragmentation()
    }
}

/// The salt XORed into every handle of the arena with reclaimer uid `uid`
/// (invariant 5): splitmix64 of the uid, with the generation's parity bit
/// clear so that a salted generation is odd exactly when the slot's is.
fn identity(uid: u64) -> u64 {
    let mut z = uid.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z & !1
}

/// A full table: the thread's stash goes back to the shared free lists,
/// where other threads' inserts can reach it.
#[cold]
#[inline(never)]
fn return_stash(shared: &Shared, local: &mut Local) {
    for entry in local.free_slots.drain(..) {
        shared.slots.release(entry.index());
    }
}

pub(crate) struct RawArena {
    /// The salt every handle of this arena carries (invariant 5).
    id_salt: u64,
    /// The slab arena and the handle table, shared weakly with the threads'
    /// entries (see `reclaim`).
    pub(crate) shared: Arc<Shared>,
    pub(crate) reclaim: Reclaimer,
    pub(crate) format: RecordFormat,
    /// `slab_bytes - 1`: a slab allocation's offset is its address masked.
    pub(crate) offset_mask: usize,
    pub(crate) compactions: AtomicU64,
    pub(crate) bytes_moved: AtomicU64,
    /// Slabs emptied by compactions since creation, counted as they go.
    pub(crate) slabs_compacted: AtomicU64,
    /// Invariant 4.
    pub(crate) compacting: Mutex<()>,
    /// The policy maintenance runs under.
    pub(crate) policy: crate::compact::PolicyCell,
    /// The drainer's buffer, swapped with the ready queue's (no allocation
    /// in steady state); its lock also makes draining single-threaded.
    pub(crate) drain_scratch: Mutex<Vec<Vec<Retired>>>,
    /// The instance name (`with_name`, default the config's), a metric
    /// label.
    pub(crate) name: String,
}

/// Slabs of budget headroom an arena keeps for its compactions by default:
/// one target being filled and the next.
pub const DEFAULT_COMPACTION_HEADROOM_SLABS: usize = 2;

impl RawArena {
    pub fn new(config: SlabConfig, format: RecordFormat) -> Result<RawArena> {
        Self::with_slots(config, format, SlotTable::new())
    }

    /// An arena whose handle table hands out at most `limit` indices.
    #[cfg(test)]
    pub fn with_slot_limit(
        config: SlabConfig,
        format: RecordFormat,
        limit: u32,
    ) -> Result<RawArena> {
        Self::with_slots(config, format, SlotTable::with_limit(limit))
    }

    fn with_slots(config: SlabConfig, format: RecordFormat, slots: SlotTable) -> Result<RawArena> {
        // A compacting arena keeps room in the budget for its compaction's
        // target slabs unless told otherwise.
        let headroom = config
            .compaction_headroom_slabs()
            .unwrap_or(DEFAULT_COMPACTION_HEADROOM_SLABS);
        let name = config.name().to_owned();
        // The handle table is the arena's memory too: charged where its
        // slabs are.
        let slots = match config.budget() {
            Some((budget, consumer)) => slots.with_charge(budget.reservation(consumer)),
            None => slots,
        };
        let slab = SlabArena::new(config)?;
        slab.set_compaction_headroom_slabs(headroom);
        let offset_mask = slab.slab_bytes() - 1;
        let shared = Arc::new(Shared::new(slab, slots));
        let reclaim = Reclaimer::new(&shared);
        let id_salt = identity(reclaim.uid());
        Ok(RawArena {
            id_salt,
            reclaim,
            shared,
            format,
            offset_mask,
            compactions: AtomicU64::new(0),
            bytes_moved: AtomicU64::new(0),
            slabs_compacted: AtomicU64::new(0),
            compacting: Mutex::new(()),
            policy: crate::compact::PolicyCell::new(crate::CompactionPolicy::default()),
            drain_scratch: Mutex::new(Vec::new()),
            name,
        })
    }

    pub fn len(&self) -> usize {
        self.shared.len()
    }

    /// The bits of the handle of the record whose id is `id`,
    /// `index << 32 | generation`.
    #[inline]
    fn handle_bits(&self, id: u64) -> u64 {
        id ^ self.id_salt
    }

    /// The (index, generation) a handle's bits name in this arena
    /// (invariant 5). Bits of another arena decode to an index that is
    /// almost always past the table (15 in 16) or, if not, to a generation
    /// that matches the slot's about once in 2^31.
    #[inline]
    fn decode(&self, bits: u64) -> (u32, u32) {
        let raw = bits ^ self.id_salt;
        ((raw >> 32) as u32, raw as u32)
    }

    #[inline]
    pub(crate) fn slab(&self) -> &SlabArena {
        &self.shared.slab
    }

    #[inline]
    pub(crate) fn ptr_of(&self, place: u64) -> NonNull<u8> {
        let (slab, offset) = unpack(place);
        self.slab()
            .ptr_at(SlabAddr {
                slab: SlabId(slab),
                offset,
            })
            .expect("an occupied slot's place is a live allocation (invariant 3)")
    }

    /// The place of an allocation: a slab allocation's offset is its
    /// address masked (slabs are aligned to their size); a dedicated
    /// mapping's is 0.
    #[inline]
    pub(crate) fn place_of(&self, alloc: &SlabAlloc<'_>) -> u64 {
        let offset = if alloc.len() <= self.offset_mask.div_ceil(2) {
            alloc.as_ptr() as usize & self.offset_mask
        } else {
            0
        };
        pack(alloc.slab().0, offset as u32)
    }

    /// [`place_of`](Self::place_of) for an allocation known to be in a
    /// slab (not a dedicated mapping), as every allocation of
    /// `try_alloc_owned` is: its address masked, with no size test.
    #[inline]
    fn slab_place(&self, alloc: &SlabAlloc<'_>) -> u64 {
        debug_assert!(alloc.len() <= self.offset_mask.div_ceil(2));
        pack(
            alloc.slab().0,
            (alloc.as_ptr() as usize & self.offset_mask) as u32,
        )
    }

    /// Length of the record at `place`, which the caller owns (it took it
    /// out of its slot) or is pinned on.
    #[inline]
    fn record_len(&self, format: RecordFormat, place: u64) -> usize {
        match format {
            RecordFormat::Fixed { len, .. } => len,
            // SAFETY: the place is a published record not yet freed (the
            // caller's contract above, invariant 2).
            RecordFormat::Prefixed => unsafe { format.record_len(self.ptr_of(place).as_ptr()) },
        }
    }

    pub(crate) fn layout(&self, len: usize) -> Result<Layout> {
        Layout::from_size_align(len, self.format.align()).map_err(|_| Error::BlobTooLarge {
            len,
            max: u32::MAX as usize,
        })
    }

    /// Frees retired records: no slot references them and no reader can
    /// see them (invariant 2).
    fn free_retired(&self, runs: impl Iterator<Item = Retired>) {
        for run in runs {
            // SAFETY: each run sums allocations of this arena's slab arena
            // in `run.slab` (`into_raw` consumed their owners), which left
            // their slots and whose readers are gone (invariant 2); each is
            // retired, hence freed, once.
            unsafe { self.slab().free_bytes(SlabId(run.slab), run.bytes) };
        }
    }

    /// Frees the places whose readers are gone once at least
    /// `READY_BATCH` are waiting (`force`: any number). One thread drains at
    /// a time; others skip rather than wait.
    #[inline]
    pub fn drain_ready(&self, force: bool) {
        let waiting = self.reclaim.ready.len();
        if waiting == 0 || (!force && waiting < READY_BATCH) {
            return;
        }
        self.drain_ready_now();
    }

    #[cold]
    fn drain_ready_now(&self) {
        let Some(mut batch) = self.drain_scratch.try_lock() else {
            return;
        };
        self.reclaim.ready.swap_into(&mut batch);
        self.free_retired(batch.drain(..).flatten());
    }

    /// Stores a record of `len` bytes written by `write`, returns (index,
    /// generation).
    ///
    /// # Safety
    ///
    /// `write` must initialize the record's bytes as the format requires (a
    /// `T`, or the prefix and the blob), writing only inside `len` bytes
    /// from the pointer it is given (aligned to the format's alignment).
    #[inline]
    pub unsafe fn insert(
        &self,
        format: RecordFormat,
        len: usize,
        write: impl FnOnce(*mut u8),
    ) -> Result<u64> {
        let shared = &*self.shared;
        let align = format.align();
        // The fast path: a slot from this thread's stash, a bump in its own
        // slab, plain stores. Anything else hands `write` back for the slow
        // path, which can fail with an error.
        let fast = self.reclaim.with_local(|local| {
            let Some(entry) = local.free_slots.pop() else {
                return Err(write);
            };
            let alloc = Layout::from_size_align(len, align)
                .ok()
                .and_then(|layout| shared.slab.try_alloc_owned(&mut local.owned, layout));
            let Some(alloc) = alloc else {
                local.free_slots.push(entry);
                return Err(write);
            };
            write(alloc.as_ptr());
            // A bump in the thread's slab, never a dedicated mapping
            // (`try_alloc_owned` refuses sizes over half a slab).
            let place = self.slab_place(&alloc);
            Ok(self.handle_bits(self.publish(local, entry, alloc, place)))
        });
        match fast {
            Ok(bits) => Ok(bits),
            Err(write) => self
                .insert_slow(len, write)
                .map(|stored| self.handle_bits(stored)),
        }
    }

    /// Publishes a written record, at `place` (`alloc`'s), in a claimed
    /// vacant slot.
    #[inline]
    fn publish(
        &self,
        local: &mut Local,
        entry: StashedSlot,
        alloc: SlabAlloc<'_>,
        place: u64,
    ) -> u64 {
        debug_assert_eq!(place, self.place_of(&alloc));
        let _ = alloc.into_raw(); // owned by the slot from here on
        // SAFETY: `entry` came out of this thread's stash for this arena
        // (claimed by no one else), from this arena's table, alive while
        // `self` is.
        let stored = unsafe { entry.publish(place) };
        local.add_records(1);
        stored
    }

    /// `insert` when the fast path does not apply: a new slab, a fresh
    /// block of slots, a record over half a slab, or an error.
    #[cold]
    #[inline(never)]
    fn insert_slow(&self, len: usize, write: impl FnOnce(*mut u8)) -> Result<u64> {
        let layout = self.layout(len)?;
        let shared = &*self.shared;
        let stored = self.reclaim.with_local(|local| {
            let alloc = shared.slab.alloc_owned(&mut local.owned, layout)?;
            let Some(entry) = local.free_slots.pop().or_else(|| self.claim_slot(local)) else {
                let _ = shared.slab.free(alloc);
                return Err(Error::TooManyRecords {
                    max: shared.slots.limit(),
                });
            };
            write(alloc.as_ptr());
            let place = self.place_of(&alloc);
            Ok(self.publish(local, entry, alloc, place))
        });
        // The slow path is also where a thread that only inserts frees
        // what other threads' batches made ready.
        self.drain_ready(false);
        stored
    }

    /// A vacant slot (a stash entry) when this thread's stash is empty: the
    /// free lists, or a fresh block (its first index, the rest stashed).
    #[cold]
    fn claim_slot(&self, local: &mut Local) -> Option<StashedSlot> {
        let slots = &self.shared.slots;
        if let Some(i) = slots.claim_free() {
            let slot = slots.get(i)?;
            return Some(StashedSlot::new(i, slot.vacant_generation(), slot));
        }
        // Never used: zeroed, generation 0 (slot invariant 1).
        let mut block = slots
            .grow_block(SLOT_BLOCK)
            .filter_map(|i| Some(StashedSlot::new(i, 0, slots.get(i)?)));
        let first = block.next()?;
        local.free_slots.extend(block);
        Some(first)
    }

    /// Pins and returns a pointer to the record, if the handle is current.
    #[inline]
    pub fn read(&self, bits: u64) -> Option<(Guard, NonNull<u8>)> {
        let (index, generation) = self.decode(bits);
        let slot = self.shared.slots.get(index)?;
        // Pin before loading the place, so it cannot be freed under us.
        let guard = self.reclaim.pin();
        let place = slot.read(generation)?;
        Some((guard, self.ptr_of(place)))
    }

    /// Visits up to `max` live records from slot `*cursor` on, under one
    /// pin, calling `f(handle bits, place)`; moves `*cursor` past the slots
    /// it looked at. Returns the records visited. Each index is looked at
    /// once per pass, so a record live from the start of a pass until the
    /// cursor reaches it is visited exactly once; one inserted or removed
    /// meanwhile may or may not be. `f` runs pinned and outside the thread's
    /// entry, so it may call back into the arena.
    pub fn scan_chunk(
        &self,
        cursor: &mut u32,
        max: usize,
        mut f: impl FnMut(u64, NonNull<u8>),
    ) -> usize {
        let slots = &self.shared.slots;
        let _guard = self.reclaim.pin();
        let end = slots.high_water();
        let mut visited = 0;
        while *cursor < end && visited < max {
            let index = *cursor;
            *cursor += 1;
            let Some(slot) = slots.get(index) else {
                continue;
            };
            let Some((generation, _)) = slot.occupied() else {
                continue;
            };
            // Re-read under the pin: the place is valid until we unpin.
            let Some(place) = slot.read(generation) else {
                continue;
            };
            f(
                self.handle_bits((u64::from(index) << 32) | u64::from(generation)),
                self.ptr_of(place),
            );
            visited += 1;
        }
        visited
    }

    /// True once `cursor` has passed every slot ever claimed.
    pub fn scan_done(&self, cursor: u32) -> bool {
        cursor >= self.shared.slots.high_water()
    }

    #[inline]
    pub fn remove(&self, format: RecordFormat, bits: u64) -> bool {
        let (index, generation) = self.decode(bits);
        let shared = &*self.shared;
        let Some(slot) = shared.slots.get(index) else {
            return false;
        };
        let Some(place) = slot.remove(generation) else {
            return false;
        };
        // Ours now: no one else frees it (slot invariant 3).
        let bytes = self.record_len(format, place);
        let deferred = self.reclaim.with_local(|local| {
            // Stashed while there is room and the table is not exhausted
            // (one compare: the limit is 0 once it is).
            if local.free_slots.len() < shared.slots.stash_limit() {
                local
                    .free_slots
                    .push(StashedSlot::vacated(bits ^ self.id_salt, slot));
            } else {
                shared.slots.release(index);
                if shared.slots.is_exhausted() {
                    return_stash(shared, local);
                }
            }
            local.add_records(-1);
            local.retire(unpack(place).0, bytes)
        });
        if deferred {
            self.drain_ready(false);
        }
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
        format: RecordFormat,
        bits: u64,
        len: usize,
        write: impl FnOnce(*mut u8),
    ) -> Result<bool> {
        let (index, generation) = self.decode(bits);
        if generation & 1 == 0 {
            return Ok(false);
        }
        let shared = &*self.shared;
        let Some(slot) = shared.slots.get(index) else {
            return Ok(false);
        };
        let layout = self.layout(len)?;
        let replaced = self.reclaim.with_local(|local| {
            let alloc = shared.slab.alloc_owned(&mut local.owned, layout)?;
            write(alloc.as_ptr());
            let new_place = self.place_of(&alloc);
            let raw = alloc.into_raw();
            match slot.replace(generation, new_place) {
                Some(old) => {
                    // Ours now, as in `remove`; the queue is drained below.
                    let _ = local.retire(unpack(old).0, self.record_len(format, old));
                    Ok(true)
                }
                None => {
                    // Never published: free at once.
                    // SAFETY: `raw` is this arena's allocation, rebuilt once.
                    let _ = shared.slab.free(unsafe { shared.slab.from_raw(raw) });
                    Ok(false)
                }
            }
        });
        self.drain_ready(false);
        replaced
    }

    pub fn stats(&self) -> ArenaStats {
        let slab = self.slab().stats();
        ArenaStats {
            name: self.name.clone(),
            records: self.len() as u64,
            live_bytes: slab.live_bytes,
            resident_bytes: slab.resident_bytes,
            reserved_bytes: slab.reserved_bytes,
            slabs_active: slab.slabs_active,
            slabs_sealed: slab.slabs_sealed,
            slabs_warm: slab.slabs_warm,
            slabs_released: slab.slabs_released,
            large_mappings: slab.large_mappings,
            releases_total: slab.releases_total,
            release_failures_total: slab.release_failures_total,
            pending_frees: self.reclaim.ready.len() as u64,
            slot_table_bytes: self.shared.slots.heap_bytes(),
            compactions_total: self.compactions.load(Ordering::Relaxed),
            moved_bytes_total: self.bytes_moved.load(Ordering::Relaxed),
            slabs_compacted_total: self.slabs_compacted.load(Ordering::Relaxed),
        }
    }

    pub fn kernel_resident_bytes(&self) -> Result<u64> {
        Ok(self.slab().kernel_resident_bytes()?)
    }

    /// See the arenas' `release_warm_slabs`.
    pub fn release_warm_slabs(&self) -> u64 {
        self.slab().release_warm_slabs()
    }

    /// Takes over the state of threads outside the arena (see
    /// `local`): their slabs are sealed (released at once if empty,
    /// compactable otherwise), their stashed slots go back to the free
    /// lists and their retired batches to the collector. `all`: every such
    /// thread; otherwise only those idle since the previous pass.
    pub fn reclaim_threads(&self, all: bool) -> ThreadsReclaimed {
        let shared = &*self.shared;
        let (report, taken) = self.reclaim.take_over_threads(all);
        if taken.is_empty() {
            return report;
        }
        // Outside the registry lock: sealing may release slabs (and log),
        // and pinning may register this thread.
        let guard = self.reclaim.pin();
        for mut state in taken {
            shared.slab.seal_owned(&mut state.owned);
            for entry in state.free_slots.drain(..) {
                shared.slots.release(entry.index());
            }
            self.reclaim.retire_batch(&guard, state.retired);
        }
        drop(guard);
        self.reclaim_now();
        tracing::debug!(
            threads = report.threads,
            taken = report.taken,
            "idle threads' arena state taken over"
        );
        report
    }

    /// Flushes deferred frees and frees what became ready.
    pub fn reclaim_now(&self) {
        // Enough rounds for the epoch to advance past everything retired
        // (it needs two advances) even when another thread pins meanwhile.
        self.reclaim.flush(8);
        self.drain_ready(true);
    }
}

impl Drop for RawArena {
    fn drop(&mut self) {
        // Pending frees need no work: the slab arena unmaps everything as it
        // drops. Deferred functions still queued in the collector only push
        // onto the orphaned ready queue.
        tracing::debug!(records = self.len(), "arena dropped");
    }
}
