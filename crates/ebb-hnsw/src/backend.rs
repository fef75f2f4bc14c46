//! The seam between [`VectorIndex`](crate::VectorIndex) and a graph: the
//! [`GraphBackend`] trait, the [`Tombstones`] the index owns and passes to
//! every search, and the hnsw_rs backend.
//!
//! The trait is shaped for any proximity graph, not for hnsw_rs: dense u32
//! internal ids, a tombstone bitset owned by the caller, a cancellable bulk
//! build, and a memory figure. A native graph on ebb slabs is the next
//! implementation.

use hnsw_rs::hnsw::Hnsw;
use tokio_util::sync::CancellationToken;

use crate::config::Metric;

/// Points built between two checks of the cancellation token.
pub const BUILD_CHUNK: usize = 1000;

/// Deleted internal ids, owned by the index.
#[derive(Clone, Debug, Default)]
pub struct Tombstones {
    words: Vec<u64>,
    count: usize,
}

impl Tombstones {
    /// Whether `id` is deleted.
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        self.words.get(w).is_some_and(|word| word >> b & 1 == 1)
    }

    /// Marks `id` deleted; false if it already was.
    pub fn insert(&mut self, id: u32) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let had = self.words[w] >> b & 1 == 1;
        self.words[w] |= 1 << b;
        if !had {
            self.count += 1;
        }
        !had
    }

    /// Deleted ids.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none is deleted.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes of the bitset.
    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// Construction parameters a backend receives.
#[derive(Clone, Copy, Debug)]
pub struct GraphParams {
    /// Vector dimension.
    pub dim: usize,
    /// The metric (vectors arrive normalized under Cosine).
    pub metric: Metric,
    /// Links per point and layer.
    pub m: usize,
    /// Build-time candidates.
    pub ef_construction: usize,
    /// Points expected (a sizing hint).
    pub capacity_hint: usize,
}

/// A proximity graph over dense u32 internal ids.
///
/// Callers guarantee: `insert_batch` never runs at the same time as
/// `search` or another `insert_batch` on one graph (the index holds an
/// exclusive lock for it; hnsw_rs requires this); ids are unique.
/// Implementations must: return distances where lower is closer; never
/// return an id for which `tombstones.contains(id)`; return `k` results
/// whenever at least `k` live points are in the graph.
pub trait GraphBackend: Send + Sync + Sized + 'static {
    /// An empty graph.
    fn new(params: GraphParams) -> Self;

    /// A graph of `points`, built in parallel chunks of at most
    /// [`BUILD_CHUNK`], checking `token` between chunks. `Err` carries the
    /// points built when the token was seen cancelled.
    fn build_from<'a>(
        params: GraphParams,
        points: impl Iterator<Item = (u32, &'a [f32])>,
        token: &CancellationToken,
    ) -> Result<Self, usize> {
        build_in_chunks(Self::new(params), points, token)
    }

    /// Adds points (in parallel where the graph can).
    fn insert_batch(&mut self, points: &[(u32, &[f32])]);

    /// The `k` nearest live points to `query` as (id, distance), nearest
    /// first, exploring `ef` candidates.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        tombstones: &Tombstones,
    ) -> Vec<(u32, f32)>;

    /// Points in the graph (live and deleted).
    fn len(&self) -> usize;

    /// Whether the graph is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the graph holds (measured or modelled; see the backend).
    fn memory_bytes(&self) -> usize;

    /// Bytes one point costs the graph (what the index charges its budget
    /// and expects per live point).
    fn bytes_per_point(params: &GraphParams) -> usize;
}

/// Feeds `points` to `graph` in batches of at most [`BUILD_CHUNK`],
/// checking `token` before each: the default [`GraphBackend::build_from`].
/// `Err` carries the points built.
fn build_in_chunks<'a, B: GraphBackend>(
    mut graph: B,
    points: impl Iterator<Item = (u32, &'a [f32])>,
    token: &CancellationToken,
) -> Result<B, usize> {
    let mut chunk: Vec<(u32, &[f32])> = Vec::with_capacity(BUILD_CHUNK);
    let mut points = points.peekable();
    while points.peek().is_some() {
        if token.is_cancelled() {
            return Err(graph.len());
        }
        chunk.clear();
        chunk.extend(points.by_ref().take(BUILD_CHUNK));
        graph.insert_batch(&chunk);
    }
    Ok(graph)
}

/// The distance the graph sees, for each metric: non-negative and finite
/// (hnsw_rs panics on NaN and negative distances), and monotone in the
/// distance the index reports.
#[derive(Clone, Copy, Debug)]
pub struct GraphDistance(pub Metric);

