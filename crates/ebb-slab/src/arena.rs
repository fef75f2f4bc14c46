//! [`SlabArena`]: shards, bump allocation, seal, release, reuse.
//!
//! ```text
//!   alloc ──► thread's home shard ──► ShardLock ──► active slab (bump)
//!                                         │ full
//!                                         ▼
//!                     seal: LiveCounter::seal(allocated) ─► 0? release
//!   free  ──► table[slab].live.free(len) ─► 0 and sealed? release
//!   release: warm (≤ max_warm, resident) or madvise(DONTNEED | FREE)
//!            ─► retained (≤ max_retained) or unmapped
//!   new slab: pop warm, else retained, else budget.try_grow + mmap
//! ```
//!
//! Invariants (cited as "invariant N" below):
//!
//! 1. A slab holding a live allocation is never released, reused or
//!    unmapped: release happens only when its [`LiveCounter`] reaches zero
//!    after its seal, so the bytes of every live [`SlabAlloc`] stay mapped
//!    and untouched by the arena.
//! 2. Each live allocation is owned by exactly one [`SlabAlloc`] (not
//!    `Clone`), which borrows the arena, so its bytes cannot outlive it.
//! 3. Allocations in one slab never overlap: the owner of an active slab
//!    (a shard under its lock, or one [`TargetSlab`]) is the only one that
//!    moves its cursor, and only forward, until every allocation in it has
//!    been freed.
//! 4. Slab mappings are aligned to `slab_bytes`, so an allocation's offset in
//!    its slab is `ptr & (slab_bytes - 1)`.

use std::alloc::Layout;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::active::bump;
use crate::alloc::{RawSlabAlloc, SlabAlloc};
use crate::config::{HugePages, ReleaseMode, SlabConfig};
use crate::pool::SlabPool;
use crate::shard::Shard;
use crate::stats::SlabStats;
use crate::table::{
    STATE_ACTIVE, STATE_LARGE, STATE_RELEASED, STATE_SEALED, STATE_WARM, SlabEntry, SlabTable,
};
use crate::{Error, Result};
use ebb_core::Reservation;
use ebb_core::os;
use ebb_core::sync::{AtomicU64, AtomicUsize, Ordering};

/// The next arena id. Ids are never reused: an [`OwnedSlab`](crate::OwnedSlab)
/// carries its arena's id and must never match a later arena
/// (`owned` invariant 1), so ids are handed out until they run out, then
/// `new` refuses ([`Error::ArenaIdsExhausted`]) rather than wrap.
/// Process-wide (std's atomic, not the shim's: a static needs a const
/// constructor, and the id counter is not loom-modelled state).
static NEXT_ARENA_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A fresh arena id, or `None` once every id has been handed out.
fn next_arena_id() -> Option<u32> {
    NEXT_ARENA_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .ok()
}

/// The index of a slab (or dedicated mapping) in its arena's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlabId(pub u32);

/// Where an allocation lives: its slab and its offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlabAddr {
    /// The slab.
    pub slab: SlabId,
    /// Byte offset from the slab's start.
    pub offset: u32,
}

/// The state of a slab, as [`SlabArena::slab_info`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlabState {
    /// Being filled by a shard or a compaction target.
    Active,
    /// Full, holding live allocations.
    Sealed,
    /// Empty, released to the OS, kept mapped for reuse.
    Released,
    /// Empty, kept resident for immediate reuse (`max_warm_slabs`).
    Warm,
    /// A dedicated mapping for one large allocation.
    Large,
}

/// What [`SlabArena::slab_info`] knows of a slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabInfo {
    /// Its state.
    pub state: SlabState,
    /// Live bytes (`None` while active: the owner has not published them).
    pub live_bytes: Option<u64>,
    /// Mapping length.
    pub len: usize,
}

