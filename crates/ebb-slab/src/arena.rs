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
use std::cell::{Cell, UnsafeCell};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::config::{HugePages, ReleaseMode, SlabConfig};
use crate::stats::SlabStats;
use crate::table::{
    MAX_SLABS, STATE_ACTIVE, STATE_LARGE, STATE_RELEASED, STATE_SEALED, STATE_UNUSED, STATE_WARM,
    SlabEntry, SlabTable,
};
use crate::{Error, Result};
use ebb_core::Reservation;
use ebb_core::os::{self, Advice, Mapping};

/// The next arena id. Ids are never reused: an [`OwnedSlab`](crate::OwnedSlab)
/// carries its arena's id and must never match a later arena
/// (`owned` invariant 1), so ids are handed out until they run out, then
/// `new` refuses ([`Error::ArenaIdsExhausted`]) rather than wrap.
static NEXT_ARENA_ID: AtomicU32 = AtomicU32::new(1);

/// A fresh arena id, or `None` once every id has been handed out.
fn next_arena_id() -> Option<u32> {
    NEXT_ARENA_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| id.checked_add(1))
        .ok()
}
static NEXT_THREAD_SLOT: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// This thread's preferred shard index (before `% shards`). Moves on
    /// when the shard is found contended, so threads spread out.
    static THREAD_SLOT: Cell<u32> = const { Cell::new(u32::MAX) };
}

#[inline]
fn thread_slot() -> u32 {
    THREAD_SLOT.with(|s| {
        let v = s.get();
        if v != u32::MAX {
            return v;
        }
        let v = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed) & (u32::MAX >> 1);
        s.set(v);
        v
    })
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

/// One allocation of a [`SlabArena`]: the only handle to its bytes
/// (invariant 2). Give it back with [`SlabArena::free`]; dropping it without
/// freeing leaks the bytes until the arena is dropped.
///
/// ```
/// use std::alloc::Layout;
/// use ebb_slab::{SlabArena, SlabConfig};
///
/// let arena = SlabArena::new(SlabConfig::default())?;
/// let mut a = arena.alloc(Layout::from_size_align(100, 8)?)?;
/// a.as_mut_slice().fill(7);
/// assert_eq!(a.as_slice()[99], 7);
/// arena.free(a)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "an allocation not given back to `SlabArena::free` stays live until the arena drops"]
pub struct SlabAlloc<'a> {
    ptr: NonNull<u8>,
    len: usize,
    slab: SlabId,
    arena: u32,
    _arena: PhantomData<&'a SlabArena>,
}

// SAFETY: a `SlabAlloc` is unique ownership of `len` bytes of plain memory
// (invariant 2), like a `Box<[u8]>`; nothing in it is tied to a thread.
unsafe impl Send for SlabAlloc<'_> {}
// SAFETY: `&SlabAlloc` only gives `&[u8]`, which is `Sync`.
unsafe impl Sync for SlabAlloc<'_> {}

impl SlabAlloc<'_> {
    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes (the layout's size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: zero-size allocations are refused.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The slab holding it.
    pub fn slab(&self) -> SlabId {
        self.slab
    }

    /// The bytes. Fresh slab memory reads as zeroes; reused memory may
    /// hold bytes of earlier allocations.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY:
        // - `ptr..ptr + len` is inside a mapping that stays mapped while
        //   this allocation is live (invariant 1) and the arena outlives
        //   `self` (the `'a` borrow);
        // - no `&mut` to these bytes exists: the only way to one is
        //   `as_mut_slice(&mut self)` (invariant 2);
        // - mapped anonymous memory is initialized (zero, or bytes written
        //   earlier through these same accessors).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only
        // reference to the bytes (invariant 2).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Turns the allocation into plain parts, for a layer above (an arena
    /// with handles) that stores places compactly. Bring it back with
    /// [`SlabArena::from_raw`] to free it.
    pub fn into_raw(self) -> RawSlabAlloc {
        RawSlabAlloc {
            ptr: self.ptr,
            len: self.len,
            slab: self.slab,
        }
    }
}

/// The plain parts of a [`SlabAlloc`]: `Copy`, no lifetime. Only
/// [`SlabArena::from_raw`] (unsafe) turns it back into an owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawSlabAlloc {
    /// The first byte.
    pub ptr: NonNull<u8>,
    /// Length in bytes.
    pub len: usize,
    /// The slab holding it.
    pub slab: SlabId,
}

