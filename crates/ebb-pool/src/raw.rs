//! Owned, 64-byte aligned, zero-initialized heap buffers.
//!
//! Invariant: a `RawBuf` owns `cap > 0` bytes at `ptr`, allocated with
//! [`layout(cap)`](layout) and initialized (zeroed when allocated, written
//! only with initialized bytes since), and frees them on drop.

use std::alloc::Layout;
use std::ptr::NonNull;

use crate::retain::Retainable;

/// Buffers are 64-byte aligned: Arrow requires it of custom allocations,
/// and it keeps a buffer off its neighbours' cache lines.
pub const BUFFER_ALIGN: usize = 64;

/// The layout of a buffer of `cap` bytes, or `None` when too large.
pub(crate) fn layout(cap: usize) -> Option<Layout> {
    Layout::from_size_align(cap.max(1), BUFFER_ALIGN).ok()
}

pub(crate) struct RawBuf {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: a RawBuf uniquely owns its allocation (like `Box<[u8]>`), and
// nothing in it is tied to the allocating thread.
unsafe impl Send for RawBuf {}
// SAFETY: `&RawBuf` exposes only the pointer and capacity values.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    /// A zeroed buffer of `cap` bytes, or `None` when `cap` is 0, too large
    /// for a layout, or the allocator refuses.
    pub(crate) fn try_alloc_zeroed(cap: usize) -> Option<RawBuf> {
        if cap == 0 {
            return None;
        }
        let layout = layout(cap)?;
        // SAFETY: `layout` has a non-zero size (cap > 0).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| RawBuf { ptr, cap })
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    #[inline]
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }
}

impl Drop for RawBuf {
    fn drop(&mut self) {
        let layout = layout(self.cap).expect("the layout was valid at allocation");
        // SAFETY:
        // - `ptr` came from `alloc_zeroed` with this same layout (invariant);
        // - a RawBuf is dropped once, and nothing else frees its pointer.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Retainable for RawBuf {
    fn retained_bytes(&self) -> usize {
        self.cap
    }
}
