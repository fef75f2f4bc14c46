//! `hnsw_bench` (run by `peers hnsw`): the vector index through its life —
//! fresh, 50 % deleted, rebuilt — beside a fresh build of exactly the live
//! set and a plain hnsw_rs build of it, with recall against brute force,
//! single-thread QPS, the index's memory figure, heap bytes counted by a
//! tracking global allocator, RSS, and p99 search latency during a
//! one-thread rebuild against idle.
//!
//! ```text
//! hnsw_bench [--json] [--n N] [--dim D] [--nq Q] [--seed S] [--data DIR]
//! ```
//! `--data DIR` reads `base.f32` and `queries.f32` (raw little-endian f32
//! rows) and `meta.json` (`{"n","nq","dim"}`); without it the data is
//! generated (clustered, seeded) and written to `--write-data DIR` when
//! given, for `bench/hnswlib_compare.py`.

use std::alloc::System;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ebb_bench::Rng;
use ebb_bench::args::Args;
use ebb_hnsw::{
    GraphBackend, GraphDistance, HnswRsGraph, IndexConfig, Metric, NativeGraph, VectorIndex,
};
use ebb_leak::{TrackingAllocator, alloc};
use hnsw_rs::hnsw::Hnsw;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: TrackingAllocator<System> = TrackingAllocator::new(System);

const K: usize = 10;
const EF: usize = 64;

struct Data {
    n: usize,
    dim: usize,
    base: Vec<f32>,
    queries: Vec<f32>,
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn write_f32(path: &Path, v: &[f32]) -> Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}

fn load(args: &Args) -> Result<Data> {
    let dir: String = args.value("data", String::new())?;
    if !dir.is_empty() {
        let dir = Path::new(&dir);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
        let dim = meta["dim"].as_u64().context("meta.json: dim")? as usize;
        let base = read_f32(&dir.join("base.f32"))?;
        let queries = read_f32(&dir.join("queries.f32"))?;
        return Ok(Data {
            n: base.len() / dim,
            dim,
            base,
            queries,
        });
    }
    let n: usize = args.value("n", 100_000)?;
    let dim: usize = args.value("dim", 128)?;
    let nq: usize = args.value("nq", 200)?;
    let seed: u64 = args.value("seed", 7)?;
    let mut rng = Rng::new(seed);
    let mut base = ebb_testkit::clustered_vectors(&mut rng, n + nq, dim, 64, 0.3);
    let queries = base.split_off(n * dim);
    let out: String = args.value("write-data", String::new())?;
    if !out.is_empty() {
        let out = Path::new(&out);
        std::fs::create_dir_all(out)?;
        write_f32(&out.join("base.f32"), &base)?;
        write_f32(&out.join("queries.f32"), &queries)?;
        std::fs::write(
            out.join("meta.json"),
            serde_json::json!({"n": n, "nq": nq, "dim": dim}).to_string(),
        )?;
    }
    Ok(Data {
        n,
        dim,
        base,
        queries,
    })
}

/// Exact top-K of the live rows for each query (brute force, parallel).
fn truth(data: &Data, live: &[bool]) -> Vec<Vec<u64>> {
    use rayon::prelude::*;
    let dist = GraphDistance(Metric::L2);
    data.queries
        .par_chunks_exact(data.dim)
        .map(|q| {
            let mut best: Vec<(f32, u64)> = data
                .base
                .chunks_exact(data.dim)
                .enumerate()
                .filter(|(i, _)| live[*i])
                .map(|(i, v)| (dist.eval(q, v), i as u64))
                .collect();
            if best.len() > K {
                best.select_nth_unstable_by(K, |a, b| a.0.total_cmp(&b.0));
                best.truncate(K);
            }
            // A fresh Vec: collecting in place would keep the scratch
            // buffer's capacity alive and skew the heap figures.
            let mut top = Vec::with_capacity(K);
            top.extend(best.iter().map(|&(_, id)| id));
            top
        })
        .collect()
}

