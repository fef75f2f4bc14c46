//! Handles: 8 bytes, `Copy`, generational.
//!
//! A handle is a slot index and the generation the slot had when the record
//! was inserted. Generations are odd while a slot is occupied and even while
//! it is vacant, and only ever grow, so a handle to a removed record never
//! matches again, even after its slot is reused (until 2^31 reuses of one
//! slot wrap the counter).
//!
//! A handle also carries its arena's identity: its bits are XORed with a
//! 63-bit salt derived from the arena's unique id (the generation's parity
//! bit is left alone). A handle of another arena therefore decodes to a
//! scrambled index (past the table 15 times in 16) and generation, and finds
//! nothing except by a coincidence of about one in 2^35; even then it reads
//! a live record of this arena, never freed memory: any bits are safe (see
//! `from_bits`).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// A handle to a `T` in a [`TypedArena`](crate::TypedArena).
///
/// One `u64` inside (index in the high half, generation in the low), so it
/// is written and read as one word: built from two `u32` fields, a handle
/// returned through memory was stored in halves and loaded whole, and the
/// failed store-to-load forward cost the insert loop ~5 ns a record.
pub struct Handle<T> {
    bits: u64,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Handle<T> {
    /// The handle as one `u64` (index in the high half), for storing in an
    /// index or on disk next to the arena.
    #[inline]
    pub fn to_bits(self) -> u64 {
        self.bits
    }

    /// The handle back from [`to_bits`](Self::to_bits). Any bits are safe
    /// to use: bits that are not a live handle of the arena it is used on
    /// (never issued, removed, or another arena's) find nothing, and bits
    /// that are find exactly that record.
    #[inline]
    pub fn from_bits(bits: u64) -> Self {
        Handle {
            bits,
            _type: PhantomData,
        }
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}
impl<T> Eq for Handle<T> {}
impl<T> Hash for Handle<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({:#018x})", self.bits)
    }
}

/// A handle to a byte record in a [`BlobArena`](crate::BlobArena) (one
/// `u64` inside, as [`Handle`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobHandle {
    bits: u64,
}

impl BlobHandle {
    /// The handle as one `u64` (see [`Handle::to_bits`]).
    #[inline]
    pub fn to_bits(self) -> u64 {
        self.bits
    }

    /// The handle back from [`to_bits`](Self::to_bits).
    #[inline]
    pub fn from_bits(bits: u64) -> Self {
        BlobHandle { bits }
    }
}

impl fmt::Debug for BlobHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHandle({:#018x})", self.bits)
    }
}

const _: () = assert!(std::mem::size_of::<Handle<[u8; 64]>>() == 8);
const _: () = assert!(std::mem::size_of::<BlobHandle>() == 8);
