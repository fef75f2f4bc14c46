//! The seam between [`VectorIndex`](crate::VectorIndex) and a graph: the
//! [`GraphBackend`] trait, the [`Tombstones`] the index owns and passes to
//! every search, and the hnsw_rs backend.
//!
//! The trait is shaped for any proximity graph, not for hnsw_rs: dense u32
//! internal ids, a tombstone bitset owned by the caller, a cancellable bulk
//! build, a memory figure, and a teardown in bounded steps for a retired
//! graph. Two implementations: [`HnswRsGraph`] here, and
//! [`NativeGraph`](crate::NativeGraph) (flat mmap'd arrays, `native.rs`).

use hnsw_rs::hnsw::Hnsw;
use tokio_util::sync::CancellationToken;

use crate::config::Metric;
use crate::error::{Error, RebuildError, Result};

/// Points built between two checks of the cancellation token.
pub const BUILD_CHUNK: usize = 1000;

/// The most results one search returns: a larger `k` is
/// [`Error::KTooLarge`] (a `k` over the live count is fine and returns
/// them all).
pub const MAX_K: usize = 1 << 16;

/// The largest `ef` (build or search). [`IndexConfig`](crate::IndexConfig)
/// refuses a larger `ef_construction` or `ef_search`; a search's `ef` is
/// clamped to it (and to the graph's length). hnsw_rs allocates two heaps of
/// `ef` entries per search, so an unbounded `ef` aborts the process.
pub const MAX_EF: usize = 1 << 16;

/// The largest M: hnsw_rs reads M back as a u8 and exits the process above
/// 256.
pub const MAX_M: usize = 255;

/// The most points one graph takes (ids `0..MAX_POINTS`): hnsw_rs numbers
/// the points of a layer with an i32.
pub const MAX_POINTS: usize = i32::MAX as usize;

/// Points a backend preallocates for, at most, whatever the hint says.
const MAX_PREALLOC_POINTS: usize = 1 << 24;

/// Deleted internal ids, owned by the index.
///
/// ```
/// use ebb_hnsw::Tombstones;
/// let mut t = Tombstones::default();
/// assert!(t.insert(70) && !t.insert(70));
/// assert!(t.contains(70) && !t.contains(69));
/// assert_eq!(t.len(), 1);
/// ```
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

    /// Marks `id` deleted; false if it already was. The bitset grows to
    /// `id / 8` bytes (up to 512 MiB for the largest u32).
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

    /// Bytes a [`try_cover`](Self::try_cover) of `ids` would allocate (the
    /// new buffer, which lives beside the old one while it copies), or 0.
    pub(crate) fn cover_bound(&self, ids: usize) -> usize {
        let words = ids.div_ceil(64);
        if words <= self.words.capacity() {
            0
        } else {
            words.max(self.words.capacity() * 2).saturating_mul(8)
        }
    }

    /// Room for every id below `ids`, so that inserting one never
    /// allocates (the bitset is unchanged on error).
    pub(crate) fn try_cover(
        &mut self,
        ids: usize,
    ) -> std::result::Result<(), std::collections::TryReserveError> {
        let words = ids.div_ceil(64);
        if words > self.words.len() {
            if words > self.words.capacity() {
                let target = words.max(self.words.capacity() * 2);
                self.words.try_reserve_exact(target - self.words.len())?;
            }
            self.words.resize(words, 0);
        }
        Ok(())
    }
}

