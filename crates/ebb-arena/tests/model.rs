//! Model-based property tests of TypedArena and BlobArena against a
//! `HashMap`.
//!
//! Properties, after every step of a random insert/get/remove/replace/
//! compact sequence (small slabs, so compaction really moves records):
//!
//! 1. Every live handle reads back exactly the model's value.
//! 2. Every removed handle reads `None`, forever, even after slot reuse;
//!    removing or replacing it again fails.
//! 3. `len` equals the model's size, and the slab's live bytes equal the
//!    sum of the live records' sizes once retired places are reclaimed.

use std::collections::HashMap;

use ebb_arena::{
    BlobArena, BlobHandle, CancellationToken, CompactionPolicy, Handle, SlabConfig, TypedArena,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u64, usize),
    Remove(usize),
    Replace(usize, u64, usize),
    Compact(f64),
    ReadStale(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u64>(), 0usize..600).prop_map(|(v, n)| Op::Insert(v, n)),
        4 => any::<usize>().prop_map(Op::Remove),
        2 => (any::<usize>(), any::<u64>(), 0usize..600).prop_map(|(i, v, n)| Op::Replace(i, v, n)),
        1 => (0.3f64..0.95).prop_map(Op::Compact),
        1 => any::<usize>().prop_map(Op::ReadStale),
    ]
}

fn config() -> SlabConfig {
    SlabConfig::default()
        .with_slab_bytes(16 << 10)
        .with_shards(1)
}

fn policy(ratio: f64) -> CompactionPolicy {
    CompactionPolicy::default()
        .with_max_live_ratio(ratio)
        .with_min_reclaim_bytes(0)
}

fn blob_of(v: u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (v.wrapping_add(i as u64) % 251) as u8)
        .collect()
}

const CASES: u32 = if cfg!(miri) { 4 } else { 96 };
const STEPS: usize = if cfg!(miri) { 30 } else { 200 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn typed_arena_matches_model(ops in proptest::collection::vec(op(), 1..STEPS)) {
        let arena: TypedArena<[u64; 6]> = TypedArena::new(config()).unwrap();
        let mut model: HashMap<Handle<[u64; 6]>, [u64; 6]> = HashMap::new();
        let mut live: Vec<Handle<[u64; 6]>> = Vec::new();
        let mut dead: Vec<Handle<[u64; 6]>> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(v, _) => {
                    let value = [v; 6];
                    let h = arena.insert(value).unwrap();
                    prop_assert!(!model.contains_key(&h));
                    model.insert(h, value);
                    live.push(h);
                }
                Op::Remove(i) if !live.is_empty() => {
                    let h = live.swap_remove(i % live.len());
                    prop_assert!(arena.remove(h));
                    model.remove(&h);
                    dead.push(h);
                }
                Op::Replace(i, v, _) if !live.is_empty() => {
                    let h = live[i % live.len()];
                    prop_assert!(arena.replace(h, [v; 6]).unwrap());
                    model.insert(h, [v; 6]);
                }
                Op::Compact(ratio) => {
                    arena.compact(&policy(ratio), &CancellationToken::new()).unwrap();
                }
                Op::ReadStale(i) if !dead.is_empty() => {
                    let h = dead[i % dead.len()];
                    prop_assert!(arena.get(h).is_none());
                    prop_assert!(!arena.remove(h));
                    prop_assert!(!arena.replace(h, [0; 6]).unwrap());
                }
                _ => {}
            }
            prop_assert_eq!(arena.len(), model.len());
            for (h, v) in &model {
                prop_assert_eq!(arena.get_copied(*h), Some(*v));
            }
            for h in &dead {
                prop_assert!(arena.get(*h).is_none());
            }
        }
        arena.reclaim();
        let s = arena.stats();
        prop_assert_eq!(s.live_bytes, 48 * model.len() as u64);
    }

    #[test]
    fn blob_arena_matches_model(ops in proptest::collection::vec(op(), 1..STEPS)) {
        let arena = BlobArena::new(config()).unwrap();
        let mut model: HashMap<BlobHandle, Vec<u8>> = HashMap::new();
        let mut live: Vec<BlobHandle> = Vec::new();
        let mut dead: Vec<BlobHandle> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(v, n) => {
                    let bytes = blob_of(v, n);
                    let h = arena.insert(&bytes).unwrap();
                    model.insert(h, bytes);
                    live.push(h);
                }
                Op::Remove(i) if !live.is_empty() => {
                    let h = live.swap_remove(i % live.len());
                    prop_assert!(arena.remove(h));
                    model.remove(&h);
                    dead.push(h);
                }
                Op::Replace(i, v, n) if !live.is_empty() => {
                    let h = live[i % live.len()];
                    let bytes = blob_of(v, n);
                    prop_assert!(arena.replace(h, &bytes).unwrap());
                    model.insert(h, bytes);
                }
                Op::Compact(ratio) => {
                    arena.compact(&policy(ratio), &CancellationToken::new()).unwrap();
                }
                Op::ReadStale(i) if !dead.is_empty() => {
                    let h = dead[i % dead.len()];
                    prop_assert!(arena.get(h).is_none());
                    prop_assert!(!arena.remove(h));
                    prop_assert!(!arena.replace(h, b"x").unwrap());
                }
                _ => {}
            }
            prop_assert_eq!(arena.len(), model.len());
            for (h, v) in &model {
                let got = arena.get_vec(*h);
                prop_assert_eq!(got.as_ref(), Some(v));
            }
        }
        arena.reclaim();
        let expected: u64 = model.values().map(|v| 4 + v.len() as u64).sum();
        prop_assert_eq!(arena.stats().live_bytes, expected);
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of records: the proptests cover this logic under Miri"
)]
fn compaction_moves_records_and_releases_sparse_slabs() {
    let arena = BlobArena::new(
        SlabConfig::default()
            .with_slab_bytes(64 << 10)
            .with_shards(1),
    )
    .unwrap();
    let handles: Vec<_> = (0..20_000u32)
        .map(|i| arena.insert(&[i as u8; 60]).unwrap())
        .collect();
    let mut kept = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if i % 4 == 0 {
            kept.push((i, h));
        } else {
            assert!(arena.remove(h));
        }
    }
    arena.reclaim();
    let before = arena.stats();
    assert!(arena.needs_compaction(&CompactionPolicy::default().with_min_reclaim_bytes(64 << 10)));
    let report = arena
        .compact(
            &CompactionPolicy::default().with_min_reclaim_bytes(0),
            &CancellationToken::new(),
        )
        .unwrap();
    let after = arena.stats();
    assert!(report.slabs_compacted >= 15, "{report:?}");
    assert_eq!(
        report.records_moved as usize,
        report.bytes_moved as usize / 64
    );
    assert!(report.bytes_released > 0, "{report:?}");
    assert!(
        after.resident_bytes * 2 < before.resident_bytes,
        "{before:?} -> {after:?}"
    );
    assert!(!arena.needs_compaction(&CompactionPolicy::default().with_min_reclaim_bytes(64 << 10)));
    for (i, h) in kept {
        assert_eq!(arena.get_vec(h), Some(vec![i as u8; 60]));
    }
    assert_eq!(after.live_bytes, 5_000 * 64);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "thousands of records: the proptests cover this logic under Miri"
)]
fn compaction_below_min_reclaim_does_nothing() {
    let arena: TypedArena<u64> = TypedArena::new(config()).unwrap();
    let hs: Vec<_> = (0..5000).map(|i| arena.insert(i).unwrap()).collect();
    for h in hs.iter().step_by(2) {
        arena.remove(*h);
    }
    let policy = CompactionPolicy::default().with_min_reclaim_bytes(1 << 30);
    assert!(!arena.needs_compaction(&policy));
    let r = arena.compact(&policy, &CancellationToken::new()).unwrap();
    assert_eq!((r.slabs_compacted, r.records_moved), (0, 0));
}

