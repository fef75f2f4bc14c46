//! Compaction at scale: cancellation mid-way, and kernel truth afterwards.
//! Scale with EBB_ARENA_BYTES (default 256 MiB; `just` runs 1 GiB).
//! The RSS test runs in a child process of its own.

#![cfg(not(miri))]

use std::sync::atomic::{AtomicBool, Ordering};

use ebb_arena::{BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig};
use ebb_core::os;
use ebb_slab::HugePages;
use ebb_testkit::{Rng, in_child};

fn total_bytes() -> usize {
    std::env::var("EBB_ARENA_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256 << 20)
}

/// Writes record `i` into `out` (reused: no heap garbage per record, which
/// an allocator that quarantines frees, like AddressSanitizer's, would keep
/// resident and count against the RSS check).
fn fill_record(out: &mut Vec<u8>, i: usize, len: usize) {
    out.clear();
    out.extend((0..len).map(|j| (i.wrapping_mul(7) + j) as u8));
}

/// Fills `total` bytes of 64..=4096 B records, removes 75 % at random;
/// returns the kept (index, len, handle).
fn fragmented(arena: &BlobArena, total: usize) -> Vec<(usize, usize, BlobHandle)> {
    let mut rng = Rng::new(7);
    let mut all = Vec::new();
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(4096);
    while bytes < total {
        let len = 64 + rng.below(4033) as usize;
        fill_record(&mut buf, all.len(), len);
        let h = arena.insert(&buf).unwrap();
        all.push((all.len(), len, h));
        bytes += len;
    }
    let mut kept = Vec::new();
    for r in all {
        if rng.below(4) == 0 {
            kept.push(r);
        } else {
            assert!(arena.remove(r.2));
        }
    }
    arena.reclaim();
    kept
}

fn check_all(arena: &BlobArena, kept: &[(usize, usize, BlobHandle)]) {
    let mut buf = Vec::with_capacity(4096);
    for (i, len, h) in kept {
        fill_record(&mut buf, *i, *len);
        let ok = arena.with(*h, |b| b == buf.as_slice());
        assert_eq!(ok, Some(true), "record {i}");
    }
    assert_eq!(arena.len(), kept.len());
}

#[test]
fn cancelled_compaction_stops_within_one_slab_and_loses_nothing() {
    let arena = BlobArena::new(SlabConfig::default()).unwrap();
    let mut kept = fragmented(&arena, total_bytes());
    let policy = CompactionPolicy::default().with_max_live_ratio(0.9);
    // The canceller races the compaction; if the compaction wins (a busy
    // machine can deschedule the canceller), make the slabs sparse again and
    // race once more.
    for _attempt in 0..10 {
        let token = CancellationToken::new();
        let cancelled_at = std::sync::Mutex::new(None);
        let done = AtomicBool::new(false);
        // Counted before the compaction starts, so `at` and the report
        // count the same slabs.
        let start = arena.stats().slabs_compacted_total;
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if arena.stats().slabs_compacted_total >= start + 3 {
                        token.cancel();
                        let at = arena.stats().slabs_compacted_total - start;
                        *cancelled_at.lock().unwrap() = Some(at);
                        return;
                    }
                    std::hint::spin_loop();
                }
            });
            let r = arena.compact(&policy, &token);
            done.store(true, Ordering::Relaxed);
            r
        });
        check_all(&arena, &kept);
        match (result, cancelled_at.into_inner().unwrap()) {
            (Ok(report), Some(at)) if report.cancelled => {
                assert!(
                    report.slabs_compacted as u64 <= at + 1,
                    "{} slabs compacted, {at} done when cancelled",
                    report.slabs_compacted
                );
                // A later compaction finishes the job.
                let report = arena.compact(&policy, &CancellationToken::new()).unwrap();
                assert!(report.slabs_compacted > 0);
                check_all(&arena, &kept);
                let live: u64 = kept.iter().map(|(_, len, _)| 4 + *len as u64).sum();
                assert_eq!(arena.stats().live_bytes, live);
                return;
            }
            (Ok(_), _) => {
                let (gone, stay): (Vec<_>, Vec<_>) =
                    kept.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
                for (_, (_, _, h)) in gone {
                    assert!(arena.remove(h));
                }
                kept = stay.into_iter().map(|(_, r)| r).collect();
                arena.reclaim();
            }
            (other, at) => panic!("expected Cancelled or Ok, got {other:?} (cancelled at {at:?})"),
        }
    }
    panic!("the compaction always finished before the cancel landed");
}

#[test]
fn after_compaction_rss_and_mincore_agree_with_stats() {
    if !in_child("after_compaction_rss_and_mincore_agree_with_stats") {
        return;
    }
    let total = total_bytes();
    let rss_base = os::rss_bytes().unwrap();
    let arena = BlobArena::new(SlabConfig::default().with_huge_pages(HugePages::Disable)).unwrap();
    let kept = fragmented(&arena, total);
    let live: u64 = kept.iter().map(|(_, len, _)| *len as u64).sum();
    let before = os::rss_bytes().unwrap() - rss_base;
    arena
        .compact(
            &CompactionPolicy::default().with_max_live_ratio(0.9),
            &CancellationToken::new(),
        )
        .unwrap();
    let stats = arena.stats();
    let kernel = arena.kernel_resident_bytes().unwrap();
    let slabs = stats.slabs_active + stats.slabs_sealed + stats.large_mappings;
    assert!(
        stats.resident_bytes.abs_diff(kernel) <= slabs * os::page_size() as u64,
        "stats {} vs mincore {kernel}",
        stats.resident_bytes
    );
    let after = os::rss_bytes().unwrap().saturating_sub(rss_base);
    println!(
        "live {live} rss before {before} after {after} ratio {:.3}",
        after as f64 / live as f64
    );
    // The handle table and the test's own bookkeeping are part of RSS too.
    // Under AddressSanitizer (`just asan` sets EBB_SANITIZER) the process's
    // RSS also holds ASan's shadow memory and freed-heap quarantine, so
    // only the arena's own accounting (the mincore check above) applies.
    if std::env::var_os("EBB_SANITIZER").is_none() {
        assert!(
            (after as f64) < 1.25 * live as f64,
            "RSS {after} for {live} live bytes"
        );
    }
    check_all(&arena, &kept);
}