/// The ids a graph holds: what [`GraphBackend::insert_batch`] checks a
/// batch against, so no id is ever written twice.
#[derive(Clone, Debug, Default)]
pub(crate) struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    /// Whether `id` is in the set.
    #[inline]
    pub(crate) fn contains(&self, id: u32) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        self.words.get(w).is_some_and(|word| word >> b & 1 == 1)
    }

    /// Room for every id below `ids` (the set is unchanged on error).
    ///
    /// # Errors
    ///
    /// [`Error::AllocationFailed`] if the allocator refuses.
    pub(crate) fn try_reserve_ids(&mut self, ids: usize) -> Result<()> {
        let words = ids.div_ceil(64);
        if words > self.words.len() {
            self.words
                .try_reserve_exact(words - self.words.len())
                .map_err(|e| Error::AllocationFailed {
                    what: "inserted-id bitmap",
                    bytes: words.saturating_mul(8),
                    reason: e.to_string(),
                })?;
            self.words.resize(words, 0);
        }
        Ok(())
    }

    /// Adds `id` (after [`try_reserve_ids`](Self::try_reserve_ids) past
    /// it, so this does not allocate).
    pub(crate) fn insert(&mut self, id: u32) {
        let (w, b) = (id as usize / 64, id % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        self.words[w] |= 1 << b;
    }

    /// Heap bytes of the bitmap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

/// Construction parameters a backend receives.
///
/// ```
/// use ebb_hnsw::{GraphParams, Metric};
/// let params = GraphParams::new(128, Metric::L2);
/// assert_eq!((params.m, params.max_points), (16, ebb_hnsw::MAX_POINTS));
/// assert!(params.validate().is_ok());
/// assert!(GraphParams { m: 1, ..params }.validate().is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GraphParams {
    /// Vector dimension (`1..=isize::MAX / 4`; a backend refuses a `dim`
    /// whose arrays would not fit in memory with [`Error::SizeOverflow`]).
    pub dim: usize,
    /// The metric (vectors arrive normalized under Cosine).
    pub metric: Metric,
    /// Links per point and layer (`2..=`[`MAX_M`]).
    pub m: usize,
    /// Build-time candidates (`1..=`[`MAX_EF`]).
    pub ef_construction: usize,
    /// Points expected (a sizing hint; any value is fine, a backend
    /// preallocates for at most `min(capacity_hint, max_points, 2^24)`).
    pub capacity_hint: usize,
    /// Ids the graph takes are `0..max_points` (`1..=`[`MAX_POINTS`]);
    /// memory follows the largest id inserted, not the count.
    pub max_points: usize,
}

impl GraphParams {
    /// `dim`-dimensional vectors under `metric`: M 16, ef_construction 200,
    /// no capacity hint, [`MAX_POINTS`] ids.
    pub fn new(dim: usize, metric: Metric) -> GraphParams {
        GraphParams {
            dim,
            metric,
            m: 16,
            ef_construction: 200,
            capacity_hint: 0,
            max_points: MAX_POINTS,
        }
    }

    /// Checks every field against its documented range.
    ///
    /// # Errors
    ///
    /// [`Error::ParamOutOfRange`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let check = |name, value, min, max| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(Error::ParamOutOfRange {
                    name,
                    value,
                    min,
                    max,
                })
            }
        };
        check("dim", self.dim, 1, isize::MAX as usize / 4)?;
        check("m", self.m, 2, MAX_M)?;
        check("ef_construction", self.ef_construction, 1, MAX_EF)?;
        check("max_points", self.max_points, 1, MAX_POINTS)
    }

    /// The hint a backend preallocates for.
    pub(crate) fn prealloc_points(&self) -> usize {
        self.capacity_hint
            .min(self.max_points)
            .min(MAX_PREALLOC_POINTS)
    }
}

