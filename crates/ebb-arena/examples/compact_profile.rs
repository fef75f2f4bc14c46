//! Fills a BlobArena with `GIB` GiB of 64..=4096 B records, removes a
//! random 75 %, then compacts, printing both times: a run to profile
//! compaction alone (it starts 5 s in: `perf record -D 4900`). The figure of record is
//! `peers fragmentation`.
use std::time::Instant;

use ebb_arena::{BlobArena, CancellationToken, CompactionPolicy, SlabConfig};

fn main() {
    let gib: f64 = std::env::var("GIB").map_or(1.0, |v| v.parse().expect("GIB"));
    let total = (gib * (1u64 << 30) as f64) as usize;
    let arena = BlobArena::new(SlabConfig::default().with_huge_pages(ebb_slab::HugePages::Enable))
        .expect("arena");
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = Instant::now();
    let t = Instant::now();
    let buf = vec![7u8; 4096];
    let mut handles = Vec::new();
    let mut bytes = 0;
    while bytes < total {
        let len = 64 + (next() % 4033) as usize;
        handles.push(arena.insert(&buf[..len]).expect("insert"));
        bytes += len;
    }
    for h in &handles {
        if next() % 4 != 0 {
            arena.remove(*h);
        }
    }
    arena.reclaim();
    eprintln!("fill+remove {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    // Compaction starts 5 s after the start, for `perf record -D 4900`.
    if let Some(rest) = std::time::Duration::from_secs(5).checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    let faults = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // minflt is the 10th field after the command name.
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(7))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let faults_before = faults();
    let t = Instant::now();
    let r = arena
        .compact(&CompactionPolicy::default(), &CancellationToken::new())
        .expect("compact");
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "minor faults during compaction: {}",
        faults() - faults_before
    );
    eprintln!(
        "compact {:.1} ms: {} records, {} bytes, {:.2} GB/s",
        s * 1e3,
        r.records_moved,
        r.bytes_moved,
        r.bytes_moved as f64 / s / 1e9
    );
}
