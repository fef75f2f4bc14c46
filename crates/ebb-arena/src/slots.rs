//! The handle table: slot index -> (generation, place), read without locks.
//!
//! A slot's `place` packs the record's slab id (high 32 bits) and offset
//! (low 32 bits). Its `state` holds the generation in its low 32 bits, odd
//! while the slot holds a record and even while it is vacant (see
//! `handle`), and a `LOCKED` bit above them.
//!
//! The protocol has one read-modify-write per operation: `remove` is a
//! single CAS of the state from `g` to `g + 1` (whoever wins owns the
//! place: no one may change it after), and `replace` and compaction's move
//! take the `LOCKED` bit with a CAS from `g`, store the new place, and
//! unlock with a plain store. Readers never look at the bit and never wait:
//! while a slot is locked its place is either the old or the new one, both
//! valid for a pinned reader.
//!
//! Invariants:
//!
//! 1. Chunks are allocated zeroed (generation 0: vacant) the first time an
//!    index in them is claimed, published once under `grow`, and freed only
//!    by `Drop`; a slot's address is stable for the table's life.
//! 2. `place` is meaningful only while the generation is odd. A writer
//!    publishes a record by storing `place`, then the odd generation
//!    (Release); the CAS of the generation to even decides who removes it.
//! 3. `place` of an occupied slot changes only under `LOCKED`, which is
//!    taken by a CAS from the unlocked odd generation, so a remove (a CAS
//!    from the same unlocked value) and a locker exclude each other: after a
//!    remove wins, no one changes the place it took.
//! 4. An index is on the free list only while its slot is vacant and its
//!    place has been taken.

#[cfg(not(loom))]
use std::alloc::Layout;

use crossbeam_utils::CachePadded;
use ebb_core::sync::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Mutex, Ordering, spin_wait};

use crate::reclaim::SLOT_STASH;

// Under loom the table is tiny (a model explores a handful of slots, and
// every loom atomic is a tracked object) and its chunks are built slot by
// slot (zeroed bytes are not a valid loom atomic). Everything else, the
// free lists, `claimed` and the slot protocol, is the same code.
#[cfg(not(loom))]
const CHUNK_BITS: u32 = 16;
#[cfg(not(loom))]
const CHUNKS: usize = 1 << 12;
#[cfg(loom)]
const CHUNK_BITS: u32 = 2;
#[cfg(loom)]
const CHUNKS: usize = 4;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;

/// Most records one arena can hold at once.
pub(crate) const MAX_SLOTS: usize = CHUNK_LEN * CHUNKS;

/// Stripes of the free list (a power of two).
const FREE_STRIPES: usize = 16;

/// The calling thread's stripe of the free list, assigned round-robin on
/// first use.
#[inline]
pub(crate) fn thread_stripe() -> usize {
    use std::cell::Cell;
    // std's atomic, not the shim's: a stripe is only a hint (any stripe is
    // correct), and a static needs a const constructor.
    use std::sync::atomic::{AtomicUsize, Ordering as O};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, O::Relaxed) & (FREE_STRIPES - 1));
        }
        s.get()
    })
}

/// High half of the `place` of a slot on the free list (slab id
/// `u32::MAX`, which no slab has).
const FREE_LINK: u64 = 0xFFFF_FFFF_0000_0000;

/// `place` of a vacant slot.
#[doc(hidden)]
pub const NO_PLACE: u64 = u64::MAX;

/// The lock bit of a slot's state, above the 32-bit generation.
const LOCKED: u64 = 1 << 32;

/// One handle slot. The methods below are the whole slot protocol: the
/// arena and the loom model (`tests/loom.rs`) both use them.
#[doc(hidden)]
pub struct Slot {
    /// Generation (low 32 bits) and `LOCKED`.
    state: AtomicU64,
    place: AtomicU64,
}

