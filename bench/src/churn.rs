//! `peers churn`: the engine under a long ingest-and-churn load, once per
//! global allocator, to choose the `ebb` binary's.
//!
//! Each allocator runs in a binary of its own (`churn_glibc`,
//! `churn_jemalloc`, `churn_mimalloc`: the same code, a different
//! `#[global_allocator]`, its purge registered with
//! `ebb_core::os::set_global_allocator_purge` so the engine's controller
//! calls the right one). What goes through the global allocator is what
//! the engine does not keep in its arenas: the caller's Arrow batches, key
//! tables, index structures, tokio, result buffers.
//!
//! The load, on the machine's 2 threads, engine defaults: KV records of
//! 64..=4096 B ingested as Arrow batches of 256, deletes of random live
//! records holding the live set near `--live-bytes`, four gets per record
//! written; every fourth batch, 16 vectors (64-d, with payloads) upserted,
//! random ones deleted over 20k per thread, and 16 searches. RSS is
//! sampled every 250 ms; the figures are throughput and RSS over the last
//! 80 % of the run (steady state) against the live bytes (records,
//! payloads and raw vectors held at the end).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use serde_json::{Value, json};

use crate::Rng;

/// The allocators, each its own binary `churn_<name>`.
pub const ALLOCATORS: [&str; 3] = ["glibc", "jemalloc", "mimalloc"];
const BATCH: usize = 256;
const DIM: usize = 64;
const VECTORS_PER_THREAD: usize = 20_000;
const THREADS: u64 = 2;

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    deleted: AtomicU64,
    gets: AtomicU64,
    vectors: AtomicU64,
    searches: AtomicU64,
}

fn kv_batch(keys: &[u64], sizes: &[usize]) -> RecordBatch {
    let keys_col = BinaryArray::from_iter_values(keys.iter().map(|k| k.to_le_bytes()));
    let values = BinaryArray::from_iter_values(
        keys.iter()
            .zip(sizes)
            .map(|(k, &s)| vec![(*k % 251) as u8; s]),
    );
    RecordBatch::try_from_iter([
        ("key", Arc::new(keys_col) as ArrayRef),
        ("value", Arc::new(values) as ArrayRef),
    ])
    .expect("a well-formed batch")
}

fn vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIM)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect()
}

