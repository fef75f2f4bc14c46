//! 100 engine open/close cycles with snapshots in a temporary data_dir:
//! every close within its deadline, the data back at each open, no
//! tracked resource left, and threads back to the post-warm-up baseline
//! exactly. In a process of its own.

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use ebb_integration::{fds, threads};

#[test]
fn hundred_open_close_cycles_with_snapshots() {
    if !ebb_testkit::in_child("hundred_open_close_cycles_with_snapshots") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ebb-open-close-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = EngineConfig {
        memory_limit_bytes: 1 << 30,
        shutdown_deadline_secs: 5,
        data_dir: Some(dir.clone()),
        ..EngineConfig::default()
    };
    let mut baseline = None;
    for n in 0..100u64 {
        let engine = Engine::open(config.clone()).unwrap();
        if n == 0 {
            engine
                .create_dataset("kept", DatasetConfig::new(4, Metric::L2))
                .unwrap();
        } else {
            // What the last close snapshotted is back.
            let prev = format!("k{}", n - 1);
            let v = engine.get("kept", prev.as_bytes()).unwrap();
            assert_eq!(v.as_deref(), Some(prev.as_bytes()), "cycle {n}");
        }
        engine
            .put(
                "kept",
                format!("k{n}").as_bytes(),
                format!("k{n}").as_bytes(),
            )
            .unwrap();
        engine
            .upsert_vector("kept", n, &[n as f32, 1.0, 2.0, 3.0], Some(b"p"))
            .unwrap();
        let report = engine.close_blocking().unwrap();
        assert!(!report.deadline_missed, "cycle {n}: {report:?}");
        assert!(report.duration_secs < 5.0, "cycle {n}: {report:?}");
        assert!(report.snapshot.is_some(), "cycle {n}: {report:?}");
        // The tracker is the process's: nothing of this engine is held.
        let live: i64 = engine.leak_tracker().live_counts().values().sum();
        drop(engine);
        assert_eq!(live, 0, "cycle {n}: tracked resources left");
        if n == 4 {
            baseline = Some((threads(), fds()));
        }
    }
    // An engine-owned runtime shuts down in the background: give its
    // threads a moment.
    let (t0, f0) = baseline.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while threads() != t0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(threads(), t0, "threads back to the post-warm-up baseline");
    assert_eq!(fds(), f0);
    let _ = std::fs::remove_dir_all(&dir);
}
