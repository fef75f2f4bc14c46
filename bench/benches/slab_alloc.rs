//! Allocate 10k records of seeded sizes, write their first and last byte,
//! free them in shuffled order: ns per alloc+free pair, 1 and 2 threads, for
//! SlabArena beside Box on the system allocator, jemalloc and mimalloc
//! called directly, and bumpalo (alloc then reset: it cannot free one
//! record). One loop body for all of them.
//!
//! Run: `cargo bench -p ebb-bench --bench slab_alloc`. Criterion's time is
//! per iteration of 10k pairs per thread; RESULTS.md divides.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ebb_bench::{Rng, permutation};
use ebb_slab::{RawSlabAlloc, SlabArena, SlabConfig};

const RECORDS: usize = 10_000;

/// One allocator under test: the same loop drives every implementation.
trait Subject: Sync {
    type Ptr: Copy + Send;
    fn alloc(&self, size: usize) -> Self::Ptr;
    fn bytes(p: Self::Ptr) -> *mut u8;
    fn free(&self, p: Self::Ptr, size: usize);
}

#[derive(Clone, Copy)]
struct Raw(*mut u8);
// SAFETY: a plain address handed between the bench's own threads.
unsafe impl Send for Raw {}

struct Global<A: GlobalAlloc + Sync>(A);

impl<A: GlobalAlloc + Sync> Subject for Global<A> {
    type Ptr = Raw;
    #[inline]
    fn alloc(&self, size: usize) -> Raw {
        // SAFETY: size is non-zero (64..=4096) and alignment 8 is valid.
        let p = unsafe { self.0.alloc(Layout::from_size_align_unchecked(size, 8)) };
        assert!(!p.is_null(), "allocation failed");
        Raw(p)
    }
    #[inline]
    fn bytes(p: Raw) -> *mut u8 {
        p.0
    }
    #[inline]
    fn free(&self, p: Raw, size: usize) {
        // SAFETY: `p` came from `alloc` with this same layout, freed once.
        unsafe {
            self.0
                .dealloc(p.0, Layout::from_size_align_unchecked(size, 8))
        }
    }
}

impl Subject for SlabArena {
    type Ptr = RawSlabAlloc;
    #[inline]
    fn alloc(&self, size: usize) -> RawSlabAlloc {
        // SAFETY: size is non-zero and alignment 8 is valid.
        let layout = unsafe { Layout::from_size_align_unchecked(size, 8) };
        SlabArena::alloc(self, layout)
            .expect("slab alloc")
            .into_raw()
    }
    #[inline]
    fn bytes(p: RawSlabAlloc) -> *mut u8 {
        p.ptr.as_ptr()
    }
    #[inline]
    fn free(&self, p: RawSlabAlloc, _size: usize) {
        // SAFETY: `p` came from `into_raw` of this arena, rebuilt once.
        SlabArena::free(self, unsafe { self.from_raw(p) }).expect("own allocation");
    }
}

struct Workload {
    sizes: Vec<usize>,
    order: Vec<usize>,
}

fn workload(kind: &str, seed: u64) -> Workload {
    let mut rng = Rng::new(seed);
    let sizes = (0..RECORDS)
        .map(|_| match kind {
            "64" => 64,
            "256" => 256,
            "4096" => 4096,
            _ => rng.range(64, 4096),
        })
        .collect();
    let order = permutation(&mut rng, RECORDS);
    Workload { sizes, order }
}

#[inline]
fn touch(p: *mut u8, size: usize) {
    // SAFETY: `p` points to `size >= 1` writable bytes just allocated.
    unsafe {
        p.write(1);
        p.add(size - 1).write(2);
    }
}

/// The loop: allocate all, write first and last byte, free in shuffled order.
#[inline(never)]
fn run<S: Subject>(s: &S, w: &Workload, ptrs: &mut Vec<Option<S::Ptr>>) {
    ptrs.clear();
    for &size in &w.sizes {
        let p = s.alloc(size);
        touch(S::bytes(p), size);
        ptrs.push(Some(p));
    }
    for &i in &w.order {
        let p = ptrs[i].take().expect("freed once");
        s.free(black_box(p), w.sizes[i]);
    }
}

#[inline(never)]
fn run_bump(bump: &mut bumpalo::Bump, w: &Workload, ptrs: &mut Vec<*mut u8>) {
    ptrs.clear();
    for &size in &w.sizes {
        // SAFETY: valid non-zero layout.
        let p = bump
            .alloc_layout(unsafe { Layout::from_size_align_unchecked(size, 8) })
            .as_ptr();
        touch(p, size);
        ptrs.push(p);
    }
    black_box(&ptrs);
    bump.reset();
}

/// Starts `threads` threads running `body`, which sets up, waits on the
/// barrier, runs its iterations, and waits again; returns the wall time
/// between the two waits.
fn threaded<F: Fn(&Barrier) + Sync>(threads: usize, body: F) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| body(&barrier));
        }
        barrier.wait();
        let t0 = Instant::now();
        barrier.wait();
        t0.elapsed()
    })
}

fn bench_subject<S: Subject>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    kind: &str,
    threads: usize,
    s: &S,
) {
    let id = BenchmarkId::new(name, format!("{kind}/{threads}t"));
    c.bench_function(id, |b| {
        b.iter_custom(|iters| {
            threaded(threads, |barrier| {
                let w = workload(kind, 1);
                let mut ptrs = Vec::with_capacity(RECORDS);
                barrier.wait();
                for _ in 0..iters {
                    run(s, &w, &mut ptrs);
                }
                barrier.wait();
            })
        })
    });
}

fn slab_alloc(c: &mut Criterion) {
    for threads in [1usize, 2] {
        for kind in ["64", "256", "4096", "mixed"] {
            let mut g = c.benchmark_group(format!("alloc_free_10k_{kind}_{threads}t"));
            g.throughput(Throughput::Elements((RECORDS * threads) as u64));
            g.sample_size(20)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(2));
            let arena = SlabArena::new(SlabConfig::default()).expect("arena");
            bench_subject(&mut g, "ebb_slab", kind, threads, &arena);
            // Same arena with a warm reserve of 16 slabs (32 MiB) kept
            // resident instead of released: the churn of this loop then
            // refaults nothing.
            let warm =
                SlabArena::new(SlabConfig::default().with_max_warm_slabs(16)).expect("arena");
            bench_subject(&mut g, "ebb_slab_warm16", kind, threads, &warm);
            bench_subject(&mut g, "system", kind, threads, &Global(System));
            bench_subject(
                &mut g,
                "jemalloc",
                kind,
                threads,
                &Global(tikv_jemallocator::Jemalloc),
            );
            bench_subject(
                &mut g,
                "mimalloc",
                kind,
                threads,
                &Global(mimalloc::MiMalloc),
            );
            g.bench_function(
                BenchmarkId::new("bumpalo", format!("{kind}/{threads}t")),
                |b| {
                    b.iter_custom(|iters| {
                        threaded(threads, |barrier| {
                            let w = workload(kind, 1);
                            let mut bump = bumpalo::Bump::new();
                            let mut ptrs = Vec::with_capacity(RECORDS);
                            // Warm the chunk so reset reuses it, as a long-lived bump would.
                            run_bump(&mut bump, &w, &mut ptrs);
                            barrier.wait();
                            for _ in 0..iters {
                                run_bump(&mut bump, &w, &mut ptrs);
                            }
                            barrier.wait();
                        })
                    })
                },
            );
            g.finish();
        }
    }
}

criterion_group!(benches, slab_alloc);
criterion_main!(benches);