impl GraphDistance {
    /// The graph's distance between `a` and `b`.
    #[inline]
    pub fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.0 {
            Metric::L2 => squared_l2(a, b),
            // Vectors are normalized: 1 - dot, clamped against rounding.
            Metric::Cosine => (1.0 - dot(a, b)).max(0.0),
            // A monotone decreasing, non-negative map of the inner product
            // that keeps precision at both ends: 1 - d for d <= 0, and
            // 1 / (1 + d) for d > 0 (both 1 at 0).
            Metric::Dot => {
                let d = dot(a, b);
                if d <= 0.0 { 1.0 - d } else { 1.0 / (1.0 + d) }
            }
        }
    }

    /// The distance the index reports for a graph distance `g`.
    #[inline]
    pub fn reported(&self, g: f32) -> f32 {
        match self.0 {
            Metric::L2 => g.sqrt(),
            Metric::Cosine => g,
            // Invert the map above: the reported distance is -dot.
            Metric::Dot => {
                if g >= 1.0 {
                    g - 1.0
                } else {
                    -(1.0 / g - 1.0)
                }
            }
        }
    }
}

/// Lanes of independent partial sums. A plain `iter().sum()` of floats is
/// one serial chain the compiler may not reorder (float addition is not
/// associative), so it cannot use SIMD; eight explicit lanes give it the
/// freedom, and make a 128-d distance several times faster.
const LANES: usize = 8;

#[inline]
fn lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| x * y)
}

#[inline]
fn squared_l2(a: &[f32], b: &[f32]) -> f32 {
    lanes(a, b, |x, y| (x - y) * (x - y))
}

impl hnsw_rs::anndists::dist::Distance<f32> for GraphDistance {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        GraphDistance::eval(self, va, vb)
    }
}

/// hnsw_rs 0.3.5 as a backend.
///
/// Memory is a model, not a measurement (hnsw_rs does not report it): the
/// heap bytes per point measured here at 100k x 128-d, M=16, were about
/// 2160 (33 allocations per point), which `4 * dim + 100 * m + 48`
/// reproduces; the bench measures it again with a counting allocator.
pub struct HnswRsGraph {
    hnsw: Hnsw<'static, f32, GraphDistance>,
    params: GraphParams,
    len: usize,
}

impl HnswRsGraph {
    /// The per-point model above.
    pub fn model_bytes_per_point(params: &GraphParams) -> usize {
        4 * params.dim + 100 * params.m + 48
    }

    fn max_layer(capacity: usize) -> usize {
        // hnsw_rs caps this at 16; log_m(n) layers are ever used.
        ((capacity.max(2) as f64).ln().ceil() as usize).clamp(4, 16)
    }
}

impl GraphBackend for HnswRsGraph {
    fn new(params: GraphParams) -> Self {
        let hnsw = Hnsw::new(
            params.m,
            params.capacity_hint.max(1),
            Self::max_layer(params.capacity_hint),
            params.ef_construction,
            GraphDistance(params.metric),
        );
        HnswRsGraph {
            hnsw,
            params,
            len: 0,
        }
    }

    fn insert_batch(&mut self, points: &[(u32, &[f32])]) {
        if points.is_empty() {
            return;
        }
        self.hnsw.set_searching_mode(false);
        let data: Vec<(&[f32], usize)> = points.iter().map(|&(id, v)| (v, id as usize)).collect();
        if data.len() == 1 {
            self.hnsw.insert_slice(data[0]);
        } else {
            self.hnsw.parallel_insert_slice(&data);
        }
        self.hnsw.set_searching_mode(true);
        self.len += points.len();
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        tombstones: &Tombstones,
    ) -> Vec<(u32, f32)> {
        if self.len == 0 || k == 0 {
            return Vec::new();
        }
        // Tombstones may name points not in this graph (still in the
        // index's delta segment), so the live count here is a bound only.
        let want = k.min(self.len);
        let deleted_ratio = (tombstones.len() as f64 / self.len as f64).min(1.0);
        // Few deletes: over-fetch and drop them (fast). Many: let the graph
        // skip them while searching (slower per query, but it finds k).
        if deleted_ratio < 0.3 {
            let fetch = want + (want as f64 * deleted_ratio * 3.0).ceil() as usize + 4;
            let found = self.hnsw.search(query, fetch, ef.max(fetch));
            let out = live_results(found, tombstones, want);
            if out.len() >= want {
                return out;
            }
        }
        let filter = |id: &usize| !tombstones.contains(*id as u32);
        let found = self
            .hnsw
            .search_filter(query, want, ef.max(want), Some(&filter));
        let out = live_results(found, tombstones, want);
        if out.len() >= want {
            return out;
        }
        // The filtered search can come back short in a sparse graph; widen.
        let found = self
            .hnsw
            .search_filter(query, want, ef.max(want) * 4, Some(&filter));
        live_results(found, tombstones, want)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn memory_bytes(&self) -> usize {
        self.len * Self::model_bytes_per_point(&self.params)
    }

    fn bytes_per_point(params: &GraphParams) -> usize {
        Self::model_bytes_per_point(params)
    }
}

fn live_results(
    found: Vec<hnsw_rs::hnsw::Neighbour>,
    tombstones: &Tombstones,
    want: usize,
) -> Vec<(u32, f32)> {
    found
        .into_iter()
        .map(|n| (n.d_id as u32, n.distance))
        .filter(|(id, _)| !tombstones.contains(*id))
        .take(want)
        .collect()
}
