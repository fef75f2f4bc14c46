//! The soak's load: writer threads ingesting vectors with payloads
//! (Arrow batches) and KV records into one long-lived dataset, deleting
//! random old ones once the live set reaches its target (so the live set
//! holds steady and churn leaves holes for compaction); a searcher that
//! also holds a scan for a while every few seconds (a tracked resource the
//! leak check must see come and go); a cycler that creates and drops a
//! dataset on a period; with a data_dir, a snapshot every minute; and,
//! with a runbook, its replay ([`super::replay`]).
//!
//! Writers fill their share of the live set as fast as the engine takes
//! it, then churn at `write_bytes_per_sec` each (every write then replaces
//! a random older record or vector), so the steady state after the
//! warm-up has a constant live set and the engine's workers get their
//! share of the cores. A write refused for memory
//! (pressure, budget, closing) backs off and is counted, never fatal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use ebb_engine::{DatasetConfig, Engine, Error, Metric};

/// The long-lived dataset.
pub const DATASET: &str = "soak";

/// What the load does.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Vector dimension.
    pub dim: usize,
    /// Writer threads.
    pub writers: usize,
    /// Live bytes to hold in steady state (3/4 KV records, 1/4 vectors
    /// with payloads).
    pub live_bytes: u64,
    /// Each writer's pace.
    pub write_bytes_per_sec: u64,
    /// The create/drop period of the cycling dataset.
    pub cycle_secs: f64,
    /// Snapshot every this many seconds when the engine has a data_dir.
    pub snapshot_secs: f64,
    /// The seed.
    pub seed: u64,
    /// A runbook to replay beside the load.
    pub replay: Option<super::replay::ReplayConfig>,
}

/// Counters the load keeps.
#[derive(Default, Debug)]
pub struct LoadCounters {
    /// Vectors stored.
    pub vectors: AtomicU64,
    /// KV records stored.
    pub records: AtomicU64,
    /// Deletes (vectors and records).
    pub deletes: AtomicU64,
    /// Searches answered.
    pub searches: AtomicU64,
    /// Writes refused for memory or closing (backed off).
    pub refused: AtomicU64,
    /// Datasets created and dropped by the cycler.
    pub cycles: AtomicU64,
    /// Snapshots committed.
    pub snapshots: AtomicU64,
    /// Other errors (a failed snapshot, say), logged.
    pub errors: AtomicU64,
}

/// The running load.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Its counters.
    pub counters: Arc<LoadCounters>,
    /// What the runbook replay did (empty without one).
    pub replay: Arc<parking_lot::Mutex<super::replay::ReplayReport>>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

pub(crate) fn refused(e: &Error) -> bool {
    matches!(
        e,
        Error::MemoryPressure { .. }
            | Error::OverBudget(_)
            | Error::Closing
            | Error::Cancelled { .. }
    )
}

/// A batch of `ids` with seeded vectors (around `centers`) and payloads of
/// 64..512 bytes.
fn batch(rng: &mut Rng, ids: &[u64], dim: usize, centers: &[f32]) -> RecordBatch {
    let k = centers.len() / dim;
    let mut values = Vec::with_capacity(ids.len() * dim);
    for _ in ids {
        let c = rng.below(k as u64) as usize;
        for j in 0..dim {
            values.push(centers[c * dim + j] + rng.unit() * 0.2);
        }
    }
    let payloads = ids
        .iter()
        .map(|id| Some(vec![(*id % 251) as u8; 64 + (id % 449) as usize]))
        .collect();
    ebb_engine::vector_batch(dim, ids.to_vec(), values, payloads).expect("a well-formed batch")
}

fn centers(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = Rng(seed | 1);
    (0..32 * dim).map(|_| rng.unit()).collect()
}

impl Workload {
    /// Creates the dataset and starts every thread.
    ///
    /// # Errors
    ///
    /// When the dataset cannot be created.
    pub fn start(engine: &Engine, c: &WorkloadConfig) -> ebb_engine::Result<Workload> {
        engine.create_dataset(DATASET, DatasetConfig::new(c.dim, Metric::L2))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LoadCounters::default());
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .expect("a soak thread starts")
        };
        for w in 0..c.writers.max(1) {
            let (engine, stop, counters, c) =
                (engine.clone(), stop.clone(), counters.clone(), c.clone());
            threads.push(spawn(
                format!("soak-writer-{w}"),
                Box::new(move || writer(&engine, &stop, &counters, &c, w)),
            ));
        }
        {
            let (engine, stop, counters, c) =
                (engine.clone(), stop.clone(), counters.clone(), c.clone());
            threads.push(spawn(
                "soak-searcher".into(),
                Box::new(move || searcher(&engine, &stop, &counters, &c)),
            ));
        }
        {
            let (engine, stop, counters, c) =
                (engine.clone(), stop.clone(), counters.clone(), c.clone());
            threads.push(spawn(
                "soak-cycler".into(),
                Box::new(move || cycler(&engine, &stop, &counters, &c)),
            ));
        }
        let replay = Arc::new(parking_lot::Mutex::new(
            super::replay::ReplayReport::default(),
        ));
        if let Some(rc) = c.replay.clone() {
            let (engine, stop, counters, report) = (
                engine.clone(),
                stop.clone(),
                counters.clone(),
                replay.clone(),
            );
            threads.push(spawn(
                "soak-runbook".into(),
                Box::new(move || super::replay::run(&engine, &stop, &counters, &rc, &report)),
            ));
        }
        Ok(Workload {
            stop,
            threads,
            counters,
            replay,
        })
    }

    /// Stops every thread and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Sleeps in slices so a stop is seen within 50 ms.
