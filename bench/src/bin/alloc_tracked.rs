//! The allocation-heavy loop under ebb-leak's TrackingAllocator over the
//! system allocator (`peers leak-overhead` compares it with `alloc_bare`).

use std::alloc::System;

use ebb_leak::TrackingAllocator;

#[global_allocator]
static ALLOC: TrackingAllocator<System> = TrackingAllocator::new(System);

fn main() {
    ebb_bench::leak::alloc_main("tracking");
    let heap = ebb_leak::alloc::stats();
    eprintln!(
        "tracking allocator saw {} allocations, {} frees",
        heap.allocations_total, heap.frees_total
    );
}