struct Measured {
    recall: f64,
    qps: f64,
}

fn measure<B: GraphBackend>(index: &VectorIndex<B>, data: &Data, truth: &[Vec<u64>]) -> Measured {
    // QPS over at least 0.5 s and 2000 searches (the query set, repeated),
    // best of three such runs (the machine is a noisy VM).
    let nq = data.queries.len() / data.dim;
    let mut qps: f64 = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let mut done = 0usize;
        while done < 2000 || start.elapsed() < Duration::from_millis(500) {
            for q in data.queries.chunks_exact(data.dim) {
                std::hint::black_box(index.search_with_ef(q, K, EF).expect("valid query"));
            }
            done += nq;
        }
        qps = qps.max(done as f64 / start.elapsed().as_secs_f64());
    }
    let results: Vec<Vec<u64>> = data
        .queries
        .chunks_exact(data.dim)
        .map(|q| {
            index
                .search_with_ef(q, K, EF)
                .expect("valid query")
                .into_iter()
                .map(|h| h.0)
                .collect()
        })
        .collect();
    let hits: usize = results
        .iter()
        .zip(truth)
        .map(|(r, t)| r.iter().filter(|id| t.contains(id)).count())
        .sum();
    Measured {
        recall: hits as f64 / (truth.len() * K) as f64,
        qps,
    }
}

fn heap() -> i64 {
    alloc::stats().current_bytes
}

fn rss() -> u64 {
    ebb_core::os::rss_bytes().unwrap_or(0)
}

