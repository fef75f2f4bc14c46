//! The slab table: slab id -> entry, readable without locks.
//!
//! Two levels: a fixed array of chunk pointers, each chunk a fixed array of
//! entries, allocated the first time an id in it is used and never freed
//! before the table. An entry's address is therefore stable for the life of
//! the table, and a lookup is two loads.
//!
//! Invariants:
//!
//! 1. A non-null chunk pointer came from `Box::into_raw` of a `Chunk`, is
//!    published once (Release) under the arena's pool lock, and is freed
//!    only by `Drop`.
//! 2. Ids handed out are below `CHUNKS * CHUNK_LEN`, and the chunk of every
//!    id handed out is published before the id is.

use std::ptr;

use parking_lot::Mutex;

use crate::live::LiveCounter;
use ebb_core::os::Mapping;
use ebb_core::sync::{AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering};

const CHUNK_BITS: u32 = 10;
const CHUNK_LEN: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 1024;

/// The most slabs (and dedicated mappings) one arena can hold at once.
pub(crate) const MAX_SLABS: usize = CHUNKS * CHUNK_LEN;

pub(crate) const STATE_UNUSED: u8 = 0;
pub(crate) const STATE_ACTIVE: u8 = 1;
pub(crate) const STATE_SEALED: u8 = 2;
pub(crate) const STATE_RELEASED: u8 = 3;
pub(crate) const STATE_LARGE: u8 = 4;
pub(crate) const STATE_WARM: u8 = 5;

/// One slab or dedicated mapping.
pub(crate) struct SlabEntry {
    /// First byte of the mapping; null while the id is unused.
    pub base: AtomicPtr<u8>,
    /// Mapping length in bytes.
    pub len: AtomicUsize,
    /// Live bytes (see `live`).
    pub live: LiveCounter,
    /// Page-rounded bytes handed out (the bump high-water mark); written by
    /// the slab's owner only (plain stores), read by stats.
    pub touched: AtomicUsize,
    /// Bytes allocated into the slab since it became active; written by the
    /// owner only (plain stores), read by stats to compute an active slab's
    /// live bytes (`allocated - (ACTIVE_BIAS - counter)`).
    pub allocated: AtomicU64,
    /// One of the `STATE_*` constants.
    pub state: AtomicU8,
    /// The mapping itself. Locked only on the slow paths (map, release,
    /// unmap); lock order: pool, then entry.
    pub mapping: Mutex<Option<Mapping>>,
}

impl SlabEntry {
    fn new() -> SlabEntry {
        SlabEntry {
            base: AtomicPtr::new(ptr::null_mut()),
            len: AtomicUsize::new(0),
            live: LiveCounter::new_active(),
            touched: AtomicUsize::new(0),
            allocated: AtomicU64::new(0),
            state: AtomicU8::new(STATE_UNUSED),
            mapping: Mutex::new(None),
        }
    }
}

type Chunk = [SlabEntry; CHUNK_LEN];

pub(crate) struct SlabTable {
    chunks: Box<[AtomicPtr<Chunk>]>,
    /// One past the highest id [`ensure`](Self::ensure)d: no entry at or
    /// above it was ever used, so [`entries`](Self::entries) stops there
    /// (a scrape walks every arena's table; most use a few slabs of a
    /// 1024-entry chunk).
    high: AtomicUsize,
}

impl SlabTable {
    pub fn new() -> SlabTable {
        SlabTable {
            chunks: (0..CHUNKS)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            high: AtomicUsize::new(0),
        }
    }

    /// The entry of `id`, if its chunk exists.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&SlabEntry> {
        let id = id as usize;
        let chunk = self.chunks.get(id >> CHUNK_BITS)?.load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: by invariant 1 a non-null chunk pointer is a live `Chunk`
        // that outlives `&self`; entries are only accessed through shared
        // references (all their fields are atomics or locks).
        Some(unsafe { &(*chunk)[id & (CHUNK_LEN - 1)] })
    }

    /// Makes sure the chunk of `id` exists. Called under the pool lock, so
    /// two threads never publish the same chunk (invariant 1).
    pub fn ensure(&self, id: u32) {
        let slot = &self.chunks[id as usize >> CHUNK_BITS];
        if slot.load(Ordering::Acquire).is_null() {
            let chunk: Box<Chunk> = Box::new(std::array::from_fn(|_| SlabEntry::new()));
            slot.store(Box::into_raw(chunk), Ordering::Release);
        }
        // Under the pool lock: no other writer. Release pairs with the
        // Acquire in `entries`, after the chunk's publication above.
        let next = id as usize + 1;
        if next > self.high.load(Ordering::Relaxed) {
            self.high.store(next, Ordering::Release);
        }
    }

    /// Every entry that exists, with its id.
    pub fn entries(&self) -> impl Iterator<Item = (u32, &SlabEntry)> {
        let high = self.high.load(Ordering::Acquire);
        self.entries_all()
            .take_while(move |(id, _)| (*id as usize) < high)
    }

    fn entries_all(&self) -> impl Iterator<Item = (u32, &SlabEntry)> {
        self.chunks.iter().enumerate().flat_map(|(c, slot)| {
            let chunk = slot.load(Ordering::Acquire);
            (!chunk.is_null())
                .then(|| {
                    // SAFETY: as in `get`: a published chunk lives as long as
                    // the table.
                    let chunk: &Chunk = unsafe { &*chunk };
                    chunk
                        .iter()
                        .enumerate()
                        .map(move |(i, e)| ((c * CHUNK_LEN + i) as u32, e))
                })
                .into_iter()
                .flatten()
        })
    }
}

impl Drop for SlabTable {
    fn drop(&mut self) {
        for slot in self.chunks.iter() {
            let chunk = slot.load(Ordering::Acquire);
            if !chunk.is_null() {
                // SAFETY: by invariant 1 the pointer came from
                // `Box::into_raw` and is freed only here; `&mut self` proves
                // no entry reference is live.
                drop(unsafe { Box::from_raw(chunk) });
            }
        }
    }
}
