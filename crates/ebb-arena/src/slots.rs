//! The handle table: slot index -> (generation, place), read without locks.
//!
//! A slot's `place` packs the record's slab id (high 32 bits) and offset
//! (low 32 bits). Its `generation` is odd while the slot holds a record and
//! even while it is vacant (see `handle`).
//!
//! Invariants:
//!
//! 1. Chunks are allocated zeroed (generation 0: vacant) the first time an
//!    index in them is claimed, published once under `grow`, and freed only
//!    by `Drop`; a slot's address is stable for the table's life.
//! 2. `place` is meaningful only while `generation` is odd. A writer
//!    publishes a record by storing `place`, then the odd generation
//!    (Release); it retires one by moving the generation to even (the CAS
//!    that decides who removes), then taking `place`.
//! 3. An index is on the free list only while its slot is vacant and its
//!    place has been taken.

use std::alloc::Layout;
use std::sync::atomic::AtomicPtr;

use ebb_core::sync::{AtomicU32, AtomicU64, Ordering};
use parking_lot::Mutex;

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 1 << 12;

/// Most records one arena can hold at once.
pub(crate) const MAX_SLOTS: usize = CHUNK_LEN * CHUNKS;

/// Stripes of the free list (a power of two).
const FREE_STRIPES: usize = 16;

