//! Model-based property test of SlabArena against a plain model.
//!
//! Properties, checked after every step of a random alloc/free/write
//! sequence (sizes 1 B..1 MiB, alignments 1..4096, two shards, small slabs
//! so sealing, release, reuse and dedicated mappings all happen):
//!
//! 1. `stats().live_bytes` equals the sum of the model's live sizes.
//! 2. No two live allocations overlap, and each honours its alignment.
//! 3. Every live allocation reads back the bytes last written to it.
//! 4. resident >= live, reserved >= resident, and after freeing everything
//!    and sealing the active slabs nothing is live or resident.

use std::alloc::Layout;

use ebb_slab::{SlabAlloc, SlabArena, SlabConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Alloc { size: usize, align_log2: u32 },
    Free(usize),
    Rewrite(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Miri checks every byte it reads: keep its records small (it still
    // sees dedicated mappings: slabs are 64 KiB).
    let max = if cfg!(miri) { 40 << 10 } else { 1 << 20 };
    let size = prop_oneof![
        6 => 1usize..=256,
        3 => 257usize..=8192,
        1 => 8193usize..=max,
    ];
    prop_oneof![
        5 => (size, 0u32..=12).prop_map(|(size, align_log2)| Op::Alloc { size, align_log2 }),
        4 => any::<usize>().prop_map(Op::Free),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Rewrite(i, b)),
    ]
}

struct Live<'a> {
    alloc: SlabAlloc<'a>,
    fill: u8,
    align: usize,
}

fn check(arena: &SlabArena, live: &[Live<'_>]) -> Result<(), TestCaseError> {
    let stats = arena.stats();
    let model_live: u64 = live.iter().map(|l| l.alloc.len() as u64).sum();
    prop_assert_eq!(stats.live_bytes, model_live);
    prop_assert!(stats.resident_bytes >= stats.live_bytes, "{:?}", stats);
    prop_assert!(stats.reserved_bytes >= stats.resident_bytes, "{:?}", stats);
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        .map(|l| {
            (
                l.alloc.as_ptr() as usize,
                l.alloc.as_ptr() as usize + l.alloc.len(),
            )
        })
        .collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        prop_assert!(w[0].1 <= w[1].0, "overlap {:x?} {:x?}", w[0], w[1]);
    }
    for l in live {
        prop_assert_eq!(l.alloc.as_ptr() as usize % l.align, 0);
        prop_assert!(l.alloc.as_slice().iter().all(|b| *b == l.fill));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 128 }))]

    #[test]
    fn slab_arena_matches_model(ops in proptest::collection::vec(op(), 1..if cfg!(miri) { 24 } else { 120 })) {
        let arena = SlabArena::new(
            SlabConfig::default()
                .with_slab_bytes(64 << 10)
                .with_shards(2)
                .with_max_retained_slabs(2),
        ).unwrap();
        let mut live: Vec<Live<'_>> = Vec::new();
        let mut next_fill = 1u8;
        for op in ops {
            match op {
                Op::Alloc { size, align_log2 } => {
                    let align = 1usize << align_log2;
                    let mut alloc = arena.alloc(Layout::from_size_align(size, align).unwrap()).unwrap();
                    alloc.as_mut_slice().fill(next_fill);
                    live.push(Live { alloc, fill: next_fill, align });
                    next_fill = next_fill.wrapping_add(1).max(1);
                }
                Op::Free(i) if !live.is_empty() => {
                    let l = live.swap_remove(i % live.len());
                    prop_assert!(l.alloc.as_slice().iter().all(|b| *b == l.fill));
                    arena.free(l.alloc).unwrap();
                }
                Op::Rewrite(i, b) if !live.is_empty() => {
                    let n = live.len();
                    let l = &mut live[i % n];
                    l.alloc.as_mut_slice().fill(b);
                    l.fill = b;
                }
                _ => {}
            }
            check(&arena, &live)?;
        }
        for l in live.drain(..) {
            arena.free(l.alloc).unwrap();
        }
        arena.seal_active_slabs();
        let s = arena.stats();
        prop_assert_eq!((s.live_bytes, s.resident_bytes, s.slabs_active, s.slabs_sealed, s.large_mappings), (0, 0, 0, 0, 0));
        prop_assert!(s.slabs_released <= 2);
        prop_assert_eq!(s.reserved_bytes, s.slabs_released * (64 << 10));
    }
}
