//! The engine end to end: KV against a `HashMap` model, vectors against
//! brute force, every caller mistake, the budget's refusal, dropping a
//! dataset, and concurrent writers while memory is released.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ebb_engine::{
    DatasetConfig, Engine, EngineConfig, Error, IndexKind, MAX_K, MAX_KEY_BYTES, Metric,
};
use proptest::prelude::*;

fn engine_with_limit(limit: u64) -> Engine {
    Engine::open(EngineConfig {
        memory_limit_bytes: limit,
        ..EngineConfig::default()
    })
    .unwrap()
}

fn engine() -> Engine {
    engine_with_limit(4 << 30)
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, Vec<u8>),
    Get(u8),
    Delete(u8),
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, v)| Op::Put(k, v)),
        3 => any::<u8>().prop_map(Op::Get),
        3 => any::<u8>().prop_map(Op::Delete),
        1 => Just(Op::Release),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Keys of several lengths, some sharing prefixes.
    let mut key = b"key-".to_vec();
    key.extend(std::iter::repeat_n(k, usize::from(k % 7) + 1));
    key
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn kv_matches_a_hashmap(ops in prop::collection::vec(op(), 1..400)) {
        let engine = engine();
        engine.create_dataset("m", DatasetConfig::new(4, Metric::L2)).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    engine.put("m", &key(k), &v).unwrap();
                    model.insert(key(k), v);
                }
                Op::Get(k) => {
                    let got = engine.get("m", &key(k)).unwrap().map(|v| v.to_vec());
                    prop_assert_eq!(got.as_ref(), model.get(&key(k)));
                }
                Op::Delete(k) => {
                    prop_assert_eq!(engine.delete("m", &key(k)).unwrap(), model.remove(&key(k)).is_some());
                }
                Op::Release => {
                    engine.release_memory().unwrap();
                }
            }
        }
        prop_assert_eq!(engine.list_datasets()[0].records, model.len());
        for (k, v) in &model {
            let got = engine.get_with("m", k, |v| v.to_vec()).unwrap();
            prop_assert_eq!(got.as_ref(), Some(v));
        }
    }
}

