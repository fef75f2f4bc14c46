//! The close deadline across the crates: a hung worker (async and
//! blocking) is abandoned at the deadline and named; a compaction of a
//! large arena and a rebuild of an index in progress each stop within 1 s
//! of close() (the goal, 10 ms, is printed with the figure).

use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use ebb_integration::{vectors_batch, wait_for_running};
use ebb_testkit::Rng;

fn full() -> bool {
    std::env::var("EBB_INTEGRATION_FULL").as_deref() == Ok("1")
}

/// Woken by the test, never on the workers' schedule.
fn woken_only() -> EngineConfig {
    EngineConfig {
        memory_limit_bytes: 4 << 30,
        compaction_interval_secs: 3600,
        compact_when_due: false,
        ..EngineConfig::default()
    }
}

#[test]
fn a_hung_worker_is_abandoned_at_the_deadline_and_named() {
    let engine = Engine::open(EngineConfig {
        shutdown_deadline_secs: 1,
        ..woken_only()
    })
    .unwrap();
    engine.spawn_stubborn_worker(false, Duration::from_secs(30));
    engine.spawn_stubborn_worker(true, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let report = engine.close_blocking().unwrap();
    let took = started.elapsed();
    eprintln!("close with two hung workers: {took:?} (deadline 1 s)");
    assert!(report.deadline_missed, "{report:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    let mut names: Vec<&str> = report.missed.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["stubborn/async", "stubborn/blocking"], "{report:?}");
}

#[test]
fn a_compaction_in_progress_stops_within_a_second_of_close() {
    let bytes: u64 = if full() { 1 << 30 } else { 256 << 20 };
    let engine = Engine::open(woken_only()).unwrap();
    engine
        .create_dataset("kv", DatasetConfig::new(2, Metric::L2))
        .unwrap();
    let records = (bytes / 1024) as u32;
    let value = vec![5u8; 1000];
    for i in 0..records {
        engine.put("kv", &i.to_le_bytes(), &value).unwrap();
    }
    for i in (0..records).filter(|i| i % 4 != 0) {
        engine.delete("kv", &i.to_le_bytes()).unwrap();
    }
    engine.wake_compaction();
    assert!(
        wait_for_running(&engine, "compaction/kv", Duration::from_secs(10)),
        "the compaction did not start"
    );
    std::thread::sleep(Duration::from_millis(10));
    let started = Instant::now();
    let report = engine.close_blocking().unwrap();
    let took = started.elapsed();
    eprintln!("close during a compaction of {bytes} B: {took:?} (goal 10 ms, bound 1 s)");
    assert!(!report.deadline_missed, "{report:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn a_rebuild_in_progress_stops_within_a_second_of_close() {
    let points: usize = if full() { 100_000 } else { 20_000 };
    let dim = 64;
    let engine = Engine::open(woken_only()).unwrap();
    engine
        .create_dataset("v", DatasetConfig::new(dim, Metric::L2))
        .unwrap();
    let mut rng = Rng::new(5);
    let ids: Vec<u64> = (0..points as u64).collect();
    for chunk in ids.chunks(1024) {
        engine
            .ingest("v", &vectors_batch(&mut rng, chunk, dim))
            .unwrap();
    }
    engine.flush("v").unwrap();
    for id in ids.iter().filter(|&&id| id % 10 < 3) {
        engine.delete_vector("v", *id).unwrap();
    }
    engine.wake_compaction();
    assert!(
        wait_for_running(&engine, "rebuild/v", Duration::from_secs(10)),
        "the rebuild did not start"
    );
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let report = engine.close_blocking().unwrap();
    let took = started.elapsed();
    eprintln!("close during a rebuild of {points} points: {took:?} (goal 10 ms, bound 1 s)");
    assert!(!report.deadline_missed, "{report:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
