//! Fault injection on every public path of [`SlabArena`] that reaches
//! `mmap` or `madvise` (issue 12), through the per-thread schedules of
//! `ebb_core::os::fault`.
//!
//! Public fallible paths of ebb-slab, and which of them reach the OS:
//!
//! | path | reaches | covered by |
//! |---|---|---|
//! | `SlabArena::alloc` (small: a new slab) | `mmap` | `alloc_that_needs_a_new_slab_fails_with_os_and_keeps_every_allocation` |
//! | `SlabArena::alloc` (large: a dedicated mapping) | `mmap` | `large_alloc_fails_with_os_and_keeps_every_allocation` |
//! | `SlabArena::alloc` (alignment above half a slab: over-map and trim) | `mmap`, trim `munmap` | `failed_alignment_trims_are_not_errors`, `large_alloc_fails_with_os_and_keeps_every_allocation` |
//! | `SlabArena::alloc_owned` (new slab, large) | `mmap` | `alloc_owned_fails_with_os_and_keeps_every_allocation` |
//! | `SlabArena::try_alloc_owned` | never (returns `None` instead) | `try_alloc_owned_never_maps` |
//! | `SlabArena::reserve_target` | `mmap` | `reserve_target_fails_with_os_and_keeps_every_allocation` |
//! | huge page hint on a new slab (`HugePages::Enable`) | `madvise(MADV_HUGEPAGE)` | `refused_huge_page_hint_is_not_an_error` |
//! | `SlabArena::free` (last free of a sealed slab) | `madvise(MADV_DONTNEED)` | `failed_release_on_free_unmaps_the_slab_and_is_counted` |
//! | `SlabArena::release_warm_slabs`, `set_extra_warm_slabs` | `madvise` | `failed_release_of_warm_slabs_is_counted` |
//! | `SlabArena::seal_active_slabs`, `seal_owned` (an empty slab) | `madvise` | `failed_release_at_seal_is_counted` |
//!
//! Not covered, and why: `SlabArena::new` maps nothing (its errors are
//! configuration errors); `alloc_in` bumps in a slab already reserved;
//! `free`'s only error is `ForeignAllocation` (a failed release is never
//! the caller's error: the slab is unmapped instead and counted in
//! `release_failures_total`); `free_bytes` releases through the same
//! `release` as `free`; `kernel_resident_bytes` calls `mincore`, which
//! the fault module does not schedule.
//!
//! Each test schedules a failure, makes the call, matches the typed error
//! (or, where the design says an OS failure is not the caller's error,
//! checks the counter), checks that what was accepted before reads back
//! unchanged and that the stats and the budget are exact, then resets the
//! schedule and shows the same call succeed.

#![cfg(not(miri))]

use std::alloc::Layout;

use ebb_core::MemoryBudget;
use ebb_core::os::fault;
use ebb_slab::{Error, HugePages, SlabAlloc, SlabArena, SlabConfig, SlabStats};

const SLAB: usize = 64 << 10;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// One shard, no retained or warm slabs unless a test asks: every new slab
/// is a fresh `mmap`, every release a `madvise`.
fn config(budget: &MemoryBudget) -> SlabConfig {
    SlabConfig::default()
        .with_slab_bytes(SLAB)
        .with_shards(1)
        .with_max_retained_slabs(0)
        .with_budget(budget, "faults")
}

fn fill(a: &mut SlabAlloc<'_>, seed: u8) {
    for (i, b) in a.as_mut_slice().iter_mut().enumerate() {
        *b = seed.wrapping_add(i as u8);
    }
}

fn intact(a: &SlabAlloc<'_>, seed: u8) -> bool {
    a.as_slice()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == seed.wrapping_add(i as u8))
}

/// The injected `mmap` failure (`ENOMEM`), as ebb-slab reports it.
fn is_mmap_failure(e: &Error) -> bool {
    matches!(e, Error::Os(ebb_core::Error::Os { op: "mmap", source })
        if source.kind() == std::io::ErrorKind::OutOfMemory)
}

/// What a failed call must leave as it was.
fn accepted(s: &SlabStats) -> (u64, u64, u64, u64, u64) {
    (
        s.live_bytes,
        s.reserved_bytes,
        s.large_mappings,
        s.releases_total,
        s.release_failures_total,
    )
}

/// Two allocations that fill the shard's slab exactly, written.
fn full_slab(a: &SlabArena) -> Vec<SlabAlloc<'_>> {
    let mut held: Vec<_> = (0..2)
        .map(|_| a.alloc(layout(SLAB / 2, 8)).unwrap())
        .collect();
    for (i, x) in held.iter_mut().enumerate() {
        fill(x, i as u8);
    }
    held
}

