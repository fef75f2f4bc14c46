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
//! Invariants:
//! 1. A node's vector, level and (empty) upper blocks are written before
//!    any link to it exists; links are written and read only under the
//!    node's stripe lock, so a reader that reaches a node through a link
//!    sees its vector (the lock orders the writes before the read).
//! 2. At most one stripe lock is held at a time by any thread, so striped
//!    locks cannot deadlock.
//! 3. The arrays grow only under `&mut self` (before a batch), so every
//!    id a parallel insert or a search touches is within capacity.
//! 4. `entry` packs (top level, entry id); it only moves to a node whose
//!    links at every level up to its own are written.

use std::cell::{RefCell, UnsafeCell};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;

use ebb_core::os::Mapping;
use ebb_core::sync::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use rayon::prelude::*;

use crate::backend::{GraphBackend, GraphDistance, GraphParams, Tombstones};

const LOCK_STRIPES: usize = 1 << 14;
const EMPTY: u64 = u64::MAX;
const MAX_LEVEL: usize = 16;

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
pub struct NativeGraph {
    params: GraphParams,
    distance: GraphDistance,
    m: usize,
    m0: usize,
    level_scale: f64,
    cap: usize,
    vectors: Mapping,
    links0: Mapping,
    upper: Vec<UnsafeCell<Vec<u32>>>,
    levels: Vec<AtomicU8>,
    locks: Box<[AtomicBool]>,
    entry: AtomicU64,
    len: AtomicUsize,
}

// SAFETY: the mappings and `upper` are written only under the node's stripe
// lock or before the node is reachable (invariant 1), and grown only under
// `&mut self` (invariant 3); everything else is atomic. No part is tied to
// the creating thread.
unsafe impl Sync for NativeGraph {}
// SAFETY: as above.
unsafe impl Send for NativeGraph {}

struct StripeLock<'a>(&'a AtomicBool);

impl Drop for StripeLock<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

