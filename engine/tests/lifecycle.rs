//! The lifecycle: the workers' audit, close() keeping its deadline with
//! workers that ignore cancellation, close twice, close inside a runtime,
//! the closing snapshot, and the compaction worker giving memory back
//! without being asked.

use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Error, Metric, Outcome, WorkerState};

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit_bytes: 4 << 30,
        shutdown_deadline_secs: 1,
        compaction_interval_secs: 1,
        ..EngineConfig::default()
    }
}

#[test]
fn every_background_task_is_listed() {
    let engine = Engine::open(config()).unwrap();
    let workers = engine.workers();
    let names: Vec<&str> = workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["compaction", "rebuild", "pressure", "leak-monitor"]);
    for w in &workers {
        assert_eq!(w.owner, "engine");
        assert!(!w.purpose.is_empty() && !w.stop_condition.is_empty());
        assert!(w.interval_secs.is_some());
        assert_ne!(w.state, WorkerState::Stopped, "{w:?}");
    }
    let report = engine.close_blocking().unwrap();
    assert!(!report.deadline_missed, "{report:?}");
    assert!(
        engine
            .workers()
            .iter()
            .all(|w| w.state == WorkerState::Stopped)
    );
}

#[test]
fn close_keeps_its_deadline_with_workers_that_ignore_cancellation() {
    let engine = Engine::open(config()).unwrap();
    engine.spawn_stubborn_worker(false, Duration::from_secs(30));
    engine.spawn_stubborn_worker(true, Duration::from_secs(30));
    let started = Instant::now();
    let report = engine.close_blocking().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "close took {took:?}");
    assert!(report.deadline_missed);
    let mut missed: Vec<(&str, bool)> = report
        .missed
        .iter()
        .map(|m| (m.name.as_str(), m.blocking))
        .collect();
    missed.sort();
    assert_eq!(
        missed,
        [("stubborn/async", false), ("stubborn/blocking", true)]
    );
    assert!(
        report.missed.iter().all(|m| m.running_secs >= 0.9),
        "{report:?}"
    );
    // Close twice: the first report.
    assert_eq!(engine.close_blocking().unwrap(), report);
    assert!(matches!(
        engine.create_dataset("x", DatasetConfig::new(2, Metric::L2)),
        Err(Error::Closing)
    ));
}

#[test]
fn a_cooperative_close_is_quick_and_new_calls_are_refused() {
    let engine = Engine::open(config()).unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(2, Metric::L2))
        .unwrap();
    engine.put("a", b"k", b"v").unwrap();
    let report = engine.close_blocking().unwrap();
    assert!(!report.deadline_missed && report.missed.is_empty());
    assert!(report.duration_secs < 0.5, "{report:?}");
    assert!(matches!(engine.put("a", b"k", b"v"), Err(Error::Closing)));
    assert!(matches!(engine.get("a", b"k"), Err(Error::Closing)));
}

#[test]
fn close_blocking_inside_a_runtime_says_so() {
    let engine = Engine::open(config()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let inside = rt.block_on(async { engine.close_blocking() });
    assert!(matches!(inside, Err(Error::InsideRuntime)));
    let report = rt.block_on(engine.close());
    assert!(!report.deadline_missed);
}

#[test]
fn close_snapshots_when_a_data_dir_is_set() {
    let dir = std::env::temp_dir().join(format!("ebb-lifecycle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(EngineConfig {
        data_dir: Some(dir.clone()),
        ..config()
    })
    .unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(2, Metric::L2))
        .unwrap();
    engine.put("a", b"k", b"v").unwrap();
    let report = engine.close_blocking().unwrap();
    let snapshot = report.snapshot.expect("a closing snapshot");
    assert_eq!(snapshot.records, 1);
    assert!(report.snapshot_secs > 0.0);
    drop(engine);
    let engine = Engine::open(EngineConfig {
        data_dir: Some(dir.clone()),
        ..config()
    })
    .unwrap();
    assert_eq!(&*engine.get("a", b"k").unwrap().unwrap(), b"v");
    engine.close_blocking().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_compaction_worker_gives_memory_back_unasked() {
    let engine = Engine::open(config()).unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(2, Metric::L2))
        .unwrap();
    for i in 0u32..100_000 {
        engine.put("a", &i.to_le_bytes(), &[7u8; 200]).unwrap();
    }
    for i in 0u32..100_000 {
        if i % 4 != 0 {
            engine.delete("a", &i.to_le_bytes()).unwrap();
        }
    }
    let before = engine.dataset_stats("a").unwrap().kv_resident_bytes;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = engine.compaction_stats();
        let resident = engine.dataset_stats("a").unwrap().kv_resident_bytes;
        if stats.events(ebb_engine::MaintenanceKind::Arena, Outcome::Done) > 0
            && resident < before / 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction in 10 s: {stats:?}, resident {resident} of {before}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = engine.compaction_events();
    assert!(
        events
            .iter()
            .any(|e| e.dataset == "a" && e.bytes_released > 0)
    );
    for i in (0u32..100_000).step_by(4) {
        assert_eq!(
            &*engine.get("a", &i.to_le_bytes()).unwrap().unwrap(),
            &[7u8; 200]
        );
    }
    engine.close_blocking().unwrap();
}

#[test]
fn a_current_thread_host_runtime_is_refused_with_the_reason() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let refused = Engine::open(EngineConfig {
        runtime: Some(ebb_engine::RuntimeHandle(rt.handle().clone())),
        ..config()
    });
    match refused {
        Err(Error::Config { key, .. }) => assert_eq!(key, "runtime"),
        other => panic!("{other:?}"),
    }
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let engine = Engine::open(EngineConfig {
        runtime: Some(ebb_engine::RuntimeHandle(multi.handle().clone())),
        ..config()
    })
    .unwrap();
    assert!(!engine.close_blocking().unwrap().deadline_missed);
}
