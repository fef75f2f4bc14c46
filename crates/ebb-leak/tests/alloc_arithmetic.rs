//! The allocator's counting on sizes no real allocator grants: an inner
//! allocator that "succeeds" for any layout (it hands out a dangling,
//! aligned pointer and never touches it). Counting must not panic for any
//! size `Layout` allows: a panic inside a global allocator unwinds out of
//! a function that may not unwind. Its own binary: it moves the process's
//! counters by absurd amounts.

use std::alloc::{GlobalAlloc, Layout};

use ebb_leak::TrackingAllocator;

/// Grants every request without memory behind it.
struct Pretend;

// SAFETY: test-only; the pointers handed out are never dereferenced (by
// this test or the wrapper), only passed back to `dealloc`, which ignores
// them. No caller here relies on the memory existing.
unsafe impl GlobalAlloc for Pretend {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        std::ptr::without_provenance_mut(layout.align())
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[test]
fn counting_huge_sizes_wraps_instead_of_panicking() {
    let alloc = TrackingAllocator::new(Pretend);
    let tiny = Layout::from_size_align(8, 8).unwrap();
    let small = Layout::from_size_align(60 << 10, 8).unwrap();
    let huge = Layout::from_size_align(isize::MAX as usize - 63, 64).unwrap();
    let before = ebb_leak::alloc::stats();
    // The first operation of the thread flushes at once (registration).
    // SAFETY: a non-zero size; `Pretend` grants anything.
    let t = unsafe { alloc.alloc(tiny) };
    // 60 KiB pending (under the flush threshold), then isize::MAX more:
    // the thread's byte delta passed i64::MAX and overflowed.
    // SAFETY: as above.
    let (a, b) = unsafe { (alloc.alloc(small), alloc.alloc(huge)) };
    // And a second huge one: the global current-bytes sum passed i64::MAX.
    // SAFETY: as above.
    let c = unsafe { alloc.alloc(huge) };
    let during = ebb_leak::alloc::stats();
    // SAFETY: each pointer came from `alloc` with the same layout.
    unsafe {
        alloc.dealloc(c, huge);
        alloc.dealloc(b, huge);
        alloc.dealloc(a, small);
        alloc.dealloc(t, tiny);
    }
    let after = ebb_leak::alloc::stats();
    assert_eq!(during.allocations_total - before.allocations_total, 4);
    assert_eq!(after.frees_total - during.frees_total, 4);
    // Wrapping sums still cancel exactly.
    assert_eq!(after.current_bytes, before.current_bytes, "{after:?}");
}
