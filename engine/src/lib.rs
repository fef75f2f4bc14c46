//! ebb-engine: the database that links ebb in. Datasets of KV records and
//! vectors with payloads, every byte in ebb memory under one
//! [`MemoryBudget`], so the engine can say who holds what, give it back
//! ([`Engine::release_memory`]) and refuse cleanly at its limit.
//!
//! ```
//! use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
//!
//! let engine = Engine::open(EngineConfig::default()).unwrap();
//! engine.create_dataset("docs", DatasetConfig::new(2, Metric::L2)).unwrap();
//! engine.put("docs", b"greeting", b"hello").unwrap();
//! assert_eq!(&*engine.get("docs", b"greeting").unwrap().unwrap(), b"hello");
//! engine.upsert_vector("docs", 7, &[1.0, 0.0], Some(b"seven")).unwrap();
//! let hits = engine.search("docs", &[0.9, 0.1], 1).unwrap();
//! assert_eq!(hits[0].id, 7);
//! assert_eq!(hits[0].payload.as_deref(), Some(&b"seven"[..]));
//! ```
//!
//! Invariants:
//!
//! 1. Every caller mistake is a typed [`Error`] returned before anything
//!    changes; no panic reaches a caller for anything a caller did.
//! 2. A dataset's memory is charged to `<name>/<kind>` consumers of the
//!    engine's budget (kinds in [`CONSUMERS`]); dropping the dataset (once
//!    no call is inside it) returns each to zero.

mod admission;
mod arrow;
mod checks;
mod config;
mod dataset;
mod error;
mod kv;
mod leaks;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
mod release;
pub mod snapshot;
mod stats;
mod vectors;

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use arrow_array::{Array, RecordBatch};
use ebb_core::MemoryBudget;
use ebb_pool::PooledBuf;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

pub use arrow::{
    INGEST_CHUNK, KvScan, SCAN_BATCH_ROWS, VectorScan, kv_batch, kv_schema, vector_batch,
    vector_schema,
};
pub use config::{
    EngineConfig, KEYS, LeakLevel, MAX_VALUE_BYTES_LIMIT, MIN_SOFT_LIMIT_RATIO, RuntimeHandle,
};
pub use dataset::{CONSUMERS, DatasetConfig, IndexKind, MAX_NAME_BYTES, check_name};
pub use ebb_core::maintenance::MaintenanceKind;
pub use ebb_hnsw::Metric;
pub use error::{Error, Result};
pub use kv::MAX_KEY_BYTES;
pub use leaks::TRACKER_NAME;
pub use lifecycle::CloseReport;
pub use lifecycle::compaction::{CompactionEvent, CompactionStats, Outcome};
pub use lifecycle::pressure::{PressureLevel, PressureSample, PressureStats};
pub use lifecycle::workers::{WorkerInfo, WorkerState};
pub use snapshot::{LoadReport, SnapshotReport, SnapshotStep};
pub use stats::{DatasetInfo, DatasetStats, ReleaseReport};

use admission::{Admission, WriteGuard};
use dataset::Dataset;

/// The largest `k` a search accepts.
pub const MAX_K: usize = 10_000;

/// The most datasets one engine holds.
pub const MAX_DATASETS: usize = 1024;

/// A value read out of ebb memory, in a pooled buffer (no heap allocation
/// per read once the pool is warm); hand it to async code with
/// [`into_bytes`](Value::into_bytes), which does not copy.
#[derive(Debug)]
pub struct Value(PooledBuf);

impl Value {
    /// The bytes as `bytes::Bytes`, without a copy; the buffer goes back
    /// to its pool when the last clone drops.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0.into_bytes()
    }
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Why [`Engine::ingest_all`] stopped, and how many rows it had stored
/// by then (0 for every refusal before the first row).
#[derive(Debug, thiserror::Error)]
#[error("{error} ({stored} rows stored before it)")]
pub struct IngestError {
    /// The refusal.
    pub error: Error,
    /// Rows stored before it.
    pub stored: usize,
}

