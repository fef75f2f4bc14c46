//! Scenario tests of SlabArena's API: layouts, large mappings, addressing,
//! compaction targets, retention, budget and injected OS failures.

use std::alloc::Layout;

use ebb_core::MemoryBudget;
use ebb_core::os::fault;
use ebb_slab::{Error, ReleaseMode, SlabArena, SlabConfig, SlabId, SlabState};

const SLAB: usize = 64 << 10;

fn arena() -> SlabArena {
    SlabArena::new(SlabConfig::default().with_slab_bytes(SLAB).with_shards(1)).unwrap()
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn bad_configs_and_layouts_are_errors_not_panics() {
    for bytes in [0, 3000, 4096 * 3, 2 << 30] {
        let r = SlabArena::new(SlabConfig::default().with_slab_bytes(bytes));
        assert!(matches!(r, Err(Error::BadConfig(_))), "{bytes}");
    }
    assert!(matches!(
        SlabArena::new(SlabConfig::default().with_shards(0)),
        Err(Error::BadConfig(_))
    ));
    let a = arena();
    assert!(matches!(a.alloc(layout(0, 1)), Err(Error::ZeroSize)));
    assert!(matches!(
        a.alloc(layout(isize::MAX as usize - 4096, 1)),
        Err(Error::BadLayout { .. }) | Err(Error::Os(_))
    ));
    assert_eq!(a.stats().live_bytes, 0);
    assert_eq!(a.stats().reserved_bytes, 0);
}

#[test]
fn alignment_is_honoured_in_slabs_and_dedicated_mappings() {
    let a = arena();
    let mut held = Vec::new();
    for align in [1, 2, 8, 64, 512, 4096, 16384] {
        for size in [1, 7, 100, 5000] {
            let x = a.alloc(layout(size, align)).unwrap();
            assert_eq!(x.as_ptr() as usize % align, 0, "size {size} align {align}");
            held.push(x);
        }
    }
    let big = a.alloc(layout(SLAB, 1 << 16)).unwrap();
    assert_eq!(big.as_ptr() as usize % (1 << 16), 0);
    assert_eq!(a.slab_info(big.slab()).unwrap().state, SlabState::Large);
    held.push(big);
    for x in held {
        a.free(x).unwrap();
    }
    assert_eq!(a.stats().live_bytes, 0);
}

#[test]
fn large_allocation_gets_its_own_mapping_and_unmaps_on_free() {
    let a = arena();
    let mut x = a.alloc(layout(SLAB / 2 + 1, 8)).unwrap();
    x.as_mut_slice().fill(0xAB);
    let s = a.stats();
    assert_eq!(s.large_mappings, 1);
    assert_eq!(s.live_bytes, (SLAB / 2 + 1) as u64);
    assert_eq!(s.reserved_bytes, (SLAB / 2 + 4096) as u64);
    assert_eq!(s.slabs_active, 0);
    a.free(x).unwrap();
    let s = a.stats();
    assert_eq!(
        (
            s.large_mappings,
            s.reserved_bytes,
            s.live_bytes,
            s.resident_bytes
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn freeing_into_the_wrong_arena_is_refused() {
    let a = arena();
    let b = arena();
    let x = a.alloc(layout(16, 8)).unwrap();
    assert!(matches!(b.free(x), Err(Error::ForeignAllocation)));
    assert_eq!(a.stats().live_bytes, 16);
}

#[test]
fn sealed_slab_is_released_by_its_last_free_and_then_reused() {
    let a = arena();
    let l = layout(1024, 8);
    // 64 records fill the first slab exactly; the 65th seals it.
    let first: Vec<_> = (0..64).map(|_| a.alloc(l).unwrap()).collect();
    let next = a.alloc(l).unwrap();
    let sealed = first[0].slab();
    assert_ne!(next.slab(), sealed);
    assert_eq!(a.slab_info(sealed).unwrap().state, SlabState::Sealed);
    assert_eq!(a.slab_info(sealed).unwrap().live_bytes, Some(64 * 1024));
    let s = a.stats();
    assert_eq!((s.slabs_active, s.slabs_sealed), (1, 1));
    for x in first {
        a.free(x).unwrap();
    }
    assert_eq!(a.slab_info(sealed).unwrap().state, SlabState::Released);
    let s = a.stats();
    assert_eq!(
        (s.slabs_sealed, s.slabs_released, s.releases_total),
        (0, 1, 1)
    );
    assert_eq!(s.resident_bytes, 4096);
    // Filling the active slab takes the retained one next.
    let more: Vec<_> = (0..64).map(|_| a.alloc(l).unwrap()).collect();
    assert!(more.iter().any(|x| x.slab() == sealed));
    assert_eq!(a.stats().reserved_bytes, 2 * SLAB as u64);
    a.free(next).unwrap();
    for x in more {
        a.free(x).unwrap();
    }
}

#[test]
fn active_slab_emptied_by_frees_is_restarted_not_sealed() {
    let a = arena();
    let l = layout(4096, 8);
    for _ in 0..100 {
        let batch: Vec<_> = (0..16).map(|_| a.alloc(l).unwrap()).collect();
        for x in batch {
            a.free(x).unwrap();
        }
    }
    let s = a.stats();
    assert_eq!(s.reserved_bytes, SLAB as u64, "one slab recycled in place");
    assert_eq!(s.releases_total, 0);
}

#[test]
fn retained_slabs_are_capped_and_the_rest_unmapped() {
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_max_retained_slabs(2),
    )
    .unwrap();
    let l = layout(SLAB / 2, 8);
    let held: Vec<_> = (0..20).map(|_| a.alloc(l).unwrap()).collect();
    assert_eq!(a.stats().reserved_bytes, 10 * SLAB as u64);
    for x in held {
        a.free(x).unwrap();
    }
    a.seal_active_slabs();
    let s = a.stats();
    assert_eq!(s.slabs_released, 2);
    assert_eq!(s.reserved_bytes, 2 * SLAB as u64);
    assert_eq!(
        (
            s.live_bytes,
            s.resident_bytes,
            s.slabs_active,
            s.slabs_sealed
        ),
        (0, 0, 0, 0)
    );
}

#[test]
fn addresses_round_trip_through_raw_parts() {
    let a = arena();
    let _pad = a.alloc(layout(100, 8)).unwrap();
    let mut x = a.alloc(layout(300, 16)).unwrap();
    x.as_mut_slice().copy_from_slice(&[5u8; 300]);
    let raw = x.into_raw();
    let addr = a.addr_of(&raw);
    assert_eq!(addr.offset, 112);
    assert_eq!(a.ptr_at(addr).unwrap(), raw.ptr);
    assert_eq!(
        a.slab_of(raw.ptr.as_ptr().wrapping_add(10)).unwrap().offset,
        122
    );
    assert!(a.slab_of(std::ptr::null()).is_none());
    // SAFETY: `raw` came from `into_raw` of this arena and is rebuilt once.
    let x = unsafe { a.from_raw(raw) };
    assert!(x.as_slice().iter().all(|b| *b == 5));
    a.free(x).unwrap();
}

#[test]
fn sparse_slabs_lists_sealed_slabs_under_the_ratio_sparsest_first() {
    let a = arena();
    let l = layout(1024, 8);
    let mut slabs: Vec<Vec<_>> = (0..4)
        .map(|_| (0..64).map(|_| a.alloc(l).unwrap()).collect())
        .collect();
    let _active = a.alloc(l).unwrap();
    // Keep 8, 16, 40 and 64 records of the four sealed slabs.
    for (slab, keep) in slabs.iter_mut().zip([8, 16, 40, 64]) {
        for x in slab.drain(keep..) {
            a.free(x).unwrap();
        }
    }
    let ids: Vec<SlabId> = slabs.iter().map(|s| s[0].slab()).collect();
    assert_eq!(a.sparse_slabs(0.5), vec![ids[0], ids[1]]);
    assert_eq!(a.sparse_slabs(0.7), vec![ids[0], ids[1], ids[2]]);
    assert!(a.sparse_slabs(0.1).is_empty());
}

#[test]
fn compaction_target_fills_a_fresh_slab_outside_the_shards() {
    let other = arena();
    let a = arena();
    let l = layout(1000, 8);
    let live = a.alloc(l).unwrap();
    let mut target = a.reserve_target().unwrap();
    assert_ne!(target.id(), live.slab());
    let mut moved = Vec::new();
    while let Some(mut x) = a.alloc_in(&mut target, l).unwrap() {
        x.as_mut_slice().fill(1);
        moved.push(x);
    }
    assert_eq!(moved.len(), SLAB / 1000);
    assert!(moved.iter().all(|x| x.slab() == target.id()));
    assert!(matches!(
        a.alloc_in(&mut target, layout(SLAB, 8)),
        Err(Error::BadLayout { .. })
    ));
    assert!(matches!(
        other.alloc_in(&mut target, l),
        Err(Error::ForeignAllocation)
    ));
    let id = target.id();
    drop(target);
    assert_eq!(a.slab_info(id).unwrap().state, SlabState::Sealed);
    assert_eq!(a.stats().live_bytes, 1000 * (moved.len() as u64 + 1));
    for x in moved {
        a.free(x).unwrap();
    }
    assert_eq!(a.slab_info(id).unwrap().state, SlabState::Released);
    a.free(live).unwrap();
}

#[test]
fn empty_target_is_released_when_dropped() {
    let a = arena();
    let t = a.reserve_target().unwrap();
    let id = t.id();
    drop(t);
    assert_eq!(a.slab_info(id).unwrap().state, SlabState::Released);
    assert_eq!(a.stats().slabs_active, 0);
}

#[test]
fn over_budget_fails_cleanly_and_recovers_after_frees() {
    let budget = MemoryBudget::new(3 * SLAB as u64);
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_max_retained_slabs(0)
            .with_budget(&budget, "slab:test"),
    )
    .unwrap();
    let l = layout(SLAB / 4, 8);
    let mut held: Vec<_> = (0..12).map(|_| a.alloc(l).unwrap()).collect();
    let before = a.stats();
    match a.alloc(l) {
        Err(Error::BudgetExceeded(e)) => {
            assert_eq!(e.consumer, "slab:test");
            assert_eq!(e.requested_bytes, SLAB as u64);
            assert_eq!(e.held_bytes, 3 * SLAB as u64);
            assert_eq!(e.available_bytes, 0);
        }
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
    // A large allocation is refused the same way.
    assert!(matches!(
        a.alloc(layout(SLAB, 8)),
        Err(Error::BudgetExceeded(_))
    ));
    let after = a.stats();
    assert_eq!(before.live_bytes, after.live_bytes);
    assert_eq!(before.reserved_bytes, after.reserved_bytes);
    assert_eq!(budget.reserved_bytes(), 3 * SLAB as u64);
    // Everything accepted is intact and the arena works again after frees.
    for x in held.drain(..4) {
        a.free(x).unwrap();
    }
    held.push(a.alloc(l).unwrap());
    for x in held {
        a.free(x).unwrap();
    }
    a.seal_active_slabs();
    assert_eq!(budget.reserved_bytes(), 0);
    drop(a);
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn mmap_failure_is_an_error_and_changes_nothing() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_budget(&budget, "slab"),
    )
    .unwrap();
    let x = a.alloc(layout(SLAB / 2, 8)).unwrap();
    let y = a.alloc(layout(SLAB / 2, 8)).unwrap();
    let before = a.stats();
    fault::fail_maps(0, 2);
    assert!(matches!(a.alloc(layout(100, 8)), Err(Error::Os(_))));
    assert!(matches!(a.alloc(layout(SLAB, 8)), Err(Error::Os(_))));
    fault::reset();
    let after = a.stats();
    assert_eq!(before.live_bytes, after.live_bytes);
    assert_eq!(before.reserved_bytes, after.reserved_bytes);
    assert_eq!(budget.reserved_bytes(), after.reserved_bytes);
    let z = a.alloc(layout(100, 8)).unwrap();
    for v in [x, y, z] {
        a.free(v).unwrap();
    }
}

#[test]
fn failed_release_unmaps_the_slab_and_is_counted() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_budget(&budget, "slab"),
    )
    .unwrap();
    let full: Vec<_> = (0..2)
        .map(|_| a.alloc(layout(SLAB / 2, 8)).unwrap())
        .collect();
    let next = a.alloc(layout(8, 8)).unwrap();
    fault::fail_advises(0, 1);
    for x in full {
        a.free(x).unwrap();
    }
    fault::reset();
    let s = a.stats();
    assert_eq!(s.release_failures_total, 1);
    assert_eq!((s.slabs_released, s.slabs_sealed), (0, 0));
    assert_eq!(s.reserved_bytes, SLAB as u64);
    assert_eq!(budget.reserved_bytes(), SLAB as u64);
    a.free(next).unwrap();
}

