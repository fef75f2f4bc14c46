//! [`NativeGraph`]: an HNSW graph of our own, on flat mmap'd arrays.
//!
//! hnsw_rs keeps every point in its own `Arc` with per-layer locked
//! neighbour vectors: about 33 heap allocations per point, which a general
//! purpose allocator cannot give back when a graph is dropped. Here the
//! vectors and the layer-0 neighbour lists (where almost all links live)
//! are two flat arrays in [`Mapping`]s: dropping a graph unmaps them, so
//! RSS falls by exactly their size; only the upper layers (about 1 node in
//! M) use the heap.
//!
//! Layout: node `i`'s vector at `vectors[i * dim..]`; its layer-0 block at
//! `links0[i * (m0 + 1)..]`: a count, then up to `m0 = 2 M` ids. Upper
//! layers: `upper[i]`, `level` blocks of a count and up to M ids.
//!
//! Who writes what, and when: only the workers of one
//! [`insert_batch`](GraphBackend::insert_batch) write, and they run while
//! it holds `&mut self`, so no search (`&self`) runs beside them. Searches
//! read links without locks; a [`Frozen`] token, made by an `unsafe fn`,
//! carries that "no writer" argument to every unlocked read.
//!
//! Invariants:
//! 1. A node's vector, level and (empty) upper blocks are written once,
//!    by the one worker inserting it ([`NativeGraph::init_node`]), before
//!    any link to it or the entry names it; no other thread can learn its
//!    id before then, so no vector is read while written. Each id is
//!    written once: `inserted` holds every id ever inserted, and a batch
//!    naming one again (or twice) is refused before any write.
//! 2. Links are written only under the node's stripe lock ([`StripeLock`],
//!    which [`NativeGraph::write_links`] demands and checks), and read
//!    either under it or under a [`Frozen`] token (no writer at all). A
//!    reader that reaches a node through a link read under the lock sees
//!    its vector (the lock orders the writes before the read).
//! 3. At most one stripe lock is held at a time by any thread, so striped
//!    locks cannot deadlock.
//! 4. `cap <= params.max_points`; the arrays hold `cap` nodes and grow
//!    only under `&mut self`, before a batch's first write, so every id a
//!    parallel insert or a search touches is below `cap`.
//! 5. `entry` packs (top level, entry id); it only moves to a node whose
//!    links at every level up to its own are written.

use std::cell::{RefCell, UnsafeCell};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::marker::PhantomData;

use ebb_core::os::{Advice, Mapping, page_size};
use ebb_core::sync::{AtomicU8, AtomicU64, AtomicUsize, Ordering, TasGuard, TasLock};
use rayon::prelude::*;

use crate::backend::{
    GraphBackend, GraphDistance, GraphParams, IdSet, Tombstones, search_ef, validate_batch,
    validate_query,
};
use crate::error::{Error, Result};

const LOCK_STRIPES: usize = 1 << 14;
const EMPTY: u64 = u64::MAX;
const MAX_LEVEL: usize = 16;
/// Nodes the arrays hold at least (unless `max_points` is smaller).
const MIN_CAP: usize = 1024;
/// Nodes the first arrays hold at most, whatever the hint.
const MAX_INITIAL_CAP: usize = 1 << 16;

/// A distance that sorts (the graph's distances are finite, invariant of
/// [`GraphDistance`]).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dist(f32);

impl Eq for Dist {}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0.total_cmp(&other.0)
    }
}