/// A proximity graph over dense u32 internal ids.
///
/// ```text
///  VectorIndex ── owns ──> Tombstones (deleted ids)
///       │                       │ passed to every search
///       │ &mut: insert_batch    v
///       └────── &: search ──> GraphBackend (NativeGraph | HnswRsGraph)
/// ```
///
/// A scenario: the index holds points 0..=9 in its delta segment, flushes
/// them with `insert_batch(&[(0, v0), .., (9, v9)])` under its graph write
/// lock, then deletes 3 (a tombstone only). A search for `k = 5` passes the
/// tombstones; the graph walks through 3 but never returns it, and returns
/// five of the nine live points, nearest first. A second flush of `(3, v)`
/// would be refused with [`Error::IdAlreadyInserted`], and the graph would
/// be unchanged.
///
/// Exclusive access needs no promise: `insert_batch` takes `&mut self` and
/// `search` takes `&self`, so the borrow checker keeps a graph from being
/// searched (or inserted into) while a batch goes in, and an implementation
/// may rely on that for soundness.
///
/// Callers guarantee (for meaningful results only; nothing unsound follows
/// from breaking these): the tombstones passed to `search` are the deleted
/// set of the ids this graph holds; under [`Metric::Cosine`] vectors and
/// queries are normalized; vectors are finite.
///
/// Implementations must:
/// 1. be sound for every input safe code can pass: check, never trust;
/// 2. in `new`, refuse parameters out of range ([`GraphParams::validate`])
///    or too large to allocate, with an error, never a panic or abort;
/// 3. in `insert_batch`, check the whole batch before the first write: every
///    vector `dim` long ([`Error::VectorLength`]), every id below
///    `max_points` ([`Error::IdOutOfRange`]), not in the graph
///    ([`Error::IdAlreadyInserted`]) and once in the batch
///    ([`Error::IdRepeatedInBatch`]); a refused batch, or one that could not
///    get memory ([`Error::AllocationFailed`]), changes nothing;
/// 4. in `search`, refuse a query not `dim` long ([`Error::DimensionMismatch`])
///    and `k` over [`MAX_K`] ([`Error::KTooLarge`]); clamp `ef` to
///    [`MAX_EF`] and to the graph's length; return distances where lower is
///    closer; never return an id for which `tombstones.contains(id)`;
///    return `k` results whenever at least `k` live points are in the
///    graph (and every live point when fewer are);
/// 5. in `build_from`, keep the `insert_batch` contract for every chunk.
pub trait GraphBackend: Send + Sync + Sized + 'static {
    /// An empty graph.
    ///
    /// # Errors
    ///
    /// [`Error::ParamOutOfRange`], [`Error::SizeOverflow`],
    /// [`Error::AllocationFailed`].
    fn new(params: GraphParams) -> Result<Self>;

    /// A graph of `points`, built in parallel chunks of at most
    /// [`BUILD_CHUNK`], checking `token` between chunks.
    ///
    /// # Errors
    ///
    /// [`RebuildError::Cancelled`] with the points built when the token
    /// was seen cancelled; [`RebuildError::Graph`] with what `new` or
    /// `insert_batch` refused (a duplicate id in `points`, for one).
    fn build_from<'a>(
        params: GraphParams,
        points: impl Iterator<Item = (u32, &'a [f32])>,
        token: &CancellationToken,
    ) -> Result<Self, RebuildError> {
        build_in_chunks(Self::new(params)?, points, token)
    }

    /// Adds points (in parallel where the graph can). All or nothing: on
    /// error the graph is as it was.
    ///
    /// # Errors
    ///
    /// [`Error::VectorLength`], [`Error::IdOutOfRange`],
    /// [`Error::IdAlreadyInserted`], [`Error::IdRepeatedInBatch`] for the
    /// first bad point; [`Error::AllocationFailed`] if the graph cannot grow.
    fn insert_batch(&mut self, points: &[(u32, &[f32])]) -> Result<()>;

    /// The `k` nearest live points to `query` as (id, distance), nearest
    /// first, exploring `ef` candidates (clamped to [`MAX_EF`] and the
    /// graph's length; at least `k` are explored). `k = 0` returns nothing.
    ///
    /// # Errors
    ///
    /// [`Error::DimensionMismatch`], [`Error::KTooLarge`].
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        tombstones: &Tombstones,
    ) -> Result<Vec<(u32, f32)>>;

    /// Points in the graph (live and deleted).
    fn len(&self) -> usize;

    /// Whether the graph is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the graph holds (measured or modelled; see the backend).
    fn memory_bytes(&self) -> usize;

    /// Bytes one point costs the graph (what the index charges its budget
    /// and expects per live point); saturates rather than overflow.
    fn bytes_per_point(params: &GraphParams) -> usize;

    /// Bytes a graph of `points` points is expected to hold once built (what
    /// a rebuild reserves from the budget before it starts); saturates. The
    /// default is `points x bytes_per_point` plus the inserted-id bitmap.
    fn estimate_bytes(params: &GraphParams, points: usize) -> usize {
        points
            .saturating_mul(Self::bytes_per_point(params))
            .saturating_add(points / 8)
    }

    /// Frees up to about `max_bytes` of a graph no one will use again (a
    /// retired generation), so that freeing it can be spread over bounded
    /// steps and its final drop is cheap; returns the bytes freed by this
    /// step, and 0 when nothing more can be freed this way (the drop frees
    /// the rest). After the first call the graph may read as empty; it stays
    /// safe to use. The default frees nothing (0): the drop does it all.
    fn release_step(&mut self, max_bytes: usize) -> usize {
        let _ = max_bytes;
        0
    }
}

