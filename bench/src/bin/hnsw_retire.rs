//! `hnsw_retire`: what retiring a rebuilt index's old generation costs the
//! caller's thread, on both backends.
//!
//! Builds an index of `--n` points (default 100 000 x 128-d, M 16,
//! ef_construction `--efc` 64: the drop cost follows the points and the
//! links, not the build's ef), deletes a fifth, rebuilds, and measures:
//!
//! - `handoff`: `drop(report.retired)` on the caller's thread (the retired
//!   generation goes to the index's reclaim queue);
//! - `reclaim`: the next `run_maintenance`, which frees the queue on the
//!   worker's thread (what a plain drop used to cost whoever dropped it);
//! - after a second rebuild, `release_step(RELEASE_STEP_BYTES)` in a loop:
//!   the steps, the longest step, and the RSS given back.
//!
//! ```text
//! hnsw_retire [--n N] [--dim D] [--efc E] [--backend native|hnsw_rs|both]
//! ```

use std::time::Instant;

use anyhow::{Context, Result};
use ebb_bench::Rng;
use ebb_bench::args::Args;
use ebb_core::maintenance::Maintenance;
use ebb_core::os::rss_bytes;
use ebb_hnsw::{
    GraphBackend, HnswRsGraph, IndexConfig, Metric, NativeGraph, RELEASE_STEP_BYTES, VectorIndex,
};
use tokio_util::sync::CancellationToken;

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn run<B: GraphBackend>(name: &str, n: usize, dim: usize, efc: usize) -> Result<()> {
    let mut rng = Rng::new(7);
    let data = ebb_testkit::clustered_vectors(&mut rng, n, dim, 64, 0.3);
    let index = VectorIndex::<B>::with_backend(
        IndexConfig::new(dim, Metric::L2)
            .with_ef_construction(efc)
            .with_capacity(n)
            .with_name(name),
    )?;
    let points: Vec<(u64, &[f32])> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    let t = Instant::now();
    index.insert_batch(&points, &CancellationToken::new())?;
    index.flush_delta()?;
    let build_secs = t.elapsed().as_secs_f64();
    for i in (0..n as u64).step_by(5) {
        index.delete(i);
    }

    // 1. The caller drops the retired generation; the owner's run frees it.
    let report = index.rebuild(&CancellationToken::new())?;
    let bytes = report.retired.bytes();
    let t = Instant::now();
    drop(report.retired);
    let handoff_us = t.elapsed().as_secs_f64() * 1e6;
    let rss0 = rss_bytes()?;
    let t = Instant::now();
    let run = index
        .run_maintenance(&CancellationToken::new())
        .context("reclaim")?;
    let reclaim_ms = t.elapsed().as_secs_f64() * 1e3;
    let reclaim_rss = rss0.saturating_sub(rss_bytes()?);
    anyhow::ensure!(run.bytes_released == bytes, "the run freed the queue");

    // 2. A second rebuild's retired generation, released in steps.
    let mut retired = index.rebuild(&CancellationToken::new())?.retired;
    let bytes2 = retired.bytes();
    let rss0 = rss_bytes()?;
    let (mut steps, mut longest_us, t) = (0u32, 0f64, Instant::now());
    loop {
        let s = Instant::now();
        let done = retired.release_step(RELEASE_STEP_BYTES);
        longest_us = longest_us.max(s.elapsed().as_secs_f64() * 1e6);
        steps += 1;
        if done {
            break;
        }
    }
    let stepped_ms = t.elapsed().as_secs_f64() * 1e3;
    let stepped_rss = rss0.saturating_sub(rss_bytes()?);
    drop(retired);

    println!(
        "{name}: n {n} dim {dim} (build {build_secs:.1} s)\n  \
         retired generation {:.1} MiB ({} points in its graph)\n  \
         caller path: drop(report.retired) = {handoff_us:.1} us (handed to the index's reclaim queue)\n  \
         worker path: run_maintenance freed it in {reclaim_ms:.1} ms, RSS -{:.1} MiB\n  \
         stepped: {steps} x release_step({} MiB) in {stepped_ms:.1} ms, longest step {longest_us:.0} us, \
         RSS -{:.1} MiB of {:.1} MiB",
        mib(bytes),
        n,
        mib(reclaim_rss),
        RELEASE_STEP_BYTES >> 20,
        mib(stepped_rss),
        mib(bytes2),
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let n: usize = args.value("n", 100_000)?;
    let dim: usize = args.value("dim", 128)?;
    let efc: usize = args.value("efc", 64)?;
    let backend: String = args.value("backend", "both".to_string())?;
    if backend == "native" || backend == "both" {
        run::<NativeGraph>("native", n, dim, efc)?;
    }
    if backend == "hnsw_rs" || backend == "both" {
        run::<HnswRsGraph>("hnsw_rs", n, dim, efc)?;
    }
    Ok(())
}