/// One search result.
#[derive(Debug)]
pub struct Hit {
    /// The point's id.
    pub id: u64,
    /// Its distance to the query, lower is closer: squared L2, `1 - cos`
    /// or `1 - dot` (hnswlib's conventions).
    pub distance: f32,
    /// Its payload, if it has one.
    pub payload: Option<Value>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) budget: MemoryBudget,
    pub(crate) datasets: RwLock<HashMap<String, Arc<Dataset>>>,
    /// Open or closing, and the writes in flight close waits for.
    pub(crate) admission: Admission,
    pub(crate) token: CancellationToken,
    /// One snapshot at a time.
    pub(crate) snapshot_lock: Mutex<()>,
    /// What `open` loaded from `data_dir` (set once, at open).
    load_report: OnceLock<LoadReport>,
    /// Workers, the pressure controller, close.
    pub(crate) lifecycle: lifecycle::Lifecycle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.lifecycle.close_report.get().is_none() {
            tracing::warn!(
                "an Engine was dropped without close(): its workers are cancelled, nothing is snapshotted"
            );
        }
        self.token.cancel();
        if let Some(rt) = self.lifecycle.take_owned_runtime() {
            // Never a drop that waits: the workers end at their next await.
            rt.shutdown_background();
        }
    }
}

/// The engine: cheap to clone and share (`Send + Sync`); every method takes
/// `&self` and may be called from many threads at once.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("datasets", &self.inner.datasets.read().len())
            .field("budget", &self.inner.budget)
            .finish()
    }
}

