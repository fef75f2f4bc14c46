//! `peers engine-vectors`: vectors with payloads through the engine's
//! Arrow `ingest` beside the same vectors inserted into the bare index.
//!
//! Each side runs in a child process of its own (`--child NAME`), on the
//! same seeded clustered vectors, ids and threads (the index builds its
//! graph on the machine's cores in both):
//!
//! - `ebb_ingest`: an engine dataset (the default native index, M 16,
//!   ef_construction 200) fed record batches of `id`, `vector` and a 64-byte
//!   `payload`, [`ROWS_PER_BATCH`] rows at a time;
//! - `bare_index`: a `VectorIndex<NativeGraph>` of the same configuration
//!   fed through `insert_batch` (its best call), no payloads.
//!
//! Figures: wall time of the load (to the last vector searchable and in the
//! graph), vectors per second, and the RSS delta per vector over the empty
//! store; the goals are ingest throughput within 1.2x of the bare index
//! and RSS per vector within 1.2x of the bare index's plus the payload
//! bytes.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_array::RecordBatch;
use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use ebb_hnsw::{IndexConfig, NativeGraph, VectorIndex};
use tokio_util::sync::CancellationToken;

use crate::Rng;

/// Payload bytes per vector.
pub const PAYLOAD_BYTES: usize = 64;
/// Rows per Arrow batch given to `ingest`.
pub const ROWS_PER_BATCH: usize = 1024;

/// One side's figures.
#[derive(Clone, Debug, Default)]
pub struct VectorsReport {
    /// `ebb_ingest` or `bare_index`.
    pub store: String,
    /// Vectors loaded.
    pub vectors: u64,
    /// Their dimension.
    pub dim: usize,
    /// Wall time of the load.
    pub load_secs: f64,
    /// Vectors per second.
    pub vectors_per_sec: f64,
    /// RSS delta per vector.
    pub rss_bytes_per_vector: f64,
    /// Payload bytes per vector stored.
    pub payload_bytes: usize,
}

impl VectorsReport {
    /// One JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.store,
            "vectors": self.vectors,
            "dim": self.dim,
            "load_secs": (self.load_secs * 1000.0).round() / 1000.0,
            "vectors_per_sec": self.vectors_per_sec.round(),
            "rss_bytes_per_vector": self.rss_bytes_per_vector.round(),
            "payload_bytes": self.payload_bytes,
        })
    }

    fn from_json(v: &serde_json::Value) -> Result<VectorsReport> {
        let f = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {v}"));
        Ok(VectorsReport {
            store: v["store"].as_str().context("no store")?.to_string(),
            vectors: v["vectors"].as_u64().context("no vectors")?,
            dim: v["dim"].as_u64().context("no dim")? as usize,
            load_secs: f("load_secs")?,
            vectors_per_sec: f("vectors_per_sec")?,
            rss_bytes_per_vector: f("rss_bytes_per_vector")?,
            payload_bytes: v["payload_bytes"].as_u64().context("no payload_bytes")? as usize,
        })
    }
}

fn rss() -> u64 {
    ebb_core::os::rss_bytes().expect("statm")
}

/// One record batch of `ids`, their `vectors` and a [`PAYLOAD_BYTES`]-byte
/// payload each (the id, then zeros), in the engine's vector schema.
pub fn batch(ids: &[u64], vectors: &[f32], dim: usize) -> RecordBatch {
    let payloads = ids
        .iter()
        .map(|id| {
            let mut p = [0u8; PAYLOAD_BYTES];
            p[..8].copy_from_slice(&id.to_le_bytes());
            Some(p)
        })
        .collect();
    ebb_engine::vector_batch(dim, ids.to_vec(), vectors.to_vec(), payloads)
        .expect("a well-formed batch")
}

/// Runs one side in this process (the child side).
///
/// # Errors
///
/// On an unknown store name or a failed load.
pub fn run_child(store: &str, n: usize, dim: usize, seed: u64) -> Result<VectorsReport> {
    let mut rng = Rng::new(seed);
    let vectors = ebb_testkit::clustered_vectors(&mut rng, n, dim, 100, 0.3);
    let ids: Vec<u64> = (0..n as u64).collect();
    let (elapsed, delta, payload_bytes) = match store {
        "ebb_ingest" => {
            // Batches are built before the baseline: the caller's data.
            let batches: Vec<RecordBatch> = ids
                .chunks(ROWS_PER_BATCH)
                .zip(vectors.chunks(ROWS_PER_BATCH * dim))
                .map(|(i, v)| batch(i, v, dim))
                .collect();
            let engine = Engine::open(EngineConfig::default())?;
            engine.create_dataset("v", DatasetConfig::new(dim, Metric::L2))?;
            let before = rss();
            let started = Instant::now();
            for b in &batches {
                engine.ingest("v", b)?;
            }
            engine.flush("v")?;
            let elapsed = started.elapsed().as_secs_f64();
            let delta = rss().saturating_sub(before);
            std::hint::black_box(&engine);
            (elapsed, delta, PAYLOAD_BYTES)
        }
        "bare_index" => {
            let index: VectorIndex<NativeGraph> =
                VectorIndex::with_backend(IndexConfig::new(dim, Metric::L2))?;
            let points: Vec<(u64, &[f32])> = ids
                .iter()
                .zip(vectors.chunks(dim))
                .map(|(&id, v)| (id, v))
                .collect();
            let before = rss();
            let started = Instant::now();
            index.insert_batch(&points, &CancellationToken::new())?;
            index.flush_delta()?;
            let elapsed = started.elapsed().as_secs_f64();
            let delta = rss().saturating_sub(before);
            std::hint::black_box(&index);
            (elapsed, delta, 0)
        }
        other => bail!("unknown store {other:?} (ebb_ingest, bare_index)"),
    };
    Ok(VectorsReport {
        store: store.to_string(),
        vectors: n as u64,
        dim,
        load_secs: elapsed,
        vectors_per_sec: n as f64 / elapsed,
        rss_bytes_per_vector: delta as f64 / n as f64,
        payload_bytes,
    })
}

/// Runs each side in a child process of `exe` and collects the reports.
///
/// # Errors
///
/// If a child fails or prints no report.
pub fn run_all(
    exe: &std::path::Path,
    stores: &[&str],
    n: usize,
    dim: usize,
    seed: u64,
) -> Result<Vec<VectorsReport>> {
    let mut out = Vec::new();
    for s in stores {
        let output = std::process::Command::new(exe)
            .args(["engine-vectors", "--child", s])
            .args(["--vectors", &n.to_string()])
            .args(["--dim", &dim.to_string()])
            .args(["--seed", &seed.to_string()])
            .output()
            .with_context(|| format!("spawning the {s} child"))?;
        if !output.status.success() {
            bail!(
                "{s} child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let line = String::from_utf8(output.stdout)?;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("{s} child printed {line:?}"))?;
        out.push(VectorsReport::from_json(&v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run_at_small_scale() {
        for store in ["ebb_ingest", "bare_index"] {
            let r = run_child(store, 3000, 16, 7).unwrap();
            assert_eq!(r.vectors, 3000);
            assert!(r.vectors_per_sec > 0.0, "{r:?}");
        }
        assert!(run_child("faiss", 10, 4, 7).is_err());
    }
}
