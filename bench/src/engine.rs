//! `peers engine`: the engine's KV store beside a `HashMap<Box<[u8]>,
//! Box<[u8]>>` behind a `RwLock` and beside `dashmap`, on glibc malloc.
//!
//! Each store runs in a child process of its own (`peers engine --child
//! NAME`), so one store's freed memory cannot flatter or burden another's
//! RSS. In each: N records of 16-byte keys and 100-byte values; the RSS
//! delta over the empty store per record, minus the 116 payload bytes, is
//! the overhead; then gets and puts (overwrites of existing keys, same
//! sizes) on 2 threads, the same random keys for every store; then a random
//! 75 % deleted and each store's best reclaim (the engine's
//! `release_memory`; the maps' `shrink_to_fit` and `malloc_trim(0)`), and
//! the RSS delta over the live bytes.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::RwLock;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};

use crate::Rng;

/// Key and value sizes of the scenario.
pub const KEY_BYTES: usize = 16;
/// See [`KEY_BYTES`].
pub const VALUE_BYTES: usize = 100;

/// One store's figures.
#[derive(Clone, Debug, Default)]
pub struct EngineReport {
    /// `ebb`, `rwlock_hashmap` or `dashmap`.
    pub store: String,
    /// Records inserted.
    pub records: u64,
    /// RSS delta per record beyond its key and value bytes.
    pub overhead_bytes_per_record: f64,
    /// RSS delta after deleting 75 % and reclaiming, over the live bytes.
    pub rss_over_live_after_release: f64,
    /// Wall time per get per thread, 2 threads.
    pub get_ns_per_op_2t: f64,
    /// Wall time per put per thread, 2 threads.
    pub put_ns_per_op_2t: f64,
}

impl EngineReport {
    /// One JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.store,
            "records": self.records,
            "overhead_bytes_per_record": round1(self.overhead_bytes_per_record),
            "rss_over_live_after_release": round3(self.rss_over_live_after_release),
            "get_ns_per_op_2t": round1(self.get_ns_per_op_2t),
            "put_ns_per_op_2t": round1(self.put_ns_per_op_2t),
        })
    }

    fn from_json(v: &serde_json::Value) -> Result<EngineReport> {
        let f = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {v}"));
        Ok(EngineReport {
            store: v["store"].as_str().context("no store")?.to_string(),
            records: v["records"].as_u64().context("no records")?,
            overhead_bytes_per_record: f("overhead_bytes_per_record")?,
            rss_over_live_after_release: f("rss_over_live_after_release")?,
            get_ns_per_op_2t: f("get_ns_per_op_2t")?,
            put_ns_per_op_2t: f("put_ns_per_op_2t")?,
        })
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The store under test: the calls the scenario makes.
trait Store: Sync {
    fn put(&self, key: &[u8], value: &[u8]);
    /// Reads the value and returns its first byte (so the read is not
    /// optimized away).
    fn get(&self, key: &[u8]) -> u8;
    fn delete(&self, key: &[u8]);
    fn reclaim(&self);
    /// What the store holds, for a run's stderr (where it can say).
    fn describe(&self) -> String {
        String::new()
    }
}

struct EbbStore(Engine);

impl Store for EbbStore {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0.put("kv", key, value).expect("put");
    }
    fn get(&self, key: &[u8]) -> u8 {
        self.0
            .get_with("kv", key, |v| v[0])
            .expect("get")
            .expect("present")
    }
    fn delete(&self, key: &[u8]) {
        assert!(self.0.delete("kv", key).expect("delete"));
    }
    fn reclaim(&self) {
        let report = self.0.release_memory().expect("release");
        eprintln!("ebb release: {report:?}");
    }
    fn describe(&self) -> String {
        format!("{:?}", self.0.dataset_stats("kv"))
    }
}

type Map = HashMap<Box<[u8]>, Box<[u8]>>;

struct RwLockMap(RwLock<Map>);

impl Store for RwLockMap {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0.write().unwrap().insert(key.into(), value.into());
    }
    fn get(&self, key: &[u8]) -> u8 {
        self.0.read().unwrap().get(key).expect("present")[0]
    }
    fn delete(&self, key: &[u8]) {
        assert!(self.0.write().unwrap().remove(key).is_some());
    }
    fn reclaim(&self) {
        self.0.write().unwrap().shrink_to_fit();
        ebb_core::os::trim_global_allocator();
    }
}

struct Dash(dashmap::DashMap<Box<[u8]>, Box<[u8]>>);

impl Store for Dash {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0.insert(key.into(), value.into());
    }
    fn get(&self, key: &[u8]) -> u8 {
        self.0.get(key).expect("present")[0]
    }
    fn delete(&self, key: &[u8]) {
        assert!(self.0.remove(key).is_some());
    }
    fn reclaim(&self) {
        self.0.shrink_to_fit();
        ebb_core::os::trim_global_allocator();
    }
}