impl Slot {
    /// A vacant slot (generation 0). For the loom model; the table makes
    /// its slots zeroed.
    #[expect(
        clippy::new_without_default,
        reason = "not API: exposed for the loom model only"
    )]
    pub fn new() -> Slot {
        Slot {
            state: AtomicU64::new(0),
            place: AtomicU64::new(NO_PLACE),
        }
    }

    /// Publishes `place` in a vacant slot the caller claimed; returns the
    /// (odd) generation of the new record (invariant 2).
    #[inline]
    pub fn publish(&self, place: u64) -> u32 {
        // Release, not Relaxed: a reader holding a stale handle that loads
        // this place must then see the generation move on (the remove that
        // vacated the slot happens-before this store), or its re-check in
        // `read` could pass and hand it another record. Found by the loom
        // model `stale_handle_never_reads_a_reused_slot`.
        self.place.store(place, Ordering::Release);
        // The slot is vacant and claimed by the caller alone: no one else
        // writes its state (lockers and removers CAS from an odd value).
        let generation = (self.state.load(Ordering::Relaxed) as u32).wrapping_add(1);
        self.state.store(u64::from(generation), Ordering::Release);
        generation
    }

    /// As [`publish`](Self::publish) when the caller knows the vacant
    /// slot's generation (it kept it when it vacated the slot): two plain
    /// stores, no load of a line that may have left the cache.
    #[inline]
    pub fn publish_vacant(&self, place: u64, vacant_generation: u32) -> u32 {
        debug_assert_eq!(
            self.state.load(Ordering::Relaxed),
            u64::from(vacant_generation),
            "a stashed slot changed while vacant"
        );
        self.place.store(place, Ordering::Release);
        let generation = vacant_generation.wrapping_add(1);
        self.state.store(u64::from(generation), Ordering::Release);
        generation
    }

    /// The generation of a vacant slot the caller claimed.
    pub fn vacant_generation(&self) -> u32 {
        self.state.load(Ordering::Relaxed) as u32
    }

    /// The place of the record of `generation`, if it is still current.
    /// The caller must be pinned before calling, so the place stays valid.
    ///
    /// `generation` may be anything a caller forged: an even (vacant)
    /// generation finds nothing even when the slot has it, since a vacant
    /// slot's `place` is stale, on the free list, or never set
    /// (invariant 2).
    #[inline]
    pub fn read(&self, generation: u32) -> Option<u64> {
        if generation & 1 == 0 || self.state.load(Ordering::Acquire) as u32 != generation {
            return None;
        }
        let place = self.place.load(Ordering::Acquire);
        // The place belongs to `generation` only if the slot still has it
        // after the load (seqlock-style re-check). A lock does not matter:
        // both places a locked slot can show are valid.
        (place != NO_PLACE && self.state.load(Ordering::Acquire) as u32 == generation)
            .then_some(place)
    }

    /// Removes the record of `generation`: exactly one caller wins the
    /// generation CAS and gets the place to retire (invariant 3). Waits out
    /// a replace or move in progress (a few stores).
    #[inline]
    pub fn remove(&self, generation: u32) -> Option<u64> {
        if !self.leave_unlocked(generation, u64::from(generation.wrapping_add(1))) {
            return None;
        }
        // No one changes the place now (invariant 3); the lockers' stores
        // happen-before their unlock, which the CAS read. The place stays
        // in the slot until it is reused: readers re-check the generation,
        // so a vacant slot's place is never taken for a record.
        Some(self.place.load(Ordering::Acquire))
    }

    /// Takes the lock of the record of `generation`; false if the record is
    /// gone.
    fn lock(&self, generation: u32) -> bool {
        self.leave_unlocked(generation, u64::from(generation) | LOCKED)
    }

    /// Moves the state from the unlocked, occupied `generation` to `to` with
    /// one CAS, waiting while another caller holds the lock; false if the
    /// record of `generation` is gone (or `generation` is a vacant one).
    #[inline]
    fn leave_unlocked(&self, generation: u32, to: u64) -> bool {
        if generation & 1 == 0 {
            return false;
        }
        let current = u64::from(generation);
        let mut spins = 0;
        loop {
            match self
                .state
                .compare_exchange(current, to, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) if seen == current | LOCKED => {
                    spin_wait(spins);
                    spins += 1;
                }
                Err(_) => return false,
            }
        }
    }

    fn unlock(&self, generation: u32) {
        self.state.store(u64::from(generation), Ordering::Release);
    }

    /// Repoints the record of `generation` to `new`; returns the old place
    /// to retire, or `None` if the record is gone (then `new` was never
    /// visible).
    pub fn replace(&self, generation: u32, new: u64) -> Option<u64> {
        if !self.lock(generation) {
            return None;
        }
        let old = self.place.load(Ordering::Acquire);
        self.place.store(new, Ordering::Release);
        self.unlock(generation);
        Some(old)
    }

    /// Compaction's first step: locks the record of `generation` if it
    /// still holds `place`. True if it did: the caller copies the record and
    /// must then call [`finish_move`](Self::finish_move). False if a remove
    /// or replace got there first (nothing to do). While locked, removes and
    /// replaces of this record wait; readers do not.
    pub fn lock_if_at(&self, generation: u32, place: u64) -> bool {
        if !self.lock(generation) {
            return false;
        }
        if self.place.load(Ordering::Acquire) != place {
            self.unlock(generation);
            return false;
        }
        true
    }

    /// Ends a move begun by [`lock_if_at`](Self::lock_if_at): points the
    /// record at `new` (its copy) if given, and unlocks with a plain store.
    pub fn finish_move(&self, generation: u32, new: Option<u64>) {
        if let Some(new) = new {
            self.place.store(new, Ordering::Release);
        }
        self.unlock(generation);
    }

    /// A whole move (for the loom model): repoints the record of
    /// `generation` from `old` to `new` if it still holds `old`. True if it
    /// did (retire `old`); false if a remove or replace got there first
    /// (free `new`, which nobody saw).
    pub fn move_place(&self, generation: u32, old: u64, new: u64) -> bool {
        if !self.lock_if_at(generation, old) {
            return false;
        }
        self.finish_move(generation, Some(new));
        true
    }

    /// The current (generation, place) if the slot is occupied (for
    /// compaction's scan; it re-checks under the lock before moving).
    pub fn occupied(&self) -> Option<(u32, u64)> {
        let generation = self.state.load(Ordering::Acquire) as u32;
        if generation & 1 == 0 {
            return None;
        }
        let place = self.place.load(Ordering::Acquire);
        (place != NO_PLACE && place & FREE_LINK != FREE_LINK).then_some((generation, place))
    }

    /// The current place if the slot is occupied.
    pub fn occupied_place(&self) -> Option<u64> {
        self.occupied().map(|(_, place)| place)
    }

    /// Links a vacant slot into the free list: its `place` holds the next
    /// free index + 1 under a slab id no slab has (`FREE_LINK`), so a reader
    /// or scan that races with the vacancy never takes it for a record
    /// (they re-check the generation, and the slab id is out of range).
    fn set_free_next(&self, next_plus_one: u32) {
        self.place
            .store(FREE_LINK | u64::from(next_plus_one), Ordering::Release);
    }

    fn free_next(&self) -> u32 {
        let v = self.place.load(Ordering::Acquire);
        if v & FREE_LINK == FREE_LINK {
            v as u32
        } else {
            0
        }
    }
}

