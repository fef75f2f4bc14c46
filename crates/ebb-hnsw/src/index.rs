//! [`VectorIndex`]: external u64 ids over a graph of dense u32 internal
//! ids, a flat delta segment for new points, tombstone deletes, and a
//! rebuild that runs while searches and writes continue.
//!
//! Invariants:
//! 1. Every live external id maps to exactly one internal id; an internal
//!    id is never reused within a generation (an upsert is a tombstone
//!    plus a new internal id), so a result never names the wrong record.
//! 2. A live point is in the graph, or in the delta segment, or (for the
//!    moment between a flush's graph insert and its delta drain) in both;
//!    search deduplicates by internal id and drops tombstoned ids, so a
//!    result is never a deleted point and never appears twice.
//! 3. Lock order is `points` then `graph` (searches); a flush holds
//!    `graph` alone, then `points` alone; a rebuild's swap holds `flush`,
//!    then `points`, then `graph`. No path holds `graph` while waiting for
//!    `points`, so there is no cycle.
//! 4. A rebuild changes nothing visible until its swap; the swap replaces
//!    points and graph together under both write locks.

//! 5. The budget reservation holds, at every moment outside a running
//!    update: `points_bytes + pending_graph_bytes + graph_bytes` (the
//!    counters of the serving generation, written under `points` and
//!    `flush`), plus `retired_bytes` (generations swapped out and not yet
//!    freed), plus the estimate of a rebuild in flight. Every growth is
//!    reserved (`try_grow`) before its allocation and settled to the real
//!    figure after it.
//! 6. `maintenance_due`, `needs_compaction`, `stats` and `memory_bytes`
//!    read only the atomics of `Counters` and `Shared` (written under the
//!    locks by the updates above), never a lock.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use ebb_core::budget::{BudgetExceeded, Reservation};
use ebb_core::maintenance::{
    ChunkedRelease, Deferred, Due, Maintenance, MaintenanceError, MaintenanceKind,
    MaintenanceReport,
};
use ebb_core::sync::{AtomicU64, Ordering};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    GraphBackend, GraphDistance, GraphParams, HnswRsGraph, MAX_K, MAX_POINTS, Tombstones,
};
use crate::config::{IndexConfig, Metric, RebuildPolicy};
use crate::error::{Error, RebuildError, Result};

/// Bytes a retired generation frees per step when the index's own
/// maintenance run frees it (one `madvise` or one buffer shrink of this
/// size takes about a millisecond).
pub const RELEASE_STEP_BYTES: u64 = 8 << 20;

/// Bytes of one entry of the external-id map (`(u64, u32)`, padded).
const ID_ENTRY_BYTES: usize = size_of::<(u64, u32)>();

/// Why [`VectorIndex::needs_compaction`] asks for a rebuild.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RebuildReason {
    /// Deleted points over all points passed the policy.
    DeletedRatio {
        /// The ratio now.
        ratio: f64,
    },
    /// Memory passed `max_size_factor` times what the live points need.
    Oversized {
        /// Bytes held now.
        memory_bytes: usize,
        /// Bytes the live points need (the per-point model).
        expected_bytes: usize,
    },
}

impl RebuildReason {
    /// The reason as a metric label: `deleted_ratio` or `oversized`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RebuildReason::DeletedRatio { .. } => "deleted_ratio",
            RebuildReason::Oversized { .. } => "oversized",
        }
    }
}

/// The labels of [`IndexStats::last_rebuild_reason`], by code.
const REASONS: [&str; 4] = ["none", "deleted_ratio", "oversized", "manual"];

fn reason_code(reason: Option<RebuildReason>) -> usize {
    match reason {
        Some(RebuildReason::DeletedRatio { .. }) => 1,
        Some(RebuildReason::Oversized { .. }) => 2,
        None => 3,
    }
}

/// Heap bytes of a `HashMap<u64, u32>` of `capacity` (hashbrown: a power
/// of two of buckets at 7/8 load, an entry and a control byte each, plus a
/// group of control bytes).
fn hash_map_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = match capacity {
        0..4 => 4,
        4..8 => 8,
        _ => capacity
            .saturating_mul(8)
            .div_ceil(7)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX),
    };
    buckets
        .saturating_mul(ID_ENTRY_BYTES + 1)
        .saturating_add(16)
}

/// The new buffer a push of `add` elements of `elem` bytes allocates when
/// a `Vec` of `len`/`cap` must grow (amortized doubling), or 0.
fn vec_growth(len: usize, cap: usize, add: usize, elem: usize) -> usize {
    if len.saturating_add(add) <= cap {
        0
    } else {
        cap.saturating_mul(2)
            .max(len.saturating_add(add))
            .saturating_mul(elem)
    }
}

/// Frees about `max` bytes from the end of `v` (at least a page's worth
/// of elements): a shrink in place (a large buffer is its own mapping,
/// shrunk by `mremap`), so the step frees its bytes and copies nothing.
/// The bytes freed.
fn shrink_step<T>(v: &mut Vec<T>, max: usize) -> u64 {
    let elem = size_of::<T>().max(1);
    let cap = v.capacity();
    let keep = cap.saturating_sub((max / elem).max(4096 / elem));
    v.truncate(keep);
    v.shrink_to(keep);
    (cap.saturating_sub(v.capacity()) * elem).max(1) as u64
}

/// Points and everything keyed by internal id, for one generation.
struct Points {
    /// Live external id -> internal id (invariant 1).
    ids: HashMap<u64, u32>,
    /// Internal id -> external id.
    external: Vec<u64>,
    /// Internal id -> vector (normalized under Cosine).
    vectors: Vec<f32>,
    /// Covers every internal id given out, so a delete never allocates.
    tombstones: Tombstones,
    /// Internal ids not yet in the graph, in insertion order, which is
    /// increasing id order (search binary-searches it).
    delta: Vec<u32>,
}

impl Points {
    fn empty() -> Points {
        Points {
            ids: HashMap::new(),
            external: Vec::new(),
            vectors: Vec::new(),
            tombstones: Tombstones::default(),
            delta: Vec::new(),
        }
    }

    fn vector(&self, id: u32, dim: usize) -> &[f32] {
        let at = id as usize * dim;
        &self.vectors[at..at + dim]
    }

    fn live(&self) -> usize {
        self.ids.len()
    }

    /// What the points hold on the heap (by capacity): what the budget is
    /// charged for them (invariant 5).
    fn heap_bytes(&self) -> usize {
        hash_map_bytes(self.ids.capacity())
            + self.external.capacity() * 8
            + self.vectors.capacity() * 4
            + self.tombstones.heap_bytes()
            + self.delta.capacity() * 4
    }