fn purge() {
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn build<B: GraphBackend>(data: &Data, ids: impl Iterator<Item = usize>) -> (VectorIndex<B>, f64) {
    let index = VectorIndex::<B>::with_backend(
        IndexConfig::new(data.dim, Metric::L2)
            .with_m(16)
            .with_ef_construction(200)
            .with_ef_search(EF)
            .with_capacity(data.n.max(1)),
    )
    .expect("valid config");
    let points: Vec<(u64, &[f32])> = ids
        .map(|i| (i as u64, &data.base[i * data.dim..(i + 1) * data.dim]))
        .collect();
    let start = Instant::now();
    index
        .insert_batch(&points, &CancellationToken::new())
        .expect("valid points");
    index.flush_delta().expect("flush");
    (index, start.elapsed().as_secs_f64())
}

fn p99_us(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Search latencies (us) on this thread until `stop`, cycling the queries.
fn latencies<B: GraphBackend>(
    index: &VectorIndex<B>,
    data: &Data,
    stop: &AtomicBool,
    at_least: usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) || out.len() < at_least {
        let q = data
            .queries
            .chunks_exact(data.dim)
            .nth(i % (data.queries.len() / data.dim))
            .expect("queries");
        let t = Instant::now();
        let _ = index.search_with_ef(q, K, EF);
        out.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
        if out.len() >= at_least && stop.load(Ordering::Relaxed) {
            break;
        }
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let data = load(&args)?;
    let backend: String = args.value("backend", "hnsw_rs".to_string())?;
    match backend.as_str() {
        "hnsw_rs" => run::<HnswRsGraph>(&args, &data, "hnsw_rs"),
        "native" => run::<NativeGraph>(&args, &data, "native"),
        "both" => {
            run::<HnswRsGraph>(&args, &data, "hnsw_rs")?;
            run::<NativeGraph>(&args, &data, "native")
        }
        other => anyhow::bail!("--backend {other}: hnsw_rs, native or both"),
    }
}

fn run<B: GraphBackend>(args: &Args, data: &Data, name: &str) -> Result<()> {
    let json = args.flag("json");
    let (n, dim) = (data.n, data.dim);
    eprintln!(
        "{name}: {n} x {dim}, {} queries, M 16, ef_construction 200, ef {EF}, k {K}",
        data.queries.len() / dim
    );
    let mut rows = Vec::new();
    let mut emit = |row: serde_json::Value| {
        if json {
            println!("{row}");
        }
        eprintln!(
            "  {:<10} recall@10 {:.4}  qps {:>8.0}  memory {:>11}  heap {:>11}  rss {:>11}  build {:.2} s",
            row["phase"].as_str().unwrap_or("?"),
            row["recall_at_10"].as_f64().unwrap_or(f64::NAN),
            row["qps_1thread"].as_f64().unwrap_or(f64::NAN),
            row["memory_bytes"],
            row["heap_bytes"],
            row["rss_bytes"],
            row["build_secs"].as_f64().unwrap_or(f64::NAN),
        );
        rows.push(row);
    };

    // Fresh.
    let all = vec![true; n];
    let truth_all = truth(data, &all);
    let (h0, r0) = (heap(), rss());
    let (index, fresh_secs) = build::<B>(data, 0..n);
    let fresh = measure(&index, data, &truth_all);
    emit(
        serde_json::json!({"backend": name, "phase": "fresh", "ef": EF,
        "recall_at_10": fresh.recall, "qps_1thread": fresh.qps,
        "memory_bytes": index.memory_bytes(), "heap_bytes": heap() - h0,
        "rss_bytes": rss().saturating_sub(r0), "build_secs": fresh_secs}),
    );

    // Delete half.
    let mut rng = Rng::new(11);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let out: String = args.value("write-data", String::new())?;
    if !out.is_empty() && std::fs::metadata(&out).is_ok() {
        // The deleted ids, so bench/hnswlib_compare.py deletes the same.
        let bytes: Vec<u8> = order[..n / 2]
            .iter()
            .flat_map(|&i| (i as u64).to_le_bytes())
            .collect();
        std::fs::write(Path::new(&out).join("deleted.u64"), bytes)?;
    }
    let mut live = vec![true; n];
    for &i in &order[..n / 2] {
        index.delete(i as u64);
        live[i] = false;
    }
    let truth_live = truth(data, &live);
    let deleted = measure(&index, data, &truth_live);
    let deleted_heap = heap() - h0;
    emit(
        serde_json::json!({"backend": name, "phase": "deleted50", "ef": EF,
        "recall_at_10": deleted.recall, "qps_1thread": deleted.qps,
        "memory_bytes": index.memory_bytes(), "heap_bytes": deleted_heap,
        "rss_bytes": rss().saturating_sub(r0)}),
    );

    // Rebuild with all threads.
    let start = Instant::now();
    let report = index.rebuild(&CancellationToken::new()).expect("rebuild");
    let rebuild_secs = start.elapsed().as_secs_f64();
    // The whole release of the retired generation, on this (worker) thread.
    let drop_start = Instant::now();
    report.retired.release();
    let retired_drop_secs = drop_start.elapsed().as_secs_f64();
    purge();
    let rebuilt = measure(&index, data, &truth_live);
    let rebuilt_heap = heap() - h0;

    // p99 idle, then during a rebuild limited to one thread, on the same
    // (rebuilt) index.
    let stop = AtomicBool::new(true);
    let _warm = latencies(&index, data, &stop, 2000);
    let mut idle = latencies(&index, data, &stop, 2000);
    let idle_p99 = p99_us(&mut idle);
    let stop = AtomicBool::new(false);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let mut busy = std::thread::scope(|s| {
        let searcher = s.spawn(|| latencies(&index, data, &stop, 200));
        let report = pool.install(|| index.rebuild(&CancellationToken::new()));
        stop.store(true, Ordering::Relaxed);
        report.expect("rebuild").retired.release();
        searcher.join().expect("searcher")
    });
    let busy_p99 = p99_us(&mut busy);
    purge();

    // Cancellation latency.
    let token = CancellationToken::new();
    let cancel_ms = std::thread::scope(|s| {
        let t = token.clone();
        let index = &index;
        let worker = s.spawn(move || {
            let r = index.rebuild(&t);
            (r.is_err(), Instant::now())
        });
        std::thread::sleep(Duration::from_millis(200));
        let at = Instant::now();
        token.cancel();
        let (cancelled, done) = worker.join().expect("worker");
        cancelled.then(|| done.duration_since(at).as_secs_f64() * 1e3)
    });

    // Fresh build of exactly the live set, and plain hnsw_rs on it.
    let live_ids: Vec<usize> = (0..n).filter(|&i| live[i]).collect();
    let (h1, r1) = (heap(), rss());
    let (fresh_live_index, fresh_live_secs) = build::<B>(data, live_ids.iter().copied());
    let fresh_live = measure(&fresh_live_index, data, &truth_live);
    let fresh_live_heap = heap() - h1;
    let fresh_live_rss = rss().saturating_sub(r1);
    let fresh_live_memory = fresh_live_index.memory_bytes();
    drop(fresh_live_index);
    let baseline_secs = {
        let h: Hnsw<f32, GraphDistance> =
            Hnsw::new(16, live_ids.len(), 16, 200, GraphDistance(Metric::L2));
        let items: Vec<(&[f32], usize)> = live_ids
            .iter()
            .map(|&i| (&data.base[i * dim..(i + 1) * dim], i))
            .collect();
        let start = Instant::now();
        h.parallel_insert_slice(&items);
        start.elapsed().as_secs_f64()
    };
    purge();

    emit(
        serde_json::json!({"backend": name, "phase": "rebuilt", "ef": EF,
        "recall_at_10": rebuilt.recall, "qps_1thread": rebuilt.qps,
        "memory_bytes": index.memory_bytes(), "heap_bytes": rebuilt_heap,
        "rss_bytes": rss().saturating_sub(r0), "build_secs": rebuild_secs,
        "baseline_build_secs": baseline_secs, "p99_us_idle": idle_p99,
        "p99_us_during_rebuild": busy_p99, "retired_drop_secs": retired_drop_secs,
        "cancel_ms": cancel_ms}),
    );
    emit(
        serde_json::json!({"backend": name, "phase": "fresh_live", "ef": EF,
        "recall_at_10": fresh_live.recall, "qps_1thread": fresh_live.qps,
        "memory_bytes": fresh_live_memory, "heap_bytes": fresh_live_heap,
        "rss_bytes": fresh_live_rss, "build_secs": fresh_live_secs,
        "baseline_build_secs": baseline_secs}),
    );

    eprintln!("goals:");
    eprintln!(
        "  rebuilt vs fresh_live: recall {:.3} vs {:.3} ({:+.1} %), QPS {:.0} vs {:.0} ({:+.1} %) (goal: within 5 %)",
        rebuilt.recall,
        fresh_live.recall,
        100.0 * (rebuilt.recall / fresh_live.recall - 1.0),
        rebuilt.qps,
        fresh_live.qps,
        100.0 * (rebuilt.qps / fresh_live.qps - 1.0)
    );
    eprintln!(
        "  rebuilt heap {} B = {:.1} % of deleted50's {} B (goal <= 55 %)",
        rebuilt_heap,
        100.0 * rebuilt_heap as f64 / deleted_heap as f64,
        deleted_heap
    );
    eprintln!(
        "  rebuild {rebuild_secs:.2} s vs plain hnsw_rs parallel_insert {baseline_secs:.2} s: {:.2}x (goal <= 1.1x)",
        rebuild_secs / baseline_secs
    );
    eprintln!(
        "  p99 search: idle {idle_p99:.0} us, during a one-thread rebuild {busy_p99:.0} us: {:.2}x (goal <= 2x)",
        busy_p99 / idle_p99
    );
    eprintln!(
        "  cancel -> return: {} ; retired graph dropped in {retired_drop_secs:.2} s (off the search path)",
        cancel_ms.map_or("finished first".into(), |ms| format!("{ms:.1} ms"))
    );
    Ok(())
}