/// The handle table: chunks of slots, and the striped free lists of vacant
/// indices. `pub` only for the loom model (re-exported under `cfg(loom)`).
#[doc(hidden)]
pub struct SlotTable {
    chunks: Box<[AtomicPtr<Slot>]>,
    /// Serializes chunk allocation and `next`.
    grow: Mutex<u32>,
    /// Head of the free list of vacant indices (invariant 3), a lock-free
    /// LIFO threaded through the vacant slots' `place` fields: low 32 bits
    /// are `index + 1` (0: empty), high 32 bits a tag bumped by every push
    /// and pop so a stale head never wins a CAS (ABA).
    /// Striped by thread (`thread_stripe`) so threads do not fight over one
    /// head; a thread whose stripe is empty takes from the others.
    free_heads: Box<[CachePadded<AtomicU64>]>,
    /// Indices ever claimed, readable without the lock (scans).
    claimed: AtomicU32,
    /// Most indices this table hands out (`MAX_SLOTS`; less in tests).
    limit: u32,
    /// How many vacant slots a thread may keep in its stash:
    /// `SLOT_STASH`, and 0 once every index has been handed out (the table
    /// is *exhausted*): from then on vacant slots go back to the shared
    /// free lists rather than to a thread's stash, where another thread
    /// could not reach them. One word, so a remove decides where its slot
    /// goes with one load and one compare.
    stash_limit: AtomicUsize,
    /// Where the slots handed out are charged, if the arena has a budget:
    /// 16 bytes per index as `grow_block` hands it out (under `grow`; a
    /// chunk's pages are zeroed lazily, so what is resident is what was
    /// handed out), all of it back when the table drops. Charged past the
    /// limit if need be: refusing would refuse the insert that needed the
    /// slot, which the slabs' own charge refuses already.
    charge: Option<ebb_core::Reservation>,
}