/// An HNSW graph on flat mmap'd arrays; see the module docs.
///
/// ```
/// use ebb_hnsw::{Error, GraphBackend, GraphParams, Metric, NativeGraph, Tombstones};
///
/// let mut graph = NativeGraph::new(GraphParams::new(2, Metric::L2)).unwrap();
/// graph.insert_batch(&[(0, &[0.0, 0.0]), (1, &[1.0, 0.0])]).unwrap();
/// // A second insert of an id is refused, and changes nothing.
/// assert_eq!(
///     graph.insert_batch(&[(1, &[5.0, 5.0])]),
///     Err(Error::IdAlreadyInserted { id: 1 })
/// );
/// let hits = graph.search(&[0.9, 0.0], 1, 16, &Tombstones::default()).unwrap();
/// assert_eq!(hits[0].0, 1);
/// ```
pub struct NativeGraph {
    params: GraphParams,
    distance: GraphDistance,
    m: usize,
    m0: usize,
    level_scale: f64,
    /// Nodes the arrays below hold (invariant 4).
    cap: usize,
    /// `cap * dim` f32s.
    vectors: Mapping,
    /// `cap * (m0 + 1)` u32s.
    links0: Mapping,
    /// `cap` entries, each written under its node's stripe lock
    /// (invariants 1 and 2).
    upper: Vec<UnsafeCell<Vec<u32>>>,
    levels: Vec<AtomicU8>,
    /// Every id inserted (invariant 1), with room for `cap` ids.
    inserted: IdSet,
    locks: Box<[TasLock]>,
    entry: AtomicU64,
    len: AtomicUsize,
    /// Heap bytes of the upper-layer blocks (`init_node` adds each node's),
    /// so `memory_bytes` is a sum of counters, not a walk of every node.
    upper_bytes: AtomicUsize,
    /// One past the largest id inserted: the nodes whose pages are touched.
    high: usize,
    /// Bytes of the touched mapped pages released so far by
    /// [`release_step`](GraphBackend::release_step) (vectors, then links).
    release_cursor: usize,
}

// SAFETY: `NativeGraph` is `Send` without help (a `Mapping` is `Send`, and
// so is `UnsafeCell<Vec<u32>>`); `Sync` is needed for the `UnsafeCell`s and
// the raw writes through the mappings. Shared references are used from
// many threads in exactly two situations:
// - searches and `memory_bytes`/`len` (`&self` from any threads): they only
//   read, and no thread writes, because every write happens in the workers
//   of `insert_batch`, which holds `&mut self` while they run (the
//   `Frozen` token records this at each unlocked read);
// - the workers of one `insert_batch`: they write links only under the
//   node's stripe lock and read them under it too (invariant 2), and each
//   initializes only the node it inserts, before any other thread can name
//   it (invariant 1).
// Nothing in the graph is tied to the thread that made it.
unsafe impl Sync for NativeGraph {}

/// A held stripe lock: proof, for [`NativeGraph::write_links`] and
/// [`NativeGraph::links_locked`], that no other thread touches the links
/// of the nodes of this stripe.
struct StripeLock<'a>(TasGuard<'a>);

/// Proof that no thread writes this graph while the token lives (made by
/// [`NativeGraph::frozen`], whose caller guarantees it): links may be read
/// without their locks.
#[derive(Clone, Copy)]
struct Frozen<'a>(PhantomData<&'a NativeGraph>);

/// How a walk reads link lists.
#[derive(Clone, Copy)]
enum Access<'a> {
    /// Under each node's stripe lock: inside `insert_batch`, beside the
    /// other workers' writes.
    Locked,
    /// Without locks: no thread writes.
    Frozen(Frozen<'a>),
}

/// Per-thread visited marks: `marks[id] == stamp` means visited.
type Visited = (Vec<u32>, u32);

thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new((Vec::new(), 0)) };
    static LEVEL_RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Bytes of an array of `points x per_point` elements of `elem_bytes`.
///
/// # Errors
///
/// [`Error::SizeOverflow`] past `isize::MAX` bytes (the most one allocation
/// or mapping can hold).
fn array_bytes(
    what: &'static str,
    points: usize,
    per_point: usize,
    elem_bytes: usize,
) -> Result<usize> {
    points
        .checked_mul(per_point)
        .and_then(|n| n.checked_mul(elem_bytes))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or(Error::SizeOverflow {
            what,
            points,
            per_point,
            elem_bytes,
            limit: isize::MAX as usize,
        })
}

/// A zeroed mapping for `points x per_point` elements of `elem_bytes`.
///
/// # Errors
///
/// [`Error::SizeOverflow`], or [`Error::AllocationFailed`] if the mapping
/// fails.
fn map_array(
    what: &'static str,
    points: usize,
    per_point: usize,
    elem_bytes: usize,
) -> Result<Mapping> {
    let bytes = array_bytes(what, points, per_point, elem_bytes)?;
    Mapping::new(bytes.max(1), 64).map_err(|e| Error::AllocationFailed {
        what,
        bytes,
        reason: e.to_string(),
    })
}