#[test]
fn free_mode_releases_lazily_but_accounts_the_same() {
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_release_mode(ReleaseMode::Free),
    )
    .unwrap();
    let l = layout(SLAB / 2, 8);
    let mut held: Vec<_> = (0..4).map(|_| a.alloc(l).unwrap()).collect();
    for x in &mut held {
        x.as_mut_slice().fill(0xEE);
    }
    let last = held.pop().unwrap();
    for x in held {
        a.free(x).unwrap();
    }
    let s = a.stats();
    assert_eq!(s.slabs_released, 1);
    assert_eq!(s.live_bytes, l.size() as u64);
    // A reused slab may hold old bytes or zeroes; both are fine, and new
    // writes read back.
    let mut again = a.alloc(l).unwrap();
    again.as_mut_slice().fill(3);
    assert!(again.as_slice().iter().all(|b| *b == 3));
    a.free(again).unwrap();
    a.free(last).unwrap();
}

#[test]
fn warm_slabs_stay_resident_for_reuse_until_released_on_demand() {
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_max_warm_slabs(2),
    )
    .unwrap();
    let l = layout(SLAB / 2, 8);
    let mut held: Vec<_> = (0..8).map(|_| a.alloc(l).unwrap()).collect();
    for x in &mut held {
        x.as_mut_slice().fill(1);
    }
    let active = held.pop().unwrap();
    let active2 = held.pop().unwrap();
    for x in held {
        a.free(x).unwrap();
    }
    let s = a.stats();
    // Three slabs emptied: two parked warm (still resident), one released.
    assert_eq!(
        (s.slabs_warm, s.slabs_released, s.releases_total),
        (2, 1, 1)
    );
    assert_eq!(s.resident_bytes, 3 * SLAB as u64);
    // Refilling takes the warm slabs first: no new mapping, no release.
    let again: Vec<_> = (0..4).map(|_| a.alloc(l).unwrap()).collect();
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.reserved_bytes), (0, 4 * SLAB as u64));
    for x in again {
        a.free(x).unwrap();
    }
    // The first refilled slab was sealed and emptied: warm again. The second
    // is the shard's active slab, which stays active.
    assert_eq!(a.stats().slabs_warm, 1);
    assert_eq!(a.release_warm_slabs(), SLAB as u64);
    let s = a.stats();
    // Left resident: the sealed slab holding `active`/`active2` and the
    // active slab.
    assert_eq!((s.slabs_warm, s.resident_bytes), (0, 2 * SLAB as u64));
    a.free(active).unwrap();
    a.free(active2).unwrap();
}

