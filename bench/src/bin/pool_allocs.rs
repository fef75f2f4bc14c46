//! `pool_allocs`: counts heap allocations of a record encode/decode loop
//! (length-prefixed records into a message buffer, decoded into one buffer
//! per record) with and without ebb-pool, under a counting global
//! allocator. Prints one JSON line per mode and the reduction.
//!
//! ```text
//! pool_allocs [--batches N] [--records R] [--seed S]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, ensure};
use ebb_bench::Rng;
use ebb_bench::args::Args;
use ebb_bench::pool::codec;
use ebb_pool::{BufferPool, ObjectPool, ObjectPoolConfig, PoolConfig};

/// Counts every allocation (alloc, alloc_zeroed, realloc) into globals.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counters are atomics
// and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, u64, u64) {
    let (a0, b0) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let out = f();
    (
        out,
        ALLOCATIONS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
    )
}

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let batches: usize = args.value("batches", 10_000)?;
    let records: usize = args.value("records", 64)?;
    let seed: u64 = args.value("seed", 7)?;
    let mut rng = Rng::new(seed);
    let work: Vec<_> = (0..batches)
        .map(|_| codec::batch(&mut rng, records))
        .collect();

    let (sum_plain, allocs_plain, bytes_plain) = counted(|| {
        work.iter()
            .fold(0u64, |a, b| a ^ codec::round_trip_plain(b))
    });
    // The pools are made inside the count: their own allocations count.
    let (sum_pooled, allocs_pooled, bytes_pooled) = counted(|| {
        let buffers = BufferPool::new(
            PoolConfig::default()
                .with_tiers([64, 256, 1024, 4096, 16 << 10, 64 << 10, 256 << 10])
                .with_max_retained(256)
                .with_zero_on_return(false),
        )
        .expect("valid config");
        let lists = ObjectPool::new(ObjectPoolConfig::default(), Vec::new).expect("valid config");
        work.iter().fold(0u64, |a, b| {
            a ^ codec::round_trip_pooled(b, &buffers, &lists)
        })
    });
    ensure!(
        sum_plain == sum_pooled,
        "the two loops decoded different bytes"
    );
    for (pool, allocations, bytes) in [
        (false, allocs_plain, bytes_plain),
        (true, allocs_pooled, bytes_pooled),
    ] {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "encode_decode",
                "pool": pool,
                "batches": batches,
                "records_per_batch": records,
                "allocations": allocations,
                "bytes_allocated": bytes,
            })
        );
    }
    let fewer = 1.0 - allocs_pooled as f64 / allocs_plain as f64;
    eprintln!(
        "encode/decode {batches} batches x {records} records: {allocs_plain} allocations plain, \
         {allocs_pooled} pooled: {:.2} % fewer (goal >= 95 %)",
        fewer * 100.0
    );
    Ok(())
}