#[test]
fn over_budget_insert_fails_cleanly_and_compaction_runs_at_the_limit() {
    use ebb_core::MemoryBudget;
    const SLAB: u64 = 16 << 10;
    let budget = MemoryBudget::new(8 * SLAB);
    let arena = BlobArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB as usize)
            .with_shards(1)
            .with_max_retained_slabs(0)
            .with_budget(&budget, "arena:test"),
    )
    .unwrap();
    assert_eq!(
        budget.headroom_bytes(),
        2 * SLAB,
        "two slabs kept for compaction"
    );
    let mut handles = Vec::new();
    let err = loop {
        match arena.insert(&[7u8; 500]) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
    };
    let numbers = err.budget_exceeded().expect("a budget refusal");
    assert_eq!(numbers.consumer, "arena:test");
    assert_eq!(numbers.limit_bytes, 8 * SLAB);
    assert_eq!(numbers.headroom_bytes, 2 * SLAB);
    assert_eq!(
        arena.len(),
        handles.len(),
        "the refused insert stored nothing"
    );
    // Writes stopped short of the headroom (the handle table is charged
    // too, past the limit if need be).
    let table = arena.stats().slot_table_bytes;
    assert!(table > 0);
    let held = budget.reserved_bytes();
    assert!(
        held <= 6 * SLAB && held + SLAB > 6 * SLAB,
        "writes stop where one more slab would pass the headroom: {held} (table {table})"
    );
    // Make every slab sparse. Writes cannot get another slab, but the
    // compaction takes its targets from the headroom and gives memory back.
    for (i, h) in handles.iter().enumerate() {
        if i % 8 != 0 {
            assert!(arena.remove(*h));
        }
    }
    arena.reclaim();
    let before = budget.reserved_bytes();
    let policy = CompactionPolicy::default().with_min_reclaim_bytes(0);
    let report = arena
        .compact(&policy, &CancellationToken::new())
        .expect("compaction runs at the limit");
    assert!(
        report.records_moved > 0 && report.bytes_released > 0,
        "{report:?}"
    );
    assert!(
        budget.reserved_bytes() < before,
        "compaction gave budget back: {} -> {}",
        before,
        budget.reserved_bytes()
    );
    for (i, h) in handles.iter().enumerate() {
        let expected = (i % 8 == 0).then(|| vec![7u8; 500]);
        assert_eq!(arena.get_vec(*h), expected);
    }
    assert_eq!(arena.len(), handles.len().div_ceil(8));
    // And writes fit again.
    arena.insert(&[1u8; 500]).expect("room after compaction");
}