    /// The most one more point's pushes can allocate (new buffers, which
    /// live beside the old ones while they copy).
    fn growth_bound(&self, dim: usize) -> usize {
        let ids = if self.ids.len() < self.ids.capacity() {
            0
        } else {
            hash_map_bytes(self.ids.capacity() + 1)
        };
        ids + vec_growth(self.external.len(), self.external.capacity(), 1, 8)
            + vec_growth(self.vectors.len(), self.vectors.capacity(), dim, 4)
            + vec_growth(self.delta.len(), self.delta.capacity(), 1, 4)
            + self.tombstones.cover_bound(self.external.len() + 1)
    }

    /// Room for one more point, so its pushes do not allocate.
    fn reserve_one(&mut self, dim: usize) -> Result<()> {
        let failed = |e: std::collections::TryReserveError| Error::AllocationFailed {
            what: "index points",
            bytes: 0,
            reason: e.to_string(),
        };
        self.ids.try_reserve(1).map_err(failed)?;
        self.external.try_reserve(1).map_err(failed)?;
        self.vectors.try_reserve(dim).map_err(failed)?;
        self.delta.try_reserve(1).map_err(failed)?;
        self.tombstones
            .try_cover(self.external.len() + 1)
            .map_err(failed)
    }
}

/// Counters of the serving generation and of the index's life, read
/// without locks (invariant 6).
#[derive(Default)]
struct Counters {
    live: AtomicU64,
    deleted: AtomicU64,
    delta: AtomicU64,
    /// Heap bytes of the points (written under `points`).
    points_bytes: AtomicU64,
    /// Reserved ahead for the graph share of the delta points (written
    /// under `points`).
    pending_graph_bytes: AtomicU64,
    /// The graph's bytes (written under `flush`).
    graph_bytes: AtomicU64,
    /// A running rebuild's reservation for its generation.
    rebuild_reserved_bytes: AtomicU64,
    generation: AtomicU64,
    rebuilds_total: AtomicU64,
    rebuilds_cancelled_total: AtomicU64,
    rebuild_failures_total: AtomicU64,
    rebuild_seconds_total_bits: AtomicU64,
    last_rebuild_seconds_bits: AtomicU64,
    last_rebuild_reason: AtomicU64,
}

impl Counters {
    fn memory_bytes(&self) -> u64 {
        self.points_bytes.load(Ordering::Relaxed) + self.graph_bytes.load(Ordering::Relaxed)
    }
}

/// What retired generations share with the index that made them: the
/// reservation they give their share back to, and the reclaim queue a
/// dropped one goes to.
struct Shared {
    name: String,
    reservation: Option<Reservation>,
    /// Retired generations dropped unreleased, freed by the next
    /// maintenance run. The lock is held for a push or a pop, never while
    /// freeing.
    queue: Mutex<Vec<Box<dyn ChunkedRelease>>>,
    queued_bytes: AtomicU64,
    retired_bytes: AtomicU64,
    released_bytes_total: AtomicU64,
}

impl Shared {
    /// Reserves `bytes` before an allocation; a refusal changes nothing.
    fn charge(&self, bytes: u64) -> std::result::Result<(), Box<BudgetExceeded>> {
        match &self.reservation {
            Some(r) => r.try_grow(bytes).map_err(Box::new),
            None => Ok(()),
        }
    }

    /// Moves a reservation of `charged` to the `real` figure.
    fn settle(&self, charged: u64, real: u64) {
        if let Some(r) = &self.reservation {
            if real > charged {
                r.grow(real - charged);
            } else {
                r.shrink(charged - real);
            }
        }
    }