impl Engine {
    /// Opens an engine with one budget of `config.memory_limit_bytes`.
    /// With `data_dir` set, loads the newest committed snapshot there
    /// (created if missing) and rebuilds its indexes; a dataset whose files
    /// are truncated or corrupt is left out and named in
    /// [`load_report`](Self::load_report), the others load. An error here
    /// is one the whole engine cannot open with (a bad config, a
    /// `data_dir` that cannot be listed).
    pub fn open(config: EngineConfig) -> Result<Engine> {
        config.validate()?;
        let budget = MemoryBudget::new(config.memory_limit_bytes)
            .with_max_consumer_names(MAX_DATASETS * CONSUMERS.len());
        let lifecycle = lifecycle::Lifecycle::new(config.runtime.clone().map(|h| h.0))?;
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                budget,
                datasets: RwLock::new(HashMap::new()),
                admission: Admission::default(),
                token: CancellationToken::new(),
                snapshot_lock: Mutex::new(()),
                load_report: OnceLock::new(),
                lifecycle,
            }),
        };
        leaks::tracker().set_level(leaks::tracking_level(engine.inner.config.leak_level));
        if let Some(dir) = engine.inner.config.data_dir.clone() {
            let report = snapshot::load_latest(&engine, &dir)?;
            let _ = engine.inner.load_report.set(report);
        }
        engine.start_workers();
        Ok(engine)
    }

    /// The tracker of the engine's own resources (scan iterators, snapshot
    /// files): one per process, named [`TRACKER_NAME`].
    pub fn leak_tracker(&self) -> ebb_leak::ResourceTracker {
        leaks::tracker()
    }

    /// Scans and snapshot files held longer than `leak_threshold_secs`,
    /// each group with its acquisition site.
    pub fn leak_report(&self) -> ebb_leak::LeakReport {
        let threshold = std::time::Duration::from_secs(self.inner.config.leak_threshold_secs);
        leaks::tracker().check(threshold)
    }

    /// What [`open`](Self::open) loaded from `data_dir` (none without one).
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.inner.load_report.get()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The one budget every dataset reserves from.
    pub fn budget(&self) -> &MemoryBudget {
        &self.inner.budget
    }

    /// The engine's root cancellation token (cancelled by [`close`](Self::close)).
    pub fn token(&self) -> &CancellationToken {
        &self.inner.token
    }

    pub(crate) fn open_for_work(&self) -> Result<()> {
        self.inner.admission.check_open()
    }

    /// A dataset for a write: the write admitted (see `admission`) and the
    /// dataset.
    pub(crate) fn dataset_for_write(&self, name: &str) -> Result<(WriteGuard<'_>, Arc<Dataset>)> {
        let guard = self.inner.admission.begin_write()?;
        Ok((guard, self.dataset(name)?))
    }

    pub(crate) fn dataset(&self, name: &str) -> Result<Arc<Dataset>> {
        self.open_for_work()?;
        self.inner
            .datasets
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownDataset {
                name: name.to_string(),
            })
    }

    /// Creates a dataset.
    pub fn create_dataset(&self, name: &str, config: DatasetConfig) -> Result<()> {
        let _write = self.inner.admission.begin_write()?;
        self.check_pressure()?;
        check_name(name)?;
        {
            let datasets = self.inner.datasets.read();
            if datasets.contains_key(name) {
                return Err(Error::DatasetExists {
                    name: name.to_string(),
                });
            }
            if datasets.len() >= MAX_DATASETS {
                return Err(Error::TooManyDatasets { max: MAX_DATASETS });
            }
        }
        let dataset = Arc::new(self.after_write(Dataset::new(
            name,
            config,
            &self.inner.budget,
            self.inner.config.index_max_deleted_ratio,
        ))?);
        let mut datasets = self.inner.datasets.write();
        if datasets.contains_key(name) {
            return Err(Error::DatasetExists {
                name: name.to_string(),
            });
        }
        datasets.insert(name.to_string(), dataset);
        drop(datasets);
        // Under the controller's tick lock: a tick changing the level now
        // cannot interleave and leave the new dataset's policy stale.
        let _tick = self.inner.lifecycle.pressure.tick.lock();
        self.apply_policies(self.pressure_level());
        Ok(())
    }

    /// Drops a dataset and everything it holds: its arenas are unmapped and
    /// its consumers return to zero as soon as no call is inside it (at
    /// once when none is).
    pub fn drop_dataset(&self, name: &str) -> Result<()> {
        let _write = self.inner.admission.begin_write()?;
        let removed = self.inner.datasets.write().remove(name);
        match removed {
            Some(dataset) => {
                drop(dataset);
                self.pressure_tick();
                Ok(())
            }
            None => Err(Error::UnknownDataset {
                name: name.to_string(),
            }),
        }
    }

    /// Every dataset, by name.
    pub fn list_datasets(&self) -> Vec<DatasetInfo> {
        let datasets: Vec<Arc<Dataset>> = self.inner.datasets.read().values().cloned().collect();
        let mut out: Vec<DatasetInfo> = datasets
            .iter()
            .map(|d| DatasetInfo {
                name: d.name.clone(),
                config: d.config.clone(),
                records: d.kv.len(),
                vectors: d.vectors.len(),
                reserved_bytes: self.dataset_reserved_bytes(&d.name),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Bytes charged to `name`'s consumers.
    pub fn dataset_reserved_bytes(&self, name: &str) -> u64 {
        let prefix = format!("{name}/");
        self.inner
            .budget
            .stats()
            .consumers
            .iter()
            .filter(|c| c.name.starts_with(&prefix))
            .map(|c| c.reserved_bytes)
            .sum()
    }

    /// What `name` holds.
    pub fn dataset_stats(&self, name: &str) -> Result<DatasetStats> {
        let d = self.dataset(name)?;
        let kv = d.kv.arena().stats();
        let payloads = d.vectors.payloads().stats();
        let index = d.vectors.index().stats();
        Ok(DatasetStats {
            records: d.kv.len() as u64,
            kv_live_bytes: kv.live_bytes,
            kv_resident_bytes: kv.resident_bytes,
            kv_table_bytes: d.kv.table_bytes(),
            vectors: d.vectors.len() as u64,
            index_deleted_points: index.deleted_points,
            index_bytes: index.memory_bytes,
            index_rebuild_bytes: index.rebuild_reserved_bytes + index.retired_bytes,
            payload_live_bytes: payloads.live_bytes,
            payload_resident_bytes: payloads.resident_bytes,
            payload_map_bytes: d.vectors.map_bytes(),
            reserved_bytes: self.dataset_reserved_bytes(name),
        })
    }

    /// The stats of `name`'s buffer pool (what the engine's own buffers
    /// use: record encoding, reads, scan batches).
    pub fn pool_stats(&self, name: &str) -> Result<ebb_pool::PoolStats> {
        Ok(self.dataset(name)?.pool.stats())
    }

    fn check_kv(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        checks::check_key(key)?;
        if let Some(value) = value {
            self.check_value(value)?;
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        checks::check_value(value, self.inner.config.max_value_bytes as usize)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put(&self, dataset: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        self.check_kv(key, Some(value))?;
        self.check_pressure()?;
        // A pooled scratch buffer for the record (`put` clears it first).
        let put = d
            .pool
            .try_get(key.len() + value.len() + 3)
            .map_err(Error::from)
            .and_then(|mut scratch| d.kv.put(key, value, &mut scratch));
        self.after_write(put)
    }

    /// The value under `key`, copied into a pooled buffer.
    pub fn get(&self, dataset: &str, key: &[u8]) -> Result<Option<Value>> {
        let d = self.dataset(dataset)?;
        self.check_kv(key, None)?;
        let mut out = None;
        let pool = &d.pool;
        let mut failed = None;
        d.kv.get_with(key, |value| match pool.try_get(value.len()) {
            Ok(mut buf) => {
                buf.copy_from_slice(value);
                out = Some(Value(buf));
            }
            Err(e) => failed = Some(e),
        });
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Calls `f` with the value under `key`, in place (no copy).
    pub fn get_with<R>(
        &self,
        dataset: &str,
        key: &[u8],
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        let d = self.dataset(dataset)?;
        self.check_kv(key, None)?;
        Ok(d.kv.get_with(key, f))
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&self, dataset: &str, key: &[u8]) -> Result<bool> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        self.check_kv(key, None)?;
        Ok(d.kv.delete(key))
    }

    /// Inserts or replaces the vector `id` and its payload (none removes
    /// the old payload).
    pub fn upsert_vector(
        &self,
        dataset: &str,
        id: u64,
        vector: &[f32],
        payload: Option<&[u8]>,
    ) -> Result<()> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        if let Some(p) = payload {
            self.check_value(p)?;
        }
        self.check_pressure()?;
        self.after_write(d.vectors.upsert(id, vector, payload))
    }

    /// Deletes the vector `id`; true if it was there.
    pub fn delete_vector(&self, dataset: &str, id: u64) -> Result<bool> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        Ok(d.vectors.delete(id))
    }

    /// The `k` nearest vectors to `query`, closest first, with payloads.
    pub fn search(&self, dataset: &str, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let d = self.dataset(dataset)?;
        if k == 0 || k > MAX_K {
            return Err(Error::BadK { k, max: MAX_K });
        }
        let found = d.vectors.search(query, k)?;
        let mut hits = Vec::with_capacity(found.len());
        for (id, distance) in found {
            let payload = match d.vectors.payload_with(id, |p| {
                d.pool.try_get(p.len()).map(|mut buf| {
                    buf.copy_from_slice(p);
                    Value(buf)
                })
            }) {
                Some(v) => Some(v?),
                // Deleted between the index's answer and this read (a
                // delete takes the point out of the index first): not a
                // hit any more, rather than a hit without its payload.
                None if !d.vectors.index().contains(id) => continue,
                None => None,
            };
            hits.push(Hit {
                id,
                distance,
                payload,
            });
        }
        Ok(hits)
    }

    /// Puts every vector still in the index's delta segment into its graph
    /// now (searches see them either way; this is for a load that should
    /// end with the graph built).
    pub fn flush(&self, dataset: &str) -> Result<()> {
        Ok(self.dataset(dataset)?.vectors.index().flush_delta()?)
    }

    /// The stored vector `id` (normalized under the cosine metric).
    pub fn get_vector(&self, dataset: &str, id: u64) -> Result<Option<Vec<f32>>> {
        let d = self.dataset(dataset)?;
        Ok(d.vectors.index().get_vector(id))
    }

    /// Stores every row of a vectors batch (`id: UInt64`, `vector:
    /// FixedSizeList<Float32, dim>`, `payload: Binary`, nullable or left
    /// out). The whole batch is checked first: a wrong schema, a wrong
    /// dimension, a null id or vector, a NaN or an oversized payload is an
    /// error and nothing of the batch is stored. Looks at the engine's
    /// token and for close every [`INGEST_CHUNK`] rows ([`Error::Cancelled`]
    /// says how many were stored). Returns the rows stored.
    pub fn ingest(&self, dataset: &str, batch: &RecordBatch) -> Result<usize> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        self.check_pressure()?;
        self.after_write(self.ingest_into(&d, batch, self.inner.config.max_value_bytes as usize))
    }

    /// Stores every row of several vectors batches as one write: one
    /// admission (close waits for all of it, or none of it starts), one
    /// pressure check, and every batch checked before any row is stored,
    /// so a bad batch anywhere changes nothing. A refusal past that point
    /// (the budget, a cancel) leaves the rows before it stored, and says
    /// how many in [`IngestError::stored`].
    pub fn ingest_all(
        &self,
        dataset: &str,
        batches: &[RecordBatch],
    ) -> std::result::Result<usize, IngestError> {
        let unstored = |error| IngestError { error, stored: 0 };
        let (_write, d) = self.dataset_for_write(dataset).map_err(unstored)?;
        self.check_pressure().map_err(unstored)?;
        let max = self.inner.config.max_value_bytes as usize;
        for b in batches {
            arrow::check_vectors(b, d.config.dim, max).map_err(unstored)?;
        }
        let mut stored = 0usize;
        for b in batches {
            match self.after_write(self.ingest_into(&d, b, max)) {
                Ok(n) => stored += n,
                Err(Error::Cancelled { done }) => {
                    stored += done;
                    return Err(IngestError {
                        error: Error::Cancelled { done: stored },
                        stored,
                    });
                }
                Err(error) => return Err(IngestError { error, stored }),
            }
        }
        Ok(stored)
    }

    pub(crate) fn ingest_into(
        &self,
        d: &Dataset,
        batch: &RecordBatch,
        max: usize,
    ) -> Result<usize> {
        let rows = arrow::check_vectors(batch, d.config.dim, max)?;
        for i in 0..rows.len() {
            if i % INGEST_CHUNK == 0 && i > 0 && self.ingest_stopped() {
                return Err(Error::Cancelled { done: i });
            }
            let (id, vector, payload) = rows.row(i);
            d.vectors.upsert(id, vector, payload)?;
        }
        Ok(rows.len())
    }

    /// True once the engine's token is cancelled or close has begun: a
    /// long ingest stops at its next chunk so close need not wait for it.
    fn ingest_stopped(&self) -> bool {
        self.inner.token.is_cancelled() || self.inner.admission.is_closing()
    }

    /// Stores every row of a KV batch (`key: Binary`, `value: Binary`, no
    /// nulls), checked whole first as [`ingest`](Self::ingest) is.
    pub fn ingest_kv(&self, dataset: &str, batch: &RecordBatch) -> Result<usize> {
        let (_write, d) = self.dataset_for_write(dataset)?;
        self.check_pressure()?;
        self.after_write(self.ingest_kv_into(&d, batch, self.inner.config.max_value_bytes as usize))
    }

    pub(crate) fn ingest_kv_into(
        &self,
        d: &Dataset,
        batch: &RecordBatch,
        max: usize,
    ) -> Result<usize> {
        let (keys, values) = arrow::check_kv(batch, max)?;
        let mut scratch = d.pool.try_get(4096)?;
        for i in 0..keys.len() {
            if i % INGEST_CHUNK == 0 && i > 0 && self.ingest_stopped() {
                return Err(Error::Cancelled { done: i });
            }
            d.kv.put(keys.value(i), values.value(i), &mut scratch)?;
        }
        Ok(keys.len())
    }

    /// The dataset's vectors as record batches ([`vector_schema`]), in
    /// pooled buffers handed to Arrow without a copy: every point live at
    /// the start and still live when its batch is built, once. The scan is
    /// a tracked resource (see [`leak_report`](Self::leak_report)) whose
    /// site is the caller's.
    #[track_caller]
    pub fn scan(&self, dataset: &str) -> Result<VectorScan> {
        Ok(VectorScan::new(
            self.dataset(dataset)?,
            self.inner.token.clone(),
        ))
    }

    /// The dataset's KV records as record batches ([`kv_schema`]), as
    /// [`scan`](Self::scan) does.
    #[track_caller]
    pub fn scan_kv(&self, dataset: &str) -> Result<KvScan> {
        Ok(KvScan::new(
            self.dataset(dataset)?,
            self.inner.token.clone(),
        ))
    }
}