/// Memory in fixed-size mmap'd slabs, bump-allocated, with exact live
/// accounting, each slab handed back to the OS the moment it is empty.
///
/// See the crate docs for the design and its invariants.
///
/// ```
/// use std::alloc::Layout;
/// use ebb_slab::{SlabArena, SlabConfig};
///
/// let arena = SlabArena::new(SlabConfig::default().with_slab_bytes(64 << 10))?;
/// let layout = Layout::from_size_align(1000, 8)?;
/// let allocs: Vec<_> = (0..200).map(|_| arena.alloc(layout)).collect::<Result<_, _>>()?;
/// assert_eq!(arena.stats().live_bytes, 200_000);
/// for a in allocs {
///     arena.free(a)?;
/// }
/// let stats = arena.stats();
/// assert_eq!(stats.live_bytes, 0);
/// assert!(stats.releases_total >= 2); // full slabs went back to the OS
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SlabArena {
    pub(crate) id: u32,
    pub(crate) slab_bytes: usize,
    /// Allocations above this get a dedicated mapping.
    pub(crate) large_threshold: usize,
    pub(crate) max_retained_slabs: usize,
    pub(crate) max_warm_slabs: usize,
    /// Extra warm slabs allowed while a compaction runs, so the slabs it
    /// empties become its next targets without a release and a refault.
    pub(crate) extra_warm_slabs: AtomicUsize,
    pub(crate) release_mode: ReleaseMode,
    pub(crate) huge_pages: HugePages,
    pub(crate) page: usize,
    pub(crate) table: SlabTable,
    pub(crate) shards: Box<[CachePadded<Shard>]>,
    pub(crate) pool: Mutex<SlabPool>,
    /// Slabs given back to the OS (madvise or unmap) since creation.
    pub(crate) releases: AtomicU64,
    /// Releases whose madvise failed (the slab was unmapped instead).
    pub(crate) release_failures: AtomicU64,
    pub(crate) reservation: Option<Reservation>,
    /// The arena id (high 32 bits) and a seal epoch (low 32 bits), bumped by
    /// [`seal_active_slabs`](SlabArena::seal_active_slabs):
    /// [`OwnedSlab`](crate::OwnedSlab)s carry the key they were made or last
    /// refilled under; one compare on their fast path checks both that they
    /// belong here and that no seal was asked since.
    pub(crate) owned_key: AtomicU64,
    /// The instance name ([`SlabConfig::with_name`]), a metric label.
    pub(crate) name: String,
}

