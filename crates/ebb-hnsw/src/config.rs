//! Index configuration and its validation.

use ebb_core::budget::MemoryBudget;

use crate::backend::{MAX_EF, MAX_M, MAX_POINTS};
use crate::error::{Error, Result};

/// How distance is measured. Every score an index returns is a distance:
/// lower is closer, for every metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Squared Euclidean distance (as hnswlib's `l2`).
    L2,
    /// `1 - cos(a, b)`; vectors are stored normalized, and a zero vector is
    /// refused.
    Cosine,
    /// `1 - dot(a, b)` (as hnswlib's `ip`; vectors stored as given).
    Dot,
}

/// When [`VectorIndex::needs_compaction`](crate::VectorIndex::needs_compaction)
/// asks for a rebuild.
///
/// The defaults follow the engines that rebuild segments: Qdrant's
/// optimizer vacuums a segment at 20 % deleted points, Milvus compacts a
/// segment past 20 % deleted rows, Lucene merges away deletes at a similar
/// ratio; none bothers below about a thousand points.
///
/// Adjustable at run time through
/// [`VectorIndex::set_rebuild_policy`](crate::VectorIndex::set_rebuild_policy),
/// which is how a pressure controller tightens it:
///
/// ```
/// use ebb_hnsw::{IndexConfig, Metric, RebuildPolicy, VectorIndex};
///
/// let index = VectorIndex::new(IndexConfig::new(2, Metric::L2)).unwrap();
/// index
///     .set_rebuild_policy(RebuildPolicy::default().with_max_deleted_ratio(0.05))
///     .unwrap();
/// assert_eq!(index.rebuild_policy().max_deleted_ratio, 0.05);
/// assert!(index
///     .set_rebuild_policy(RebuildPolicy::default().with_max_deleted_ratio(2.0))
///     .is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildPolicy {
    /// Deleted points over all points in the graph above which to rebuild
    /// (default 0.20).
    pub max_deleted_ratio: f64,
    /// Memory over `max_size_factor` times the expected bytes for the live
    /// count triggers a rebuild (default 2.0).
    pub max_size_factor: f64,
    /// Below this many points (live + deleted) never ask (default 1000).
    pub min_points: usize,
}

impl RebuildPolicy {
    /// Rebuild above this deleted ratio (0..=1).
    pub fn with_max_deleted_ratio(mut self, ratio: f64) -> Self {
        self.max_deleted_ratio = ratio;
        self
    }

    /// Rebuild when memory passes this factor (>= 1) of what the live
    /// points need.
    pub fn with_max_size_factor(mut self, factor: f64) -> Self {
        self.max_size_factor = factor;
        self
    }

    /// Never ask below this many points (live + deleted).
    pub fn with_min_points(mut self, points: usize) -> Self {
        self.min_points = points;
        self
    }

    /// Checks the ranges.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `max_deleted_ratio` is in 0..=1 and
    /// `max_size_factor` is finite and at least 1.
    pub fn validate(&self) -> Result<()> {
        let size_factor_ok = self.max_size_factor.is_finite() && self.max_size_factor >= 1.0;
        if !(0.0..=1.0).contains(&self.max_deleted_ratio) || !size_factor_ok {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "rebuild policy: max_deleted_ratio in 0..=1 and max_size_factor >= 1, got {self:?}"
                ),
            });
        }
        Ok(())
    }
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        RebuildPolicy {
            max_deleted_ratio: 0.20,
            max_size_factor: 2.0,
            min_points: 1000,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct BudgetTarget {
    pub(crate) budget: MemoryBudget,
    pub(crate) consumer: String,
}

/// Configuration of a [`VectorIndex`](crate::VectorIndex).
///
/// ```
/// use ebb_hnsw::{IndexConfig, Metric};
/// let config = IndexConfig::new(128, Metric::Cosine).with_m(16).with_ef_search(64);
/// assert_eq!(config.dim(), 128);
/// ```
#[derive(Clone, Debug)]
pub struct IndexConfig {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    pub(crate) m: usize,
    pub(crate) ef_construction: usize,
    pub(crate) ef_search: usize,
    pub(crate) capacity: usize,
    pub(crate) rebuild: RebuildPolicy,
    pub(crate) delta_capacity: usize,
    pub(crate) budget: Option<BudgetTarget>,
    pub(crate) name: String,
}

impl IndexConfig {
    /// `dim`-dimensional vectors under `metric`; M 16, ef_construction
    /// 200, ef_search 64, capacity 1 000 000 live points, the default
    /// rebuild policy, a delta segment of 256 points, no budget.
    pub fn new(dim: usize, metric: Metric) -> IndexConfig {
        IndexConfig {
            dim,
            metric,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            capacity: 1_000_000,
            rebuild: RebuildPolicy::default(),
            delta_capacity: 256,
            budget: None,
            name: "default".into(),
        }
    }

    /// Links per point and layer (2..=[`MAX_M`]; hnsw_rs reads it back as
    /// a u8).
    pub fn with_m(mut self, m: usize) -> Self {
        self.m = m;
        self
    }

    /// Candidates explored while building (1..=[`MAX_EF`]).
    pub fn with_ef_construction(mut self, ef: usize) -> Self {
        self.ef_construction = ef;
        self
    }

    /// Candidates explored per search (1..=[`MAX_EF`]; at least k is
    /// used).
    pub fn with_ef_search(mut self, ef: usize) -> Self {
        self.ef_search = ef;
        self
    }

    /// The most live points the index takes.
    pub fn with_capacity(mut self, points: usize) -> Self {
        self.capacity = points;
        self
    }

    /// When to ask for a rebuild.
    pub fn with_rebuild(mut self, policy: RebuildPolicy) -> Self {
        self.rebuild = policy;
        self
    }

    /// New points held in the flat delta segment (searched by brute force)
    /// before they are flushed into the graph in one batch.
    pub fn with_delta_capacity(mut self, points: usize) -> Self {
        self.delta_capacity = points;
        self
    }

    /// Charge the index's memory to a reservation named `consumer` on
    /// `budget`: what it holds (graph, vectors, id maps; the crate docs list
    /// each component and when it is charged), reserved before it grows.
    pub fn with_budget(mut self, budget: &MemoryBudget, consumer: impl Into<String>) -> Self {
        self.budget = Some(BudgetTarget {
            budget: budget.clone(),
            consumer: consumer.into(),
        });
        self
    }

    /// The instance name, a metric label (`index="..."`): few and stable
    /// (default `"default"`).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { reason });
        if !(1..=65_536).contains(&self.dim) {
            return bad(format!("dim must be 1..=65536, got {}", self.dim));
        }
        if !(2..=MAX_M).contains(&self.m) {
            return bad(format!(
                "m must be 2..={MAX_M} (hnsw_rs stores it as a u8), got {}",
                self.m
            ));
        }
        for (name, ef) in [
            ("ef_construction", self.ef_construction),
            ("ef_search", self.ef_search),
        ] {
            if !(1..=MAX_EF).contains(&ef) {
                return bad(format!("{name} must be 1..={MAX_EF}, got {ef}"));
            }
        }
        if !(1..=MAX_POINTS).contains(&self.capacity) {
            return bad(format!(
                "capacity must be 1..={MAX_POINTS}, got {}",
                self.capacity
            ));
        }
        self.rebuild.validate()?;
        if self.delta_capacity == 0 {
            return bad("delta_capacity must be > 0".into());
        }
        Ok(())
    }
}
