//! The `peers leak-overhead` scenario: what ebb-leak costs when left on.
//!
//! - track + drop of one guard at each level, beside the same loop without
//!   tracking (the absolute cost of a guard);
//! - acquire / crc32c over 4 KiB / release, the shape of a real guarded
//!   operation, with and without a Sampled(128) guard (the relative cost);
//! - an allocation-heavy loop under the TrackingAllocator beside the bare
//!   system allocator, each in its own binary (`alloc_tracked`,
//!   `alloc_bare`): the global allocator is fixed per binary.
//!
//! Loops run on 1 and 2 threads at once; `ns_per_op` is per thread.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use ebb_leak::{ResourceKind, ResourceTracker, TrackerConfig, TrackingLevel};

use crate::Rng;

/// Runs `op` on `threads` threads for about `time`; per-thread ns per op.
pub fn per_thread_ns(threads: usize, time: Duration, op: &(dyn Fn(u64) + Sync)) -> f64 {
    let barrier = Barrier::new(threads);
    let per: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    op(0);
                    barrier.wait();
                    let start = Instant::now();
                    let mut ops = 0u64;
                    let mut batch = 64u64;
                    while start.elapsed() < time {
                        let t0 = Instant::now();
                        for i in 0..batch {
                            op(ops + i);
                        }
                        ops += batch;
                        if t0.elapsed() < Duration::from_millis(1) {
                            batch *= 2;
                        }
                    }
                    start.elapsed().as_nanos() as f64 / ops as f64
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    per.iter().sum::<f64>() / per.len() as f64
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct OverheadRow {
    /// What was measured.
    pub what: String,
    /// Threads at once.
    pub threads: usize,
    /// With ebb-leak.
    pub ns_per_op: f64,
    /// Without.
    pub baseline_ns_per_op: f64,
}

impl OverheadRow {
    /// Overhead in percent of the baseline.
    pub fn overhead_pct(&self) -> f64 {
        100.0 * (self.ns_per_op - self.baseline_ns_per_op) / self.baseline_ns_per_op
    }

    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "what": self.what,
            "threads": self.threads,
            "ns_per_op": (self.ns_per_op * 100.0).round() / 100.0,
            "baseline_ns_per_op": (self.baseline_ns_per_op * 100.0).round() / 100.0,
            "overhead_pct": (self.overhead_pct() * 100.0).round() / 100.0,
        })
        .to_string()
    }
}

fn tracker(level: TrackingLevel) -> ResourceTracker {
    ResourceTracker::new(
        format!("bench-{level:?}"),
        TrackerConfig::default().with_level(level),
    )
}

/// Median of `rounds` alternating measurements of `a` and `b`.
fn paired(rounds: usize, mut a: impl FnMut() -> f64, mut b: impl FnMut() -> f64) -> (f64, f64) {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        xs.push(a());
        ys.push(b());
    }
    (median(&mut xs), median(&mut ys))
}

/// The median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Guard rows: track+drop per level, and the crc32c loop.
pub fn guard_rows(threads: &[usize], time: Duration) -> Vec<OverheadRow> {
    let mut rows = Vec::new();
    for &t in threads {
        let untracked = |_: u64| {
            black_box(ebb_leak::Tracked::inert());
        };
        for level in [
            TrackingLevel::Disabled,
            TrackingLevel::Sampled(128),
            TrackingLevel::Paranoid,
        ] {
            let tracker = tracker(level);
            let tracked = |_: u64| {
                let g = tracker.track(ResourceKind::Iterator, "bench");
                black_box(&g);
            };
            let rounds = if level == TrackingLevel::Paranoid {
                1
            } else {
                5
            };
            let (with, without) = paired(
                rounds,
                || per_thread_ns(t, time, &tracked),
                || per_thread_ns(t, time, &untracked),
            );
            rows.push(OverheadRow {
                what: format!("track+drop {level:?}"),
                threads: t,
                ns_per_op: with,
                baseline_ns_per_op: without,
            });
        }
        let data: Vec<u8> = {
            let mut rng = Rng::new(9);
            (0..4096).map(|_| rng.next_u64() as u8).collect()
        };
        let sampled = tracker(TrackingLevel::Sampled(128));
        let guarded = |_: u64| {
            let g = sampled.track(ResourceKind::Iterator, "crc");
            black_box(crc32c::crc32c(black_box(&data)));
            drop(g);
        };
        let plain = |_: u64| {
            black_box(crc32c::crc32c(black_box(&data)));
        };
        let (with, without) = paired(
            7,
            || per_thread_ns(t, time, &guarded),
            || per_thread_ns(t, time, &plain),
        );
        rows.push(OverheadRow {
            what: "acquire/crc32c 4 KiB/release Sampled(128)".into(),
            threads: t,
            ns_per_op: with,
            baseline_ns_per_op: without,
        });
    }
    rows
}

/// The allocation-heavy loop: each thread keeps a ring of 1024 boxes of
/// 16..=4096 bytes and replaces one per op (a free and an allocation).
pub fn alloc_loop(threads: usize, time: Duration) -> f64 {
    /// Slots of live boxes, the size generator, the next slot.
    type Ring = (Vec<Option<Box<[u8]>>>, Rng, usize);
    per_thread_ns(threads, time, &|_| {
        thread_local! {
            static RING: std::cell::RefCell<Ring> =
                std::cell::RefCell::new(((0..1024).map(|_| None).collect(), Rng::new(3), 0));
        }
        RING.with(|r| {
            let mut r = r.borrow_mut();
            let (ring, rng, at) = &mut *r;
            let len = rng.range(16, 4096);
            *at = (*at + 1) % ring.len();
            ring[*at] = Some(black_box(vec![0u8; len].into_boxed_slice()));
        });
    })
}

/// Entry point of the two allocator binaries: prints one JSON line per
/// thread count.
pub fn alloc_main(allocator: &str) {
    let millis: u64 = std::env::var("EBB_ALLOC_MILLIS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for threads in [1, 2] {
        let ns = alloc_loop(threads, Duration::from_millis(millis));
        println!(
            "{}",
            serde_json::json!({"allocator": allocator, "threads": threads, "ns_per_op": ns})
        );
    }
}