fn brute_force(points: &HashMap<u64, Vec<f32>>, q: &[f32], k: usize) -> Vec<u64> {
    let mut all: Vec<(f32, u64)> = points
        .iter()
        .map(|(id, v)| {
            (
                v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(),
                *id,
            )
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(k).map(|(_, id)| id).collect()
}

fn lcg(state: &mut u64) -> f32 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (*state >> 40) as f32 / (1u64 << 24) as f32
}

#[test]
fn vectors_and_payloads_against_brute_force() {
    for kind in [IndexKind::Native, IndexKind::HnswRs] {
        let engine = engine();
        engine
            .create_dataset("v", DatasetConfig::new(8, Metric::L2).with_index(kind))
            .unwrap();
        let mut rng = 7u64;
        let mut model = HashMap::new();
        for id in 0..600u64 {
            let v: Vec<f32> = (0..8).map(|_| lcg(&mut rng)).collect();
            engine
                .upsert_vector("v", id, &v, Some(&id.to_le_bytes()))
                .unwrap();
            model.insert(id, v);
        }
        for id in (0..600u64).step_by(3) {
            assert!(engine.delete_vector("v", id).unwrap());
            model.remove(&id);
        }
        // Replace some, without payload: the old payload goes.
        for id in (1..600u64).step_by(30) {
            let v: Vec<f32> = (0..8).map(|_| lcg(&mut rng)).collect();
            engine.upsert_vector("v", id, &v, None).unwrap();
            model.insert(id, v);
        }
        let (mut found, mut wanted) = (0, 0);
        for _ in 0..50 {
            let q: Vec<f32> = (0..8).map(|_| lcg(&mut rng)).collect();
            let hits = engine.search("v", &q, 10).unwrap();
            assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
            for hit in &hits {
                assert!(
                    model.contains_key(&hit.id),
                    "{kind:?}: deleted id {} returned",
                    hit.id
                );
                let want = if (hit.id - 1) % 30 == 0 {
                    None
                } else {
                    Some(hit.id.to_le_bytes())
                };
                assert_eq!(
                    hit.payload.as_deref(),
                    want.as_ref().map(|w| &w[..]),
                    "{kind:?} id {}",
                    hit.id
                );
            }
            let truth = brute_force(&model, &q, 10);
            wanted += truth.len();
            found += truth
                .iter()
                .filter(|id| hits.iter().any(|h| h.id == **id))
                .count();
        }
        let recall = found as f64 / wanted as f64;
        assert!(recall >= 0.9, "{kind:?}: recall@10 {recall}");
    }
}

#[test]
fn every_caller_mistake_is_a_typed_error_and_changes_nothing() {
    let engine = engine();
    engine
        .create_dataset("d", DatasetConfig::new(3, Metric::Cosine))
        .unwrap();
    engine.put("d", b"k", b"v").unwrap();
    engine
        .upsert_vector("d", 1, &[1.0, 0.0, 0.0], Some(b"p"))
        .unwrap();
    let before = engine.list_datasets();

    let long = "x".repeat(65);
    for (name, reason) in [
        ("", "empty"),
        (long.as_str(), "over 64"),
        ("a b", "outside"),
        ("é", "outside"),
    ] {
        match engine.create_dataset(name, DatasetConfig::new(3, Metric::L2)) {
            Err(Error::BadName { reason: r, .. }) => assert!(r.contains(reason), "{name:?}: {r}"),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert!(matches!(
        engine.create_dataset("d", DatasetConfig::new(3, Metric::L2)),
        Err(Error::DatasetExists { .. })
    ));
    assert!(matches!(
        engine.create_dataset("z", DatasetConfig::new(0, Metric::L2)),
        Err(Error::BadDatasetConfig { .. })
    ));
    let mut bad_m = DatasetConfig::new(3, Metric::L2);
    bad_m.m = 100_000;
    assert!(matches!(
        engine.create_dataset("z", bad_m),
        Err(Error::BadDatasetConfig { .. })
    ));
    assert!(matches!(
        engine.put("nope", b"k", b"v"),
        Err(Error::UnknownDataset { .. })
    ));
    assert!(matches!(
        engine.drop_dataset("nope"),
        Err(Error::UnknownDataset { .. })
    ));
    assert!(matches!(engine.put("d", b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(engine.get("d", b""), Err(Error::EmptyKey)));
    let big_key = vec![1u8; MAX_KEY_BYTES + 1];
    assert!(matches!(
        engine.put("d", &big_key, b"v"),
        Err(Error::KeyTooLarge { .. })
    ));
    let big_value = vec![1u8; (16 << 20) + 1];
    assert!(matches!(
        engine.put("d", b"k", &big_value),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        engine.upsert_vector("d", 2, &[1.0, 0.0, 0.0], Some(&big_value)),
        Err(Error::ValueTooLarge { .. })
    ));
    assert!(matches!(
        engine.upsert_vector("d", 2, &[1.0, 0.0], None),
        Err(Error::DimensionMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(matches!(
        engine.upsert_vector("d", 1, &[1.0, f32::NAN, 0.0], Some(b"q")),
        Err(Error::NonFinite { index: 1, .. })
    ));
    assert!(matches!(
        engine.upsert_vector("d", 1, &[f32::INFINITY, 0.0, 0.0], None),
        Err(Error::NonFinite { index: 0, .. })
    ));
    assert!(matches!(
        engine.search("d", &[1.0, 0.0], 1),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(matches!(
        engine.search("d", &[1.0, f32::NAN, 0.0], 1),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        engine.search("d", &[1.0, 0.0, 0.0], 0),
        Err(Error::BadK { k: 0, .. })
    ));
    assert!(matches!(
        engine.search("d", &[1.0, 0.0, 0.0], MAX_K + 1),
        Err(Error::BadK { .. })
    ));
    // A zero vector under cosine is refused by the index, with its payload
    // not kept.
    assert!(
        engine
            .upsert_vector("d", 1, &[0.0, 0.0, 0.0], Some(b"zero"))
            .is_err()
    );

    assert_eq!(engine.list_datasets(), before, "nothing changed");
    assert_eq!(&*engine.get("d", b"k").unwrap().unwrap(), b"v");
    let hit = &engine.search("d", &[1.0, 0.0, 0.0], 1).unwrap()[0];
    assert_eq!((hit.id, hit.payload.as_deref()), (1, Some(&b"p"[..])));

    engine.close_blocking().unwrap();
    assert!(matches!(engine.get("d", b"k"), Err(Error::Closing)));
    assert!(matches!(
        engine.create_dataset("e", DatasetConfig::new(3, Metric::L2)),
        Err(Error::Closing)
    ));
}

#[test]
fn over_budget_writes_are_refused_with_the_numbers_and_accepted_data_stays() {
    let engine = engine_with_limit(48 << 20);
    engine
        .create_dataset("b", DatasetConfig::new(4, Metric::L2))
        .unwrap();
    let value = vec![0xabu8; 4096];
    let mut accepted = 0u32;
    let refusal = loop {
        match engine.put("b", &accepted.to_le_bytes(), &value) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1_000_000, "the budget never refused");
    };
    let exceeded = refusal.budget_exceeded().expect("a budget refusal");
    assert!(matches!(refusal, Error::OverBudget(_)), "{refusal:?}");
    assert!(
        exceeded.requested_bytes > 0 && exceeded.limit_bytes == 48 << 20,
        "{exceeded:?}"
    );
    assert!(exceeded.consumer.starts_with("b/"), "{exceeded:?}");
    assert!(accepted > 1000, "{accepted}");
    for i in 0..accepted {
        let ok = engine
            .get_with("b", &i.to_le_bytes(), |v| v == &value[..])
            .unwrap();
        assert_eq!(ok, Some(true), "record {i}");
    }
    // Freeing makes room again.
    for i in 0..accepted / 2 {
        assert!(engine.delete("b", &i.to_le_bytes()).unwrap());
    }
    engine.release_memory().unwrap();
    engine.put("b", b"after", &value).unwrap();
}

#[test]
fn dropping_a_dataset_returns_its_budget_share_to_zero() {
    let engine = engine();
    for kind in [IndexKind::Native, IndexKind::HnswRs] {
        engine
            .create_dataset("gone", DatasetConfig::new(16, Metric::L2).with_index(kind))
            .unwrap();
        for i in 0..5000u64 {
            engine.put("gone", &i.to_le_bytes(), &[7u8; 200]).unwrap();
            let v: Vec<f32> = (0..16).map(|j| (i * 16 + j) as f32).collect();
            engine
                .upsert_vector("gone", i, &v, Some(&[1u8; 64]))
                .unwrap();
        }
        let held = engine.dataset_reserved_bytes("gone");
        assert!(held > 5000 * 200, "{held}");
        engine.drop_dataset("gone").unwrap();
        assert_eq!(
            engine.dataset_reserved_bytes("gone"),
            0,
            "{kind:?}: {:?}",
            engine.budget().stats()
        );
        assert_eq!(
            engine.budget().reserved_bytes(),
            0,
            "{kind:?}: {:?}",
            engine.budget().stats()
        );
        assert!(engine.list_datasets().is_empty());
    }
}

fn checksummed(key: u64, round: u64) -> Vec<u8> {
    let len = 16 + (key * 31 + round) % 500;
    let mut v: Vec<u8> = (0..len)
        .map(|i| (key ^ round ^ i).wrapping_mul(0x9e37) as u8)
        .collect();
    let sum = crc(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}

fn intact(v: &[u8]) -> bool {
    let (body, sum) = v.split_at(v.len() - 4);
    crc(body).to_le_bytes() == sum
}

#[test]
fn four_threads_of_mixed_work_while_memory_is_released() {
    let engine = engine();
    engine
        .create_dataset("c", DatasetConfig::new(8, Metric::L2))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let releaser = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) {
                let report = engine.release_memory().unwrap();
                assert!(report.failures.is_empty(), "{:?}", report.failures);
                runs += 1;
            }
            runs
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                // Each thread owns keys and ids = t mod 4, so it can check
                // exactly what it wrote.
                let mut last: HashMap<u64, Option<u64>> = HashMap::new();
                for round in 0..4000u64 {
                    let k = (round * 7919 % 512) * 4 + t;
                    match round % 5 {
                        0 | 1 => {
                            engine
                                .put("c", &k.to_le_bytes(), &checksummed(k, round))
                                .unwrap();
                            last.insert(k, Some(round));
                        }
                        2 => {
                            let got = engine.get("c", &k.to_le_bytes()).unwrap();
                            match last.get(&k).copied().flatten() {
                                Some(r) => assert_eq!(got.as_deref(), Some(&checksummed(k, r)[..])),
                                None => assert!(got.is_none()),
                            }
                        }
                        3 => {
                            let was = last.insert(k, None).flatten().is_some();
                            assert_eq!(engine.delete("c", &k.to_le_bytes()).unwrap(), was);
                        }
                        _ => {
                            let v: Vec<f32> = (0..8).map(|j| ((k + j) % 13) as f32).collect();
                            engine
                                .upsert_vector("c", k, &v, Some(&checksummed(k, round)))
                                .unwrap();
                            for hit in engine.search("c", &v, 5).unwrap() {
                                if let Some(p) = hit.payload {
                                    assert!(intact(&p), "a payload came back corrupt");
                                }
                            }
                        }
                    }
                }
                last
            })
        })
        .collect();
    let mut expected = HashMap::new();
    for w in workers {
        expected.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let runs = releaser.join().unwrap();
    assert!(runs >= 2, "release ran {runs} times");
    for (k, round) in expected {
        let got = engine.get("c", &k.to_le_bytes()).unwrap();
        assert_eq!(
            got.as_deref(),
            round.map(|r| checksummed(k, r)).as_deref(),
            "key {k}"
        );
    }
}