impl std::fmt::Debug for SlabArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlabArena")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("slab_bytes", &self.slab_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl SlabArena {
    /// Makes an arena. No memory is mapped until the first allocation.
    ///
    /// # Errors
    ///
    /// [`Error::BadConfig`] if `slab_bytes` is not a power of two between a
    /// page and 1 GiB, or `shards` is 0; [`Error::ArenaIdsExhausted`] after
    /// 2^32 - 2 arenas in one process.
    pub fn new(config: SlabConfig) -> Result<SlabArena> {
        let page = os::page_size();
        let slab_bytes = config.slab_bytes;
        if !slab_bytes.is_power_of_two()
            || slab_bytes < page
            || slab_bytes > SlabConfig::MAX_SLAB_BYTES
        {
            return Err(Error::BadConfig(format!(
                "slab_bytes {slab_bytes} must be a power of two in {page}..={}",
                SlabConfig::MAX_SLAB_BYTES
            )));
        }
        if config.shards == 0 {
            return Err(Error::BadConfig("shards must be at least 1".into()));
        }
        // A power of two, so picking a thread's shard is a mask, not a
        // division.
        let shards = config
            .shards
            .min(SlabConfig::MAX_SHARDS)
            .next_power_of_two();
        let id = next_arena_id().ok_or(Error::ArenaIdsExhausted {
            max: u64::from(u32::MAX - 1),
        })?;
        let arena = SlabArena {
            id,
            slab_bytes,
            large_threshold: slab_bytes / 2,
            max_retained_slabs: config.max_retained_slabs,
            max_warm_slabs: config.max_warm_slabs,
            extra_warm_slabs: AtomicUsize::new(0),
            release_mode: config.release_mode,
            huge_pages: config.huge_pages,
            page,
            table: SlabTable::new(),
            shards: (0..shards)
                .map(|_| CachePadded::new(Shard::new()))
                .collect(),
            pool: Mutex::new(SlabPool::default()),
            releases: AtomicU64::new(0),
            release_failures: AtomicU64::new(0),
            reservation: config
                .budget
                .as_ref()
                .map(|(budget, name)| budget.reservation(name.clone())),
            owned_key: AtomicU64::new(0),
            name: config.name,
        };
        arena
            .owned_key
            .store(u64::from(arena.id) << 32, Ordering::Relaxed);
        arena.set_compaction_headroom_slabs(config.compaction_headroom_slabs.unwrap_or(0));
        tracing::debug!(
            arena = arena.id,
            name = %arena.name,
            slab_bytes,
            shards,
            max_retained_slabs = arena.max_retained_slabs,
            max_warm_slabs = arena.max_warm_slabs,
            release_mode = ?arena.release_mode,
            huge_pages = ?arena.huge_pages,
            budgeted = arena.reservation.is_some(),
            "slab arena created"
        );
        Ok(arena)
    }

    /// The instance name ([`SlabConfig::with_name`]), the `arena` label of
    /// its metrics; [`SlabStats`] stays `Copy` and does not carry it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes per slab.
    pub fn slab_bytes(&self) -> usize {
        self.slab_bytes
    }

    /// Keeps `slabs` slabs of the budget's headroom for this arena's
    /// compactions (see
    /// [`SlabConfig::with_compaction_headroom_slabs`]); a no-op without a
    /// budget.
    pub fn set_compaction_headroom_slabs(&self, slabs: usize) {
        if let Some(r) = &self.reservation {
            r.set_headroom((slabs as u64).saturating_mul(self.slab_bytes as u64));
        }
    }

    /// The budget reservation this arena charges, if it has one.
    pub fn reservation(&self) -> Option<&Reservation> {
        self.reservation.as_ref()
    }

    /// Allocates `layout.size()` bytes aligned to `layout.align()`.
    ///
    /// Sizes up to half a slab are bump-allocated in the calling thread's
    /// shard; larger ones get a mapping of their own, unmapped by their
    /// free.
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`], [`Error::BadLayout`], [`Error::BudgetExceeded`]
    /// when a new slab would pass the budget, [`Error::Os`] when `mmap`
    /// fails, [`Error::TooManySlabs`]. A failed call allocates nothing.
    #[inline]
    pub fn alloc(&self, layout: Layout) -> Result<SlabAlloc<'_>> {
        let size = layout.size();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size > self.large_threshold || layout.align() > self.large_threshold {
            return self.alloc_large(layout);
        }
        let mut shard = self.lock_shard();
        loop {
            if let Some(active) = shard.as_mut()
                && let Some(ptr) = bump(active, size, layout.align(), self.slab_bytes, self.page)
            {
                let id = active.id;
                drop(shard);
                return Ok(self.make_alloc(ptr, size, id));
            }
            self.refill(&mut shard)?;
        }
    }

    /// Gives an allocation back. If it was the last live allocation of a
    /// sealed slab, the slab is released before this returns (RSS falls
    /// inside the call in [`ReleaseMode::DontNeed`]).
    ///
    /// # Errors
    ///
    /// [`Error::ForeignAllocation`] if `alloc` came from another arena
    /// (nothing is freed then).
    #[inline]
    pub fn free(&self, alloc: SlabAlloc<'_>) -> Result<()> {
        if alloc.arena != self.id {
            return Err(Error::ForeignAllocation);
        }
        self.free_parts(alloc.slab.0, alloc.len);
        Ok(())
    }

    /// Rebuilds the owner of an allocation from its raw parts.
    ///
    /// # Safety
    ///
    /// - `raw` came from [`SlabAlloc::into_raw`] of an allocation of *this*
    ///   arena, and
    /// - no other `SlabAlloc` rebuilt from the same parts is live, and the
    ///   allocation has not been freed since (so ownership stays unique,
    ///   invariant 2).
    pub unsafe fn from_raw(&self, raw: RawSlabAlloc) -> SlabAlloc<'_> {
        self.make_alloc(raw.ptr, raw.len, raw.slab.0)
    }

    /// The slab and offset of an allocation.
    pub fn addr_of(&self, alloc: &RawSlabAlloc) -> SlabAddr {
        let offset = match self
            .table
            .get(alloc.slab.0)
            .map(|e| e.base.load(Ordering::Acquire))
        {
            Some(base) if !base.is_null() => {
                (alloc.ptr.as_ptr() as usize).wrapping_sub(base as usize)
            }
            // By invariant 4 the offset of a slab allocation is its low bits.
            _ => alloc.ptr.as_ptr() as usize & (self.slab_bytes - 1),
        };
        SlabAddr {
            slab: alloc.slab,
            offset: offset as u32,
        }
    }

    /// The address of `offset` in `slab`, if the slab is mapped and the
    /// offset inside it. Dereferencing it is up to the caller's own
    /// guarantees (a live allocation there).
    pub fn ptr_at(&self, addr: SlabAddr) -> Option<NonNull<u8>> {
        let entry = self.table.get(addr.slab.0)?;
        let base = entry.base.load(Ordering::Acquire);
        let len = entry.len.load(Ordering::Acquire);
        if base.is_null() || addr.offset as usize >= len {
            return None;
        }
        NonNull::new(base.wrapping_add(addr.offset as usize))
    }

    /// The slab and offset holding `ptr`, if it points into one of this
    /// arena's mappings (slow: takes the pool lock; for diagnostics and the
    /// layers above, not per access).
    pub fn slab_of(&self, ptr: *const u8) -> Option<SlabAddr> {
        let addr = ptr as usize;
        let pool = self.pool.lock();
        let (&start, &(id, len)) = pool.by_addr.range(..=addr).next_back()?;
        (addr < start + len).then_some(SlabAddr {
            slab: SlabId(id),
            offset: (addr - start) as u32,
        })
    }

    /// What is known of one slab; `None` for an unused id.
    pub fn slab_info(&self, id: SlabId) -> Option<SlabInfo> {
        let entry = self.table.get(id.0)?;
        let state = match entry.state.load(Ordering::Acquire) {
            STATE_ACTIVE => SlabState::Active,
            STATE_SEALED => SlabState::Sealed,
            STATE_RELEASED => SlabState::Released,
            STATE_WARM => SlabState::Warm,
            STATE_LARGE => SlabState::Large,
            _ => return None,
        };
        Some(SlabInfo {
            state,
            live_bytes: entry.live.sealed_live_bytes(),
            len: entry.len.load(Ordering::Acquire),
        })
    }

    /// Sealed slabs whose live bytes are under `max_live_ratio` of the slab,
    /// sparsest first: the candidates for compaction.
    ///
    /// Advisory: a slab listed may be released by a concurrent free before
    /// the caller looks at it (callers re-check with
    /// [`slab_info`](Self::slab_info)).
    pub fn sparse_slabs(&self, max_live_ratio: f64) -> Vec<SlabId> {
        let limit = (self.slab_bytes as f64 * max_live_ratio) as u64;
        self.sealed_slabs_by_live()
            .into_iter()
            .take_while(|(live, _)| *live < limit)
            .map(|(_, id)| id)
            .collect()
    }

    /// Every sealed slab that holds live bytes, with its live bytes,
    /// sparsest first (a compaction policy that looks at the arena's waste
    /// as a whole picks from the front). Advisory like
    /// [`sparse_slabs`](Self::sparse_slabs).
    pub fn sealed_slabs_by_live(&self) -> Vec<(u64, SlabId)> {
        let mut found: Vec<(u64, SlabId)> = self
            .table
            .entries()
            .filter(|(_, e)| e.state.load(Ordering::Acquire) == STATE_SEALED)
            .filter_map(|(id, e)| e.live.sealed_live_bytes().map(|l| (l, SlabId(id))))
            .filter(|(live, _)| *live > 0)
            .collect();
        found.sort_unstable_by_key(|(live, id)| (*live, id.0));
        found
    }

    /// Seals every shard's active slab, releasing those already empty.
    /// For shutdown, tests, and a pressure controller that wants every
    /// empty byte back; later allocations start new slabs.
    pub fn seal_active_slabs(&self) {
        let _ = self
            .owned_key
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |key| {
                // The epoch wraps inside the low half; the id stays.
                Some((key & !0xFFFF_FFFF) | u64::from((key as u32).wrapping_add(1)))
            });
        for shard in self.shards.iter() {
            let mut guard = shard.lock();
            if let Some(active) = guard.take() {
                self.seal(active);
            }
        }
    }

    /// A snapshot of the arena's accounting; see [`SlabStats`]. Walks the
    /// slab table (one cache line per slab): microseconds for thousands of
    /// slabs, fit for every scrape, and nothing on the alloc/free paths.
    pub fn stats(&self) -> SlabStats {
        let mut s = SlabStats::default();
        for (_, e) in self.table.entries() {
            let len = e.len.load(Ordering::Relaxed) as u64;
            let touched = e.touched.load(Ordering::Relaxed) as u64;
            match e.state.load(Ordering::Acquire) {
                STATE_ACTIVE => {
                    s.slabs_active += 1;
                    s.resident_bytes += touched;
                    s.live_bytes += e.live.live_bytes(e.allocated.load(Ordering::Relaxed));
                }
                STATE_SEALED => {
                    s.slabs_sealed += 1;
                    s.resident_bytes += touched;
                    s.live_bytes += e.live.live_bytes(0);
                }
                STATE_WARM => {
                    s.slabs_warm += 1;
                    s.resident_bytes += touched;
                }
                STATE_RELEASED => s.slabs_released += 1,
                STATE_LARGE => {
                    s.large_mappings += 1;
                    s.resident_bytes += len;
                    s.live_bytes += e.live.live_bytes(0);
                }
                _ => continue,
            }
            s.reserved_bytes += len;
        }
        s.releases_total = self.releases.load(Ordering::Relaxed);
        s.release_failures_total = self.release_failures.load(Ordering::Relaxed);
        s
    }

    /// Slabs released since the arena was made: one atomic load, for a
    /// caller that wants to know whether its last free released a slab.
    pub fn releases_total(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Bytes of this arena's mappings resident according to the kernel
    /// (`mincore` over every mapping). Slow: for tests and reports.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `mincore` fails.
    pub fn kernel_resident_bytes(&self) -> Result<u64> {
        let ranges: Vec<(usize, usize)> = self
            .pool
            .lock()
            .by_addr
            .iter()
            .map(|(s, (_, l))| (*s, *l))
            .collect();
        let mut total = 0u64;
        for (start, len) in ranges {
            total += os::resident_bytes(start as *const u8, len)? as u64;
        }
        Ok(total)
    }

    // ---- internals -------------------------------------------------------

    #[inline]
    pub(crate) fn make_alloc(&self, ptr: NonNull<u8>, len: usize, slab: u32) -> SlabAlloc<'_> {
        SlabAlloc {
            ptr,
            len,
            slab: SlabId(slab),
            arena: self.id,
            _arena: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn free_parts(&self, slab: u32, len: usize) {
        let Some(entry) = self.table.get(slab) else {
            debug_assert!(false, "free of an allocation whose slab does not exist");
            return;
        };
        if entry.state.load(Ordering::Relaxed) == STATE_LARGE {
            self.free_large(slab, entry, len);
            return;
        }
        if entry.live.free(len as u64) {
            self.release(slab, entry);
        }
    }

    pub(crate) fn entry(&self, id: u32) -> &SlabEntry {
        // Ids of active slabs always have entries (table invariant 2).
        self.table.get(id).expect("active slab id has an entry")
    }
}

impl Drop for SlabArena {
    fn drop(&mut self) {
        let stats = self.stats();
        tracing::debug!(
            arena = self.id,
            live_bytes = stats.live_bytes,
            reserved_bytes = stats.reserved_bytes,
            "slab arena dropped"
        );
        // The mappings unmap as the table drops, and the reservation gives
        // its bytes back to the budget as it drops.
    }
}
