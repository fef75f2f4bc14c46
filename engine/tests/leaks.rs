//! The engine's own resources under ebb-leak and ebb-pool: a scan held too
//! long is reported with the caller's site, snapshot files are tracked
//! while open, and ingest and scans take their buffers from the pool.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch};
use ebb_engine::{DatasetConfig, Engine, EngineConfig, LeakLevel, Metric, TRACKER_NAME};
use ebb_leak::ResourceKind;
use tokio_util::sync::CancellationToken;

fn engine(data_dir: Option<std::path::PathBuf>) -> Engine {
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 1 << 30,
        leak_level: LeakLevel::Paranoid,
        leak_threshold_secs: 1,
        leak_check_interval_secs: 1,
        data_dir,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(2, Metric::L2))
        .unwrap();
    for i in 0u32..100 {
        engine.put("a", &i.to_le_bytes(), b"value").unwrap();
    }
    engine
}

#[test]
fn a_scan_held_past_the_threshold_is_reported_with_its_site() {
    let engine = engine(None);
    let (scan, line) = (engine.scan_kv("a").unwrap(), line!());
    let vectors = engine.scan("a").unwrap();
    assert!(engine.leak_report().is_clean(), "not yet past 1 s");
    std::thread::sleep(Duration::from_millis(1100));
    let report = engine.leak_report();
    assert_eq!(report.tracker, TRACKER_NAME);
    let group = report
        .held
        .iter()
        .find(|g| g.labels.iter().any(|l| l == "kv_scan"))
        .unwrap_or_else(|| panic!("no kv_scan in {report}"));
    assert_eq!(group.kind, "iterator");
    assert!(
        group.site.contains(&format!("tests/leaks.rs:{line}")),
        "site {} is not the caller's line {line}",
        group.site
    );
    assert_eq!(report.held.len(), 2, "{report}");
    drop((scan, vectors));
    assert!(engine.leak_report().is_clean());
}

#[test]
fn snapshot_files_are_tracked_while_open() {
    let dir = std::env::temp_dir().join(format!("ebb-leaks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = engine(Some(dir.clone()));
    let mut open_during_write = 0;
    engine
        .snapshot_with(&CancellationToken::new(), &mut |s| {
            if s.name() == "write" {
                open_during_write = engine.leak_tracker().live(ResourceKind::FileDescriptor);
            }
        })
        .unwrap();
    assert!(open_during_write >= 1);
    assert_eq!(engine.leak_tracker().live(ResourceKind::FileDescriptor), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ingest_and_scans_take_their_buffers_from_the_pool() {
    let engine = engine(None);
    let before = engine.pool_stats("a").unwrap();
    let keys: Vec<Vec<u8>> = (1000u32..2000).map(|i| i.to_le_bytes().to_vec()).collect();
    let batch = RecordBatch::try_from_iter([
        (
            "key",
            Arc::new(BinaryArray::from_iter_values(&keys)) as ArrayRef,
        ),
        (
            "value",
            Arc::new(BinaryArray::from_iter_values(keys.iter().map(|_| b"v"))) as ArrayRef,
        ),
    ])
    .unwrap();
    engine.ingest_kv("a", &batch).unwrap();
    let after_ingest = engine.pool_stats("a").unwrap();
    assert!(
        after_ingest.gets_total > before.gets_total,
        "{after_ingest:?}"
    );
    let rows: usize = engine
        .scan_kv("a")
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 1100);
    let after_scan = engine.pool_stats("a").unwrap();
    assert!(after_scan.gets_total > after_ingest.gets_total);
    assert_eq!(after_scan.in_use, before.in_use, "every buffer went back");
    assert!(after_scan.hits_total > 0, "reused, not only allocated");
}
