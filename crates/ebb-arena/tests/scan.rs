//! Scans in chunks: every record live from the start is seen exactly once
//! with its value, while writers insert, replace and remove other records
//! and a compaction moves them; a cancelled scan stops between chunks; a
//! cursor resumes on another thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ebb_arena::{
    BlobArena, BlobHandle, CancellationToken, CompactionPolicy, ScanCursor, SlabConfig, TypedArena,
};

fn config() -> SlabConfig {
    SlabConfig::default().with_slab_bytes(16 << 10)
}

fn value(i: u32) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.resize(8 + (i % 50) as usize, i as u8);
    v
}

#[test]
fn scan_sees_each_stable_record_once_while_writers_and_compaction_run() {
    let arena = BlobArena::new(config()).expect("config");
    let stable: HashMap<BlobHandle, Vec<u8>> = (0..20_000u32)
        .map(|i| (arena.insert(&value(i)).expect("insert"), value(i)))
        .collect();
    // Churn that leaves sparse slabs for the compactor.
    let churn: Vec<BlobHandle> = (0..20_000u32)
        .map(|i| arena.insert(&value(i + 1_000_000)).expect("insert"))
        .collect();
    let stop = AtomicBool::new(false);
    let mut seen: HashMap<BlobHandle, usize> = HashMap::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, h) in (0u32..).zip(&churn) {
                arena.remove(*h);
                let h2 = arena.insert(&value(i)).expect("insert");
                if i.is_multiple_of(3) {
                    arena.remove(h2);
                }
            }
            stop.store(true, Ordering::Release);
        });
        s.spawn(|| {
            let policy = CompactionPolicy::default()
                .with_max_live_ratio(0.9)
                .with_min_reclaim_bytes(0);
            while !stop.load(Ordering::Acquire) {
                arena
                    .compact(&policy, &CancellationToken::new())
                    .expect("compact");
            }
        });
        let report = arena.scan(&CancellationToken::new(), 97, |h, bytes| {
            *seen.entry(h).or_default() += 1;
            if let Some(v) = stable.get(&h) {
                assert_eq!(bytes, &v[..], "a stable record read wrong bytes");
            }
        });
        assert!(!report.cancelled);
        assert!(report.chunks > 1);
    });
    assert!(seen.values().all(|&n| n == 1), "a record was visited twice");
    for h in stable.keys() {
        assert_eq!(seen.get(h), Some(&1), "a stable record was missed");
    }
}

#[test]
fn a_cancelled_scan_stops_between_chunks() {
    let arena = BlobArena::new(config()).expect("config");
    for i in 0..10_000u32 {
        arena.insert(&value(i)).expect("insert");
    }
    let token = CancellationToken::new();
    let mut visited = 0u64;
    let report = arena.scan(&token, 100, |_, _| {
        visited += 1;
        if visited == 250 {
            token.cancel();
        }
    });
    assert!(report.cancelled);
    // The chunk in progress finishes: at most one chunk after the cancel.
    assert_eq!(report.records, 300);
    assert_eq!(visited, 300);
    assert_eq!(arena.len(), 10_000, "a scan changes nothing");
}

#[test]
fn a_cursor_resumes_on_another_thread() {
    let arena: TypedArena<u64> = TypedArena::new(config()).expect("config");
    for i in 0..5000u64 {
        arena.insert(i).expect("insert");
    }
    let mut cursor = ScanCursor::default();
    let mut sum = 0u64;
    arena.scan_chunk(&mut cursor, 1000, |_, v| sum += *v);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !arena.scan_done(cursor) {
                arena.scan_chunk(&mut cursor, 1000, |_, v| sum += *v);
            }
        });
    });
    assert_eq!(sum, (0..5000u64).sum::<u64>());
}
