//! Model-based test: insert / upsert / delete / search against a brute-force
//! model on small sets, for each metric. Properties after every step:
//! 1. len and contains equal the model's;
//! 2. a search returns min(k, live) distinct live ids, never a deleted one;
//! 3. at a high ef the top-1 is exact (ties aside).

mod common;

use std::collections::BTreeMap;

use ebb_hnsw::{GraphBackend, HnswRsGraph, IndexConfig, Metric, NativeGraph, VectorIndex};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Insert(u64, [i8; 4]),
    Upsert(u64, [i8; 4]),
    Delete(u64),
    Search([i8; 4], usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let v = prop::array::uniform4(-8i8..8);
    prop_oneof![
        5 => (0u64..40, v.clone()).prop_map(|(id, v)| Op::Insert(id, v)),
        2 => (0u64..40, v.clone()).prop_map(|(id, v)| Op::Upsert(id, v)),
        2 => (0u64..40).prop_map(Op::Delete),
        3 => (v, 1usize..6).prop_map(|(v, k)| Op::Search(v, k)),
        1 => Just(Op::Flush),
    ]
}

fn vector(v: [i8; 4]) -> Vec<f32> {
    // Offset keeps Cosine vectors away from zero.
    v.iter().map(|&x| x as f32 + 0.5).collect()
}

fn run<B: GraphBackend>(metric: Metric, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let index = VectorIndex::<B>::with_backend(
        IndexConfig::new(4, metric)
            .with_delta_capacity(8)
            .with_ef_construction(64),
    )
    .unwrap();
    let mut model: BTreeMap<u64, Vec<f32>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Insert(id, v) => {
                let r = index.insert(id, &vector(v));
                prop_assert_eq!(r.is_ok(), !model.contains_key(&id));
                model.entry(id).or_insert_with(|| vector(v));
            }
            Op::Upsert(id, v) => {
                index.upsert(id, &vector(v)).unwrap();
                model.insert(id, vector(v));
            }
            Op::Delete(id) => {
                prop_assert_eq!(index.delete(id), model.remove(&id).is_some());
            }
            Op::Search(q, k) => {
                let q = vector(q);
                let hits = index.search_with_ef(&q, k, 400).unwrap();
                prop_assert_eq!(hits.len(), k.min(model.len()));
                let mut seen = std::collections::HashSet::new();
                for (id, _) in &hits {
                    prop_assert!(model.contains_key(id), "deleted id {} returned", id);
                    prop_assert!(seen.insert(*id), "duplicate id {}", id);
                }
                if let Some((top, d)) = hits.first() {
                    let best = model
                        .values()
                        .map(|v| common::distance(metric, &q, v))
                        .fold(f32::INFINITY, f32::min);
                    prop_assert!(
                        (d - best).abs() <= 1e-3 * best.abs().max(1.0),
                        "top-1 {} at {} but the best is {}",
                        top,
                        d,
                        best
                    );
                }
            }
            Op::Flush => index.flush_delta().unwrap(),
        }
        prop_assert_eq!(index.len(), model.len());
    }
    for id in 0..40 {
        prop_assert_eq!(index.contains(id), model.contains_key(&id));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 2 } else { 64 }))]

    #[test]
    fn l2_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<HnswRsGraph>(Metric::L2, ops)?;
    }

    #[test]
    fn cosine_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<HnswRsGraph>(Metric::Cosine, ops)?;
    }

    #[test]
    fn dot_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<HnswRsGraph>(Metric::Dot, ops)?;
    }

    #[test]
    fn native_l2_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<NativeGraph>(Metric::L2, ops)?;
    }

    #[test]
    fn native_cosine_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<NativeGraph>(Metric::Cosine, ops)?;
    }

    #[test]
    fn native_dot_matches_brute_force(ops in prop::collection::vec(op(), 1..120)) {
        run::<NativeGraph>(Metric::Dot, ops)?;
    }
}
