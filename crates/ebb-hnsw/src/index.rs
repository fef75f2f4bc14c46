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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ebb_core::budget::Reservation;
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    GraphBackend, GraphDistance, GraphParams, HnswRsGraph, MAX_K, MAX_POINTS, Tombstones,
};
use crate::config::{IndexConfig, Metric};
use crate::error::{Error, RebuildError, Result};

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

/// Points and everything keyed by internal id, for one generation.
struct Points {
    /// Live external id -> internal id (invariant 1).
    ids: HashMap<u64, u32>,
    /// Internal id -> external id.
    external: Vec<u64>,
    /// Internal id -> vector (normalized under Cosine).
    vectors: Vec<f32>,
    tombstones: Tombstones,
    /// Internal ids not yet in the graph, in insertion order, which is
    /// increasing id order (search binary-searches it).
    delta: Vec<u32>,
}

impl Points {
    fn vector(&self, id: u32, dim: usize) -> &[f32] {
        let at = id as usize * dim;
        &self.vectors[at..at + dim]
    }

    fn live(&self) -> usize {
        self.ids.len()
    }

    fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 16
            + self.external.capacity() * 8
            + self.vectors.capacity() * 4
            + self.tombstones.heap_bytes()
            + self.delta.capacity() * 4
    }
}

/// What a rebuild did. Holds the retired graph: drop it on a worker, not
/// on a thread that serves searches (a 100k-point hnsw_rs graph takes
/// about a second to drop).
pub struct RebuildReport<B: GraphBackend = HnswRsGraph> {
    /// Live points the new graph was built from.
    pub points_built: usize,
    /// Deleted points left behind.
    pub deleted_dropped: usize,
    /// Points inserted while it ran, moved in at the swap.
    pub tail_inserted: usize,
    /// Deletes made while it ran, carried over at the swap.
    pub tail_deleted: usize,
    /// Wall time.
    pub duration: Duration,
    /// Time the swap held the index exclusively.
    pub swap_duration: Duration,
    /// The generation now serving.
    pub generation: u64,
    /// The graph that served before, to drop off the serving path.
    pub retired: B,
}

impl<B: GraphBackend> std::fmt::Debug for RebuildReport<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RebuildReport")
            .field("points_built", &self.points_built)
            .field("deleted_dropped", &self.deleted_dropped)
            .field("tail_inserted", &self.tail_inserted)
            .field("tail_deleted", &self.tail_deleted)
            .field("duration", &self.duration)
            .field("swap_duration", &self.swap_duration)
            .field("generation", &self.generation)
            .finish()
    }
}

