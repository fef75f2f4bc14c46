//! Kernel truth: the arena's accounting agrees with what the kernel says
//! (mincore per mapping, statm for the process).
//!
//! Tests that read process RSS run in a child process of their own (this
//! test binary re-executed with `EBB_CHILD_TEST` set), because `cargo test`
//! runs tests as threads of one process and their memory would mix.

#![cfg(not(miri))]

use std::alloc::Layout;

use ebb_core::os;
use ebb_slab::{HugePages, SlabAlloc, SlabArena, SlabConfig};
use ebb_testkit::{Rng, in_child};

fn fill_mixed<'a>(arena: &'a SlabArena, total: usize, rng: &mut Rng) -> Vec<SlabAlloc<'a>> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while bytes < total {
        let size = 64 + (rng.below(4096 - 64 + 1)) as usize;
        let mut a = arena
            .alloc(Layout::from_size_align(size, 8).unwrap())
            .unwrap();
        a.as_mut_slice().fill(0x5A);
        bytes += size;
        out.push(a);
    }
    out
}

fn assert_agrees(arena: &SlabArena, what: &str) {
    let s = arena.stats();
    let kernel = arena.kernel_resident_bytes().unwrap();
    let slabs = s.slabs_active + s.slabs_sealed + s.large_mappings;
    let tolerance = slabs * os::page_size() as u64;
    assert!(
        s.resident_bytes.abs_diff(kernel) <= tolerance,
        "{what}: stats say {} resident, mincore {kernel} (tolerance {tolerance}); {s:?}",
        s.resident_bytes
    );
}

#[test]
fn resident_stats_agree_with_mincore() {
    let arena = SlabArena::new(
        SlabConfig::default()
            .with_huge_pages(HugePages::Disable)
            .with_shards(2),
    )
    .unwrap();
    let mut rng = Rng::new(7);
    let mut live = fill_mixed(&arena, 64 << 20, &mut rng);
    // A few dedicated mappings too.
    for _ in 0..3 {
        let mut a = arena
            .alloc(Layout::from_size_align(3 << 20, 8).unwrap())
            .unwrap();
        a.as_mut_slice().fill(1);
        live.push(a);
    }
    assert_agrees(&arena, "after fill");
    rng.shuffle(&mut live);
    let keep = live.len() / 4;
    for a in live.drain(keep..) {
        arena.free(a).unwrap();
    }
    assert_agrees(&arena, "after freeing 75 %");
    for a in live.drain(..) {
        arena.free(a).unwrap();
    }
    arena.seal_active_slabs();
    assert_agrees(&arena, "after freeing all");
    assert_eq!(arena.kernel_resident_bytes().unwrap(), 0);
}

#[test]
fn rss_falls_inside_the_free_calls() {
    if !in_child("rss_falls_inside_the_free_calls") {
        return;
    }
    const TOTAL: usize = 256 << 20;
    let arena = SlabArena::new(SlabConfig::default()).unwrap();
    let mut rng = Rng::new(42);
    let mut live = fill_mixed(&arena, TOTAL, &mut rng);
    rng.shuffle(&mut live);
    let rss_full = os::rss_bytes().unwrap();
    for a in live.drain(..) {
        arena.free(a).unwrap();
    }
    // No sleep: the drop must have happened inside the frees.
    let rss_after = os::rss_bytes().unwrap();
    let dropped = rss_full.saturating_sub(rss_after);
    println!("rss full {rss_full} after {rss_after} dropped {dropped}");
    assert!(
        dropped as f64 >= 0.95 * TOTAL as f64,
        "RSS fell by {dropped} bytes, less than 95 % of {TOTAL}"
    );
    assert_eq!(arena.stats().live_bytes, 0);
}