/// The budget is charged what may be resident: a released slab kept mapped
/// for reuse is given back (it held the charge before the budget contract),
/// a warm one stays charged, and a reused retained slab is charged again.
#[test]
fn the_budget_is_charged_resident_slabs_not_retained_mappings() {
    let budget = MemoryBudget::unlimited();
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_max_retained_slabs(4)
            .with_max_warm_slabs(1)
            .with_budget(&budget, "slab"),
    )
    .unwrap();
    let half = layout(SLAB / 2, 8);
    let held: Vec<_> = (0..6).map(|_| a.alloc(half).unwrap()).collect();
    assert_eq!(budget.reserved_bytes(), 3 * SLAB as u64);
    for x in held {
        a.free(x).unwrap();
    }
    a.seal_active_slabs();
    let s = a.stats();
    assert_eq!((s.slabs_warm, s.slabs_released), (1, 2), "{s:?}");
    assert_eq!(
        budget.reserved_bytes(),
        SLAB as u64,
        "only the warm slab is charged"
    );
    // Reuse: the warm slab first (already charged), then a retained one.
    let x = a.alloc(half).unwrap();
    let y = a.alloc(half).unwrap();
    assert_eq!(budget.reserved_bytes(), SLAB as u64);
    let z = a.alloc(half).unwrap();
    assert_eq!(budget.reserved_bytes(), 2 * SLAB as u64);
    for v in [x, y, z] {
        a.free(v).unwrap();
    }
    drop(a);
    assert_eq!(budget.reserved_bytes(), 0);
}

