//! A retired generation's scheduled release gives its memory back to the
//! OS: RSS falls by about the old graph's and points' bytes within 1 s of
//! the release being scheduled (on another thread, as a worker's
//! `spawn_blocking` would run it).
//!
//! Alone in its file: it reads this process's RSS from /proc/self/statm,
//! which other tests running beside it would disturb.

use std::time::{Duration, Instant};

use ebb_core::os::rss_bytes;
use ebb_hnsw::{IndexConfig, Metric, NativeGraph, VectorIndex};
use ebb_testkit::{Rng, clustered_vectors};
use tokio_util::sync::CancellationToken;

#[test]
fn a_scheduled_release_gives_the_retired_generation_back_to_the_os_within_a_second() {
    let (n, dim, m) = (30_000usize, 256usize, 8usize);
    let mut rng = Rng::new(17);
    let data = clustered_vectors(&mut rng, n, dim, 16, 0.3);
    let index = VectorIndex::<NativeGraph>::with_backend(
        IndexConfig::new(dim, Metric::L2)
            .with_m(m)
            .with_ef_construction(32)
            .with_capacity(n),
    )
    .unwrap();
    let points: Vec<(u64, &[f32])> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    index
        .insert_batch(&points, &CancellationToken::new())
        .unwrap();
    for i in (0..n as u64).step_by(4) {
        index.delete(i);
    }
    let retired = index.rebuild(&CancellationToken::new()).unwrap().retired;
    // What the old generation touched: the graph's vectors and layer-0
    // links (mapped), and the index's copy of the vectors (heap).
    let touched = (n * dim * 4 * 2 + n * (2 * m + 1) * 4) as u64;
    assert!(
        retired.bytes() >= touched,
        "{} < {touched}",
        retired.bytes()
    );
    let before = rss_bytes().unwrap();

    let scheduled = Instant::now();
    let worker = std::thread::spawn(move || retired.release());
    let mut fell = 0;
    while scheduled.elapsed() < Duration::from_secs(1) {
        fell = before.saturating_sub(rss_bytes().unwrap());
        if fell >= touched * 9 / 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.join().unwrap();
    eprintln!(
        "RSS fell {:.1} MiB of {:.1} MiB touched in {:?}",
        fell as f64 / (1 << 20) as f64,
        touched as f64 / (1 << 20) as f64,
        scheduled.elapsed()
    );
    assert!(
        fell >= touched * 9 / 10,
        "RSS fell {fell} bytes within 1 s, the retired generation touched {touched}"
    );
    // The new generation still serves.
    let v = &data[5 * dim..6 * dim];
    assert_eq!(index.search_with_ef(v, 1, 100).unwrap()[0].0, 5);
    assert_eq!(index.stats().retired_bytes, 0);
}