/// An empty `Vec` with room for `n` elements, from the fallible allocator.
///
/// # Errors
///
/// [`Error::AllocationFailed`].
fn try_vec<T>(what: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|e| Error::AllocationFailed {
            what,
            bytes: n.saturating_mul(size_of::<T>()),
            reason: e.to_string(),
        })?;
    Ok(v)
}

impl NativeGraph {
    /// The vector of node `id`.
    ///
    /// # Panics
    ///
    /// If `id >= cap` (a broken invariant 4: every id the graph holds is
    /// below `cap`).
    fn vector(&self, id: u32) -> &[f32] {
        let id = id as usize;
        assert!(id < self.cap, "node {id} beyond capacity {}", self.cap);
        // SAFETY:
        // - `id < cap` (checked), and `vectors` holds `cap * dim` f32s
        //   (invariant 4), so the range lies inside the mapping;
        // - the mapping is 64-byte aligned and holds zeros or f32s;
        // - no thread writes this slot while it is read: it is written once,
        //   before any thread but its writer can name `id` (invariant 1),
        //   and every id passed here was learned from a link, the entry, or
        //   is the caller's own node.
        unsafe {
            std::slice::from_raw_parts(
                (self.vectors.as_ptr() as *const f32).add(id * self.params.dim),
                self.params.dim,
            )
        }
    }