fn key_of(i: u64) -> [u8; KEY_BYTES] {
    // 16 bytes spread over the key space (no common prefix to favour
    // anyone's hash).
    let h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
        .hash_one(i);
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&h.to_le_bytes());
    k[8..].copy_from_slice(&i.to_le_bytes());
    k
}

fn value_of(i: u64, round: u8) -> [u8; VALUE_BYTES] {
    let mut v = [round; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn rss() -> u64 {
    ebb_core::os::rss_bytes().expect("statm")
}

/// Calls `f` for each key on 2 threads (each its own half of `keys`, a
/// thread-local sum of what `f` returns kept from the optimizer), returns
/// the wall time per call per thread in ns. The threads start together at
/// a barrier, so spawning is not timed.
fn two_threads(keys: &[u64], f: impl Fn(u64) -> u64 + Sync) -> f64 {
    let half = keys.len() / 2;
    let start = std::sync::Barrier::new(3);
    let elapsed = std::thread::scope(|s| {
        for part in [&keys[..half], &keys[half..half * 2]] {
            let (f, start) = (&f, &start);
            s.spawn(move || {
                start.wait();
                let mut sum = 0u64;
                for &k in part {
                    sum = sum.wrapping_add(f(k));
                }
                std::hint::black_box(sum);
            });
        }
        start.wait();
        Instant::now()
    });
    elapsed.elapsed().as_nanos() as f64 / half as f64
}

fn run_store(name: &str, store: &dyn Store, records: u64, seed: u64) -> EngineReport {
    // The scenario's own vectors exist before the baseline, so the RSS
    // deltas are the store's alone.
    let mut rng = Rng::new(seed);
    let ops: Vec<u64> = (0..records.min(2_000_000))
        .map(|_| rng.below(records))
        .collect();
    let order = crate::permutation(&mut rng, records as usize);
    let before = rss();
    for i in 0..records {
        store.put(&key_of(i), &value_of(i, 0));
    }
    let after_load = rss();
    let payload = (KEY_BYTES + VALUE_BYTES) as f64;
    let overhead = after_load.saturating_sub(before) as f64 / records as f64 - payload;

    let get_ns = two_threads(&ops, |k| u64::from(store.get(&key_of(k))));
    let put_ns = two_threads(&ops, |k| {
        store.put(&key_of(k), &value_of(k, 1));
        0
    });

    let deleted = records as usize * 3 / 4;
    for &i in &order[..deleted] {
        store.delete(&key_of(i as u64));
    }
    eprintln!(
        "{name} before reclaim: rss {} {}",
        rss().saturating_sub(before),
        store.describe()
    );
    store.reclaim();
    eprintln!(
        "{name} after reclaim: rss {} {}",
        rss().saturating_sub(before),
        store.describe()
    );
    let live = (records as usize - deleted) as f64 * payload;
    let after_release = rss().saturating_sub(before) as f64;
    EngineReport {
        store: name.to_string(),
        records,
        overhead_bytes_per_record: overhead,
        rss_over_live_after_release: after_release / live,
        get_ns_per_op_2t: get_ns,
        put_ns_per_op_2t: put_ns,
    }
}

/// Runs one store in this process (the child side).
///
/// # Errors
///
/// On an unknown store name.
pub fn run_child(store: &str, records: u64, seed: u64) -> Result<EngineReport> {
    Ok(match store {
        "ebb" => {
            let engine = Engine::open(EngineConfig::default())?;
            engine.create_dataset("kv", DatasetConfig::new(1, Metric::L2))?;
            run_store(store, &EbbStore(engine), records, seed)
        }
        "rwlock_hashmap" => run_store(store, &RwLockMap(RwLock::new(Map::new())), records, seed),
        "dashmap" => run_store(store, &Dash(dashmap::DashMap::new()), records, seed),
        other => bail!("unknown store {other:?} (ebb, rwlock_hashmap, dashmap)"),
    })
}

/// Runs each store in a child process of `exe` and collects the reports.
///
/// # Errors
///
/// If a child fails or prints no report.
pub fn run_all(
    exe: &std::path::Path,
    stores: &[&str],
    records: u64,
    seed: u64,
) -> Result<Vec<EngineReport>> {
    let mut out = Vec::new();
    for s in stores {
        let output = std::process::Command::new(exe)
            .args(["engine", "--child", s])
            .args(["--records", &records.to_string()])
            .args(["--seed", &seed.to_string()])
            .output()
            .with_context(|| format!("spawning the {s} child"))?;
        if !output.status.success() {
            bail!(
                "{s} child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let line = String::from_utf8(output.stdout)?;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("{s} child printed {line:?}"))?;
        out.push(EngineReport::from_json(&v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_store_runs_at_small_scale() {
        for store in ["ebb", "rwlock_hashmap", "dashmap"] {
            let r = run_child(store, 20_000, 7).unwrap();
            assert!(
                r.get_ns_per_op_2t > 0.0 && r.put_ns_per_op_2t > 0.0,
                "{r:?}"
            );
            assert_eq!(r.records, 20_000);
        }
        assert!(run_child("redis", 10, 7).is_err());
    }
}