thread_local! {
    /// Per-thread visited marks: `marks[id] == stamp` means visited.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
    static LEVEL_RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn mapping(bytes: usize) -> Mapping {
    Mapping::new(bytes.max(1), 64).unwrap_or_else(|e| panic!("mapping {bytes} bytes: {e}"))
}

impl NativeGraph {
    fn vector(&self, id: u32) -> &[f32] {
        debug_assert!((id as usize) < self.cap);
        // SAFETY:
        // - `id < cap` (invariant 3), so the range lies inside `vectors`;
        // - the mapping is 64-byte aligned and holds f32s written before
        //   the node was reachable (invariant 1), or zeros.
        unsafe {
            std::slice::from_raw_parts(
                (self.vectors.as_ptr() as *const f32).add(id as usize * self.params.dim),
                self.params.dim,
            )
        }
    }

    fn lock(&self, id: u32) -> StripeLock<'_> {
        let l = &self.locks[id as usize % LOCK_STRIPES];
        let mut spins = 0u32;
        while l.swap(true, Ordering::Acquire) {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        StripeLock(l)
    }

    /// The layer-0 block of `id`: count, then m0 ids.
    ///
    /// # Safety
    ///
    /// The caller holds `id`'s stripe lock, or no insert can run (a
    /// search: the trait's contract), `id < cap`, and the caller holds no
    /// other reference to this block.
    #[expect(
        clippy::mut_from_ref,
        reason = "a block of a shared mapping, made exclusive by its stripe lock (# Safety)"
    )]
    unsafe fn block0(&self, id: u32) -> &mut [u32] {
        // SAFETY: within capacity by the caller's guarantee; exclusive by
        // the stripe lock (invariant 1).
        unsafe {
            std::slice::from_raw_parts_mut(
                (self.links0.as_ptr() as *mut u32).add(id as usize * (self.m0 + 1)),
                self.m0 + 1,
            )
        }
    }

    /// Copies `id`'s links at `level` into `out`, under the node's stripe
    /// lock (inserts of one batch run in parallel).
    fn neighbors(&self, id: u32, level: usize, out: &mut Vec<u32>) {
        let _g = self.lock(id);
        self.read_links(id, level, out);
    }

    /// Copies `id`'s links at `level` into `out` without locking: for
    /// searches, which never run beside an insert (the trait's contract:
    /// `insert_batch` takes `&mut self`), and for callers holding the lock.
    fn read_links(&self, id: u32, level: usize, out: &mut Vec<u32>) {
        out.clear();
        if level == 0 {
            // SAFETY: the stripe lock is held, or no insert runs (the
            // callers' guarantee), and `id < cap`.
            let b = unsafe { self.block0(id) };
            let n = b[0] as usize;
            out.extend_from_slice(&b[1..1 + n]);
        } else {
            // SAFETY: under the stripe lock, or no insert runs (the
            // callers' guarantee; invariant 1).
            let up = unsafe { &*self.upper[id as usize].get() };
            let base = (level - 1) * (self.m + 1);
            if base < up.len() {
                let n = up[base] as usize;
                out.extend_from_slice(&up[base + 1..base + 1 + n]);
            }
        }
    }

    /// Replaces `id`'s links at `level`. The caller holds the stripe lock.
    fn write_links(&self, id: u32, level: usize, links: &[u32]) {
        if level == 0 {
            // SAFETY: the caller holds the stripe lock and `id < cap`.
            let b = unsafe { self.block0(id) };
            let n = links.len().min(self.m0);
            b[0] = n as u32;
            b[1..1 + n].copy_from_slice(&links[..n]);
        } else {
            // SAFETY: the caller holds the stripe lock (invariant 1).
            let up = unsafe { &mut *self.upper[id as usize].get() };
            let base = (level - 1) * (self.m + 1);
            if base < up.len() {
                let n = links.len().min(self.m);
                up[base] = n as u32;
                up[base + 1..base + 1 + n].copy_from_slice(&links[..n]);
            }
        }
    }

    fn random_level(&self, id: u32) -> usize {
        LEVEL_RNG.with(|r| {
            let mut x = r.get();
            if x == 0 {
                x = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            r.set(x);
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            ((-u.ln() * self.level_scale) as usize).min(MAX_LEVEL)
        })
    }

    fn ensure_capacity(&mut self, need: usize) {
        if need <= self.cap {
            return;
        }
        let cap = need.max(self.cap * 2).max(1024);
        let dim = self.params.dim;
        let vectors = mapping(cap * dim * 4);
        let links0 = mapping(cap * (self.m0 + 1) * 4);
        // SAFETY: both old mappings hold `self.cap` nodes and the new ones
        // more; distinct mappings never overlap; `&mut self` excludes every
        // reader and writer (invariant 3).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.vectors.as_ptr(),
                vectors.as_ptr(),
                self.cap * dim * 4,
            );
            std::ptr::copy_nonoverlapping(
                self.links0.as_ptr(),
                links0.as_ptr(),
                self.cap * (self.m0 + 1) * 4,
            );
        }
        self.vectors = vectors;
        self.links0 = links0;
        self.upper.resize_with(cap, || UnsafeCell::new(Vec::new()));
        self.levels.resize_with(cap, || AtomicU8::new(0));
        self.cap = cap;
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
        locked: bool,
    ) -> Vec<(Dist, u32)> {
        VISITED.with(|v| {
            let mut v = v.borrow_mut();
            let (marks, stamp) = &mut *v;
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
                if locked {
                    self.neighbors(c, level, &mut buf);
                } else {
                    self.read_links(c, level, &mut buf);
                }
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
        })
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
        locked: bool,
    ) -> (Dist, u32) {
        let mut ep_d = Dist(self.distance.eval(q, self.vector(ep)));
        let mut buf = Vec::with_capacity(self.m0);
        for l in (bottom..=top).rev() {
            loop {
                let mut moved = false;
                if locked {
                    self.neighbors(ep, l, &mut buf);
                } else {
                    self.read_links(ep, l, &mut buf);
                }
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

    fn insert_one(&self, id: u32, v: &[f32]) {
        let dim = self.params.dim;
        let level = self.random_level(id);
        {
            let _g = self.lock(id);
            // SAFETY: `id < cap` (invariant 3); no link to `id` exists yet
            // (invariant 1), and its stripe lock is held.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    v.as_ptr(),
                    (self.vectors.as_ptr() as *mut f32).add(id as usize * dim),
                    dim,
                );
                *self.upper[id as usize].get() = vec![0; level * (self.m + 1)];
            }
            self.levels[id as usize].store(level as u8, Ordering::Relaxed);
        }
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
        let mut eps = vec![self.descend(v, e as u32, top, level + 1, true)];
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(v, &eps, self.params.ef_construction, l, None, true);
            let chosen = self.select(&found, self.m);
            {
                let _g = self.lock(id);
                self.write_links(id, l, &chosen);
            }
            let cap_l = if l == 0 { self.m0 } else { self.m };
            for &n in &chosen {
                let _g = self.lock(n);
                let mut list = Vec::with_capacity(cap_l + 1);
                // The lock is held: read without taking it again (invariant 2).
                self.read_links(n, l, &mut list);
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
                self.write_links(n, l, &list);
            }
            eps = found;
        }
        // Invariant 4: every level of `id` is linked; it may lead now.
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
    fn new(params: GraphParams) -> Self {
        let m = params.m;
        let m0 = 2 * m;
        // Start small and double (copying is amortized); the hint only
        // saves the first few doublings.
        let cap = params.capacity_hint.clamp(1024, 1 << 16);
        NativeGraph {
            distance: GraphDistance(params.metric),
            m,
            m0,
            level_scale: 1.0 / (m as f64).ln(),
            cap,
            vectors: mapping(cap * params.dim * 4),
            links0: mapping(cap * (m0 + 1) * 4),
            upper: (0..cap).map(|_| UnsafeCell::new(Vec::new())).collect(),
            levels: (0..cap).map(|_| AtomicU8::new(0)).collect(),
            locks: (0..LOCK_STRIPES).map(|_| AtomicBool::new(false)).collect(),
            entry: AtomicU64::new(EMPTY),
            len: AtomicUsize::new(0),
            params,
        }
    }

    fn insert_batch(&mut self, points: &[(u32, &[f32])]) {
        let Some(max) = points.iter().map(|p| p.0).max() else {
            return;
        };
        self.ensure_capacity(max as usize + 1);
        let this = &*self;
        points
            .par_iter()
            .with_min_len(16)
            .for_each(|&(id, v)| this.insert_one(id, v));
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        tombstones: &Tombstones,
    ) -> Vec<(u32, f32)> {
        let e = self.entry.load(Ordering::Acquire);
        if e == EMPTY || k == 0 {
            return Vec::new();
        }
        // No insert runs beside a search (the trait's contract): read the
        // links without their locks.
        let entry = self.descend(query, e as u32, (e >> 32) as usize, 1, false);
        let found = self.search_layer(query, &[entry], ef.max(k), 0, Some(tombstones), false);
        found.into_iter().take(k).map(|(d, id)| (id, d.0)).collect()
    }

    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The bytes the nodes use: their vectors and layer-0 blocks (the
    /// mapped pages they touch; the rest of a mapping is reserved address
    /// space, not memory), plus the upper layers, levels and locks.
    fn memory_bytes(&self) -> usize {
        let upper: usize = self
            .upper
            .iter()
            // SAFETY: `&self` without `&mut`: no insert runs (inserts only
            // happen inside `insert_batch`, which takes `&mut self`), so no
            // write to any `upper` Vec races with this read.
            .map(|u| unsafe { (*u.get()).capacity() } * 4)
            .sum();
        self.len() * Self::bytes_per_point(&self.params)
            + upper
            + self.upper.capacity() * size_of::<Vec<u32>>()
            + self.levels.capacity()
            + LOCK_STRIPES
    }

    fn bytes_per_point(params: &GraphParams) -> usize {
        // Vector, layer-0 block, an upper-layer Vec header and level byte.
        4 * params.dim + 4 * (2 * params.m + 1) + size_of::<Vec<u32>>() + 1
    }
}