    fn lock(&self, id: u32) -> StripeLock<'_> {
        StripeLock(self.locks[id as usize % LOCK_STRIPES].lock())
    }

    /// Whether `g` is `id`'s stripe lock of this graph.
    fn holds(&self, g: &StripeLock<'_>, id: u32) -> bool {
        g.0.holds(&self.locks[id as usize % LOCK_STRIPES])
    }

    /// A token for reading links without locks.
    ///
    /// # Safety
    ///
    /// No thread writes this graph while the token (bounded by `&self`)
    /// lives. This holds for a `&self` that is not one of `insert_batch`'s
    /// workers: every write happens in those workers, while `insert_batch`
    /// holds `&mut self`, which no other `&self` can outlive or overlap.
    unsafe fn frozen(&self) -> Frozen<'_> {
        Frozen(PhantomData)
    }

    /// Copies `id`'s links at `level` into `out`, reading as `access` says.
    fn links(&self, access: Access<'_>, id: u32, level: usize, out: &mut Vec<u32>) {
        match access {
            Access::Locked => {
                let g = self.lock(id);
                self.links_locked(&g, id, level, out);
            }
            Access::Frozen(_) => {
                // SAFETY: a `Frozen` token lives, so no thread writes
                // (`frozen`'s contract).
                unsafe { self.copy_links(id, level, out) }
            }
        }
    }

    /// Copies `id`'s links at `level` into `out`; `g` is `id`'s stripe lock.
    ///
    /// # Panics
    ///
    /// If `g` is not `id`'s stripe lock of this graph.
    fn links_locked(&self, g: &StripeLock<'_>, id: u32, level: usize, out: &mut Vec<u32>) {
        assert!(self.holds(g, id), "links of {id} read without its lock");
        // SAFETY: `id`'s stripe lock is held (checked), and every writer of
        // `id`'s links holds it too (invariant 2; `write_links` checks it).
        unsafe { self.copy_links(id, level, out) }
    }

    /// # Safety
    ///
    /// No thread writes `id`'s links during the call: the caller holds
    /// `id`'s stripe lock, or a [`Frozen`] token lives.
    unsafe fn copy_links(&self, id: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        let at = id as usize;
        assert!(at < self.cap, "node {id} beyond capacity {}", self.cap);
        if level == 0 {
            // SAFETY:
            // - `id < cap` (checked), and `links0` holds `cap * (m0 + 1)`
            //   u32s (invariant 4), so the block lies inside the mapping,
            //   which is aligned and holds zeros or written u32s;
            // - no thread writes the block during the call (the caller's
            //   guarantee); concurrent readers share it.
            let b = unsafe {
                std::slice::from_raw_parts(
                    (self.links0.as_ptr() as *const u32).add(at * (self.m0 + 1)),
                    self.m0 + 1,
                )
            };
            let n = (b[0] as usize).min(self.m0);
            out.extend_from_slice(&b[1..1 + n]);
        } else {
            // SAFETY: no thread writes `upper[id]` during the call (the
            // caller's guarantee; writes happen under the stripe lock,
            // invariant 2); concurrent readers share it.
            let up = unsafe { &*self.upper[at].get() };
            let base = (level - 1) * (self.m + 1);
            if base < up.len() {
                let n = (up[base] as usize).min(self.m);
                out.extend_from_slice(&up[base + 1..base + 1 + n]);
            }
        }
    }

    /// Replaces `id`'s links at `level`; `g` is `id`'s stripe lock.
    ///
    /// # Panics
    ///
    /// If `g` is not `id`'s stripe lock of this graph, or `id >= cap`.
    fn write_links(&self, g: &StripeLock<'_>, id: u32, level: usize, links: &[u32]) {
        assert!(self.holds(g, id), "links of {id} written without its lock");
        let at = id as usize;
        assert!(at < self.cap, "node {id} beyond capacity {}", self.cap);
        if level == 0 {
            // SAFETY:
            // - `id < cap` (checked): the block lies inside `links0`
            //   (invariant 4);
            // - exclusive: `id`'s stripe lock is held (checked), every other
            //   reader or writer of the block holds it (invariant 2), and no
            //   `Frozen` reader exists while a write can happen (`frozen`'s
            //   contract).
            let b = unsafe {
                std::slice::from_raw_parts_mut(
                    (self.links0.as_ptr() as *mut u32).add(at * (self.m0 + 1)),
                    self.m0 + 1,
                )
            };
            let n = links.len().min(self.m0);
            b[0] = n as u32;
            b[1..1 + n].copy_from_slice(&links[..n]);
        } else {
            // SAFETY: exclusive, as for the block above (invariant 2).
            let up = unsafe { &mut *self.upper[at].get() };
            let base = (level - 1) * (self.m + 1);
            if base < up.len() {
                let n = links.len().min(self.m);
                up[base] = n as u32;
                up[base + 1..base + 1 + n].copy_from_slice(&links[..n]);
            }
        }
    }

    /// Writes node `id`'s vector, level and empty upper blocks.
    ///
    /// # Safety
    ///
    /// No other thread can name `id` yet (no link to it, not the entry),
    /// and no other thread initializes `id` (invariant 1).
    ///
    /// # Panics
    ///
    /// If `id >= cap` or `v.len() != dim`.
    unsafe fn init_node(&self, id: u32, v: &[f32], level: usize) {
        let at = id as usize;
        assert!(at < self.cap, "node {id} beyond capacity {}", self.cap);
        let g = self.lock(id);
        // SAFETY:
        // - `id < cap` (checked): the slot lies inside `vectors`
        //   (invariant 4), which is aligned for f32;
        // - exclusive: no other thread can name `id`, so none reads the
        //   slot, and none other writes it (the caller's guarantee).
        let slot = unsafe {
            std::slice::from_raw_parts_mut(
                (self.vectors.as_ptr() as *mut f32).add(at * self.params.dim),
                self.params.dim,
            )
        };
        slot.copy_from_slice(v);
        // SAFETY: `id`'s stripe lock is held: no other access to `upper[id]`
        // (invariant 2).
        unsafe { *self.upper[at].get() = vec![0; level * (self.m + 1)] };
        self.upper_bytes
            .fetch_add(level * (self.m + 1) * 4, Ordering::Relaxed);
        self.levels[at].store(level as u8, Ordering::Relaxed);
        drop(g);
    }

    fn random_level(&self, id: u32) -> usize {
        let seed = || (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // `try_with`: an insert may run in a thread-local destructor, after
        // this thread's state is gone; then the id seeds the draw.
        let x = LEVEL_RNG
            .try_with(|r| {
                let x = step(if r.get() == 0 { seed() } else { r.get() });
                r.set(x);
                x
            })
            .unwrap_or_else(|_| step(seed()));
        let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_scale) as usize).min(MAX_LEVEL)
    }

    /// Makes the arrays hold at least `need` nodes (`need <= max_points`).
    /// All or nothing: on error the graph is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::SizeOverflow`], [`Error::AllocationFailed`].
    fn grow(&mut self, need: usize) -> Result<()> {
        debug_assert!(need <= self.params.max_points);
        if need <= self.cap {
            return Ok(());
        }
        let cap = need
            .max(self.cap.saturating_mul(2))
            .max(MIN_CAP)
            .min(self.params.max_points)
            .max(need);
        let dim = self.params.dim;
        // Everything that can fail, before anything changes.
        let vectors = map_array("vectors", cap, dim, 4)?;
        let links0 = map_array("layer-0 links", cap, self.m0 + 1, 4)?;
        let old_vectors = array_bytes("vectors", self.cap, dim, 4)?;
        let old_links0 = array_bytes("layer-0 links", self.cap, self.m0 + 1, 4)?;
        let mut upper = try_vec("upper layers", cap)?;
        let mut levels = try_vec("levels", cap)?;
        self.inserted.try_reserve_ids(cap)?;
        // SAFETY:
        // - the old mappings hold `self.cap` nodes (`old_*` bytes) and the
        //   new ones `cap > self.cap` nodes, so both ranges are in bounds;
        // - distinct mappings never overlap;
        // - `&mut self` excludes every reader and writer (invariant 4).
        unsafe {
            std::ptr::copy_nonoverlapping(self.vectors.as_ptr(), vectors.as_ptr(), old_vectors);
            std::ptr::copy_nonoverlapping(self.links0.as_ptr(), links0.as_ptr(), old_links0);
        }
        // Within the capacity reserved above: no allocation.
        upper.append(&mut self.upper);
        upper.resize_with(cap, || UnsafeCell::new(Vec::new()));
        levels.append(&mut self.levels);
        levels.resize_with(cap, || AtomicU8::new(0));
        self.vectors = vectors;
        self.links0 = links0;
        self.upper = upper;
        self.levels = levels;
        self.cap = cap;
        Ok(())
    }

    /// The `ef` nearest to `q` reachable from `eps` at `level`, nearest
    /// first; with `tombstones`, deleted nodes are walked through but not
    /// returned.
    fn search_layer(
        &self,
        q: &[f32],
        eps: &[(Dist, u32)],
        ef: usize,
        level: usize,
        tombstones: Option<&Tombstones>,
        access: Access<'_>,
    ) -> Vec<(Dist, u32)> {
        let walk = |v: &mut Visited| self.walk_layer(v, q, eps, ef, level, tombstones, access);
        // `try_with`: a search may run in a thread-local destructor, after
        // this thread's marks are gone; then fresh marks serve this walk.
        match VISITED.try_with(|v| v.try_borrow_mut().ok().map(|mut v| walk(&mut v))) {
            Ok(Some(found)) => found,
            _ => walk(&mut (Vec::new(), 0)),
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the body of search_layer, with its visited marks"
    )]
    fn walk_layer(
        &self,
        visited: &mut Visited,
        q: &[f32],
        eps: &[(Dist, u32)],
        ef: usize,
        level: usize,
        tombstones: Option<&Tombstones>,
        access: Access<'_>,
    ) -> Vec<(Dist, u32)> {
        let (marks, stamp) = visited;
        if marks.len() < self.cap {
            marks.resize(self.cap, 0);
        }
        *stamp = stamp.wrapping_add(1);
        if *stamp == 0 {
            marks.fill(0);
            *stamp = 1;
        }
        let stamp = *stamp;
        let live = |id: u32| tombstones.is_none_or(|t| !t.contains(id));
        let mut candidates: BinaryHeap<Reverse<(Dist, u32)>> = BinaryHeap::new();
        let mut results: BinaryHeap<(Dist, u32)> = BinaryHeap::new();
        for &(d, id) in eps {
            marks[id as usize] = stamp;
            candidates.push(Reverse((d, id)));
            if live(id) {
                results.push((d, id));
            }
        }
        let mut buf = Vec::with_capacity(self.m0);
        while let Some(Reverse((d, c))) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| d > w.0) {
                break;
            }
            self.links(access, c, level, &mut buf);
            for &n in &buf {
                if marks[n as usize] == stamp {
                    continue;
                }
                marks[n as usize] = stamp;
                let dn = Dist(self.distance.eval(q, self.vector(n)));
                let worst = results.peek().map(|w| w.0);
                if results.len() < ef || worst.is_some_and(|w| dn < w) {
                    candidates.push(Reverse((dn, n)));
                    if live(n) {
                        results.push((dn, n));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut out = results.into_vec();
        out.sort_unstable();
        out
    }

    /// Greedy descent from `ep` through levels `top` down to `bottom`
    /// (inclusive): at each level, move to the nearest neighbour until none
    /// is nearer. Returns the entry point for the level below.
    fn descend(
        &self,
        q: &[f32],
        mut ep: u32,
        top: usize,
        bottom: usize,
        access: Access<'_>,
    ) -> (Dist, u32) {
        let mut ep_d = Dist(self.distance.eval(q, self.vector(ep)));
        let mut buf = Vec::with_capacity(self.m0);
        for l in (bottom..=top).rev() {
            loop {
                let mut moved = false;
                self.links(access, ep, l, &mut buf);
                for &n in &buf {
                    let d = Dist(self.distance.eval(q, self.vector(n)));
                    if d < ep_d {
                        (ep, ep_d, moved) = (n, d, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        (ep_d, ep)
    }

    /// hnswlib's neighbour heuristic: keep a candidate only if it is
    /// closer to the base than to every neighbour kept so far.
    fn select(&self, candidates: &[(Dist, u32)], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        for &(d, c) in candidates {
            if kept.len() >= m {
                break;
            }
            let vc = self.vector(c);
            if kept
                .iter()
                .all(|&r| Dist(self.distance.eval(vc, self.vector(r))) > d)
            {
                kept.push(c);
            }
        }
        kept
    }

    /// Inserts node `id` with vector `v`, beside the other workers of one
    /// batch.
    ///
    /// # Safety
    ///
    /// - `id < cap`, `id` is not in the graph, and no other thread inserts
    ///   `id` (so `init_node`'s guarantee holds: nobody can name it yet);
    /// - no [`Frozen`] token lives on this graph during the call.
    ///
    /// # Panics
    ///
    /// If `v.len() != dim` or `id >= cap`.
    unsafe fn insert_one(&self, id: u32, v: &[f32]) {
        let level = self.random_level(id);
        // SAFETY: `id` is not in the graph and this thread alone inserts it
        // (this function's guarantee), so no thread can name it yet.
        unsafe { self.init_node(id, v, level) };
        self.len.fetch_add(1, Ordering::Relaxed);
        let mut e = self.entry.load(Ordering::Acquire);
        if e == EMPTY {
            match self.entry.compare_exchange(
                EMPTY,
                ((level as u64) << 32) | id as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => e = now,
            }
        }
        let top = (e >> 32) as usize;
        let locked = Access::Locked;
        let mut eps = vec![self.descend(v, e as u32, top, level + 1, locked)];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(v, &eps, self.params.ef_construction, l, None, locked);
            let chosen = self.select(&found, self.m);
            {
                let g = self.lock(id);
                self.write_links(&g, id, l, &chosen);
            }
            let cap_l = if l == 0 { self.m0 } else { self.m };
            for &n in &chosen {
                // The one lock this thread holds (invariant 3).
                let g = self.lock(n);
                let mut list = Vec::with_capacity(cap_l + 1);
                self.links_locked(&g, n, l, &mut list);
                if list.contains(&id) {
                    continue;
                }
                if list.len() < cap_l {
                    list.push(id);
                } else {
                    let vn = self.vector(n);
                    let mut cands: Vec<(Dist, u32)> = list
                        .iter()
                        .chain(std::iter::once(&id))
                        .map(|&c| (Dist(self.distance.eval(vn, self.vector(c))), c))
                        .collect();
                    cands.sort_unstable();
                    list = self.select(&cands, cap_l);
                }
                self.write_links(&g, n, l, &list);
            }
            eps = found;
        }
        // Invariant 5: every level of `id` is linked; it may lead now.
        if level > top {
            let mut now = self.entry.load(Ordering::Acquire);
            while ((now >> 32) as usize) < level {
                match self.entry.compare_exchange(
                    now,
                    ((level as u64) << 32) | id as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(seen) => now = seen,
                }
            }
        }
    }
}

impl GraphBackend for NativeGraph {
    fn new(params: GraphParams) -> Result<Self> {
        params.validate()?;
        let m = params.m;
        let m0 = 2 * m;
        // The largest arrays `max_points` can ask for must be addressable,
        // so no later growth can overflow.
        array_bytes("vectors", params.max_points, params.dim, 4)?;
        array_bytes("layer-0 links", params.max_points, m0 + 1, 4)?;
        // Start small and double (copying is amortized); the hint only
        // saves the first few doublings.
        let cap = params
            .prealloc_points()
            .clamp(MIN_CAP, MAX_INITIAL_CAP)
            .min(params.max_points);
        let mut upper = try_vec("upper layers", cap)?;
        upper.resize_with(cap, || UnsafeCell::new(Vec::new()));
        let mut levels = try_vec("levels", cap)?;
        levels.resize_with(cap, || AtomicU8::new(0));
        let mut inserted = IdSet::default();
        inserted.try_reserve_ids(cap)?;
        Ok(NativeGraph {
            distance: GraphDistance(params.metric),
            m,
            m0,
            level_scale: 1.0 / (m as f64).ln(),
            cap,
            vectors: map_array("vectors", cap, params.dim, 4)?,
            links0: map_array("layer-0 links", cap, m0 + 1, 4)?,
            upper,
            levels,
            inserted,
            locks: (0..LOCK_STRIPES).map(|_| TasLock::new()).collect(),
            entry: AtomicU64::new(EMPTY),
            len: AtomicUsize::new(0),
            upper_bytes: AtomicUsize::new(0),
            high: 0,
            release_cursor: 0,
            params,
        })
    }

    fn insert_batch(&mut self, points: &[(u32, &[f32])]) -> Result<()> {
        let Some(max) = validate_batch(points, &self.params, &self.inserted)? else {
            return Ok(());
        };
        // `max < max_points` (validated).
        self.grow(max as usize + 1)?;
        // Nothing below fails: the batch is valid and the arrays hold it.
        for &(id, _) in points {
            self.inserted.insert(id);
        }
        self.high = self.high.max(max as usize + 1);
        let this = &*self;
        points.par_iter().with_min_len(16).for_each(|&(id, v)| {
            // SAFETY:
            // - `id <= max < cap` (grown above);
            // - `id` was not in the graph and is once in the batch
            //   (validated), so this worker alone inserts it;
            // - `insert_batch` holds `&mut self` until every worker is done,
            //   so no `&self` outside these workers exists and no `Frozen`
            //   token lives; the workers call nothing but `insert_one`.
            unsafe { this.insert_one(id, v) }
        });
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
        let e = self.entry.load(Ordering::Acquire);
        if e == EMPTY || k == 0 {
            return Ok(Vec::new());
        }
        // SAFETY: `search` takes `&self` and is not called by
        // `insert_batch`'s workers (they call only `insert_one`); any other
        // `&self` excludes `insert_batch`'s `&mut self`, so no thread writes
        // while the token (bounded by this call) lives.
        let access = Access::Frozen(unsafe { self.frozen() });
        let len = self.len();
        let want = k.min(len);
        let entry = self.descend(query, e as u32, (e >> 32) as usize, 1, access);
        let ef = search_ef(ef, want, len);
        let found = self.search_layer(query, &[entry], ef, 0, Some(tombstones), access);
        Ok(found
            .into_iter()
            .take(want)
            .map(|(d, id)| (id, d.0))
            .collect())
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The bytes the nodes use: their vectors and layer-0 blocks (the
    /// mapped pages they touch; the rest of a mapping is reserved address
    /// space, not memory), plus the upper layers, levels, the inserted-id
    /// bitmap and locks.
    fn memory_bytes(&self) -> usize {
        self.len()
            .saturating_mul(Self::bytes_per_point(&self.params))
            .saturating_add(self.upper_bytes.load(Ordering::Relaxed))
            .saturating_add(self.upper.capacity() * size_of::<UnsafeCell<Vec<u32>>>())
            .saturating_add(self.levels.capacity())
            .saturating_add(self.inserted.heap_bytes())
            .saturating_add(LOCK_STRIPES)
    }

    /// Expected bytes for `points` nodes: each node's vector and layer-0
    /// block, the upper layers of the one node in M that has them (M + 1
    /// ids each, on average 1/(M-1) levels per node), and the per-node
    /// arrays sized to the power of two the arrays double to.
    fn estimate_bytes(params: &GraphParams, points: usize) -> usize {
        let cap = points
            .max(MIN_CAP)
            .checked_next_power_of_two()
            .unwrap_or(points);
        let upper_per_node = (params.m + 1) * 4 / params.m.saturating_sub(1).max(1);
        points
            .saturating_mul(Self::bytes_per_point(params).saturating_add(upper_per_node))
            .saturating_add(cap.saturating_mul(size_of::<UnsafeCell<Vec<u32>>>() + 1))
            .saturating_add(cap / 8)
            .saturating_add(LOCK_STRIPES)
    }

    /// Releases the touched pages of the vectors, then of the layer-0
    /// links, `max_bytes` (rounded up to a page) at a time with
    /// `MADV_DONTNEED` (RSS falls in the call), then frees the upper layers;
    /// the final drop then unmaps address space with no pages behind it.
    /// From the first call the graph reads as empty.
    fn release_step(&mut self, max_bytes: usize) -> usize {
        self.entry.store(EMPTY, Ordering::Relaxed);
        self.len.store(0, Ordering::Relaxed);
        let page = page_size();
        let step = max_bytes
            .clamp(page, isize::MAX as usize / 2)
            .next_multiple_of(page);
        // Touched bytes of each mapping, rounded up to a page: within the
        // mapping (it holds `cap >= high` nodes and is page-rounded).
        let touched = |m: &Mapping, per_node: usize| {
            self.high
                .saturating_mul(per_node)
                .next_multiple_of(page)
                .min(m.len())
        };
        let vectors = touched(&self.vectors, self.params.dim * 4);
        let links = touched(&self.links0, (self.m0 + 1) * 4);
        let (map, offset, end) = if self.release_cursor < vectors {
            (&self.vectors, self.release_cursor, vectors)
        } else if self.release_cursor < vectors + links {
            (&self.links0, self.release_cursor - vectors, links)
        } else if self.upper.capacity() > 0 {
            // The upper layers from the end, `step` bytes of entries at a
            // time (a shrink in place: no copy).
            let entry = size_of::<UnsafeCell<Vec<u32>>>();
            let keep = self.upper.len().saturating_sub((step / entry).max(1));
            let inner: usize = self.upper[keep..]
                .iter_mut()
                .map(|u| u.get_mut().capacity() * 4)
                .sum();
            let cap = self.upper.capacity();
            self.upper.truncate(keep);
            self.upper.shrink_to(keep);
            self.upper_bytes.fetch_sub(inner, Ordering::Relaxed);
            return inner + (cap - self.upper.capacity()) * entry + 1;
        } else {
            let freed = self.levels.capacity();
            self.levels = Vec::new();
            return freed;
        };
        let len = step.min(end - offset);
        // SAFETY:
        // - `offset` is a multiple of the page (a sum of page multiples) and
        //   `offset + len <= end <= map.len()` (`touched`), so the range is
        //   inside the mapping (`advise` checks this again);
        // - `&mut self` excludes every reference into the mapping and every
        //   other thread's access (searches and inserts borrow the graph);
        //   the graph reads as empty from here on, and pages read later
        //   read as zeroes, which are valid f32s and u32 counts.
        let released = unsafe { map.advise(offset, len, Advice::DontNeed) };
        if let Err(error) = released {
            // The final drop unmaps the range anyway.
            tracing::debug!(%error, "madvise of a retired graph failed; its drop frees it");
        }
        self.release_cursor += len;
        len
    }

    fn bytes_per_point(params: &GraphParams) -> usize {
        // Vector, layer-0 block, an upper-layer Vec header and level byte.
        params
            .dim
            .saturating_mul(4)
            .saturating_add(
                params
                    .m
                    .saturating_mul(2)
                    .saturating_add(1)
                    .saturating_mul(4),
            )
            .saturating_add(size_of::<Vec<u32>>() + 1)
    }
}
