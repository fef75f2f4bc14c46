//! TrackingAllocator installed as this test binary's global allocator.

use std::alloc::System;
use std::hint::black_box;

use ebb_leak::{TrackingAllocator, alloc};

#[global_allocator]
static ALLOC: TrackingAllocator<System> = TrackingAllocator::new(System);

// One test function: the counters are process-wide and the harness runs
// tests on threads of one process.
#[test]
fn counts_allocations_frees_bytes_and_threads_that_exit() {
    assert!(
        alloc::is_installed() || {
            drop(black_box(Box::new(1u8)));
            alloc::is_installed()
        }
    );

    // Exact on this thread after a flush.
    let before = alloc::stats();
    let v: Vec<Box<[u8; 1000]>> = (0..10).map(|_| Box::new([0u8; 1000])).collect();
    let mid = alloc::stats();
    assert!(
        mid.allocations_total - before.allocations_total >= 11,
        "10 boxes and the vec"
    );
    assert!(mid.current_bytes - before.current_bytes >= 10_000);
    drop(black_box(v));
    let after = alloc::stats();
    assert!(after.frees_total - mid.frees_total >= 11);
    assert!(
        (after.current_bytes - before.current_bytes).abs() < 4096,
        "{before:?} -> {after:?}"
    );

    // A thread that keeps memory and exits: its deltas are flushed at exit
    // even below the threshold.
    let before = alloc::stats();
    let kept = std::thread::spawn(|| black_box(vec![7u8; 3000]))
        .join()
        .unwrap();
    let after = alloc::stats();
    assert!(
        after.current_bytes - before.current_bytes >= 3000,
        "{before:?} -> {after:?}"
    );
    drop(kept);

    // Peak follows the high-water mark.
    alloc::reset_peak();
    let base = alloc::stats().peak_bytes;
    let big = black_box(vec![1u8; 8 << 20]);
    let peak = alloc::stats().peak_bytes;
    assert!(peak - base >= 8 << 20);
    drop(big);
    assert!(alloc::stats().peak_bytes >= peak);
}