/// At the limit, a retained slab is not reused: the refusal leaves it
/// retained and charges nothing.
#[test]
fn a_refused_reuse_of_a_retained_slab_changes_nothing() {
    let budget = MemoryBudget::new(SLAB as u64);
    let other = budget.reservation("other");
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_max_retained_slabs(4)
            .with_budget(&budget, "slab"),
    )
    .unwrap();
    let x = a.alloc(layout(SLAB / 2, 8)).unwrap();
    let y = a.alloc(layout(SLAB / 2, 8)).unwrap();
    a.free(x).unwrap();
    a.free(y).unwrap();
    a.seal_active_slabs();
    assert_eq!(a.stats().slabs_released, 1);
    assert_eq!(budget.reserved_bytes(), 0);
    other.try_grow(SLAB as u64).unwrap();
    assert!(matches!(
        a.alloc(layout(64, 8)),
        Err(Error::BudgetExceeded(_))
    ));
    assert_eq!(a.stats().slabs_released, 1, "still retained");
    other.free();
    let z = a.alloc(layout(64, 8)).unwrap();
    assert_eq!(budget.reserved_bytes(), SLAB as u64);
    a.free(z).unwrap();
}

#[test]
fn stats_are_flat_named_and_count_a_known_workload() {
    let a = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_shards(1)
            .with_name("kv"),
    )
    .unwrap();
    assert_eq!(a.name(), "kv");
    assert_eq!(arena().name(), SlabConfig::DEFAULT_NAME);
    // 65 records of 1000 B fill a 64 KiB slab; 100 take two slabs.
    let small: Vec<_> = (0..100)
        .map(|_| a.alloc(layout(1000, 8)).unwrap())
        .collect();
    let big = a.alloc(layout(40_000, 8)).unwrap();
    let s = a.stats();
    assert_eq!(s.live_bytes, 100 * 1000 + 40_000);
    assert_eq!(
        (s.slabs_active, s.slabs_sealed, s.large_mappings),
        (1, 1, 1)
    );
    assert_eq!(s.reserved_bytes, 2 * SLAB as u64 + 40_960);
    assert_eq!(s.resident_bytes, SLAB as u64 + 36_864 + 40_960);
    assert_eq!((s.releases_total, s.release_failures_total), (0, 0));
    for x in small {
        a.free(x).unwrap();
    }
    a.free(big).unwrap();
    let s = a.stats();
    assert_eq!((s.live_bytes, s.large_mappings), (0, 0));
    // The emptied sealed slab is released and kept mapped, the large
    // mapping is unmapped (both count as releases); the active slab stays.
    assert_eq!(
        (s.slabs_active, s.slabs_sealed, s.slabs_released),
        (1, 0, 1)
    );
    assert_eq!(s.releases_total, 2);
    assert_eq!(s.reserved_bytes, 2 * SLAB as u64);
    assert_eq!(s.resident_bytes, 36_864);
}