/// Checks a batch against the [`GraphBackend::insert_batch`] contract
/// (implementations must, 3) without changing anything; the largest id, or
/// `None` for an empty batch.
pub(crate) fn validate_batch(
    points: &[(u32, &[f32])],
    params: &GraphParams,
    inserted: &IdSet,
) -> Result<Option<u32>> {
    let mut max = None;
    for &(id, v) in points {
        if v.len() != params.dim {
            return Err(Error::VectorLength {
                id,
                expected: params.dim,
                got: v.len(),
            });
        }
        if id as usize >= params.max_points {
            return Err(Error::IdOutOfRange {
                id,
                max_points: params.max_points,
            });
        }
        if inserted.contains(id) {
            return Err(Error::IdAlreadyInserted { id });
        }
        max = max.max(Some(id));
    }
    if points.len() > 1 {
        // (id, position), sorted: a repeated id sits next to itself, its
        // earliest positions first.
        let mut ids: Vec<(u32, usize)> = points.iter().map(|p| p.0).zip(0..).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::IdRepeatedInBatch {
                id: w[0].0,
                first: w[0].1,
                second: w[1].1,
            });
        }
    }
    Ok(max)
}

/// The query checks of [`GraphBackend::search`] (implementations must, 4).
pub(crate) fn validate_query(query: &[f32], k: usize, dim: usize) -> Result<()> {
    if query.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: query.len(),
        });
    }
    if k > MAX_K {
        return Err(Error::KTooLarge { k, max: MAX_K });
    }
    Ok(())
}

/// The `ef` a search uses: `ef` clamped to [`MAX_EF`] and the graph's
/// `len`, and at least `want`.
#[inline]
pub(crate) fn search_ef(ef: usize, want: usize, len: usize) -> usize {
    ef.min(MAX_EF).min(len).max(want)
}