    /// `bytes` of a retired generation are freed.
    fn released(&self, bytes: u64) {
        if let Some(r) = &self.reservation {
            r.shrink(bytes);
        }
        self.retired_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.released_bytes_total
            .fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A swapped-out generation (its graph and points), freed in bounded steps
/// through the [`Deferred`] it travels in. Its budget share (invariant 5)
/// shrinks as it frees. Dropped unreleased, it goes to its index's reclaim
/// queue (the next [`run_maintenance`](Maintenance::run_maintenance) frees
/// it), or frees itself on the spot if the index is gone.
struct Retired<B: GraphBackend> {
    graph: Option<B>,
    points: Option<Points>,
    /// Bytes of the share not yet given back.
    remaining: u64,
    released: u64,
    shared: Weak<Shared>,
}

impl<B: GraphBackend> Retired<B> {
    /// Frees one piece of at most about `max` bytes; the bytes it freed,
    /// or `None` when nothing is left.
    fn piece(&mut self, max: usize) -> Option<u64> {
        if let Some(graph) = &mut self.graph {
            let freed = graph.release_step(max);
            if freed > 0 {
                return Some(freed as u64);
            }
            let rest = graph.memory_bytes() as u64;
            // Cheap for a graph whose steps freed its memory (NativeGraph);
            // the whole teardown for one that has no steps (HnswRsGraph).
            self.graph = None;
            return Some(rest);
        }
        if let Some(points) = &mut self.points {
            if points.vectors.capacity() > 0 {
                return Some(shrink_step(&mut points.vectors, max));
            }
            if points.external.capacity() > 0 {
                return Some(shrink_step(&mut points.external, max));
            }
            // The id map is one allocation (about 19 bytes per point): it
            // goes in one step, with the tombstones and the delta list.
            let rest = points.heap_bytes() as u64;
            self.points = None;
            return Some(rest);
        }
        None
    }

    fn account(&mut self, bytes: u64) {
        let b = bytes.min(self.remaining);
        self.remaining -= b;
        self.released += b;
        if let Some(shared) = self.shared.upgrade() {
            shared.released(b);
        }
    }
}

impl<B: GraphBackend> ChunkedRelease for Retired<B> {
    fn release_step(&mut self, max_bytes: u64) -> bool {
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX).max(1);
        let mut left = max;
        loop {
            match self.piece(left) {
                Some(bytes) => {
                    self.account(bytes);
                    left = left.saturating_sub(usize::try_from(bytes).unwrap_or(usize::MAX).max(1));
                    if left == 0 {
                        return false;
                    }
                }
                None => {
                    let rest = self.remaining;
                    self.account(rest);
                    let name = self.shared.upgrade().map(|s| s.name.clone());
                    tracing::info!(
                        index = name.as_deref().unwrap_or("(dropped)"),
                        bytes_released = self.released,
                        "retired index generation released"
                    );
                    return true;
                }
            }
        }
    }

    fn remaining_bytes(&self) -> u64 {
        self.remaining
    }

    fn abandon(mut self: Box<Self>) {
        match self.shared.upgrade() {
            Some(shared) => {
                shared
                    .queued_bytes
                    .fetch_add(self.remaining, Ordering::Relaxed);
                shared.queue.lock().push(self);
            }
            None => while !self.release_step(u64::MAX) {},
        }
    }
}

/// What a rebuild did.
///
/// Holds the retired generation in [`retired`](Self::retired), a
/// [`Deferred`] to schedule on a worker: `retired.release()` (or a loop of
/// `release_step(max_bytes)`) frees it there in bounded steps. Dropping it
/// unreleased costs the dropping thread nothing: it goes to the index's
/// reclaim queue, which [`maintenance_due`](Maintenance::maintenance_due)
/// then reports (`retired_graph`) and the next maintenance run frees.
#[must_use = "holds the retired generation: schedule report.retired.release() on a worker"]
#[derive(Debug)]
pub struct RebuildReport {
    /// Live points the new graph was built from.
    pub points_built: usize,
    /// Deleted points left behind.
    pub deleted_dropped: usize,
    /// Points inserted while it ran, moved in at the swap.
    pub tail_inserted: usize,
    /// Deletes made while it ran, carried over at the swap.
    pub tail_deleted: usize,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Seconds the swap held the index exclusively.
    pub swap_duration_secs: f64,
    /// The generation now serving.
    pub generation: u64,
    /// Bytes reserved for the new generation before it was built.
    pub reserved_bytes: u64,
    /// The generation that served before: its graph and points.
    pub retired: Deferred,
}

/// A snapshot of an index, flat plain data for metrics (docs/metrics.md
/// maps each field to the metric it is exported as).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexStats {
    /// The instance name ([`IndexConfig::with_name`]), the `index` label.
    pub name: String,
    /// Live points.
    pub live_points: u64,
    /// Deleted points still held (until a rebuild).
    pub deleted_points: u64,
    /// Points waiting in the delta segment (live or not).
    pub delta_points: u64,
    /// `deleted / (live + deleted)`.
    pub deleted_ratio: f64,
    /// Bytes the serving generation holds: `graph_bytes + points_bytes`.
    pub memory_bytes: u64,
    /// Bytes of the graph (measured for NativeGraph; hnsw_rs's model).
    pub graph_bytes: u64,
    /// Heap bytes of vectors, id maps, tombstones and the delta list.
    pub points_bytes: u64,
    /// Reserved ahead for the delta points' graph share.
    pub pending_graph_bytes: u64,
    /// Bytes of retired generations not yet freed (handed back or queued).
    pub retired_bytes: u64,
    /// Of those, bytes in the index's own reclaim queue.
    pub queued_release_bytes: u64,
    /// Bytes the budget reservation holds (0 without a budget).
    pub reserved_bytes: u64,
    /// Bytes reserved for the generation a running rebuild builds (0 when
    /// none runs).
    pub rebuild_reserved_bytes: u64,
    /// Bytes of retired generations freed since creation.
    pub released_bytes_total: u64,
    /// The serving generation (rebuilds completed).
    pub generation: u64,
    /// Rebuilds completed.
    pub rebuilds_total: u64,
    /// Rebuilds stopped by their token.
    pub rebuilds_cancelled_total: u64,
    /// Rebuilds refused by the budget or the allocator.
    pub rebuild_failures_total: u64,
    /// Seconds spent in completed rebuilds.
    pub rebuild_duration_seconds_total: f64,
    /// Seconds the last completed rebuild took (0 before the first).
    pub last_rebuild_duration_seconds: f64,
    /// Why the last rebuild ran: `none`, `deleted_ratio`, `oversized` or
    /// `manual` (not asked for by the policy).
    pub last_rebuild_reason: &'static str,
}

/// The rebuild policy, readable and settable from any thread.
struct PolicyCell {
    max_deleted_ratio_bits: AtomicU64,
    max_size_factor_bits: AtomicU64,
    min_points: AtomicU64,
}

impl PolicyCell {
    fn new(policy: RebuildPolicy) -> PolicyCell {
        let cell = PolicyCell {
            max_deleted_ratio_bits: AtomicU64::new(0),
            max_size_factor_bits: AtomicU64::new(0),
            min_points: AtomicU64::new(0),
        };
        cell.set(policy);
        cell
    }

    fn set(&self, policy: RebuildPolicy) {
        self.max_deleted_ratio_bits
            .store(policy.max_deleted_ratio.to_bits(), Ordering::Relaxed);
        self.max_size_factor_bits
            .store(policy.max_size_factor.to_bits(), Ordering::Relaxed);
        self.min_points
            .store(policy.min_points as u64, Ordering::Relaxed);
    }

    fn get(&self) -> RebuildPolicy {
        RebuildPolicy {
            max_deleted_ratio: f64::from_bits(self.max_deleted_ratio_bits.load(Ordering::Relaxed)),
            max_size_factor: f64::from_bits(self.max_size_factor_bits.load(Ordering::Relaxed)),
            min_points: usize::try_from(self.min_points.load(Ordering::Relaxed))
                .unwrap_or(usize::MAX),
        }
    }
}

/// A vector index with deletes and a rebuild that runs while serving.
///
/// ```
/// use ebb_hnsw::{IndexConfig, Metric, VectorIndex};
///
/// let index = VectorIndex::new(IndexConfig::new(3, Metric::L2)).unwrap();
/// index.insert(7, &[1.0, 0.0, 0.0]).unwrap();
/// index.insert(8, &[0.0, 1.0, 0.0]).unwrap();
/// let hits = index.search(&[0.9, 0.1, 0.0], 1).unwrap();
/// assert_eq!(hits[0].0, 7);
/// assert!(index.delete(7));
/// assert_eq!(index.search(&[0.9, 0.1, 0.0], 1).unwrap()[0].0, 8);
/// ```
pub struct VectorIndex<B: GraphBackend = HnswRsGraph> {
    config: IndexConfig,
    params: GraphParams,
    distance: GraphDistance,
    points: RwLock<Points>,
    graph: RwLock<B>,
    /// One flush or swap at a time; `Counters::graph_bytes` is written
    /// under it.
    flush: Mutex<()>,
    /// One rebuild or maintenance run at a time.
    rebuilding: Mutex<()>,
    policy: PolicyCell,
    counters: Counters,
    shared: Arc<Shared>,
}

