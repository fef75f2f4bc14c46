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
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

const CHUNK_BITS: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 1 << 12;

/// Most records one arena can hold at once.
pub(crate) const MAX_SLOTS: usize = CHUNK_LEN * CHUNKS;

/// `place` of a vacant slot.
pub(crate) const NO_PLACE: u64 = u64::MAX;

pub(crate) struct Slot {
    pub generation: AtomicU32,
    pub place: AtomicU64,
}

pub(crate) struct SlotTable {
    chunks: Box<[AtomicPtr<Slot>]>,
    /// Serializes chunk allocation and `next`.
    grow: Mutex<u32>,
    /// Vacant indices (invariant 3), reused LIFO.
    free: Mutex<Vec<u32>>,
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
            free: Mutex::new(Vec::new()),
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

    /// A vacant index to fill, or `None` when the table is full.
    pub fn claim(&self) -> Option<u32> {
        if let Some(i) = self.free.lock().pop() {
            return Some(i);
        }
        let mut next = self.grow.lock();
        let index = *next as usize;
        if index >= MAX_SLOTS {
            return None;
        }
        let slot = &self.chunks[index >> CHUNK_BITS];
        if slot.load(Ordering::Acquire).is_null() {
            // SAFETY: the layout has a non-zero size.
            let chunk = unsafe { std::alloc::alloc_zeroed(chunk_layout()) }.cast::<Slot>();
            if chunk.is_null() {
                std::alloc::handle_alloc_error(chunk_layout());
            }
            // Zeroed atomics are valid slots: generation 0 (vacant).
            slot.store(chunk, Ordering::Release);
        }
        *next += 1;
        Some(index as u32)
    }

    /// Returns a vacant index whose place has been taken (invariant 3).
    pub fn release(&self, index: u32) {
        self.free.lock().push(index);
    }

    /// Number of indices ever claimed (an upper bound for scans).
    pub fn high_water(&self) -> u32 {
        *self.grow.lock()
    }
}

impl Drop for SlotTable {
    fn drop(&mut self) {
        for chunk in self.chunks.iter() {
            let p = chunk.load(Ordering::Acquire);
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