/// Feeds `points` to `graph` in batches of at most [`BUILD_CHUNK`],
/// checking `token` before each: the default [`GraphBackend::build_from`].
fn build_in_chunks<'a, B: GraphBackend>(
    mut graph: B,
    points: impl Iterator<Item = (u32, &'a [f32])>,
    token: &CancellationToken,
) -> Result<B, RebuildError> {
    let mut chunk: Vec<(u32, &[f32])> = Vec::with_capacity(BUILD_CHUNK);
    let mut points = points.peekable();
    while points.peek().is_some() {
        if token.is_cancelled() {
            return Err(RebuildError::Cancelled {
                points_built: graph.len(),
            });
        }
        chunk.clear();
        chunk.extend(points.by_ref().take(BUILD_CHUNK));
        graph.insert_batch(&chunk)?;
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
    /// Reported distances follow hnswlib's conventions: squared L2,
    /// `1 - cos`, `1 - dot`.
    pub fn reported(&self, g: f32) -> f32 {
        match self.0 {
            Metric::L2 | Metric::Cosine => g,
            // Invert the map above (d = dot): g = 1 - d for d <= 0, so
            // 1 - d = g; g = 1 / (1 + d) for d > 0, so 1 - d = 2 - 1 / g.
            Metric::Dot => {
                if g >= 1.0 {
                    g
                } else {
                    2.0 - 1.0 / g
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
///
/// hnsw_rs trusts its caller (a duplicate id is indexed twice, an `ef` of
/// `usize::MAX` overflows a `with_capacity`, M over 256 exits the process),
/// so every input is checked here first, as the trait requires.
pub struct HnswRsGraph {
    hnsw: Hnsw<'static, f32, GraphDistance>,
    params: GraphParams,
    /// Every id inserted; `len` of them.
    inserted: IdSet,
    len: usize,
}

impl HnswRsGraph {
    /// The per-point model above (saturating).
    pub fn model_bytes_per_point(params: &GraphParams) -> usize {
        params
            .dim
            .saturating_mul(4)
            .saturating_add(params.m.saturating_mul(100))
            .saturating_add(48)
    }

    fn max_layer(capacity: usize) -> usize {
        // hnsw_rs caps this at 16; log_m(n) layers are ever used.
        ((capacity.max(2) as f64).ln().ceil() as usize).clamp(4, 16)
    }
}

impl GraphBackend for HnswRsGraph {
    fn new(params: GraphParams) -> Result<Self> {
        params.validate()?;
        let hint = params.prealloc_points();
        let hnsw = Hnsw::new(
            params.m,
            hint.max(1),
            Self::max_layer(hint),
            params.ef_construction,
            GraphDistance(params.metric),
        );
        Ok(HnswRsGraph {
            hnsw,
            params,
            inserted: IdSet::default(),
            len: 0,
        })
    }

    fn insert_batch(&mut self, points: &[(u32, &[f32])]) -> Result<()> {
        let Some(max) = validate_batch(points, &self.params, &self.inserted)? else {
            return Ok(());
        };
        self.inserted.try_reserve_ids(max as usize + 1)?;
        // Nothing below fails (hnsw_rs's own allocations abort on OOM, as
        // any Vec's do).
        for &(id, _) in points {
            self.inserted.insert(id);
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
        Ok(())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        tombstones: &Tombstones,
    ) -> Result<Vec<(u32, f32)>> {
        validate_query(query, k, self.params.dim)?;
        if self.len == 0 || k == 0 {
            return Ok(Vec::new());
        }
        // Tombstones may name points not in this graph (still in the
        // index's delta segment), so the live count here is a bound only.
        // `want <= MAX_K`, so nothing below overflows; every ef passed to
        // hnsw_rs (its heap capacities) is at most max(len, 4 MAX_EF).
        let want = k.min(self.len);
        let deleted_ratio = (tombstones.len() as f64 / self.len as f64).min(1.0);
        // Few deletes: over-fetch and drop them (fast). Many: let the graph
        // skip them while searching (slower per query, but it finds k).
        if deleted_ratio < 0.3 {
            let extra = (want as f64 * deleted_ratio * 3.0).ceil() as usize;
            let fetch = (want + extra + 4).min(self.len);
            let found = self
                .hnsw
                .search(query, fetch, search_ef(ef, fetch, self.len));
            let out = live_results(found, tombstones, want);
            if out.len() >= want {
                return Ok(out);
            }
        }
        let filter = |id: &usize| !tombstones.contains(*id as u32);
        let ef = search_ef(ef, want, self.len);
        let found = self.hnsw.search_filter(query, want, ef, Some(&filter));
        let out = live_results(found, tombstones, want);
        if out.len() >= want {
            return Ok(out);
        }
        // The filtered search can come back short in a sparse graph; widen
        // (past MAX_EF, but never past the graph's length).
        let wide = ef.saturating_mul(4).min(self.len).max(want);
        let found = self.hnsw.search_filter(query, want, wide, Some(&filter));
        Ok(live_results(found, tombstones, want))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn memory_bytes(&self) -> usize {
        self.len
            .saturating_mul(Self::model_bytes_per_point(&self.params))
            .saturating_add(self.inserted.heap_bytes())
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
