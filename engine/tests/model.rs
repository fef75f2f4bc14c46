//! The engine against a simple model: KV records against a `HashMap`,
//! vectors and payloads against a map searched by brute force, with
//! `release_memory` (compaction, rebuilds) and snapshot-and-reopen as
//! operations among the writes.

use std::collections::HashMap;
use std::path::Path;

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use proptest::prelude::*;

const DIM: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Upsert(u8, [i8; DIM], Option<Vec<u8>>),
    DeleteVector(u8),
    Search([i8; DIM], usize),
    Release,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let vector = prop::array::uniform4(-20i8..20);
    prop_oneof![
        5 => (0u8..64, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..64).prop_map(Op::Get),
        2 => (0u8..64).prop_map(Op::Delete),
        5 => (0u8..48, vector.clone(), prop::option::of(prop::collection::vec(any::<u8>(), 0..40)))
            .prop_map(|(id, v, p)| Op::Upsert(id, v, p)),
        2 => (0u8..48).prop_map(Op::DeleteVector),
        3 => (vector, 1usize..8).prop_map(|(q, k)| Op::Search(q, k)),
        1 => Just(Op::Release),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    let mut key = b"k".to_vec();
    key.extend(std::iter::repeat_n(k, usize::from(k % 5) + 1));
    key
}

fn floats(v: [i8; DIM]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x) / 4.0).collect()
}

fn open(dir: &Path) -> Engine {
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 1 << 30,
        data_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    })
    .unwrap();
    let load = engine.load_report().unwrap();
    assert!(load.failures.is_empty(), "{:?}", load.failures);
    if engine.list_datasets().is_empty() {
        engine
            .create_dataset("m", DatasetConfig::new(DIM, Metric::L2))
            .unwrap();
    }
    engine
}

#[derive(Default)]
struct Model {
    kv: HashMap<Vec<u8>, Vec<u8>>,
    vectors: HashMap<u64, (Vec<f32>, Option<Vec<u8>>)>,
}

impl Model {
    /// The `k` smallest squared L2 distances.
    fn nearest_distances(&self, q: &[f32], k: usize) -> Vec<f32> {
        let mut d: Vec<f32> = self
            .vectors
            .values()
            .map(|(v, _)| v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum())
            .collect();
        d.sort_by(f32::total_cmp);
        d.truncate(k);
        d
    }
}

fn check_all(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    let stats = engine.dataset_stats("m").unwrap();
    prop_assert_eq!(stats.records as usize, model.kv.len());
    prop_assert_eq!(stats.vectors as usize, model.vectors.len());
    for (k, v) in &model.kv {
        let got = engine.get("m", k).unwrap();
        prop_assert_eq!(got.as_deref(), Some(&v[..]));
    }
    for (id, (v, _)) in &model.vectors {
        let got = engine.get_vector("m", *id).unwrap();
        prop_assert_eq!(got.as_ref(), Some(v));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_engine_matches_its_model(ops in prop::collection::vec(op(), 1..250)) {
        let dir = std::env::temp_dir().join(format!(
            "ebb-model-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let mut engine = open(&dir);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    engine.put("m", &key(k), &v).unwrap();
                    model.kv.insert(key(k), v);
                }
                Op::Get(k) => {
                    let got = engine.get("m", &key(k)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(got.as_ref(), model.kv.get(&key(k)));
                }
                Op::Delete(k) => {
                    prop_assert_eq!(engine.delete("m", &key(k)).unwrap(), model.kv.remove(&key(k)).is_some());
                }
                Op::Upsert(id, v, p) => {
                    engine.upsert_vector("m", u64::from(id), &floats(v), p.as_deref()).unwrap();
                    model.vectors.insert(u64::from(id), (floats(v), p));
                }
                Op::DeleteVector(id) => {
                    let id = u64::from(id);
                    prop_assert_eq!(engine.delete_vector("m", id).unwrap(), model.vectors.remove(&id).is_some());
                }
                Op::Search(q, k) => {
                    let q = floats(q);
                    let hits = engine.search("m", &q, k).unwrap();
                    let want = model.nearest_distances(&q, k);
                    prop_assert_eq!(hits.len(), want.len());
                    for (hit, want) in hits.iter().zip(&want) {
                        // Exact on a graph this small (ef_search >= points);
                        // distances, not ids, so ties do not matter.
                        prop_assert!((hit.distance - want).abs() <= 1e-4 * want.max(1.0),
                            "got {} want {}", hit.distance, want);
                        let (v, payload) = &model.vectors[&hit.id];
                        let d: f32 = v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                        prop_assert!((d - hit.distance).abs() <= 1e-4 * d.max(1.0));
                        prop_assert_eq!(hit.payload.as_deref(), payload.as_deref());
                    }
                }
                Op::Release => {
                    let report = engine.release_memory().unwrap();
                    prop_assert!(report.failures.is_empty(), "{:?}", report.failures);
                }
                Op::Reopen => {
                    engine.snapshot().unwrap();
                    drop(engine);
                    engine = open(&dir);
                    check_all(&engine, &model)?;
                }
            }
        }
        check_all(&engine, &model)?;
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