/// A snapshot of an index's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IndexStats {
    /// Live points.
    pub live: usize,
    /// Deleted points still held (until a rebuild).
    pub deleted: usize,
    /// `deleted / (live + deleted)`.
    pub deleted_ratio: f64,
    /// Points waiting in the delta segment.
    pub delta: usize,
    /// Bytes held: the graph (model) plus vectors, ids and tombstones.
    pub memory_bytes: usize,
    /// Rebuilds completed.
    pub generation: u64,
    /// How long the last rebuild took.
    pub last_rebuild: Option<Duration>,
    /// Why the last rebuild was asked for, if the caller said.
    pub last_rebuild_reason: Option<RebuildReason>,
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
    /// One flush or swap at a time.
    flush: Mutex<()>,
    rebuilding: Mutex<()>,
    reservation: Option<Reservation>,
    stats: Mutex<(u64, Option<Duration>, Option<RebuildReason>)>,
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
    /// ([`Error::AllocationFailed`] if it cannot map its first arrays).
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
        Ok(VectorIndex {
            distance: GraphDistance(config.metric),
            params,
            points: RwLock::new(Points {
                ids: HashMap::new(),
                external: Vec::new(),
                vectors: Vec::new(),
                tombstones: Tombstones::default(),
                delta: Vec::new(),
            }),
            graph: RwLock::new(B::new(params)?),
            flush: Mutex::new(()),
            rebuilding: Mutex::new(()),
            reservation,
            stats: Mutex::new((0, None, None)),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Bytes one point costs: the backend's model plus the vector, ids and
    /// map entry the index keeps.
    fn point_bytes(&self) -> u64 {
        B::bytes_per_point(&self.params).saturating_add(4 * self.config.dim + 8 + 16) as u64
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
    /// [`Error::OverBudget`]. Nothing is indexed on error.
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
        if let Some(r) = &self.reservation {
            r.try_grow(self.point_bytes()).map_err(Box::new)?;
        }
        let internal = p.external.len() as u32;
        if let Some(old) = old {
            p.tombstones.insert(old);
        }
        p.ids.insert(id, internal);
        p.external.push(id);
        p.vectors.extend_from_slice(&v);
        debug_assert!(p.delta.last().is_none_or(|&last| last < internal));
        p.delta.push(internal);
        Ok(())
    }

    /// Adds many points; the graph takes them in parallel batches, and
    /// `token` is checked between batches.
    ///
    /// # Errors
    ///
    /// The first invalid point's error; points before it are indexed,
    /// none after. A cancel stops between batches with everything added so
    /// far indexed and returns `Ok` with the count added. A flush the graph
    /// refuses (it could not get memory) is logged and leaves the points in
    /// the delta segment, searchable; [`flush_delta`](Self::flush_delta)
    /// retries it.
    pub fn insert_batch(
        &self,
        points: &[(u64, &[f32])],
        token: &CancellationToken,
    ) -> Result<usize> {
        let mut added = 0;
        for chunk in points.chunks(crate::backend::BUILD_CHUNK) {
            if token.is_cancelled() {
                break;
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
    /// rebuild.
    pub fn delete(&self, id: u64) -> bool {
        let mut p = self.points.write();
        match p.ids.remove(&id) {
            Some(internal) => {
                p.tombstones.insert(internal);
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
        if self.points.read().delta.len() >= self.config.delta_capacity {
            self.flush_or_warn();
        }
    }

    /// A flush for a write that has already succeeded: the points are
    /// indexed (in the delta) whatever the graph says.
    fn flush_or_warn(&self) {
        if let Err(error) = self.flush_delta() {
            tracing::warn!(%error, "delta flush refused; the points stay in the delta segment");
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
        self.graph.write().insert_batch(&batch)?;
        let mut p = self.points.write();
        p.delta.drain(..ids.len());
        Ok(())
    }

    /// Bytes held: the graph (model) plus vectors, ids and tombstones.
    pub fn memory_bytes(&self) -> usize {
        let p = self.points.read();
        p.heap_bytes() + self.graph.read().memory_bytes()
    }

    /// Bytes the live points would need in a fresh index.
    fn expected_bytes(&self, live: usize) -> usize {
        live.saturating_mul(usize::try_from(self.point_bytes()).unwrap_or(usize::MAX))
    }

    /// Whether a rebuild would pay, by the configured policy: the deleted
    /// ratio, or memory over `max_size_factor` x the expected bytes for the
    /// live count; never below `min_points`. Cheap (counters only).
    pub fn needs_compaction(&self) -> Option<RebuildReason> {
        let (live, deleted) = {
            let p = self.points.read();
            (p.live(), p.tombstones.len())
        };
        let policy = &self.config.rebuild;
        if live + deleted < policy.min_points {
            return None;
        }
        let ratio = deleted as f64 / (live + deleted) as f64;
        if ratio > policy.max_deleted_ratio {
            return Some(RebuildReason::DeletedRatio { ratio });
        }
        let memory_bytes = self.memory_bytes();
        let expected_bytes = self.expected_bytes(live);
        if memory_bytes as f64 > policy.max_size_factor * expected_bytes as f64 {
            return Some(RebuildReason::Oversized {
                memory_bytes,
                expected_bytes,
            });
        }
        None
    }

    /// Counters now.
    pub fn stats(&self) -> IndexStats {
        let (live, deleted, delta) = {
            let p = self.points.read();
            (p.live(), p.tombstones.len(), p.delta.len())
        };
        let (generation, last_rebuild, last_rebuild_reason) = *self.stats.lock();
        IndexStats {
            live,
            deleted,
            deleted_ratio: if live + deleted == 0 {
                0.0
            } else {
                deleted as f64 / (live + deleted) as f64
            },
            delta,
            memory_bytes: self.memory_bytes(),
            generation,
            last_rebuild,
            last_rebuild_reason,
        }
    }

    /// Builds a fresh graph from the live points while searches and writes
    /// continue on the current one, then swaps (see the crate docs for the
    /// protocol). What [`needs_compaction`](Self::needs_compaction) said at
    /// the start is recorded in stats as the reason.
    ///
    /// # Errors
    ///
    /// [`RebuildError::Cancelled`] (checked between chunks of at most
    /// 1000 points; nothing visible changed), [`RebuildError::AlreadyRunning`],
    /// [`RebuildError::Graph`] if the new graph could not get memory
    /// (nothing visible changed).
    pub fn rebuild(&self, token: &CancellationToken) -> Result<RebuildReport<B>, RebuildError> {
        let reason = self.needs_compaction();
        let _one = self
            .rebuilding
            .try_lock()
            .ok_or(RebuildError::AlreadyRunning)?;
        let start = Instant::now();
        let dim = self.config.dim;
        // 1. Snapshot the live points: old internal id and vector.
        let (snapshot_ids, snapshot_vectors, snapshot_len) = {
            let p = self.points.read();
            let mut ids = Vec::with_capacity(p.live());
            let mut vectors = Vec::with_capacity(p.live() * dim);
            for id in 0..p.external.len() as u32 {
                if !p.tombstones.contains(id) {
                    ids.push(id);
                    vectors.extend_from_slice(p.vector(id, dim));
                }
            }
            (ids, vectors, p.external.len())
        };
        // 2. Build under new ids 0..n, in cancellable chunks (invariant 4:
        //    nothing visible changes until the swap).
        let points = snapshot_vectors
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (i as u32, v));
        // Size the new graph for what it will hold, not for the capacity.
        let params = GraphParams {
            capacity_hint: snapshot_ids.len() + snapshot_ids.len() / 8 + 1024,
            ..self.params
        };
        let graph = B::build_from(params, points, token)?;
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
        let deleted_dropped = snapshot_len - snapshot_ids.len();
        let old_points = std::mem::replace(&mut *p, next);
        let retired = {
            let mut g = self.graph.write();
            std::mem::replace(&mut *g, graph)
        };
        let swap_duration = swap_start.elapsed();
        drop(p);
        drop(old_points);
        // The budget follows the live points.
        if let Some(r) = &self.reservation {
            let held = r.size();
            let now = (self.len() as u64).saturating_mul(self.point_bytes());
            if held > now {
                r.shrink(held - now);
            } else {
                r.grow(now - held);
            }
        }
        let duration = start.elapsed();
        let generation = {
            let mut s = self.stats.lock();
            s.0 += 1;
            s.1 = Some(duration);
            s.2 = reason;
            s.0
        };
        tracing::info!(
            points_built = snapshot_ids.len(),
            deleted_dropped,
            tail_inserted,
            tail_deleted,
            duration_ms = duration.as_millis() as u64,
            swap_us = swap_duration.as_micros() as u64,
            generation,
            "vector index rebuilt"
        );
        Ok(RebuildReport {
            points_built: snapshot_ids.len(),
            deleted_dropped,
            tail_inserted,
            tail_deleted,
            duration,
            swap_duration,
            generation,
            retired,
        })
    }
}
