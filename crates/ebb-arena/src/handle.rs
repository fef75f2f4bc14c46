//! Handles: 8 bytes, `Copy`, generational.
//!
//! A handle is a slot index and the generation the slot had when the record
//! was inserted. Generations are odd while a slot is occupied and even while
//! it is vacant, and only ever grow, so a handle to a removed record never
//! matches again, even after its slot is reused (until 2^31 reuses of one
//! slot wrap the counter).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

/// A handle to a `T` in a [`TypedArena`](crate::TypedArena).
pub struct Handle<T> {
    pub(crate) index: u32,
    pub(crate) generation: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        Handle {
            index,
            generation,
            _type: PhantomData,
        }
    }

    /// The handle as one `u64` (index in the high half), for storing in an
    /// index or on disk next to the arena.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// The handle back from [`to_bits`](Self::to_bits). A value that was never
    /// a handle of the arena simply finds nothing.
    pub fn from_bits(bits: u64) -> Self {
        Handle::new((bits >> 32) as u32, bits as u32)
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
        self.index == other.index && self.generation == other.generation
    }
}
impl<T> Eq for Handle<T> {}
impl<T> Hash for Handle<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.to_bits().hash(state);
    }
}
impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({}v{})", self.index, self.generation)
    }
}

/// A handle to a byte record in a [`BlobArena`](crate::BlobArena).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlobHandle {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl BlobHandle {
    /// The handle as one `u64` (see [`Handle::to_bits`]).
    pub fn to_bits(self) -> u64 {
        (u64::from(self.index) << 32) | u64::from(self.generation)
    }

    /// The handle back from [`to_bits`](Self::to_bits).
    pub fn from_bits(bits: u64) -> Self {
        BlobHandle {
            index: (bits >> 32) as u32,
            generation: bits as u32,
        }
    }
}

const _: () = assert!(std::mem::size_of::<Handle<[u8; 64]>>() == 8);
const _: () = assert!(std::mem::size_of::<BlobHandle>() == 8);
