//! `OwnedSlab`: lock-free allocation by one owner, its spare slab, sealing,
//! and the batched `free_bytes`.

use std::alloc::Layout;
use std::collections::VecDeque;

use ebb_slab::{Error, OwnedSlab, SlabArena, SlabConfig, SlabState};

const SLAB: usize = 64 << 10;
const KIB: Layout = match Layout::from_size_align(1024, 8) {
    Ok(l) => l,
    Err(_) => panic!("valid layout"),
};

fn arena() -> SlabArena {
    SlabArena::new(SlabConfig::default().with_slab_bytes(SLAB)).unwrap()
}

/// Allocates `steps` KiB records keeping the last `window` live (each step
/// frees the oldest), like an insert/remove churn with a lag.
fn churn(a: &SlabArena, owned: &mut OwnedSlab, steps: usize, window: usize) {
    let mut live = VecDeque::new();
    for i in 0..steps {
        let mut x = a.alloc_owned(owned, KIB).unwrap();
        x.as_mut_slice()[0] = i as u8;
        live.push_back(x);
        if live.len() > window {
            a.free(live.pop_front().unwrap()).unwrap();
        }
    }
    for x in live {
        a.free(x).unwrap();
    }
}

#[test]
fn a_churning_owner_cycles_two_slabs_without_releasing_them() {
    let a = arena();
    let mut owned = a.owned_slab();
    // 4 live KiB of a 64 KiB slab when it fills: under the spare threshold
    // (half), so the full slab becomes the spare and comes back empty.
    churn(&a, &mut owned, 64 * 20, 4);
    let s = a.stats();
    assert_eq!(s.releases_total, 0, "no slab went back to the OS: {s:?}");
    assert!(s.reserved_bytes <= 2 * SLAB as u64, "{s:?}");
    assert_eq!(s.live_bytes, 0);
    a.seal_owned(&mut owned);
    let s = a.stats();
    assert_eq!(s.slabs_active, 0, "{s:?}");
    assert!(
        s.releases_total >= 1,
        "sealed empty slabs are released: {s:?}"
    );
}

#[test]
fn a_full_slab_with_much_still_live_is_sealed_not_kept() {
    let a = arena();
    let mut owned = a.owned_slab();
    // Three quarters of a slab live when it fills: sealed, and released
    // once emptied.
    churn(&a, &mut owned, 64 * 10, 48);
    let s = a.stats();
    assert!(s.releases_total >= 5, "{s:?}");
    assert_eq!(s.live_bytes, 0);
}

#[test]
fn seal_owned_makes_the_slab_sealed_and_compactable() {
    let a = arena();
    let mut owned = a.owned_slab();
    let x = a.alloc_owned(&mut owned, KIB).unwrap();
    let id = x.slab();
    assert_eq!(a.slab_info(id).unwrap().state, SlabState::Active);
    a.seal_owned(&mut owned);
    let info = a.slab_info(id).unwrap();
    assert_eq!(info.state, SlabState::Sealed);
    assert_eq!(info.live_bytes, Some(1024));
    a.free(x).unwrap();
    assert_ne!(a.slab_info(id).map(|i| i.state), Some(SlabState::Sealed));
}

#[test]
fn seal_active_slabs_reaches_owned_slabs_at_their_next_allocation() {
    let a = arena();
    let mut owned = a.owned_slab();
    let x = a.alloc_owned(&mut owned, KIB).unwrap();
    let first = x.slab();
    a.seal_active_slabs();
    // The fast path refuses: the owner must seal first.
    assert!(a.try_alloc_owned(&mut owned, KIB).is_none());
    let y = a.alloc_owned(&mut owned, KIB).unwrap();
    assert_ne!(y.slab(), first);
    assert_eq!(a.slab_info(first).unwrap().state, SlabState::Sealed);
    a.free(x).unwrap();
    a.free(y).unwrap();
}

#[test]
fn another_arenas_owned_slab_is_refused() {
    let a = arena();
    let b = arena();
    let mut owned = a.owned_slab();
    assert!(matches!(
        b.alloc_owned(&mut owned, KIB),
        Err(Error::ForeignAllocation)
    ));
    assert!(b.try_alloc_owned(&mut owned, KIB).is_none());
    let mut placeholder = OwnedSlab::default();
    assert!(matches!(
        a.alloc_owned(&mut placeholder, KIB),
        Err(Error::ForeignAllocation)
    ));
    b.seal_owned(&mut owned); // a no-op for a's slabs
    assert_eq!(a.stats().reserved_bytes, 0);
    assert_eq!(b.stats().reserved_bytes, 0);
}

#[test]
fn an_alignment_over_half_a_slab_is_never_bumped() {
    let a = arena();
    let mut owned = a.owned_slab();
    let warm = a.alloc_owned(&mut owned, KIB).unwrap();
    // A small record aligned to twice the slab: the slab's base is aligned
    // only to the slab size, so this needs a mapping of its own.
    let wide = Layout::from_size_align(8, 2 * SLAB).unwrap();
    assert!(a.try_alloc_owned(&mut owned, wide).is_none());
    let x = a.alloc_owned(&mut owned, wide).unwrap();
    assert_eq!(x.as_ptr() as usize % (2 * SLAB), 0);
    assert_eq!(a.slab_info(x.slab()).unwrap().state, SlabState::Large);
    a.free(x).unwrap();
    a.free(warm).unwrap();
}

#[test]
fn large_and_zero_sizes_take_the_general_path() {
    let a = arena();
    let mut owned = a.owned_slab();
    let big = Layout::from_size_align(SLAB, 8).unwrap();
    assert!(a.try_alloc_owned(&mut owned, big).is_none());
    let x = a.alloc_owned(&mut owned, big).unwrap();
    assert_eq!(a.slab_info(x.slab()).unwrap().state, SlabState::Large);
    a.free(x).unwrap();
    assert!(matches!(
        a.alloc_owned(&mut owned, Layout::from_size_align(0, 1).unwrap()),
        Err(Error::ZeroSize)
    ));
    assert_eq!(a.stats().live_bytes, 0);
}

#[test]
fn free_bytes_frees_a_slabs_allocations_at_once() {
    let a = arena();
    let mut owned = a.owned_slab();
    let raws: Vec<_> = (0..10)
        .map(|_| a.alloc_owned(&mut owned, KIB).unwrap().into_raw())
        .collect();
    let slab = raws[0].slab;
    assert!(raws.iter().all(|r| r.slab == slab));
    assert_eq!(a.stats().live_bytes, 10 * 1024);
    // SAFETY: the ten allocations are live, in `slab`, given up by
    // `into_raw`, and freed only here.
    unsafe { a.free_bytes(slab, 10 * 1024) };
    assert_eq!(a.stats().live_bytes, 0);
    a.seal_owned(&mut owned);
    assert_eq!(a.stats().slabs_sealed, 0, "the empty slab was released");
}