fn check_and_free(a: &SlabArena, held: Vec<SlabAlloc<'_>>) {
    for (i, x) in held.into_iter().enumerate() {
        assert!(intact(&x, i as u8), "allocation {i} changed");
        a.free(x).unwrap();
    }
}

#[test]
fn alloc_that_needs_a_new_slab_fails_with_os_and_keeps_every_allocation() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let held = full_slab(&a);
    let before = a.stats();
    fault::fail_maps(0, 1);
    let r = a.alloc(layout(100, 8));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_mmap_failure(e)), "{r:?}");
    let after = a.stats();
    assert_eq!(accepted(&after), accepted(&before));
    assert_eq!(after.slabs_active + after.slabs_sealed, 1);
    assert_eq!(budget.reserved_bytes(), SLAB as u64);
    // Same call, no schedule: a new slab.
    let mut x = a.alloc(layout(100, 8)).unwrap();
    fill(&mut x, 9);
    assert_eq!(a.stats().reserved_bytes, 2 * SLAB as u64);
    assert_eq!(budget.reserved_bytes(), 2 * SLAB as u64);
    assert!(intact(&x, 9));
    a.free(x).unwrap();
    check_and_free(&a, held);
}

#[test]
fn large_alloc_fails_with_os_and_keeps_every_allocation() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let held = full_slab(&a);
    // A dedicated mapping (size over half a slab), then one whose alignment
    // is over half a slab (over-mapped and trimmed).
    for l in [layout(3 * SLAB, 8), layout(64, 2 * SLAB)] {
        let before = a.stats();
        fault::fail_maps(0, 1);
        let r = a.alloc(l);
        fault::reset();
        assert!(matches!(&r, Err(e) if is_mmap_failure(e)), "{l:?}: {r:?}");
        assert_eq!(accepted(&a.stats()), accepted(&before), "{l:?}");
        assert_eq!(budget.reserved_bytes(), before.reserved_bytes, "{l:?}");
        let mut x = a.alloc(l).unwrap();
        assert_eq!(x.as_ptr() as usize % l.align(), 0);
        fill(&mut x, 3);
        let s = a.stats();
        assert_eq!(s.large_mappings, 1);
        assert_eq!(s.live_bytes, before.live_bytes + l.size() as u64);
        assert!(intact(&x, 3));
        a.free(x).unwrap();
        let s = a.stats();
        assert_eq!(
            (s.live_bytes, s.reserved_bytes),
            (before.live_bytes, before.reserved_bytes)
        );
        assert_eq!(s.releases_total, before.releases_total + 1);
    }
    check_and_free(&a, held);
    assert_eq!(a.stats().large_mappings, 0);
}

#[test]
fn failed_alignment_trims_are_not_errors() {
    // A trim that fails leaves the excess mapped (address space only), and
    // the mapping still aligned: not an error for the caller.
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let held = full_slab(&a);
    let before = a.stats();
    // More than the trims these two mappings make (a head and a tail each
    // at most): every one of them fails.
    fault::fail_trims(0, 8);
    let r = a.alloc(layout(64, 2 * SLAB));
    let small = a.alloc(layout(100, 8));
    fault::reset();
    let (mut big, mut small) = (r.unwrap(), small.unwrap());
    assert_eq!(big.as_ptr() as usize % (2 * SLAB), 0);
    // The new slab is aligned to the slab size (arena invariant 4), so its
    // offsets are right.
    assert_eq!(small.as_ptr() as usize % SLAB, 0);
    assert_eq!(a.slab_of(small.as_ptr()).map(|addr| addr.offset), Some(0));
    fill(&mut big, 1);
    fill(&mut small, 2);
    let s = a.stats();
    // Only the aligned lengths are reserved, not the untrimmed excess.
    assert_eq!(
        s.reserved_bytes,
        before.reserved_bytes + SLAB as u64 + a_page() as u64
    );
    assert_eq!(budget.reserved_bytes(), s.reserved_bytes);
    assert!(intact(&big, 1) && intact(&small, 2));
    a.free(big).unwrap();
    a.free(small).unwrap();
    check_and_free(&a, held);
    // And with the schedule gone, the same calls work as ever.
    let big = a.alloc(layout(64, 2 * SLAB)).unwrap();
    assert_eq!(big.as_ptr() as usize % (2 * SLAB), 0);
    a.free(big).unwrap();
}

fn a_page() -> usize {
    ebb_core::os::page_size()
}