#[cfg(not(loom))]
fn chunk_layout() -> Layout {
    Layout::array::<Slot>(CHUNK_LEN).expect("chunk layout fits")
}

#[cfg_attr(
    loom,
    expect(
        clippy::new_without_default,
        reason = "crate-internal; exposed (hidden) for the loom model only"
    )
)]
impl SlotTable {
    pub fn new() -> SlotTable {
        Self::with_limit(MAX_SLOTS as u32)
    }

    /// A table of at most `limit` indices (`MAX_SLOTS` at most).
    pub fn with_limit(limit: u32) -> SlotTable {
        SlotTable {
            charge: None,
            limit: limit.min(MAX_SLOTS as u32),
            stash_limit: AtomicUsize::new(SLOT_STASH),
            chunks: (0..CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            grow: Mutex::new(0),
            free_heads: (0..FREE_STRIPES)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            claimed: AtomicU32::new(0),
        }
    }

    #[inline]
    pub fn get(&self, index: u32) -> Option<&Slot> {
        let index = index as usize;
        let chunk = self
            .chunks
            .get(index >> CHUNK_BITS)?
            .load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: by invariant 1 a published chunk holds CHUNK_LEN
        // initialized slots and lives as long as `&self`; the index is
        // masked into range.
        Some(unsafe { &*chunk.add(index & (CHUNK_LEN - 1)) })
    }

    /// A vacant index from the free lists (this thread's stripe first),
    /// or `None` when they are all empty.
    pub fn claim_free(&self) -> Option<u32> {
        let home = thread_stripe();
        (0..FREE_STRIPES)
            .find_map(|step| self.pop_free(&self.free_heads[(home + step) & (FREE_STRIPES - 1)]))
    }

    fn pop_free(&self, head_cell: &AtomicU64) -> Option<u32> {
        use Ordering as O;
        let mut head = head_cell.load(O::Acquire);
        while head as u32 != 0 {
            let index = head as u32 - 1;
            // A slot on the free list keeps its successor in `place`. If
            // another thread pops it meanwhile, the tag has moved on and the
            // CAS below fails; slots are never freed, so the read is safe.
            let next = self.get(index)?.free_next();
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(next);
            match head_cell.compare_exchange_weak(head, new, O::AcqRel, O::Acquire) {
                Ok(_) => return Some(index),
                Err(seen) => head = seen,
            }
        }
        None
    }

    /// Up to `n` never-used indices in one block (empty when the table is
    /// full). Threads take fresh indices a block at a time so each thread's
    /// slots share cache lines with its own, not with another writer's.
    pub fn grow_block(&self, n: u32) -> std::ops::Range<u32> {
        use Ordering as O;
        let mut next = self.grow.lock();
        let start = *next;
        let end = (u64::from(start) + u64::from(n)).min(u64::from(self.limit)) as u32;
        if end == self.limit {
            self.stash_limit.store(0, O::Release);
        }
        for index in start..end {
            let slot = &self.chunks[index as usize >> CHUNK_BITS];
            if slot.load(O::Acquire).is_null() {
                slot.store(new_chunk(), O::Release);
            }
        }
        if let Some(charge) = &self.charge {
            charge.grow(u64::from(end.saturating_sub(start)) * size_of::<Slot>() as u64);
        }
        *next = end;
        self.claimed.store(end, O::Release);
        start..end
    }

    /// Charges every chunk from now on (and those already allocated) to
    /// `charge`.
    pub fn with_charge(mut self, charge: ebb_core::Reservation) -> SlotTable {
        charge.grow(self.heap_bytes());
        self.charge = Some(charge);
        self
    }

    /// Bytes of the slots handed out (16 per index ever claimed; the
    /// chunks' later pages are untouched, zeroed lazily): kept while the
    /// arena lives (handles are stable, so slots never move).
    pub fn heap_bytes(&self) -> u64 {
        u64::from(self.claimed.load(Ordering::Relaxed)) * size_of::<Slot>() as u64
    }

    /// Returns a vacant index whose place has been taken (invariant 3).
    pub fn release(&self, index: u32) {
        use Ordering as O;
        let Some(slot) = self.get(index) else { return };
        let head_cell = &self.free_heads[thread_stripe()];
        let mut head = head_cell.load(O::Acquire);
        loop {
            slot.set_free_next(head as u32);
            let new = ((head >> 32).wrapping_add(1) << 32) | u64::from(index + 1);
            match head_cell.compare_exchange_weak(head, new, O::AcqRel, O::Acquire) {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// Calls `f(index, slot)` for every index ever claimed, a chunk at a
    /// time (one chunk lookup per 65536 slots, not per slot).
    pub fn for_each(&self, mut f: impl FnMut(u32, &Slot)) {
        let end = self.high_water() as usize;
        let mut base = 0usize;
        while base < end {
            let chunk = self.chunks[base >> CHUNK_BITS].load(Ordering::Acquire);
            if !chunk.is_null() {
                let n = (end - base).min(CHUNK_LEN);
                // SAFETY: by invariant 1 a published chunk holds CHUNK_LEN
                // initialized slots and lives as long as `&self`; `n` is at
                // most CHUNK_LEN.
                let slots = unsafe { std::slice::from_raw_parts(chunk.cast_const(), n) };
                for (i, slot) in slots.iter().enumerate() {
                    f((base + i) as u32, slot);
                }
            }
            base += CHUNK_LEN;
        }
    }

    /// Calls `f(index, generation, place)` for every slot that looks
    /// occupied (odd generation), a chunk at a time: compaction's scan, one
    /// branch per vacant slot. `place` may be stale by the time `f` runs
    /// (callers re-check under the slot's lock).
    pub fn scan_occupied(&self, mut f: impl FnMut(u32, u32, u64)) {
        self.for_each(|index, slot| {
            let generation = slot.state.load(Ordering::Acquire) as u32;
            if generation & 1 == 1 {
                f(index, generation, slot.place.load(Ordering::Acquire));
            }
        });
    }

    /// True once every index has been handed out (see `stash_limit`).
    #[inline]
    pub fn is_exhausted(&self) -> bool {
        self.stash_limit() == 0
    }

    /// The most vacant slots a thread may keep in its stash now: 0 once
    /// the table is exhausted (see `stash_limit`).
    #[inline]
    pub fn stash_limit(&self) -> usize {
        self.stash_limit.load(Ordering::Relaxed)
    }

    /// The most indices this table hands out.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Number of indices ever claimed (an upper bound for scans).
    pub fn high_water(&self) -> u32 {
        self.claimed.load(Ordering::Acquire)
    }
}

/// A chunk of `CHUNK_LEN` vacant slots (generation 0), freed by
/// [`free_chunk`]. Zeroed pages: the slots cost no memory until used.
#[cfg(not(loom))]
fn new_chunk() -> *mut Slot {
    // SAFETY: the layout has a non-zero size.
    let chunk = unsafe { std::alloc::alloc_zeroed(chunk_layout()) }.cast::<Slot>();
    if chunk.is_null() {
        std::alloc::handle_alloc_error(chunk_layout());
    }
    // Zeroed atomics are valid slots: generation 0 (vacant), place 0,
    // which `read` never looks at while the generation is even.
    chunk
}

/// Under loom: slots built one by one (see the constants above).
#[cfg(loom)]
fn new_chunk() -> *mut Slot {
    let slots: Box<[Slot]> = (0..CHUNK_LEN).map(|_| Slot::new()).collect();
    Box::into_raw(slots).cast::<Slot>()
}

/// Frees a chunk made by [`new_chunk`].
///
/// # Safety
///
/// `chunk` came from `new_chunk`, is freed once, and no reference to its
/// slots is live.
unsafe fn free_chunk(chunk: *mut Slot) {
    #[cfg(not(loom))]
    // SAFETY: the caller's contract: `chunk` came from `alloc_zeroed` with
    // `chunk_layout()`.
    unsafe {
        std::alloc::dealloc(chunk.cast(), chunk_layout())
    };
    #[cfg(loom)]
    // SAFETY: the caller's contract: `chunk` is a leaked `Box<[Slot]>` of
    // `CHUNK_LEN` slots.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(chunk, CHUNK_LEN)) });
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for chunk in self.chunks.iter() {
            let p = chunk.load(Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: by invariant 1 `p` came from `new_chunk` and is
                // freed only here; `&mut self` proves no slot reference is
                // live.
                unsafe { free_chunk(p) };
            }
        }
    }
}

/// A vacant slot in a thread's stash: its index, its current (even)
/// generation, and its address, so publishing into it needs no table
/// lookup and no load of a line that may have left the cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StashedSlot {
    /// `index << 32 | vacant generation`: the vacant generation is even,
    /// so the id of the record published next is this plus one (no carry
    /// into the index).
    vacant: u64,
    slot: std::ptr::NonNull<Slot>,
}

impl StashedSlot {
    /// `slot` is the table's slot at `index`, vacant at `vacant_generation`
    /// (even) and claimed by the caller.
    #[inline]
    pub fn new(index: u32, vacant_generation: u32, slot: &Slot) -> StashedSlot {
        debug_assert_eq!(vacant_generation & 1, 0, "a vacant generation is even");
        StashedSlot {
            vacant: (u64::from(index) << 32) | u64::from(vacant_generation),
            slot: std::ptr::NonNull::from(slot),
        }
    }

    /// The slot of the record `id` (`index << 32 | generation`, odd) that
    /// the caller just removed from it: vacant at the next generation.
    #[inline]
    pub fn vacated(id: u64, slot: &Slot) -> StashedSlot {
        let vacant_generation = (id as u32).wrapping_add(1);
        StashedSlot {
            vacant: (id & !0xFFFF_FFFF) | u64::from(vacant_generation),
            slot: std::ptr::NonNull::from(slot),
        }
    }

    pub fn index(self) -> u32 {
        (self.vacant >> 32) as u32
    }

    /// Publishes `place` in the slot; returns the record's id,
    /// `index << 32 | generation`.
    ///
    /// # Safety
    ///
    /// The table the slot came from is alive (slots live as long as their
    /// table, invariant 1), and the slot is still vacant and claimed by the
    /// caller alone (it was taken out of the caller's stash).
    #[inline]
    pub unsafe fn publish(self, place: u64) -> u64 {
        // SAFETY: the caller's contract: the slot is alive; `&Slot` is all
        // the protocol needs (its fields are atomics).
        let slot = unsafe { self.slot.as_ref() };
        let generation = slot.publish_vacant(place, self.vacant as u32);
        // Even plus one: the new generation is the low half plus one.
        debug_assert_eq!(generation, (self.vacant as u32) + 1);
        self.vacant + 1
    }
}

/// Packs a slab address into a place.
pub(crate) fn pack(slab: u32, offset: u32) -> u64 {
    (u64::from(slab) << 32) | u64::from(offset)
}

/// Unpacks a place into (slab, offset).
pub(crate) fn unpack(place: u64) -> (u32, u32) {
    ((place >> 32) as u32, place as u32)
}