/// The calling thread's stripe (of the free list and of the live-record
/// counter), assigned round-robin on first use.
#[inline]
pub(crate) fn thread_stripe() -> usize {
    use std::cell::Cell;
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

/// One handle slot. The methods below are the whole slot protocol: the
/// arena and the loom model (`tests/loom.rs`) both use them.
#[doc(hidden)]
pub struct Slot {
    generation: AtomicU32,
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
            generation: AtomicU32::new(0),
            place: AtomicU64::new(NO_PLACE),
        }
    }

    /// Publishes `place` in a vacant slot the caller claimed; returns the
    /// (odd) generation of the new record (invariant 2).
    pub fn publish(&self, place: u64) -> u32 {
        // Release, not Relaxed: a reader holding a stale handle that loads
        // this place must then see the generation move on (the remove that
        // vacated the slot happens-before this store), or its re-check in
        // `read` could pass and hand it another record. Found by the loom
        // model `stale_handle_never_reads_a_reused_slot`.
        self.place.store(place, Ordering::Release);
        let generation = self.generation.load(Ordering::Relaxed).wrapping_add(1);
        self.generation.store(generation, Ordering::Release);
        generation
    }

    /// The place of the record of `generation`, if it is still current.
    /// The caller must be pinned before calling, so the place stays valid.
    #[inline]
    pub fn read(&self, generation: u32) -> Option<u64> {
        if self.generation.load(Ordering::Acquire) != generation {
            return None;
        }
        let place = self.place.load(Ordering::Acquire);
        // The place belongs to `generation` only if the slot still has it
        // after the load (seqlock-style re-check).
        (place != NO_PLACE && self.generation.load(Ordering::Acquire) == generation)
            .then_some(place)
    }

    /// Removes the record of `generation`: exactly one caller wins the
    /// generation CAS and gets the place to retire.
    pub fn remove(&self, generation: u32) -> Option<u64> {
        if generation & 1 == 0 {
            return None;
        }
        self.generation
            .compare_exchange(
                generation,
                generation.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(self.place.swap(NO_PLACE, Ordering::AcqRel))
    }

    /// Repoints the record of `generation` to `new`; returns the old place
    /// to retire, or `None` if the record is gone (then `new` was never
    /// visible).
    pub fn replace(&self, generation: u32, new: u64) -> Option<u64> {
        if generation & 1 == 0 {
            return None;
        }
        loop {
            let current = self.place.load(Ordering::Acquire);
            if self.generation.load(Ordering::Acquire) != generation || current == NO_PLACE {
                return None;
            }
            if self
                .place
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Some(current);
            }
        }
    }

    /// Compaction's step: repoints the slot from `old` to `new` if it still
    /// holds `old`. True if it did (retire `old`); false if a remove or
    /// replace got there first (free `new`, which nobody saw).
    pub fn move_place(&self, old: u64, new: u64) -> bool {
        self.place
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The current place if the slot is occupied (for compaction's scan).
    pub fn occupied_place(&self) -> Option<u64> {
        if self.generation.load(Ordering::Acquire) & 1 == 0 {
            return None;
        }
        let place = self.place.load(Ordering::Acquire);
        (place != NO_PLACE).then_some(place)
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

    /// The current place, whatever the generation (compaction's re-check).
    pub fn current_place(&self) -> u64 {
        self.place.load(Ordering::Acquire)
    }
}

pub(crate) struct SlotTable {
    chunks: Box<[AtomicPtr<Slot>]>,
    /// Serializes chunk allocation and `next`.
    grow: Mutex<u32>,
    /// Head of the free list of vacant indices (invariant 3), a lock-free
    /// LIFO threaded through the vacant slots' `place` fields: low 32 bits
    /// are `index + 1` (0: empty), high 32 bits a tag bumped by every push
    /// and pop so a stale head never wins a CAS (ABA).
    /// Striped by thread (`thread_stripe`) so threads do not fight over one
    /// head; a thread whose stripe is empty takes from the others.
    free_heads: Box<[crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>]>,
    /// Indices ever claimed, readable without the lock (scans).
    claimed: std::sync::atomic::AtomicU32,
}

fn chunk_layout() -> Layout {
    Layout::array::<Slot>(CHUNK_LEN).expect("chunk layout fits")
}

impl SlotTable {
    pub fn new() -> SlotTable {
        SlotTable {
            chunks: (0..CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            grow: Mutex::new(0),
            free_heads: (0..FREE_STRIPES)
                .map(|_| crossbeam_utils::CachePadded::new(std::sync::atomic::AtomicU64::new(0)))
                .collect(),
            claimed: std::sync::atomic::AtomicU32::new(0),
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

    fn pop_free(&self, head_cell: &std::sync::atomic::AtomicU64) -> Option<u32> {
        use std::sync::atomic::Ordering as O;
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
        use std::sync::atomic::Ordering as O;
        let mut next = self.grow.lock();
        let start = *next;
        let end = (u64::from(start) + u64::from(n)).min(MAX_SLOTS as u64) as u32;
        for index in start..end {
            let slot = &self.chunks[index as usize >> CHUNK_BITS];
            if slot.load(O::Acquire).is_null() {
                // SAFETY: the layout has a non-zero size.
                let chunk = unsafe { std::alloc::alloc_zeroed(chunk_layout()) }.cast::<Slot>();
                if chunk.is_null() {
                    std::alloc::handle_alloc_error(chunk_layout());
                }
                // Zeroed atomics are valid slots: generation 0 (vacant).
                slot.store(chunk, O::Release);
            }
        }
        *next = end;
        self.claimed.store(end, O::Release);
        start..end
    }

    /// Returns a vacant index whose place has been taken (invariant 3).
    pub fn release(&self, index: u32) {
        use std::sync::atomic::Ordering as O;
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
            let chunk = self.chunks[base >> CHUNK_BITS].load(std::sync::atomic::Ordering::Acquire);
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

    /// Number of indices ever claimed (an upper bound for scans).
    pub fn high_water(&self) -> u32 {
        self.claimed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for chunk in self.chunks.iter() {
            let p = chunk.load(std::sync::atomic::Ordering::Acquire);
            if !p.is_null() {
                // SAFETY: by invariant 1 `p` came from `alloc_zeroed` with
                // `chunk_layout()` and is freed only here; `&mut self` proves
                // no slot reference is live.
                unsafe { std::alloc::dealloc(p.cast(), chunk_layout()) };
            }
        }
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