#[test]
fn alloc_owned_fails_with_os_and_keeps_every_allocation() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let mut owned = a.owned_slab();
    let mut held: Vec<_> = (0..2)
        .map(|_| a.alloc_owned(&mut owned, layout(SLAB / 2, 8)).unwrap())
        .collect();
    for (i, x) in held.iter_mut().enumerate() {
        fill(x, i as u8);
    }
    let before = a.stats();
    for l in [layout(100, 8), layout(3 * SLAB, 8)] {
        fault::fail_maps(0, 1);
        let r = a.alloc_owned(&mut owned, l);
        fault::reset();
        assert!(matches!(&r, Err(e) if is_mmap_failure(e)), "{l:?}: {r:?}");
        assert_eq!(accepted(&a.stats()), accepted(&before), "{l:?}");
        assert_eq!(budget.reserved_bytes(), before.reserved_bytes, "{l:?}");
    }
    for l in [layout(100, 8), layout(3 * SLAB, 8)] {
        let mut x = a.alloc_owned(&mut owned, l).unwrap();
        fill(&mut x, 7);
        assert!(intact(&x, 7));
        a.free(x).unwrap();
    }
    a.seal_owned(&mut owned);
    check_and_free(&a, held);
    assert_eq!(a.stats().live_bytes, 0);
}

#[test]
fn try_alloc_owned_never_maps() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let mut owned = a.owned_slab();
    let first = a.alloc_owned(&mut owned, layout(SLAB / 2, 8)).unwrap();
    fault::fail_maps(0, 1);
    // Room in the owned slab: a bump, no mapping.
    let second = a.try_alloc_owned(&mut owned, layout(SLAB / 2, 8)).unwrap();
    // Full: the fast path declines rather than map (or fail).
    assert!(a.try_alloc_owned(&mut owned, layout(8, 8)).is_none());
    let before = a.stats();
    // The failure is still scheduled: the fast path never reached mmap.
    let r = a.alloc_owned(&mut owned, layout(8, 8));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_mmap_failure(e)), "{r:?}");
    assert_eq!(accepted(&a.stats()), accepted(&before));
    let third = a.alloc_owned(&mut owned, layout(8, 8)).unwrap();
    assert!(
        a.try_alloc_owned(&mut owned, layout(8, 8))
            .is_some_and(|x| {
                a.free(x).unwrap();
                true
            })
    );
    for x in [first, second, third] {
        a.free(x).unwrap();
    }
    a.seal_owned(&mut owned);
    assert_eq!(a.stats().live_bytes, 0);
}

#[test]
fn reserve_target_fails_with_os_and_keeps_every_allocation() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let held = full_slab(&a);
    let before = a.stats();
    fault::fail_maps(0, 1);
    let r = a.reserve_target();
    fault::reset();
    assert!(matches!(&r, Err(e) if is_mmap_failure(e)), "{:?}", r.err());
    let after = a.stats();
    assert_eq!(accepted(&after), accepted(&before));
    assert_eq!(after.slabs_active, before.slabs_active);
    assert_eq!(budget.reserved_bytes(), before.reserved_bytes);
    let mut target = a.reserve_target().unwrap();
    let mut x = a.alloc_in(&mut target, layout(100, 8)).unwrap().unwrap();
    fill(&mut x, 5);
    assert!(intact(&x, 5));
    assert_eq!(
        a.stats().reserved_bytes,
        before.reserved_bytes + SLAB as u64
    );
    a.free(x).unwrap();
    drop(target);
    check_and_free(&a, held);
}

#[test]
fn refused_huge_page_hint_is_not_an_error() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget).with_huge_pages(HugePages::Enable)).unwrap();
    fault::fail_advises(0, 1);
    // The hint on the new slab is refused: logged, not the caller's error.
    let r = a.alloc(layout(SLAB / 2, 8));
    let mut x = r.unwrap();
    fill(&mut x, 4);
    let y = a.alloc(layout(SLAB / 2, 8)).unwrap();
    // The refusal was the hint's: the release of the full slab succeeds.
    a.free(y).unwrap();
    assert!(intact(&x, 4));
    a.free(x).unwrap();
    a.seal_active_slabs();
    fault::reset();
    let s = a.stats();
    assert_eq!((s.releases_total, s.release_failures_total), (1, 0));
    assert_eq!((s.live_bytes, s.reserved_bytes), (0, 0));
    assert_eq!(budget.reserved_bytes(), 0);
    // Same call, no schedule.
    let x = a.alloc(layout(SLAB / 2, 8)).unwrap();
    a.free(x).unwrap();
}