// SAFETY: plain data (an address, a length, an id); using the address
// needs `unsafe` and the guarantees of `SlabArena::from_raw`.
unsafe impl Send for RawSlabAlloc {}
// SAFETY: as for `Send`.
unsafe impl Sync for RawSlabAlloc {}

/// The slab a shard (or a compaction target) is filling.
pub(crate) struct ActiveSlab {
    pub(crate) id: u32,
    base: NonNull<u8>,
    /// The slab's table entry (stable for the table's life, table
    /// invariant 1).
    entry: NonNull<SlabEntry>,
    /// Next free offset.
    pub(crate) cursor: usize,
    /// Bytes allocated into this slab, published at seal (see `live`).
    pub(crate) allocated: u64,
    /// Page-rounded high-water mark of the cursor.
    touched: usize,
    /// Write a byte of each page the cursor enters past `touched` before
    /// handing out memory there ([`ReleaseMode::Free`]: that page may have
    /// been lazily freed, and only a write stops the kernel from zeroing it
    /// later, under a live reference).
    touch_new_pages: bool,
}

impl ActiveSlab {
    pub(crate) fn entry(&self) -> &SlabEntry {
        // SAFETY: entries live as long as the arena's table, which outlives
        // every ActiveSlab (they belong to the arena's shards or to a
        // TargetSlab borrowing the arena).
        unsafe { self.entry.as_ref() }
    }
}

/// One allocation shard: a tiny test-and-set lock around its active slab.
///
/// The lock is taken with one atomic swap and released with a plain store,
/// half the atomic work of a general mutex; critical sections are a few
/// instructions except the rare refill, and a thread that finds its shard
/// taken moves to another one rather than wait (`lock_shard`).
struct Shard {
    locked: AtomicBool,
    active: UnsafeCell<Option<ActiveSlab>>,
}

// SAFETY: `active` is only reached through a `ShardGuard`, which exists only
// while `locked` is held by its thread (acquire on lock, release on unlock),
// so accesses to it are serialized; `ActiveSlab`'s pointers point into the
// arena's mappings and table, which are shared by design.
unsafe impl Sync for Shard {}
// SAFETY: as above; nothing in a shard is tied to a thread.
unsafe impl Send for Shard {}

impl Shard {
    fn new() -> Shard {
        Shard {
            locked: AtomicBool::new(false),
            active: UnsafeCell::new(None),
        }
    }