pub(crate) fn nap(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn writer(engine: &Engine, stop: &AtomicBool, n: &LoadCounters, c: &WorkloadConfig, w: usize) {
    let mut rng = Rng((c.seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (w as u64 + 1));
    let centers = centers(c.seed, c.dim);
    let share = c.live_bytes / c.writers.max(1) as u64;
    let kv_target = share * 3 / 4;
    let vector_bytes = (c.dim * 4 + 288) as u64;
    let vectors_target = (share / 4 / vector_bytes).max(1) as usize;
    let mut keys: Vec<(u64, u32)> = Vec::new();
    let mut kv_live = 0u64;
    let mut ids: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let mut churn_from: Option<(Instant, u64)> = None;
    let mut written = 0u64;
    let base = (w as u64) << 40;
    while !stop.load(Ordering::Relaxed) {
        // 128 vectors.
        let new: Vec<u64> = (0..128).map(|i| base | (next + i)).collect();
        next += 128;
        match engine.ingest(DATASET, &batch(&mut rng, &new, c.dim, &centers)) {
            Ok(k) => {
                n.vectors.fetch_add(k as u64, Ordering::Relaxed);
                written += k as u64 * vector_bytes;
                ids.extend_from_slice(&new);
            }
            Err(e) if refused(&e) => {
                n.refused.fetch_add(1, Ordering::Relaxed);
                nap(stop, Duration::from_millis(50));
            }
            Err(e) => {
                tracing::warn!(error = %e, "soak: ingest failed");
                n.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        while ids.len() > vectors_target {
            let i = rng.below(ids.len() as u64) as usize;
            let id = ids.swap_remove(i);
            if engine.delete_vector(DATASET, id).unwrap_or(false) {
                n.deletes.fetch_add(1, Ordering::Relaxed);
            }
        }
        // 128 KV records of 64..4096 bytes.
        for _ in 0..128 {
            let len = 64 + rng.below(4033) as u32;
            let key = base | next;
            next += 1;
            let value = vec![(key % 251) as u8; len as usize];
            match engine.put(DATASET, &key.to_le_bytes(), &value) {
                Ok(()) => {
                    n.records.fetch_add(1, Ordering::Relaxed);
                    keys.push((key, len));
                    kv_live += u64::from(len);
                    written += u64::from(len);
                }
                Err(e) if refused(&e) => {
                    n.refused.fetch_add(1, Ordering::Relaxed);
                    nap(stop, Duration::from_millis(50));
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "soak: put failed");
                    n.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        while kv_live > kv_target && !keys.is_empty() {
            let i = rng.below(keys.len() as u64) as usize;
            let (key, len) = keys.swap_remove(i);
            kv_live -= u64::from(len);
            if engine.delete(DATASET, &key.to_le_bytes()).unwrap_or(false) {
                n.deletes.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Fill to the target as fast as the engine takes it (the warm-up),
        // then churn at the pace.
        let full = kv_live >= kv_target && ids.len() >= vectors_target;
        if !full {
            churn_from = None;
        } else {
            let (t0, w0) = *churn_from.get_or_insert((Instant::now(), written));
            let due = Duration::from_secs_f64(
                (written - w0) as f64 / c.write_bytes_per_sec.max(1) as f64,
            );
            let elapsed = t0.elapsed();
            if due > elapsed {
                nap(stop, due - elapsed);
            }
        }
    }
}

fn searcher(engine: &Engine, stop: &AtomicBool, n: &LoadCounters, c: &WorkloadConfig) {
    let mut rng = Rng(c.seed ^ 0x5EA6_C4E5);
    let centers = centers(c.seed, c.dim);
    let mut last_scan = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let k = centers.len() / c.dim;
        let ci = rng.below(k as u64) as usize;
        let q: Vec<f32> = (0..c.dim)
            .map(|j| centers[ci * c.dim + j] + rng.unit() * 0.2)
            .collect();
        if engine.search(DATASET, &q, 10).is_ok() {
            n.searches.fetch_add(1, Ordering::Relaxed);
        }
        // Every 5 s, a scan held for 2 s: a tracked resource that must be
        // seen during the run and gone at the end.
        if last_scan.elapsed() > Duration::from_secs(5) {
            last_scan = Instant::now();
            if let Ok(mut scan) = engine.scan(DATASET) {
                let _ = scan.next();
                nap(stop, Duration::from_secs(2));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cycler(engine: &Engine, stop: &AtomicBool, n: &LoadCounters, c: &WorkloadConfig) {
    let mut rng = Rng(c.seed ^ 0x00C1_C1E5);
    let centers = centers(c.seed + 7, c.dim);
    let mut cycle = 0u64;
    let mut last_snapshot = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let name = format!("cycle-{}", cycle % 2);
        if engine
            .create_dataset(&name, DatasetConfig::new(c.dim, Metric::Cosine))
            .is_ok()
        {
            let ids: Vec<u64> = (0..2000).collect();
            let _ = engine.ingest(&name, &batch(&mut rng, &ids, c.dim, &centers));
            for i in 0..2000u64 {
                let _ = engine.put(&name, &i.to_le_bytes(), &[7u8; 512]);
            }
        }
        nap(stop, Duration::from_secs_f64(c.cycle_secs));
        if engine.drop_dataset(&name).is_ok() {
            n.cycles.fetch_add(1, Ordering::Relaxed);
        }
        cycle += 1;
        if engine.config().data_dir.is_some()
            && last_snapshot.elapsed().as_secs_f64() >= c.snapshot_secs
        {
            last_snapshot = Instant::now();
            match engine.snapshot() {
                Ok(_) => {
                    n.snapshots.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "soak: snapshot failed");
                    n.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