#[test]
fn failed_release_on_free_unmaps_the_slab_and_is_counted() {
    let budget = MemoryBudget::unlimited();
    // Retention on: a successful release keeps the slab mapped (released),
    // a failed one unmaps it.
    let a = SlabArena::new(config(&budget).with_max_retained_slabs(4)).unwrap();
    let first = full_slab(&a);
    let second = full_slab(&a);
    let mut keep = a.alloc(layout(64, 8)).unwrap();
    fill(&mut keep, 8);
    fault::fail_advises(0, 1);
    check_and_free(&a, first);
    fault::reset();
    let s = a.stats();
    assert_eq!(s.release_failures_total, 1);
    assert_eq!(s.releases_total, 1);
    assert_eq!(s.slabs_released, 0, "a failed release must not be retained");
    assert_eq!(s.reserved_bytes, 2 * SLAB as u64);
    assert_eq!(budget.reserved_bytes(), 2 * SLAB as u64);
    assert_eq!(s.live_bytes, SLAB as u64 + 64);
    assert!(intact(&keep, 8));
    // Memory stays usable: a new slab is mapped for what comes next.
    let third = full_slab(&a);
    assert!(intact(&keep, 8));
    // Same release, no schedule: madvise succeeds and the slab is retained.
    check_and_free(&a, second);
    let s = a.stats();
    assert_eq!((s.release_failures_total, s.releases_total), (1, 2));
    assert_eq!(s.slabs_released, 1);
    check_and_free(&a, third);
    a.free(keep).unwrap();
}

#[test]
fn failed_release_of_warm_slabs_is_counted() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    let (first, second, third) = (full_slab(&a), full_slab(&a), full_slab(&a));
    let mut keep = a.alloc(layout(64, 8)).unwrap();
    fill(&mut keep, 6);
    a.set_extra_warm_slabs(2);
    check_and_free(&a, first);
    check_and_free(&a, second);
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.releases_total), (2, 0));
    // Lowering the cap releases the excess warm slab: its madvise fails.
    fault::fail_advises(0, 1);
    a.set_extra_warm_slabs(1);
    fault::reset();
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (1, 1));
    assert_eq!(s.reserved_bytes, 3 * SLAB as u64);
    assert_eq!(budget.reserved_bytes(), 3 * SLAB as u64);
    assert!(intact(&keep, 6));
    // Same call, no schedule.
    a.set_extra_warm_slabs(2);
    check_and_free(&a, third);
    a.set_extra_warm_slabs(1);
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (1, 1));
    assert_eq!(s.releases_total, 2);
    // release_warm_slabs, failing then not.
    fault::fail_advises(0, 1);
    assert_eq!(a.release_warm_slabs(), SLAB as u64);
    fault::reset();
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (0, 2));
    assert_eq!(s.reserved_bytes, SLAB as u64);
    assert_eq!(budget.reserved_bytes(), SLAB as u64);
    assert!(intact(&keep, 6));
    a.free(keep).unwrap();
    a.seal_active_slabs();
    assert_eq!(a.stats().slabs_warm, 1);
    assert_eq!(a.release_warm_slabs(), a_page() as u64);
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (0, 2));
    assert_eq!((s.live_bytes, s.reserved_bytes), (0, 0));
}

#[test]
fn failed_release_at_seal_is_counted() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(config(&budget)).unwrap();
    // An active slab whose allocations were all freed, and an owned one.
    let x = a.alloc(layout(64, 8)).unwrap();
    a.free(x).unwrap();
    let mut owned = a.owned_slab();
    let y = a.alloc_owned(&mut owned, layout(64, 8)).unwrap();
    a.free(y).unwrap();
    assert_eq!(a.stats().reserved_bytes, 2 * SLAB as u64);
    fault::fail_advises(0, 2);
    a.seal_active_slabs();
    a.seal_owned(&mut owned);
    fault::reset();
    let s = a.stats();
    assert_eq!((s.releases_total, s.release_failures_total), (2, 2));
    assert_eq!((s.live_bytes, s.reserved_bytes), (0, 0));
    assert_eq!(budget.reserved_bytes(), 0);
    // The same seals, no schedule.
    let x = a.alloc(layout(64, 8)).unwrap();
    a.free(x).unwrap();
    let y = a.alloc_owned(&mut owned, layout(64, 8)).unwrap();
    a.free(y).unwrap();
    a.seal_active_slabs();
    a.seal_owned(&mut owned);
    let s = a.stats();
    assert_eq!((s.releases_total, s.release_failures_total), (4, 2));
    assert_eq!(s.reserved_bytes, 0);
}