    #[inline]
    fn try_lock(&self) -> Option<ShardGuard<'_>> {
        // Test before test-and-set: a taken lock costs no write. The guard is
        // made only on success: a guard dropped after a failed attempt would
        // unlock the owner's lock (Miri caught exactly that with an eager
        // `then_some`).
        if !self.locked.load(Ordering::Relaxed) && !self.locked.swap(true, Ordering::Acquire) {
            Some(ShardGuard { shard: self })
        } else {
            None
        }
    }

    #[cold]
    fn lock(&self) -> ShardGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.try_lock() {
                return g;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct ShardGuard<'a> {
    shard: &'a Shard,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Option<ActiveSlab>;
    fn deref(&self) -> &Option<ActiveSlab> {
        // SAFETY: the guard holds the shard's lock (see `Shard`'s Sync).
        unsafe { &*self.shard.active.get() }
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<ActiveSlab> {
        // SAFETY: the guard holds the shard's lock, and `&mut self` makes
        // this the only reference through it.
        unsafe { &mut *self.shard.active.get() }
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.shard.locked.store(false, Ordering::Release);
    }
}

/// The slow-path bookkeeping, under one lock.
#[derive(Default)]
struct SlabPool {
    /// Empty but still resident, for immediate reuse (`max_warm_slabs`).
    warm: Vec<u32>,
    /// Released, still mapped, ready for reuse (LIFO: most recently used
    /// page tables first).
    retained: Vec<u32>,
    /// Ids whose mapping is gone, for reuse.
    free_ids: Vec<u32>,
    /// Next never-used id.
    next_id: u32,
    /// Mapping start -> (id, length), for address lookups.
    by_addr: BTreeMap<usize, (u32, usize)>,
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
    max_retained_slabs: usize,
    max_warm_slabs: usize,
    /// Extra warm slabs allowed while a compaction runs, so the slabs it
    /// empties become its next targets without a release and a refault.
    extra_warm_slabs: AtomicUsize,
    release_mode: ReleaseMode,
    huge_pages: HugePages,
    pub(crate) page: usize,
    table: SlabTable,
    shards: Box<[CachePadded<Shard>]>,
    pool: Mutex<SlabPool>,
    /// Slabs given back to the OS (madvise or unmap) since creation.
    releases: AtomicU64,
    /// Releases whose madvise failed (the slab was unmapped instead).
    release_failures: AtomicU64,
    reservation: Option<Reservation>,
    /// The arena id (high 32 bits) and a seal epoch (low 32 bits), bumped by
    /// [`seal_active_slabs`](SlabArena::seal_active_slabs):
    /// [`OwnedSlab`](crate::OwnedSlab)s carry the key they were made or last
    /// refilled under; one compare on their fast path checks both that they
    /// belong here and that no seal was asked since.
    pub(crate) owned_key: AtomicU64,
}

impl std::fmt::Debug for SlabArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlabArena")
            .field("id", &self.id)
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
            reservation: config.reservation,
            owned_key: AtomicU64::new(0),
        };
        arena
            .owned_key
            .store(u64::from(arena.id) << 32, Ordering::Relaxed);
        tracing::debug!(
            arena = arena.id,
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

    /// Bytes per slab.
    pub fn slab_bytes(&self) -> usize {
        self.slab_bytes
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
        let mut found: Vec<(u64, u32)> = self
            .table
            .entries()
            .filter(|(_, e)| e.state.load(Ordering::Acquire) == STATE_SEALED)
            .filter_map(|(id, e)| e.live.sealed_live_bytes().map(|l| (l, id)))
            .filter(|(live, _)| *live > 0 && *live < limit)
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, id)| SlabId(id)).collect()
    }

    /// A fresh slab owned by the caller, outside every shard, so that
    /// records moved by a compaction never land in a slab being emptied.
    /// Fill it with [`alloc_in`](Self::alloc_in); it is sealed when dropped.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc) when a new slab is needed.
    pub fn reserve_target(&self) -> Result<TargetSlab<'_>> {
        Ok(TargetSlab {
            arena: self,
            slab: self.acquire_slab()?,
        })
    }

    /// Allocates in `target`; `Ok(None)` when the target is full (seal it
    /// and reserve another).
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`]; [`Error::BadLayout`] for a layout over half a
    /// slab (those are never in slabs); [`Error::ForeignAllocation`] if the
    /// target belongs to another arena.
    pub fn alloc_in<'t>(
        &'t self,
        target: &mut TargetSlab<'t>,
        layout: Layout,
    ) -> Result<Option<SlabAlloc<'t>>> {
        if !std::ptr::eq(target.arena, self) {
            return Err(Error::ForeignAllocation);
        }
        let size = layout.size();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size > self.large_threshold || layout.align() > self.large_threshold {
            return Err(Error::BadLayout {
                size,
                align: layout.align(),
                why: "larger than half a slab: not movable between slabs",
            });
        }
        let slab = &mut target.slab;
        let id = slab.id;
        Ok(bump(slab, size, layout.align(), self.slab_bytes, self.page)
            .map(|ptr| self.make_alloc(ptr, size, id)))
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

    /// Releases every warm slab (empty slabs kept resident for reuse) to the
    /// OS; returns the bytes released. For a pressure controller.
    pub fn release_warm_slabs(&self) -> u64 {
        self.release_warm_beyond(0)
    }

    /// Lets up to `slabs` more empty slabs stay warm (beyond
    /// `max_warm_slabs`) until it is set back to 0. A compaction raises it
    /// while it runs: the slabs it empties are then its next targets, with
    /// no release, page fault or zeroing in between. Setting it lower
    /// releases the excess at once.
    pub fn set_extra_warm_slabs(&self, slabs: usize) {
        self.extra_warm_slabs.store(slabs, Ordering::Relaxed);
        self.release_warm_beyond(self.max_warm_slabs + slabs);
    }

    /// Releases warm slabs until at most `keep` remain; returns the bytes.
    fn release_warm_beyond(&self, keep: usize) -> u64 {
        let warm = {
            let mut pool = self.pool.lock();
            let keep = keep.min(pool.warm.len());
            pool.warm.split_off(keep)
        };
        let mut bytes = 0;
        for id in warm {
            let entry = self.entry(id);
            bytes += entry.touched.load(Ordering::Relaxed) as u64;
            self.release_now(id, entry);
        }
        bytes
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

    /// Locks the calling thread's home shard; if it is taken, tries the
    /// others and moves the thread's home to the first free one.
    #[inline]
    fn lock_shard(&self) -> ShardGuard<'_> {
        let slot = thread_slot() as usize;
        let home = slot & (self.shards.len() - 1);
        if let Some(g) = self.shards[home].try_lock() {
            return g;
        }
        self.lock_other_shard(slot, home)
    }

    #[cold]
    fn lock_other_shard(&self, slot: usize, home: usize) -> ShardGuard<'_> {
        let n = self.shards.len();
        for step in 1..n {
            if let Some(g) = self.shards[(home + step) % n].try_lock() {
                THREAD_SLOT.with(|s| s.set((slot + step) as u32 & (u32::MAX >> 1)));
                return g;
            }
        }
        self.shards[home].lock()
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

    /// Seals the shard's full active slab (or restarts it if everything in
    /// it was freed) and installs a new one.
    #[cold]
    fn refill(&self, shard: &mut ShardGuard<'_>) -> Result<()> {
        if let Some(active) = shard.as_mut() {
            let entry = active.entry();
            if entry.live.active_is_empty(active.allocated) {
                // Every allocation in it was freed: no free can race with
                // the reset (invariant 3 of `live`), and no byte is live, so
                // the cursor may start over (invariant 3). Its pages stay
                // resident and `touched` keeps counting them.
                entry.live.reset_active();
                entry.allocated.store(0, Ordering::Relaxed);
                active.cursor = 0;
                active.allocated = 0;
                return Ok(());
            }
        }
        if let Some(active) = shard.take() {
            self.seal(active);
        }
        **shard = Some(self.acquire_slab()?);
        Ok(())
    }

    pub(crate) fn entry(&self, id: u32) -> &SlabEntry {
        // Ids of active slabs always have entries (table invariant 2).
        self.table.get(id).expect("active slab id has an entry")
    }

    pub(crate) fn seal(&self, active: ActiveSlab) {
        let entry = active.entry();
        entry.state.store(STATE_SEALED, Ordering::Release);
        if entry.live.seal(active.allocated) {
            self.release(active.id, entry);
        }
    }

    /// Disposes of an empty sealed slab: parks it warm (resident, for
    /// immediate reuse) while fewer than `max_warm_slabs` are, else gives it
    /// back to the OS. Called by exactly one thread per emptying
    /// (invariant 3 of `live`).
    fn release(&self, id: u32, entry: &SlabEntry) {
        let max_warm = self.max_warm_slabs + self.extra_warm_slabs.load(Ordering::Relaxed);
        if max_warm > 0 {
            let mut pool = self.pool.lock();
            if pool.warm.len() < max_warm {
                entry.state.store(STATE_WARM, Ordering::Release);
                pool.warm.push(id);
                return;
            }
        }
        self.release_now(id, entry);
    }

    /// Gives an empty slab's memory back: madvise, then retain or unmap.
    fn release_now(&self, id: u32, entry: &SlabEntry) {
        let touched = entry.touched.load(Ordering::Relaxed);
        let advice = match self.release_mode {
            ReleaseMode::DontNeed => Advice::DontNeed,
            ReleaseMode::Free => Advice::Free,
        };
        let released = {
            let mapping = entry.mapping.lock();
            match mapping.as_ref() {
                // The whole slab, not just `touched`: with huge pages a
                // partial range would split the page and leave it resident.
                // SAFETY: the slab's live count reached zero after its seal,
                // so no allocation in it is live (invariant 1) and no
                // reference to its bytes exists; nobody allocates in a
                // sealed, warm or released slab.
                Some(m) => unsafe { m.advise(0, m.len(), advice) },
                None => Ok(()),
            }
        };
        self.releases.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &released {
            self.release_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(arena = self.id, slab = id, error = %e, "slab release failed; unmapping it instead");
        }
        let mut pool = self.pool.lock();
        if released.is_ok() && pool.retained.len() < self.max_retained_slabs {
            entry.touched.store(0, Ordering::Relaxed);
            entry.state.store(STATE_RELEASED, Ordering::Release);
            pool.retained.push(id);
            drop(pool);
            tracing::trace!(
                arena = self.id,
                slab = id,
                bytes_released = touched,
                "slab released"
            );
        } else {
            let mapping = self.forget_mapping(&mut pool, id, entry);
            drop(pool);
            drop(mapping);
            tracing::trace!(
                arena = self.id,
                slab = id,
                bytes_released = touched,
                "slab unmapped"
            );
        }
    }

    /// Detaches an id's mapping (to be dropped, i.e. unmapped, by the
    /// caller outside the locks) and frees the id. Caller holds the pool.
    fn forget_mapping(&self, pool: &mut SlabPool, id: u32, entry: &SlabEntry) -> Option<Mapping> {
        let mapping = entry.mapping.lock().take();
        let base = entry.base.swap(std::ptr::null_mut(), Ordering::AcqRel);
        let len = entry.len.swap(0, Ordering::AcqRel);
        entry.state.store(STATE_UNUSED, Ordering::Release);
        pool.by_addr.remove(&(base as usize));
        entry.touched.store(0, Ordering::Relaxed);
        pool.free_ids.push(id);
        if let Some(r) = &self.reservation {
            r.shrink(len as u64);
        }
        mapping
    }

    /// A slab to fill: a warm one, a retained one, or a new mapping.
    pub(crate) fn acquire_slab(&self) -> Result<ActiveSlab> {
        let reused = {
            let mut pool = self.pool.lock();
            pool.warm.pop().or_else(|| pool.retained.pop())
        };
        let (id, base) = match reused {
            Some(id) => {
                let entry = self.entry(id);
                let base = NonNull::new(entry.base.load(Ordering::Acquire))
                    .expect("a warm or retained slab is mapped");
                (id, base)
            }
            None => {
                let hint = match self.huge_pages {
                    HugePages::System => None,
                    HugePages::Enable => Some(Advice::HugePage),
                    HugePages::Disable => Some(Advice::NoHugePage),
                };
                self.map_new(self.slab_bytes, self.slab_bytes, hint, None)?
            }
        };
        let entry = self.entry(id);
        // Nothing in the slab is live, so no free races with the reset.
        entry.live.reset_active();
        entry.allocated.store(0, Ordering::Relaxed);
        entry.state.store(STATE_ACTIVE, Ordering::Release);
        Ok(ActiveSlab {
            id,
            base,
            entry: NonNull::from(entry),
            cursor: 0,
            allocated: 0,
            // A warm slab's pages are still resident: keep counting them.
            touched: entry.touched.load(Ordering::Relaxed),
            touch_new_pages: self.release_mode == ReleaseMode::Free,
        })
    }

    /// Maps `len` bytes aligned to `align` under a new id, charging the
    /// budget first; on any failure nothing changes.
    fn map_new(
        &self,
        len: usize,
        align: usize,
        hint: Option<Advice>,
        large_bytes: Option<u64>,
    ) -> Result<(u32, NonNull<u8>)> {
        let len = len
            .checked_next_multiple_of(self.page)
            .ok_or(Error::BadLayout {
                size: len,
                align,
                why: "size overflows",
            })?;
        if let Some(r) = &self.reservation {
            r.try_grow(len as u64)?;
        }
        let undo = |e: Error| {
            if let Some(r) = &self.reservation {
                r.shrink(len as u64);
            }
            e
        };
        let mapping = Mapping::new(len, align).map_err(|e| undo(e.into()))?;
        if let Some(advice) = hint {
            // SAFETY: the mapping was just made; nothing references it.
            if let Err(e) = unsafe { mapping.advise(0, len, advice) } {
                tracing::debug!(error = %e, "huge page hint refused");
            }
        }
        let base = NonNull::new(mapping.as_ptr()).ok_or_else(|| {
            undo(Error::BadLayout {
                size: len,
                align,
                why: "null mapping",
            })
        })?;
        let mut pool = self.pool.lock();
        let id = match pool.free_ids.pop() {
            Some(id) => id,
            None if (pool.next_id as usize) < MAX_SLABS => {
                pool.next_id += 1;
                pool.next_id - 1
            }
            None => {
                drop(pool);
                return Err(undo(Error::TooManySlabs { max: MAX_SLABS }));
            }
        };
        // Table invariant 2: publish the chunk before the id escapes.
        self.table.ensure(id);
        let entry = self.entry(id);
        // The entry is unused: nobody else reads its counter.
        entry.live.reset_active();
        let state = match large_bytes {
            Some(bytes) => {
                // A dedicated mapping is sealed from the start, holding its
                // one allocation.
                entry.live.seal(bytes);
                STATE_LARGE
            }
            None => STATE_ACTIVE,
        };
        entry.touched.store(0, Ordering::Relaxed);
        entry.allocated.store(0, Ordering::Relaxed);
        entry.len.store(len, Ordering::Release);
        entry.base.store(base.as_ptr(), Ordering::Release);
        entry.state.store(state, Ordering::Release);
        *entry.mapping.lock() = Some(mapping);
        pool.by_addr.insert(base.as_ptr() as usize, (id, len));
        drop(pool);
        Ok((id, base))
    }

    #[cold]
    pub(crate) fn alloc_large(&self, layout: Layout) -> Result<SlabAlloc<'_>> {
        let size = layout.size();
        let len = size
            .checked_next_multiple_of(self.page)
            .ok_or(Error::BadLayout {
                size,
                align: layout.align(),
                why: "size overflows when rounded to pages",
            })?;
        let (id, base) = self.map_new(len, layout.align(), None, Some(size as u64))?;
        Ok(self.make_alloc(base, size, id))
    }

    #[cold]
    fn free_large(&self, id: u32, entry: &SlabEntry, size: usize) {
        if !entry.live.free(size as u64) {
            debug_assert!(false, "a dedicated mapping holds one allocation");
            return;
        }
        let mapping = {
            let mut pool = self.pool.lock();
            self.forget_mapping(&mut pool, id, entry)
        };
        self.releases.fetch_add(1, Ordering::Relaxed);
        // Unmapped here, outside the locks.
        drop(mapping);
    }
}

/// Bumps `size` bytes aligned to `align` in an active slab, or `None` if
/// it does not fit. Runs under the shard's lock (or on a target's owner).
#[inline]
pub(crate) fn bump(
    active: &mut ActiveSlab,
    size: usize,
    align: usize,
    slab_bytes: usize,
    page: usize,
) -> Option<NonNull<u8>> {
    // By invariant 4 the slab base is aligned to slab_bytes >= align, so
    // aligning the offset aligns the address.
    let start = (active.cursor + align - 1) & !(align - 1);
    let end = start + size;
    if end > slab_bytes {
        return None;
    }
    active.cursor = end;
    active.allocated += size as u64;
    // Only the owner writes these: plain stores, no read-modify-write.
    active
        .entry()
        .allocated
        .store(active.allocated, Ordering::Relaxed);
    if end > active.touched {
        let first_new = active.touched;
        active.touched = end.next_multiple_of(page);
        if active.touch_new_pages {
            for at in (first_new..active.touched.min(slab_bytes)).step_by(page) {
                // SAFETY: `at < touched <= slab_bytes` (slabs are whole
                // pages): inside the slab's mapping. The page is past the
                // cursor's high-water mark, so no live allocation is in it
                // (every allocation made since the slab was acquired ends
                // below `touched`, and the slab was empty when acquired);
                // nothing can read these bytes until this call returns.
                unsafe { active.base.add(at).as_ptr().write_volatile(0) };
            }
        }
        active
            .entry()
            .touched
            .store(active.touched, Ordering::Relaxed);
    }
    // SAFETY: `start < end <= slab_bytes`: inside the slab's mapping.
    Some(unsafe { active.base.add(start) })
}

/// A slab reserved by [`SlabArena::reserve_target`] for a compaction pass.
/// Only [`SlabArena::alloc_in`] allocates in it; it is sealed on drop (and
/// released at once if nothing in it is live).
pub struct TargetSlab<'a> {
    arena: &'a SlabArena,
    slab: ActiveSlab,
}

// SAFETY: a target is exclusive ownership of one slab's cursor; its base
// pointer points into a mapping owned by the arena, which is `Sync`.
unsafe impl Send for TargetSlab<'_> {}

impl TargetSlab<'_> {
    /// The slab being filled.
    pub fn id(&self) -> SlabId {
        SlabId(self.slab.id)
    }

    /// Bytes still free at the end of the slab.
    pub fn remaining_bytes(&self) -> usize {
        self.arena.slab_bytes - self.slab.cursor
    }
}

impl Drop for TargetSlab<'_> {
    fn drop(&mut self) {
        let slab = ActiveSlab {
            id: self.slab.id,
            base: self.slab.base,
            entry: self.slab.entry,
            cursor: self.slab.cursor,
            allocated: self.slab.allocated,
            touched: self.slab.touched,
            touch_new_pages: self.slab.touch_new_pages,
        };
        self.arena.seal(slab);
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
