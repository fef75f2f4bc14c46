//! ebb-integration: cross-crate tests (`tests/`), each RSS- or
//! thread-sensitive one in a process of its own (`ebb_testkit::in_child`).
//! This library holds what they share: the scale (CI or full, from
//! `EBB_INTEGRATION_FULL`), seeded batches, and small measurement helpers.

use arrow_array::RecordBatch;
use ebb_testkit::Rng;

/// How big a cycle is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Vectors per cycle.
    pub vectors: usize,
    /// Their dimension.
    pub dim: usize,
    /// KV records per cycle.
    pub records: usize,
}

/// CI scale (2k vectors of 32-d, 20k records), or the full one (50k of
/// 128-d, 50k records) with `EBB_INTEGRATION_FULL=1` (`just
/// integration-full`).
pub fn scale() -> Scale {
    if std::env::var("EBB_INTEGRATION_FULL").as_deref() == Ok("1") {
        Scale {
            vectors: 50_000,
            dim: 128,
            records: 50_000,
        }
    } else {
        Scale {
            vectors: 2_000,
            dim: 32,
            records: 20_000,
        }
    }
}

/// A vectors batch of `ids` (clustered, seeded) with payloads of 16..272
/// bytes that start with the id.
pub fn vectors_batch(rng: &mut Rng, ids: &[u64], dim: usize) -> RecordBatch {
    let values = ebb_testkit::clustered_vectors(rng, ids.len(), dim, 16, 0.3);
    let payloads = ids
        .iter()
        .map(|id| {
            let mut p = id.to_le_bytes().to_vec();
            p.resize(16 + (*id % 257) as usize, (*id % 251) as u8);
            Some(p)
        })
        .collect();
    ebb_engine::vector_batch(dim, ids.to_vec(), values, payloads).expect("a well-formed batch")
}

/// Process RSS in bytes.
pub fn rss() -> u64 {
    ebb_core::os::rss_bytes().unwrap_or(0)
}

/// OS threads of the process.
pub fn threads() -> usize {
    ebb_core::os::thread_count().unwrap_or(0)
}

/// Open fds of the process.
pub fn fds() -> usize {
    ebb_core::os::open_fd_count().unwrap_or(0)
}

/// Waits until the worker `name` (a blocking step: `compaction/<ds>`,
/// `rebuild/<ds>`) is running; false after `limit`.
pub fn wait_for_running(
    engine: &ebb_engine::Engine,
    name: &str,
    limit: std::time::Duration,
) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if engine
            .workers()
            .iter()
            .any(|w| w.name == name && w.state == ebb_engine::WorkerState::Running)
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}
