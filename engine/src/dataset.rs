//! A dataset: its configuration, its name's rules, and what it holds (KV
//! records, vectors with payloads, a buffer pool), each charging its own
//! consumer of the engine's budget (`<name>/kv`, `<name>/payloads`,
//! `<name>/index`, `<name>/pool`).

use ebb_core::MemoryBudget;
use ebb_hnsw::Metric;
use ebb_pool::{BufferPool, PoolConfig};

use crate::error::{Error, Result};
use crate::kv::KvStore;
use crate::vectors::VectorStore;

/// The longest dataset name.
pub const MAX_NAME_BYTES: usize = 64;

/// The consumer kinds each dataset charges (metric label values).
pub const CONSUMERS: &[&str] = &["kv", "payloads", "index", "pool"];

/// Which graph a dataset's index uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexKind {
    /// ebb's native graph (the default).
    #[default]
    Native,
    /// hnsw_rs, the reference backend.
    HnswRs,
}

/// How a dataset's vectors are indexed.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetConfig {
    /// Vector dimension (1..=65 536).
    pub dim: usize,
    /// Distance; every distance returned is lower-is-closer.
    pub metric: Metric,
    /// Graph backend.
    pub index: IndexKind,
    /// HNSW links per node (16).
    pub m: usize,
    /// Build beam (200).
    pub ef_construction: usize,
    /// Search beam (64).
    pub ef_search: usize,
}

impl DatasetConfig {
    /// `dim`-dimensional vectors under `metric`, native index, M 16,
    /// ef_construction 200, ef_search 64.
    pub fn new(dim: usize, metric: Metric) -> DatasetConfig {
        DatasetConfig {
            dim,
            metric,
            index: IndexKind::Native,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }

    /// Picks the backend.
    pub fn with_index(mut self, index: IndexKind) -> Self {
        self.index = index;
        self
    }
}

/// Checks a dataset name: 1..=64 bytes of `[A-Za-z0-9_-]`, not `other`
/// (reserved for the metrics of datasets past the label cap).
pub fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "over 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "outside [A-Za-z0-9_-]"
    } else if name == ebb_metrics::OTHER {
        // The metrics' label for datasets past the label cap: a dataset of
        // that name would merge with them unseen.
        "reserved (the metrics label of datasets past metrics_dataset_labels)"
    } else {
        return Ok(());
    };
    Err(Error::BadName {
        name: name.to_string(),
        reason,
    })
}

/// One dataset's state.
pub(crate) struct Dataset {
    pub name: String,
    pub config: DatasetConfig,
    pub kv: KvStore,
    pub vectors: VectorStore,
    pub pool: BufferPool,
}

/// The arenas' compaction thresholds (`arena_max_live_ratio`,
/// `arena_max_waste_ratio`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ArenaPolicy {
    pub max_live_ratio: f64,
    pub max_waste_ratio: f64,
}

impl Dataset {
    /// Sets the compaction thresholds of the arenas and the index (the
    /// pressure controller tightens them).
    pub fn set_policies(&self, arena: ArenaPolicy, index_max_deleted_ratio: f64) {
        for a in [self.kv.arena(), self.vectors.payloads()] {
            let policy = a
                .compaction_policy()
                .with_max_live_ratio(arena.max_live_ratio)
                .with_max_waste_ratio(arena.max_waste_ratio);
            a.set_compaction_policy(policy);
        }
        self.vectors.set_max_deleted_ratio(index_max_deleted_ratio);
    }

    pub fn new(
        name: &str,
        config: DatasetConfig,
        budget: &MemoryBudget,
        max_deleted_ratio: f64,
    ) -> Result<Dataset> {
        if config.dim == 0 || config.dim > 65_536 {
            return Err(Error::BadDatasetConfig {
                reason: format!("dim = {} (allowed: 1..=65536)", config.dim),
            });
        }
        let consumer = |kind: &str| format!("{name}/{kind}");
        let kv = KvStore::new(budget, &consumer("kv"))?;
        let vectors = VectorStore::new(
            &config,
            max_deleted_ratio,
            budget,
            &consumer("index"),
            &consumer("payloads"),
        )
        .map_err(|e| match e {
            Error::Index(ebb_hnsw::Error::InvalidConfig { reason }) => {
                Error::BadDatasetConfig { reason }
            }
            e => e,
        })?;
        let pool = BufferPool::new(
            PoolConfig::default()
                .with_name("pool")
                .with_budget(budget, consumer("pool")),
        )?;
        Ok(Dataset {
            name: name.to_string(),
            config,
            kv,
            vectors,
            pool,
        })
    }
}
