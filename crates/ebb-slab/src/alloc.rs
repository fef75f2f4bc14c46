//! [`SlabAlloc`], the owner of one allocation, and [`RawSlabAlloc`], its
//! plain parts for layers above that store places compactly. Invariants
//! cited by number are the `arena` module's.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::arena::{SlabArena, SlabId};

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
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
    pub(crate) slab: SlabId,
    pub(crate) arena: u32,
    pub(crate) _arena: PhantomData<&'a SlabArena>,
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
