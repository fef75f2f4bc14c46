//! Insert 1000 `[u8; 64]` records, then remove them, with handles: ns per
//! insert+remove pair, 1 and 2 threads, for ebb's TypedArena beside slotmap,
//! slab (behind a Mutex for 2 threads) and sharded-slab. One loop body for
//! all of them.
//!
//! Run: `cargo bench -p ebb-bench --bench arena_handles`. Criterion's time is
//! per iteration of 1000 pairs per thread.

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ebb_arena::{SlabConfig, TypedArena};

const BATCH: usize = 1000;
type Rec = [u8; 64];

/// One handle store under test. The impls are `#[inline]`, so `batch`
/// calls each store as directly as the plain slotmap and slab loops do.
trait Store: Sync {
    type Key: Copy;
    fn insert(&self, v: Rec) -> Self::Key;
    fn remove(&self, k: Self::Key);
}

impl Store for TypedArena<Rec> {
    type Key = ebb_arena::Handle<Rec>;
    #[inline]
    fn insert(&self, v: Rec) -> Self::Key {
        TypedArena::insert(self, v).expect("insert")
    }
    #[inline]
    fn remove(&self, k: Self::Key) {
        assert!(TypedArena::remove(self, k));
    }
}

impl Store for Mutex<slotmap::SlotMap<slotmap::DefaultKey, Rec>> {
    type Key = slotmap::DefaultKey;
    #[inline]
    fn insert(&self, v: Rec) -> Self::Key {
        self.lock().unwrap().insert(v)
    }
    #[inline]
    fn remove(&self, k: Self::Key) {
        self.lock().unwrap().remove(k).expect("present");
    }
}

impl Store for Mutex<slab::Slab<Rec>> {
    type Key = usize;
    #[inline]
    fn insert(&self, v: Rec) -> usize {
        self.lock().unwrap().insert(v)
    }
    #[inline]
    fn remove(&self, k: usize) {
        self.lock().unwrap().remove(k);
    }
}

impl Store for sharded_slab::Slab<Rec> {
    type Key = usize;
    #[inline]
    fn insert(&self, v: Rec) -> usize {
        sharded_slab::Slab::insert(self, v).expect("capacity")
    }
    #[inline]
    fn remove(&self, k: usize) {
        assert!(sharded_slab::Slab::remove(self, k));
    }
}

#[inline(never)]
fn batch<S: Store>(s: &S, keys: &mut Vec<S::Key>) {
    keys.clear();
    for i in 0..BATCH {
        keys.push(s.insert(black_box([i as u8; 64])));
    }
    for k in keys.drain(..) {
        s.remove(black_box(k));
    }
}

/// Runs `iters` batches on each of `threads` threads; returns the wall time.
/// One thread runs on the calling thread, as the plain slotmap and slab
/// loops do, so every 1-thread figure comes from the same kind of loop (a
/// thread spawned per sample cost ebb a fresh thread-local entry each time).
fn run<S: Store>(s: &S, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        let mut keys = Vec::with_capacity(BATCH);
        batch(s, &mut keys);
        let t0 = Instant::now();
        for _ in 0..iters {
            batch(s, &mut keys);
        }
        return t0.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut keys = Vec::with_capacity(BATCH);
                batch(s, &mut keys);
                barrier.wait();
                for _ in 0..iters {
                    batch(s, &mut keys);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

/// Single-thread slotmap and slab without a lock, the way one thread uses them.
#[inline(never)]
fn plain_slotmap(
    m: &mut slotmap::SlotMap<slotmap::DefaultKey, Rec>,
    keys: &mut Vec<slotmap::DefaultKey>,
) {
    keys.clear();
    for i in 0..BATCH {
        keys.push(m.insert(black_box([i as u8; 64])));
    }
    for k in keys.drain(..) {
        black_box(m.remove(k));
    }
}

#[inline(never)]
fn plain_slab(m: &mut slab::Slab<Rec>, keys: &mut Vec<usize>) {
    keys.clear();
    for i in 0..BATCH {
        keys.push(m.insert(black_box([i as u8; 64])));
    }
    for k in keys.drain(..) {
        black_box(m.remove(k));
    }
}

fn handles(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("insert_remove_1000_{threads}t"));
        g.throughput(Throughput::Elements((BATCH * threads) as u64));
        // 50 samples over 4 s: this VM's neighbours move single runs by
        // 20 %, and the 1-thread goal is a ratio of two such medians.
        g.sample_size(50)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4));
        let id = |name: &str| BenchmarkId::new(name, format!("{threads}t"));
        let arena: TypedArena<Rec> = TypedArena::new(SlabConfig::default()).expect("arena");
        g.bench_function(id("ebb_typed_arena"), |b| {
            b.iter_custom(|n| run(&arena, threads, n))
        });
        let sharded = sharded_slab::Slab::new();
        g.bench_function(id("sharded_slab"), |b| {
            b.iter_custom(|n| run(&sharded, threads, n))
        });
        if threads == 1 {
            g.bench_function(id("slotmap"), |b| {
                let mut m = slotmap::SlotMap::new();
                let mut keys = Vec::with_capacity(BATCH);
                b.iter(|| plain_slotmap(&mut m, &mut keys))
            });
            g.bench_function(id("slab"), |b| {
                let mut m = slab::Slab::new();
                let mut keys = Vec::with_capacity(BATCH);
                b.iter(|| plain_slab(&mut m, &mut keys))
            });
        } else {
            let slotmap = Mutex::new(slotmap::SlotMap::new());
            g.bench_function(id("slotmap_mutex"), |b| {
                b.iter_custom(|n| run(&slotmap, threads, n))
            });
            let slab = Mutex::new(slab::Slab::new());
            g.bench_function(id("slab_mutex"), |b| {
                b.iter_custom(|n| run(&slab, threads, n))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, handles);
criterion_main!(benches);