fn churn_thread(
    engine: &Engine,
    t: u64,
    live_target: u64,
    stop: &AtomicBool,
    c: &Counters,
) -> Result<()> {
    let mut rng = Rng::new(0x5eed ^ t);
    let (mut live, mut live_bytes) = (Vec::<(u64, usize)>::new(), 0u64);
    let mut vectors: Vec<u64> = Vec::new();
    let mut next = t << 56;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let keys: Vec<u64> = (0..BATCH as u64).map(|i| next + i).collect();
        next += BATCH as u64;
        let sizes: Vec<usize> = keys.iter().map(|_| rng.range(64, 4096)).collect();
        engine.ingest_kv("kv", &kv_batch(&keys, &sizes))?;
        for (k, s) in keys.into_iter().zip(sizes) {
            live.push((k, s));
            live_bytes += s as u64;
        }
        c.written.fetch_add(BATCH as u64, Ordering::Relaxed);
        while live_bytes > live_target / THREADS {
            let (k, s) = live.swap_remove(rng.below(live.len() as u64) as usize);
            engine.delete("kv", &k.to_le_bytes())?;
            live_bytes -= s as u64;
            c.deleted.fetch_add(1, Ordering::Relaxed);
        }
        for _ in 0..BATCH * 4 {
            let (k, s) = live[rng.below(live.len() as u64) as usize];
            let v = engine
                .get("kv", &k.to_le_bytes())?
                .context("a live record")?;
            anyhow::ensure!(v.len() == s, "record {k} has {} B, not {s}", v.len());
        }
        c.gets.fetch_add(BATCH as u64 * 4, Ordering::Relaxed);
        round += 1;
        if round.is_multiple_of(4) {
            for _ in 0..16 {
                let id = next;
                next += 1;
                let payload = vec![7u8; rng.range(64, 256)];
                engine.upsert_vector("v", id, &vector(&mut rng), Some(&payload))?;
                vectors.push(id);
            }
            while vectors.len() > VECTORS_PER_THREAD {
                let id = vectors.swap_remove(rng.below(vectors.len() as u64) as usize);
                engine.delete_vector("v", id)?;
            }
            for _ in 0..16 {
                std::hint::black_box(engine.search("v", &vector(&mut rng), 10)?);
            }
            c.vectors.fetch_add(16, Ordering::Relaxed);
            c.searches.fetch_add(16, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The run of one allocator, in this process (whose global allocator it
/// is): `purge` is registered as the engine's purge first.
///
/// # Errors
///
/// If a step of the load fails.
pub fn run(allocator: &str, purge: fn() -> bool, secs: u64, live_target: u64) -> Result<Value> {
    ebb_core::os::set_global_allocator_purge(purge);
    let engine = Engine::open(EngineConfig::default())?;
    engine.create_dataset("kv", DatasetConfig::new(DIM, Metric::L2))?;
    engine.create_dataset("v", DatasetConfig::new(DIM, Metric::L2))?;
    let rss0 = ebb_core::os::rss_bytes()?;
    let (stop, counters) = (AtomicBool::new(false), Counters::default());
    let started = Instant::now();
    let run_for = Duration::from_secs(secs);
    let warm = run_for / 5;
    let mut samples: Vec<u64> = Vec::new();
    let mut at_warm = (0u64, 0u64, 0u64);
    std::thread::scope(|s| -> Result<()> {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (e, stop, c) = (&engine, &stop, &counters);
                s.spawn(move || churn_thread(e, t, live_target, stop, c))
            })
            .collect();
        while started.elapsed() < run_for {
            std::thread::sleep(Duration::from_millis(250));
            if started.elapsed() >= warm {
                if samples.is_empty() {
                    at_warm = (
                        counters.written.load(Ordering::Relaxed),
                        counters.gets.load(Ordering::Relaxed),
                        counters.searches.load(Ordering::Relaxed),
                    );
                }
                samples.push(ebb_core::os::rss_bytes()?);
            }
            if threads.iter().any(|t| t.is_finished()) {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("a churn thread panicked")?;
        }
        Ok(())
    })?;
    let steady = started.elapsed().as_secs_f64() - warm.as_secs_f64();
    let stats = engine.dataset_stats("kv")?;
    let vstats = engine.dataset_stats("v")?;
    // What the caller holds: records, payloads and the raw vectors.
    let live = stats.kv_live_bytes + vstats.payload_live_bytes + vstats.vectors * (DIM as u64) * 4;
    let rss_end = ebb_core::os::rss_bytes()?;
    let budget = engine.budget().stats();
    let breakdown = json!({
        "kv_resident_bytes": stats.kv_resident_bytes,
        "kv_table_bytes": stats.kv_table_bytes,
        "index_bytes": vstats.index_bytes,
        "index_deleted_points": vstats.index_deleted_points,
        "payload_resident_bytes": vstats.payload_resident_bytes,
        "pool_retained_bytes": engine.pool_stats("kv")?.retained_bytes + engine.pool_stats("v")?.retained_bytes,
        "budget_reserved_bytes": budget.reserved_bytes,
        "budget_consumers": budget.consumers.iter().map(|c| (c.name.clone(), c.reserved_bytes)).collect::<Vec<_>>(),
    });
    let release = engine.release_memory()?;
    let rss_released = ebb_core::os::rss_bytes()?;
    let pressure = engine.pressure_stats();
    let compaction = engine.compaction_stats();
    engine.close_blocking()?;
    let mean = samples.iter().sum::<u64>() as f64 / samples.len().max(1) as f64;
    let max = samples.iter().copied().max().unwrap_or(0);
    let per_sec = |total: &AtomicU64, at: u64| (total.load(Ordering::Relaxed) - at) as f64 / steady;
    Ok(json!({
        "allocator": allocator,
        "secs": secs,
        "live_target_bytes": live_target,
        "rss_base": rss0,
        "live_bytes": live,
        "kv_live_bytes": stats.kv_live_bytes,
        "vectors_live": vstats.vectors,
        "records_per_sec": per_sec(&counters.written, at_warm.0),
        "gets_per_sec": per_sec(&counters.gets, at_warm.1),
        "searches_per_sec": per_sec(&counters.searches, at_warm.2),
        "rss_mean": mean,
        "rss_max": max,
        "rss_end": rss_end,
        "rss_after_release": rss_released,
        "rss_mean_over_live": mean / live.max(1) as f64,
        "rss_max_over_live": max as f64 / live.max(1) as f64,
        "rss_after_release_over_live": rss_released as f64 / live.max(1) as f64,
        "release_purged": release.allocator_trimmed,
        "compaction_passes": compaction.passes_total,
        "maintenance_secs_by_kind": {
            "arena": compaction.duration_secs_total[0],
            "index": compaction.duration_secs_total[1],
            "pool": compaction.duration_secs_total[2],
        },
        "maintenance_bytes_released_by_kind": {
            "arena": compaction.bytes_released_total[0],
            "index": compaction.bytes_released_total[1],
            "pool": compaction.bytes_released_total[2],
        },
        "pressure_level_changes": pressure.level_changes_total,
        "at_end": breakdown,
    }))
}

/// A `churn_<allocator>` binary's main: `--secs N --live-bytes N`, one
/// JSON line on stdout.
///
/// # Errors
///
/// On bad arguments or a failed run.
pub fn main(allocator: &str, purge: fn() -> bool) -> Result<()> {
    let args = crate::args::Args::parse(std::env::args().skip(1))?;
    let secs: u64 = args.value("secs", 300)?;
    let live: u64 = args.value("live-bytes", 512 << 20)?;
    println!("{}", run(allocator, purge, secs, live)?);
    Ok(())
}
