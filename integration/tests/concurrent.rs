//! Compaction and index rebuilds under concurrent inserts, searches and
//! deletes of checksummed records, for 30 s: nothing lost, nothing
//! corrupt (every value carries the crc32c of its key and body; every
//! search hit's payload names its id), and the recall of the live points
//! unchanged within 0.01. The workers are set to compact and rebuild
//! often, and the test checks that they did.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, MaintenanceKind, Metric, Outcome};
use ebb_testkit::Rng;
use parking_lot::Mutex;

const DIM: usize = 16;
const SECS: u64 = 30;

/// A value: crc32c(key, body) then the body.
fn value(key: u64, version: u64) -> Vec<u8> {
    let len = 16 + (key.wrapping_mul(31) ^ version) as usize % 700;
    let body: Vec<u8> = (0..len)
        .map(|i| (key as usize + i + version as usize) as u8)
        .collect();
    let mut crc = crc32c::crc32c(&key.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &body);
    let mut v = crc.to_le_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

fn intact(key: u64, v: &[u8]) -> bool {
    v.len() >= 4 && {
        let crc = u32::from_le_bytes(v[..4].try_into().unwrap());
        crc32c::crc32c_append(crc32c::crc32c(&key.to_le_bytes()), &v[4..]) == crc
    }
}

fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// recall@10 of `engine` against brute force over `live`.
fn recall(engine: &Engine, live: &HashMap<u64, Vec<f32>>, queries: &[Vec<f32>]) -> f64 {
    let mut found = 0usize;
    for q in queries {
        let mut exact: Vec<(f32, u64)> = live.iter().map(|(id, v)| (l2(q, v), *id)).collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let truth: Vec<u64> = exact.iter().take(10).map(|x| x.1).collect();
        let hits = engine.search("c", q, 10).unwrap();
        found += hits.iter().filter(|h| truth.contains(&h.id)).count();
    }
    found as f64 / (queries.len() * 10) as f64
}

#[test]
fn compaction_and_rebuilds_under_load_lose_and_corrupt_nothing() {
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 4 << 30,
        compaction_interval_secs: 1,
        arena_max_live_ratio: 0.8,
        index_max_deleted_ratio: 0.1,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_dataset("c", DatasetConfig::new(DIM, Metric::L2))
        .unwrap();
    let mut rng = Rng::new(3);
    let kv: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let vectors: Arc<Mutex<HashMap<u64, Vec<f32>>>> = Arc::default();
    // The initial load.
    let initial = ebb_testkit::clustered_vectors(&mut rng, 5000, DIM, 16, 0.3);
    for (i, v) in initial.chunks(DIM).enumerate() {
        let id = i as u64;
        engine
            .upsert_vector("c", id, v, Some(&id.to_le_bytes()))
            .unwrap();
        vectors.lock().insert(id, v.to_vec());
    }
    for k in 0..20_000u64 {
        engine.put("c", &k.to_le_bytes(), &value(k, 0)).unwrap();
        kv.lock().insert(k, 0);
    }
    engine.flush("c").unwrap();
    let queries: Vec<Vec<f32>> = ebb_testkit::clustered_vectors(&mut Rng::new(4), 50, DIM, 16, 0.3)
        .chunks(DIM)
        .map(<[f32]>::to_vec)
        .collect();
    let recall_before = recall(&engine, &vectors.lock(), &queries);

    let stop = Arc::new(AtomicBool::new(false));
    let corrupt = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (engine, kv, vectors, stop) =
            (engine.clone(), kv.clone(), vectors.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(10 + w);
            let mut next_key = 1_000_000 * (w + 1);
            let mut next_id = 1_000_000 * (w + 1);
            while !stop.load(Ordering::Relaxed) {
                // Replace or insert a record, delete another.
                let key = if rng.below(2) == 0 {
                    rng.below(20_000)
                } else {
                    next_key += 1;
                    next_key
                };
                let mut m = kv.lock();
                let version = m.get(&key).map_or(0, |v| v + 1);
                engine
                    .put("c", &key.to_le_bytes(), &value(key, version))
                    .unwrap();
                m.insert(key, version);
                let victim = rng.below(20_000);
                if m.remove(&victim).is_some() {
                    assert!(engine.delete("c", &victim.to_le_bytes()).unwrap());
                }
                drop(m);
                // A vector in, a vector out.
                let v: Vec<f32> = ebb_testkit::clustered_vectors(&mut rng, 1, DIM, 16, 0.3);
                let mut vm = vectors.lock();
                next_id += 1;
                engine
                    .upsert_vector("c", next_id, &v, Some(&next_id.to_le_bytes()))
                    .unwrap();
                vm.insert(next_id, v);
                // An initial point, or one of this writer's recent ones.
                let old = if rng.below(2) == 0 {
                    rng.below(5000)
                } else {
                    next_id - 1 - rng.below(500)
                };
                if vm.remove(&old).is_some() {
                    assert!(engine.delete_vector("c", old).unwrap());
                }
            }
        }));
    }
    {
        let (engine, stop, corrupt) = (engine.clone(), stop.clone(), corrupt.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(99);
            while !stop.load(Ordering::Relaxed) {
                let key = rng.below(20_000);
                if let Some(v) = engine.get("c", &key.to_le_bytes()).unwrap()
                    && !intact(key, &v)
                {
                    corrupt.fetch_add(1, Ordering::Relaxed);
                }
                let q = ebb_testkit::clustered_vectors(&mut rng, 1, DIM, 16, 0.3);
                for h in engine.search("c", &q, 10).unwrap() {
                    let p = h.payload.expect("every vector has a payload");
                    if p[..] != h.id.to_le_bytes() {
                        corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(SECS) {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(corrupt.load(Ordering::Relaxed), 0, "corrupt reads");
    // Nothing lost: every record the model holds, with its last value.
    let kv = kv.lock();
    for (key, version) in kv.iter() {
        let v = engine.get("c", &key.to_le_bytes()).unwrap();
        assert_eq!(v.as_deref(), Some(&value(*key, *version)[..]), "key {key}");
    }
    for key in 0..20_000u64 {
        if !kv.contains_key(&key) {
            assert!(
                engine.get("c", &key.to_le_bytes()).unwrap().is_none(),
                "deleted {key} is back"
            );
        }
    }
    let vectors = vectors.lock();
    for (id, v) in vectors.iter() {
        assert_eq!(
            engine.get_vector("c", *id).unwrap().as_deref(),
            Some(&v[..]),
            "vector {id}"
        );
    }
    engine.flush("c").unwrap();
    let recall_after = recall(&engine, &vectors, &queries);
    let stats = engine.compaction_stats();
    let arena = stats.events(MaintenanceKind::Arena, Outcome::Done);
    let index = stats.events(MaintenanceKind::Index, Outcome::Done);
    eprintln!(
        "{SECS} s under load: {} records, {} vectors live; {arena} compactions, {index} rebuilds; recall@10 {recall_before:.3} before, {recall_after:.3} after",
        kv.len(),
        vectors.len()
    );
    assert!(
        arena > 0 && index > 0,
        "compactions {arena}, rebuilds {index}: the test must exercise both"
    );
    assert!(
        recall_after >= recall_before - 0.01,
        "recall {recall_before:.3} -> {recall_after:.3}"
    );
    engine.close_blocking().unwrap();
}