impl<B: GraphBackend> std::fmt::Debug for VectorIndex<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dim", &self.config.dim)
            .field("metric", &self.config.metric)
            .field("stats", &self.stats())
            .finish()
    }
}

impl VectorIndex<HnswRsGraph> {
    /// An empty index over hnsw_rs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a dimension, M, ef, capacity or policy
    /// out of range; what the backend's `new` refuses
    /// ([`Error::AllocationFailed`] if it cannot map its first arrays);
    /// [`Error::OverBudget`] if the budget refuses the empty graph.
    pub fn new(config: IndexConfig) -> Result<Self> {
        VectorIndex::with_backend(config)
    }
}

impl<B: GraphBackend> VectorIndex<B> {
    /// An empty index over backend `B`.
    ///
    /// # Errors
    ///
    /// As [`VectorIndex::new`].
    pub fn with_backend(config: IndexConfig) -> Result<Self> {
        config.validate()?;
        let params = GraphParams {
            dim: config.dim,
            metric: config.metric,
            m: config.m,
            ef_construction: config.ef_construction,
            capacity_hint: config.capacity.min(1 << 20),
            // Internal ids are never reused within a generation, so they
            // outrun the live capacity; `add` stops at this (invariant 1).
            max_points: MAX_POINTS,
        };
        let reservation = config
            .budget
            .as_ref()
            .map(|b| b.budget.reservation(b.consumer.clone()));
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            reservation,
            queue: Mutex::new(Vec::new()),
            queued_bytes: AtomicU64::new(0),
            retired_bytes: AtomicU64::new(0),
            released_bytes_total: AtomicU64::new(0),
        });
        let graph = B::new(params)?;
        let graph_bytes = graph.memory_bytes() as u64;
        shared.charge(graph_bytes)?;
        let counters = Counters::default();
        counters.graph_bytes.store(graph_bytes, Ordering::Relaxed);
        tracing::debug!(
            index = %config.name,
            dim = config.dim,
            metric = ?config.metric,
            m = config.m,
            capacity = config.capacity,
            "vector index created"
        );
        Ok(VectorIndex {
            distance: GraphDistance(config.metric),
            params,
            points: RwLock::new(Points::empty()),
            graph: RwLock::new(graph),
            flush: Mutex::new(()),
            rebuilding: Mutex::new(()),
            policy: PolicyCell::new(config.rebuild),
            counters,
            shared,
            config,
        })
    }

    /// The configuration (its rebuild policy as configured; the one in
    /// force is [`rebuild_policy`](Self::rebuild_policy)).
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// The instance name ([`IndexConfig::with_name`]).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The rebuild policy in force.
    pub fn rebuild_policy(&self) -> RebuildPolicy {
        self.policy.get()
    }

    /// Replaces the rebuild policy, from any thread, at once: the next
    /// [`maintenance_due`](Maintenance::maintenance_due) and
    /// [`needs_compaction`](Self::needs_compaction) follow it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a policy out of range; the policy in
    /// force is unchanged.
    pub fn set_rebuild_policy(&self, policy: RebuildPolicy) -> Result<()> {
        policy.validate()?;
        self.policy.set(policy);
        Ok(())
    }

    /// Bytes one point costs: the backend's model plus the vector, ids and
    /// map entry the index keeps (what a fresh index needs per live point).
    fn point_bytes(&self) -> u64 {
        B::bytes_per_point(&self.params).saturating_add(4 * self.config.dim + 8 + 16) as u64
    }

    /// The graph share one point is reserved ahead for.
    fn graph_point_bytes(&self) -> u64 {
        B::bytes_per_point(&self.params) as u64
    }

    /// Checks `v` and returns it as stored (normalized under Cosine).
    fn prepare(&self, v: &[f32]) -> Result<Vec<f32>> {
        if v.len() != self.config.dim {
            return Err(Error::DimensionMismatch {
                expected: self.config.dim,
                got: v.len(),
            });
        }
        if let Some((index, &value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
            return Err(Error::NonFinite { index, value });
        }
        if self.config.metric == Metric::Cosine {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm == 0.0 || !norm.is_finite() {
                return Err(Error::ZeroVector);
            }
            // A vector already of unit length (one read back, say) is
            // stored as given: dividing again would move its bits, and a
            // snapshot or export stored again must be bit-identical.
            if (norm - 1.0).abs() <= 4.0 * f32::EPSILON {
                return Ok(v.to_vec());
            }
            return Ok(v.iter().map(|x| x / norm).collect());
        }
        Ok(v.to_vec())
    }

    /// Adds `id`.
    ///
    /// # Errors
    ///
    /// [`Error::DimensionMismatch`], [`Error::NonFinite`],
    /// [`Error::ZeroVector`] (Cosine), [`Error::DuplicateId`] (use
    /// [`upsert`](Self::upsert)), [`Error::CapacityExceeded`],
    /// [`Error::OverBudget`], [`Error::AllocationFailed`]. Nothing is
    /// indexed on error.
    pub fn insert(&self, id: u64, vector: &[f32]) -> Result<()> {
        let v = self.prepare(vector)?;
        self.add(id, v, false)?;
        self.maybe_flush();
        Ok(())
    }

    /// Adds `id`, or replaces its vector (a tombstone and a new internal
    /// id).
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert), without `DuplicateId`.
    pub fn upsert(&self, id: u64, vector: &[f32]) -> Result<()> {
        let v = self.prepare(vector)?;
        self.add(id, v, true)?;
        self.maybe_flush();
        Ok(())
    }

    fn add(&self, id: u64, v: Vec<f32>, replace: bool) -> Result<()> {
        let dim = self.config.dim;
        let mut p = self.points.write();
        let old = p.ids.get(&id).copied();
        if old.is_some() && !replace {
            return Err(Error::DuplicateId { id });
        }
        if old.is_none() && p.live() >= self.config.capacity {
            return Err(Error::CapacityExceeded {
                capacity: self.config.capacity,
            });
        }
        if p.external.len() >= self.params.max_points {
            // Internal ids exhausted: only a rebuild renumbers them (the
            // graph takes ids below `max_points`).
            return Err(Error::CapacityExceeded {
                capacity: self.config.capacity,
            });
        }
        // Invariant 5: reserve the most this point can allocate, and its
        // graph share, before anything grows; settle to the real growth.
        let graph_share = self.graph_point_bytes();
        let bound = p.growth_bound(dim) as u64 + graph_share;
        self.shared.charge(bound)?;
        let before = self.counters.points_bytes.load(Ordering::Relaxed);
        let reserved = p.reserve_one(dim);
        let after = p.heap_bytes() as u64;
        self.counters.points_bytes.store(after, Ordering::Relaxed);
        if let Err(e) = reserved {
            self.shared.settle(bound, after.saturating_sub(before));
            return Err(e);
        }
        self.shared
            .settle(bound, after.saturating_sub(before) + graph_share);
        self.counters
            .pending_graph_bytes
            .fetch_add(graph_share, Ordering::Relaxed);
        // The pushes below fit the room reserved: no allocation.
        let internal = p.external.len() as u32;
        if let Some(old) = old {
            p.tombstones.insert(old);
            self.counters.deleted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.live.fetch_add(1, Ordering::Relaxed);
        }
        p.ids.insert(id, internal);
        p.external.push(id);
        p.vectors.extend_from_slice(&v);
        debug_assert!(p.delta.last().is_none_or(|&last| last < internal));
        p.delta.push(internal);
        self.counters
            .delta
            .store(p.delta.len() as u64, Ordering::Relaxed);
        debug_assert_eq!(p.heap_bytes() as u64, after, "the pushes did not allocate");
        Ok(())
    }

    /// Adds many points; the graph takes them in parallel batches, and
    /// `token` is checked before each batch.
    ///
    /// # Errors
    ///
    /// The first invalid point's error; points before it are indexed,
    /// none after. [`Error::BatchCancelled`] with the count indexed when
    /// the token is seen cancelled (everything before it stays indexed and
    /// searchable). A flush the graph refuses (it could not get memory) is
    /// logged and leaves the points in the delta segment, searchable;
    /// [`flush_delta`](Self::flush_delta) retries it.
    pub fn insert_batch(
        &self,
        points: &[(u64, &[f32])],
        token: &CancellationToken,
    ) -> Result<usize> {
        let mut added = 0;
        for chunk in points.chunks(crate::backend::BUILD_CHUNK) {
            if token.is_cancelled() {
                return Err(Error::BatchCancelled { inserted: added });
            }
            for &(id, v) in chunk {
                let v = self.prepare(v)?;
                self.add(id, v, false)?;
                added += 1;
            }
            self.flush_or_warn();
        }
        Ok(added)
    }

    /// Deletes `id`; false if it was not there. Its memory stays until a
    /// rebuild. Never allocates (the tombstones cover every id given out).
    pub fn delete(&self, id: u64) -> bool {
        let mut p = self.points.write();
        match p.ids.remove(&id) {
            Some(internal) => {
                p.tombstones.insert(internal);
                self.counters.live.fetch_sub(1, Ordering::Relaxed);
                self.counters.deleted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether `id` is live.
    pub fn contains(&self, id: u64) -> bool {
        self.points.read().ids.contains_key(&id)
    }

    /// The stored vector of `id` (normalized under Cosine).
    pub fn get_vector(&self, id: u64) -> Option<Vec<f32>> {
        let p = self.points.read();
        let internal = *p.ids.get(&id)?;
        Some(p.vector(internal, self.config.dim).to_vec())
    }

    /// The ids live now, in no particular order: a scan's starting set
    /// (8 bytes per point, copied under a brief read lock).
    pub fn ids(&self) -> Vec<u64> {
        self.points.read().ids.keys().copied().collect()
    }

    /// Calls `f` with each of `ids` that is still live and its stored
    /// vector (normalized under Cosine), in order, under one read lock; for
    /// scans in chunks. Returns how many were live.
    pub fn with_vectors(&self, ids: &[u64], mut f: impl FnMut(u64, &[f32])) -> usize {
        let p = self.points.read();
        let mut live = 0;
        for &id in ids {
            if let Some(&internal) = p.ids.get(&id) {
                f(id, p.vector(internal, self.config.dim));
                live += 1;
            }
        }
        live
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.points.read().live()
    }

    /// Whether no point is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` nearest live points as (id, distance), nearest first, at the
    /// configured ef. A `k` over the live count returns every live point.
    ///
    /// # Errors
    ///
    /// [`Error::DimensionMismatch`], [`Error::NonFinite`],
    /// [`Error::ZeroVector`] (Cosine), [`Error::ZeroK`], and
    /// [`Error::KTooLarge`] for `k` over [`MAX_K`].
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        self.search_with_ef(query, k, self.config.ef_search)
    }

    /// [`search`](Self::search) exploring `ef` candidates: at least `k`,
    /// at most [`MAX_EF`](crate::MAX_EF) and the graph's length (a larger
    /// `ef` is clamped, not refused).
    ///
    /// # Errors
    ///
    /// As [`search`](Self::search).
    pub fn search_with_ef(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<(u64, f32)>> {
        if k == 0 {
            return Err(Error::ZeroK);
        }
        if k > MAX_K {
            return Err(Error::KTooLarge { k, max: MAX_K });
        }
        let q = self.prepare(query)?;
        let dim = self.config.dim;
        // Invariant 3: points, then graph.
        let p = self.points.read();
        let mut hits: Vec<(u32, f32)> = p
            .delta
            .iter()
            .filter(|&&id| !p.tombstones.contains(id))
            .map(|&id| (id, self.distance.eval(&q, p.vector(id, dim))))
            .collect();
        {
            // Invariant 2: a point may be in the delta and the graph at once
            // (between a flush's graph insert and its drain); keep the delta's
            // copy. `delta` is sorted: ids are appended in increasing order.
            // The query is `dim` long and `k <= MAX_K` (checked above), so
            // the graph has nothing to refuse.
            let graph = self.graph.read();
            hits.extend(
                graph
                    .search(&q, k, ef.max(k), &p.tombstones)?
                    .into_iter()
                    .filter(|(id, _)| p.delta.binary_search(id).is_err()),
            );
        }
        hits.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let out = hits
            .into_iter()
            .take(k)
            .map(|(id, g)| (p.external[id as usize], self.distance.reported(g)))
            .collect();
        Ok(out)
    }

    fn maybe_flush(&self) {
        if self.counters.delta.load(Ordering::Relaxed) >= self.config.delta_capacity as u64 {
            self.flush_or_warn();
        }
    }

    /// A flush for a write that has already succeeded: the points are
    /// indexed (in the delta) whatever the graph says.
    fn flush_or_warn(&self) {
        if let Err(error) = self.flush_delta() {
            tracing::warn!(index = %self.config.name, %error, "delta flush refused; the points stay in the delta segment");
        }
    }

    /// Moves the delta segment into the graph now (searches wait only for
    /// the graph insert of this batch).
    ///
    /// # Errors
    ///
    /// What the graph's `insert_batch` refuses: [`Error::AllocationFailed`]
    /// when it cannot grow (the index never gives it a bad batch). The graph
    /// is then unchanged and the points stay in the delta segment, still
    /// searchable; a later flush retries them.
    pub fn flush_delta(&self) -> Result<()> {
        let _one = self.flush.lock();
        // Copy the batch out; new inserts keep appending behind it.
        let (ids, vectors): (Vec<u32>, Vec<f32>) = {
            let p = self.points.read();
            let dim = self.config.dim;
            let ids = p.delta.clone();
            let mut vectors = Vec::with_capacity(ids.len() * dim);
            for &id in &ids {
                vectors.extend_from_slice(p.vector(id, dim));
            }
            (ids, vectors)
        };
        if ids.is_empty() {
            return Ok(());
        }
        let batch: Vec<(u32, &[f32])> = ids
            .iter()
            .zip(vectors.chunks_exact(self.config.dim))
            .map(|(&id, v)| (id, v))
            .collect();
        // Invariant 3: graph alone, then points alone.
        // The batch is valid: `dim`-long vectors, internal ids below
        // `max_points` never given to this graph before (invariant 1; the
        // delta holds each once, and `flush` keeps one flush at a time).
        let graph_bytes = {
            let mut graph = self.graph.write();
            graph.insert_batch(&batch)?;
            graph.memory_bytes() as u64
        };
        let mut p = self.points.write();
        p.delta.drain(..ids.len());
        // Invariant 5: the graph share reserved ahead for these points
        // becomes the graph's real figure.
        let ahead = ids.len() as u64 * self.graph_point_bytes();
        let old_graph = self.counters.graph_bytes.load(Ordering::Relaxed);
        self.shared.settle(old_graph + ahead, graph_bytes);
        self.counters
            .graph_bytes
            .store(graph_bytes, Ordering::Relaxed);
        self.counters
            .pending_graph_bytes
            .fetch_sub(ahead, Ordering::Relaxed);
        self.counters
            .delta
            .store(p.delta.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes the serving generation holds: the graph plus vectors, id maps
    /// and tombstones (counters only; settled at every insert and flush).
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.counters.memory_bytes()).unwrap_or(usize::MAX)
    }

    /// Bytes the live points would need in a fresh index.
    fn expected_bytes(&self, live: u64) -> u64 {
        live.saturating_mul(self.point_bytes())
    }

    /// Whether a rebuild would pay, by the rebuild policy in force: the
    /// deleted ratio, or memory over `max_size_factor` x the expected bytes
    /// for the live count; never below `min_points`. Counters only: it
    /// never waits for a writer, a flush or a rebuild (invariant 6).
    pub fn needs_compaction(&self) -> Option<RebuildReason> {
        let live = self.counters.live.load(Ordering::Relaxed);
        let deleted = self.counters.deleted.load(Ordering::Relaxed);
        let policy = self.policy.get();
        if live + deleted < policy.min_points as u64 || live + deleted == 0 {
            return None;
        }
        let ratio = deleted as f64 / (live + deleted) as f64;
        if ratio > policy.max_deleted_ratio {
            return Some(RebuildReason::DeletedRatio { ratio });
        }
        let memory_bytes = self.counters.memory_bytes();
        let expected_bytes = self.expected_bytes(live);
        if memory_bytes as f64 > policy.max_size_factor * expected_bytes as f64 {
            return Some(RebuildReason::Oversized {
                memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
                expected_bytes: usize::try_from(expected_bytes).unwrap_or(usize::MAX),
            });
        }
        None
    }

    /// Counters now (atomics only, invariant 6).
    pub fn stats(&self) -> IndexStats {
        let c = &self.counters;
        let live = c.live.load(Ordering::Relaxed);
        let deleted = c.deleted.load(Ordering::Relaxed);
        let graph_bytes = c.graph_bytes.load(Ordering::Relaxed);
        let points_bytes = c.points_bytes.load(Ordering::Relaxed);
        let reason = c.last_rebuild_reason.load(Ordering::Relaxed) as usize;
        IndexStats {
            name: self.config.name.clone(),
            live_points: live,
            deleted_points: deleted,
            delta_points: c.delta.load(Ordering::Relaxed),
            deleted_ratio: if live + deleted == 0 {
                0.0
            } else {
                deleted as f64 / (live + deleted) as f64
            },
            memory_bytes: graph_bytes + points_bytes,
            graph_bytes,
            points_bytes,
            pending_graph_bytes: c.pending_graph_bytes.load(Ordering::Relaxed),
            retired_bytes: self.shared.retired_bytes.load(Ordering::Relaxed),
            queued_release_bytes: self.shared.queued_bytes.load(Ordering::Relaxed),
            reserved_bytes: self.shared.reservation.as_ref().map_or(0, |r| r.size()),
            rebuild_reserved_bytes: c.rebuild_reserved_bytes.load(Ordering::Relaxed),
            released_bytes_total: self.shared.released_bytes_total.load(Ordering::Relaxed),
            generation: c.generation.load(Ordering::Relaxed),
            rebuilds_total: c.rebuilds_total.load(Ordering::Relaxed),
            rebuilds_cancelled_total: c.rebuilds_cancelled_total.load(Ordering::Relaxed),
            rebuild_failures_total: c.rebuild_failures_total.load(Ordering::Relaxed),
            rebuild_duration_seconds_total: f64::from_bits(
                c.rebuild_seconds_total_bits.load(Ordering::Relaxed),
            ),
            last_rebuild_duration_seconds: f64::from_bits(
                c.last_rebuild_seconds_bits.load(Ordering::Relaxed),
            ),
            last_rebuild_reason: REASONS[reason.min(REASONS.len() - 1)],
        }
    }

    /// Builds a fresh graph from the live points while searches and writes
    /// continue on the current one, then swaps (see the crate docs for the
    /// protocol). What [`needs_compaction`](Self::needs_compaction) says at
    /// the start is recorded in stats as the reason (`manual` if nothing).
    ///
    /// The new generation's bytes are reserved from the budget before
    /// anything is built, and settled to the real figure at the swap; the
    /// old generation keeps its share until `report.retired` frees it.
    ///
    /// # Errors
    ///
    /// [`RebuildError::Cancelled`] (checked between chunks of at most
    /// 1000 points; nothing visible changed), [`RebuildError::AlreadyRunning`]
    /// (at once, without waiting), [`RebuildError::OverBudget`] with the
    /// numbers if the budget cannot hold a second generation (nothing was
    /// built or changed), [`RebuildError::Graph`] if the new graph could not
    /// get memory (nothing visible changed).
    pub fn rebuild(&self, token: &CancellationToken) -> Result<RebuildReport, RebuildError> {
        let _one = self
            .rebuilding
            .try_lock()
            .ok_or(RebuildError::AlreadyRunning)?;
        self.rebuild_locked(token, self.needs_compaction())
    }

    /// The rebuild, with `rebuilding` held by the caller.
    fn rebuild_locked(
        &self,
        token: &CancellationToken,
        reason: Option<RebuildReason>,
    ) -> Result<RebuildReport, RebuildError> {
        let out = self.rebuild_inner(token, reason);
        let c = &self.counters;
        match &out {
            Ok(_) => {}
            Err(RebuildError::Cancelled { .. }) => {
                c.rebuilds_cancelled_total.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                c.rebuild_failures_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }

    fn rebuild_inner(
        &self,
        token: &CancellationToken,
        reason: Option<RebuildReason>,
    ) -> Result<RebuildReport, RebuildError> {
        let start = Instant::now();
        let dim = self.config.dim;
        // 1. Reserve the second generation, then snapshot the live points
        //    (old internal id and vector).
        let (snapshot_ids, snapshot_vectors, snapshot_len, params, estimate) = {
            let p = self.points.read();
            let live = p.live();
            // Size the new graph for what it will hold, not for the capacity.
            let params = GraphParams {
                capacity_hint: live + live / 8 + 1024,
                ..self.params
            };
            let estimate = B::estimate_bytes(&params, live)
                .saturating_add(live.saturating_mul(dim * 4 + 8))
                .saturating_add(hash_map_bytes(live))
                .saturating_add(live.div_ceil(64) * 8) as u64;
            self.shared
                .charge(estimate)
                .map_err(RebuildError::OverBudget)?;
            self.counters
                .rebuild_reserved_bytes
                .store(estimate, Ordering::Relaxed);
            let mut ids = Vec::with_capacity(live);
            let mut vectors = Vec::with_capacity(live * dim);
            for id in 0..p.external.len() as u32 {
                if !p.tombstones.contains(id) {
                    ids.push(id);
                    vectors.extend_from_slice(p.vector(id, dim));
                }
            }
            (ids, vectors, p.external.len(), params, estimate)
        };
        let unreserve = || {
            self.shared.settle(estimate, 0);
            self.counters
                .rebuild_reserved_bytes
                .store(0, Ordering::Relaxed);
        };
        // 2. Build under new ids 0..n, in cancellable chunks (invariant 4:
        //    nothing visible changes until the swap).
        let points = snapshot_vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (i as u32, v));
        let graph = match B::build_from(params, points, token) {
            Ok(graph) => graph,
            Err(e) => {
                unreserve();
                return Err(e);
            }
        };
        // 3. Swap: apply what happened meanwhile, then replace.
        let _flush = self.flush.lock();
        let mut p = self.points.write();
        let swap_start = Instant::now();
        let mut next = Points {
            ids: HashMap::with_capacity(p.live()),
            external: Vec::with_capacity(p.live()),
            vectors: snapshot_vectors,
            tombstones: Tombstones::default(),
            delta: Vec::new(),
        };
        let mut tail_deleted = 0;
        for (new, &old) in snapshot_ids.iter().enumerate() {
            let external = p.external[old as usize];
            next.external.push(external);
            if p.tombstones.contains(old) {
                next.tombstones.insert(new as u32);
                tail_deleted += 1;
            } else {
                next.ids.insert(external, new as u32);
            }
        }
        // Points inserted since the snapshot go to the new delta segment.
        let mut tail_inserted = 0;
        for old in snapshot_len as u32..p.external.len() as u32 {
            if p.tombstones.contains(old) {
                continue;
            }
            let new = next.external.len() as u32;
            let external = p.external[old as usize];
            next.external.push(external);
            next.vectors.extend_from_slice(p.vector(old, dim));
            next.ids.insert(external, new);
            next.delta.push(new);
            tail_inserted += 1;
        }
        // A failure leaves the bitset growing on insert instead.
        let _ = next.tombstones.try_cover(next.external.len());
        let deleted_dropped = snapshot_len - snapshot_ids.len();
        let old_points = std::mem::replace(&mut *p, next);
        let (retired_graph, graph_bytes) = {
            let mut g = self.graph.write();
            let old = std::mem::replace(&mut *g, graph);
            (old, g.memory_bytes() as u64)
        };
        // Invariant 5: the old generation keeps its share until it is
        // freed; the estimate becomes the new generation's real figure.
        let c = &self.counters;
        let old_share = c.points_bytes.load(Ordering::Relaxed)
            + c.pending_graph_bytes.load(Ordering::Relaxed)
            + c.graph_bytes.load(Ordering::Relaxed);
        let points_bytes = p.heap_bytes() as u64;
        let pending = p.delta.len() as u64 * self.graph_point_bytes();
        self.shared
            .settle(estimate, points_bytes + pending + graph_bytes);
        c.rebuild_reserved_bytes.store(0, Ordering::Relaxed);
        c.points_bytes.store(points_bytes, Ordering::Relaxed);
        c.pending_graph_bytes.store(pending, Ordering::Relaxed);
        c.graph_bytes.store(graph_bytes, Ordering::Relaxed);
        c.live.store(p.live() as u64, Ordering::Relaxed);
        c.deleted
            .store(p.tombstones.len() as u64, Ordering::Relaxed);
        c.delta.store(p.delta.len() as u64, Ordering::Relaxed);
        self.shared
            .retired_bytes
            .fetch_add(old_share, Ordering::Relaxed);
        let swap_duration = swap_start.elapsed();
        drop(p);
        let retired = Deferred::chunked(
            "hnsw_retired_generation",
            Retired {
                graph: Some(retired_graph),
                points: Some(old_points),
                remaining: old_share,
                released: 0,
                shared: Arc::downgrade(&self.shared),
            },
        );
        let duration = start.elapsed().as_secs_f64();
        let generation = c.generation.fetch_add(1, Ordering::Relaxed) + 1;
        c.rebuilds_total.fetch_add(1, Ordering::Relaxed);
        c.last_rebuild_seconds_bits
            .store(duration.to_bits(), Ordering::Relaxed);
        let total = f64::from_bits(c.rebuild_seconds_total_bits.load(Ordering::Relaxed));
        c.rebuild_seconds_total_bits
            .store((total + duration).to_bits(), Ordering::Relaxed);
        c.last_rebuild_reason
            .store(reason_code(reason) as u64, Ordering::Relaxed);
        tracing::info!(
            index = %self.config.name,
            points_built = snapshot_ids.len(),
            deleted_dropped,
            tail_inserted,
            tail_deleted,
            duration_ms = (duration * 1e3) as u64,
            swap_us = swap_duration.as_micros() as u64,
            reserved_bytes = estimate,
            retired_bytes = old_share,
            generation,
            "vector index rebuilt"
        );
        Ok(RebuildReport {
            points_built: snapshot_ids.len(),
            deleted_dropped,
            tail_inserted,
            tail_deleted,
            duration_secs: duration,
            swap_duration_secs: swap_duration.as_secs_f64(),
            generation,
            reserved_bytes: estimate,
            retired,
        })
    }

    /// Frees what dropped retired generations left in the reclaim queue,
    /// [`RELEASE_STEP_BYTES`] at a time, checking `token` between steps;
    /// the bytes freed, and whether it stopped for the token.
    fn drain_queue(&self, token: &CancellationToken) -> (u64, bool) {
        let mut released = 0;
        loop {
            if token.is_cancelled() {
                return (released, true);
            }
            let Some(mut item) = self.shared.queue.lock().pop() else {
                return (released, false);
            };
            let before = item.remaining_bytes();
            self.shared
                .queued_bytes
                .fetch_sub(before, Ordering::Relaxed);
            loop {
                if item.release_step(RELEASE_STEP_BYTES) {
                    released += before;
                    break;
                }
                if token.is_cancelled() {
                    released += before - item.remaining_bytes();
                    self.shared
                        .queued_bytes
                        .fetch_add(item.remaining_bytes(), Ordering::Relaxed);
                    self.shared.queue.lock().push(item);
                    return (released, true);
                }
            }
        }
    }
}

/// The maintenance contract: `maintenance_due` answers from counters
/// (reason `retired_graph` while the reclaim queue holds a dropped retired
/// generation, else the rebuild policy's `deleted_ratio` or `oversized`);
/// `run_maintenance` frees the reclaim queue, then rebuilds if the policy
/// asks, and hands the retired generation back in `deferred`.
///
/// ```
/// use std::sync::Arc;
/// use ebb_core::maintenance::Maintenance;
/// use ebb_hnsw::{IndexConfig, Metric, RebuildPolicy, VectorIndex};
/// use tokio_util::sync::CancellationToken;
///
/// let index = Arc::new(VectorIndex::new(IndexConfig::new(2, Metric::L2)).unwrap());
/// for i in 0..100u64 {
///     index.insert(i, &[i as f32, 1.0]).unwrap();
/// }
/// for i in 0..50 {
///     index.delete(i);
/// }
/// assert!(index.maintenance_due().is_none(), "under min_points");
/// index.set_rebuild_policy(RebuildPolicy::default().with_min_points(10)).unwrap();
/// assert_eq!(index.maintenance_due().unwrap().reason, "deleted_ratio");
/// let worker: Arc<dyn Maintenance> = index.clone();
/// let report = worker.run_maintenance(&CancellationToken::new()).unwrap();
/// report.deferred.expect("the retired generation").release(); // on a worker
/// assert!(index.maintenance_due().is_none());
/// ```
impl<B: GraphBackend> Maintenance for VectorIndex<B> {
    fn maintenance_kind(&self) -> MaintenanceKind {
        MaintenanceKind::Index
    }

    fn maintenance_due(&self) -> Option<Due> {
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 {
            return Some(Due {
                reason: "retired_graph",
                reclaimable_bytes: queued,
            });
        }
        let reason = self.needs_compaction()?;
        let live = self.counters.live.load(Ordering::Relaxed);
        Some(Due {
            reason: reason.as_str(),
            reclaimable_bytes: self
                .counters
                .memory_bytes()
                .saturating_sub(self.expected_bytes(live)),
        })
    }

    fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> std::result::Result<MaintenanceReport, MaintenanceError> {
        let kind = MaintenanceKind::Index;
        let Some(_one) = self.rebuilding.try_lock() else {
            return Err(MaintenanceError::AlreadyRunning { kind });
        };
        let start = Instant::now();
        let mut report = MaintenanceReport {
            kind: Some(kind),
            ..MaintenanceReport::default()
        };
        let (released, cancelled) = self.drain_queue(token);
        report.bytes_released = released;
        if cancelled {
            report.cancelled = true;
        } else if let Some(reason) = self.needs_compaction() {
            match self.rebuild_locked(token, Some(reason)) {
                Ok(r) => {
                    report.items = r.points_built as u64;
                    report.bytes_moved = (r.points_built * self.config.dim * 4) as u64;
                    report.deferred = Some(r.retired);
                }
                Err(RebuildError::Cancelled { .. }) => report.cancelled = true,
                Err(RebuildError::AlreadyRunning) => {
                    return Err(MaintenanceError::AlreadyRunning { kind });
                }
                Err(RebuildError::OverBudget(e)) => return Err(MaintenanceError::OverBudget(e)),
                Err(e) => {
                    return Err(MaintenanceError::Failed {
                        kind,
                        message: e.to_string(),
                    });
                }
            }
        } else {
            report.skipped = released == 0;
        }
        report.duration_secs = start.elapsed().as_secs_f64();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::NativeGraph;

    /// Invariant 6: with every lock of the index held (as by a writer, a
    /// flush and a rebuild's swap at once), the check still answers.
    #[test]
    fn maintenance_due_answers_while_every_lock_is_held() {
        let index = Arc::new(
            VectorIndex::<NativeGraph>::with_backend(
                IndexConfig::new(2, Metric::L2)
                    .with_rebuild(RebuildPolicy::default().with_min_points(10)),
            )
            .unwrap(),
        );
        for i in 0..100u64 {
            index.insert(i, &[i as f32, 0.5]).unwrap();
        }
        for i in 0..60 {
            index.delete(i);
        }
        let _rebuilding = index.rebuilding.lock();
        let _flush = index.flush.lock();
        let _points = index.points.write();
        let _graph = index.graph.write();
        let (tx, rx) = mpsc::channel();
        let i2 = Arc::clone(&index);
        std::thread::spawn(move || {
            let due = i2.maintenance_due();
            let stats = i2.stats();
            let _ = tx.send((due, stats.deleted_points, i2.memory_bytes()));
        });
        // Not a timing assertion: without invariant 6 the thread never
        // answers (it waits for locks this thread holds until the end).
        let (due, deleted, memory) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("maintenance_due waited for a lock");
        assert_eq!(due.map(|d| d.reason), Some("deleted_ratio"));
        assert_eq!(deleted, 60);
        assert!(memory > 0);
    }
}
