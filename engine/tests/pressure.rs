//! The pressure controller, observed through stats, each test in a child
//! process of its own (they read the process's RSS): a limit just above
//! today's RSS turns writes into `MemoryPressure` with accepted data
//! intact and readable, writes come back after a drop; and Elevated
//! trims pools and wakes compaction at once.

use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Error, PressureLevel};

fn rss() -> u64 {
    ebb_core::os::rss_bytes().unwrap()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what} not within {secs} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn critical_refuses_writes_keeps_what_was_accepted_and_recovers_after_a_drop() {
    if !ebb_testkit::in_child(
        "critical_refuses_writes_keeps_what_was_accepted_and_recovers_after_a_drop",
    ) {
        return;
    }
    let limit = rss() + (96 << 20);
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: limit,
        pressure_interval_ms: 20,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_dataset("big", DatasetConfig::new(2, ebb_engine::Metric::L2))
        .unwrap();
    let value = vec![0xabu8; 4000];
    let mut accepted = 0u32;
    let mut refusal = None;
    let mut budget_refusals = 0;
    // Up to 400 MB: far past the limit, if nothing refused.
    for i in 0u32..100_000 {
        match engine.put("big", &i.to_le_bytes(), &value) {
            Ok(()) => accepted = i + 1,
            Err(e @ Error::MemoryPressure { .. }) => {
                refusal = Some(e);
                break;
            }
            Err(Error::OverBudget(_)) => {
                // The budget refused before the controller's next sample:
                // the controller must follow within a few intervals.
                budget_refusals += 1;
                assert!(
                    budget_refusals < 50,
                    "the budget refuses, the controller stays {:?}: {:?}",
                    engine.pressure_level(),
                    engine.pressure_stats()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let refusal = refusal.expect("writes were refused at the limit");
    let Error::MemoryPressure {
        rss,
        limit: l,
        reserved,
        top_consumers,
    } = &refusal
    else {
        unreachable!()
    };
    assert_eq!(*l, limit);
    // Over the limit in RSS, or the budget within 5 % of refusing ordinary
    // growth (its limit less the headroom kept for compaction).
    let available = engine.budget().available_bytes();
    assert!(
        *rss > limit || available < limit / 20,
        "{refusal}; {available} B available"
    );
    assert!(*reserved <= limit);
    assert_eq!(top_consumers[0].0, "big/kv", "{refusal}");
    assert!(accepted > 10_000, "{accepted} accepted before {refusal}");
    assert_eq!(engine.pressure_level(), PressureLevel::Critical);
    assert!(engine.pressure_stats().writes_refused_total >= 1);
    // Reads work; everything accepted is intact.
    for i in 0..accepted {
        assert_eq!(
            &*engine.get("big", &i.to_le_bytes()).unwrap().unwrap(),
            &value[..]
        );
    }
    // A new dataset is a write too.
    assert!(matches!(
        engine.create_dataset("spare", DatasetConfig::new(2, ebb_engine::Metric::L2)),
        Err(Error::MemoryPressure { .. })
    ));
    engine.drop_dataset("big").unwrap();
    wait_for("the level to fall", 5, || {
        engine.pressure_level() < PressureLevel::Critical
    });
    engine
        .create_dataset("spare", DatasetConfig::new(2, ebb_engine::Metric::L2))
        .unwrap();
    engine.put("spare", b"k", b"v").unwrap();
    engine.close_blocking().unwrap();
}

#[test]
fn elevated_trims_pools_and_wakes_compaction_at_once() {
    if !ebb_testkit::in_child("elevated_trims_pools_and_wakes_compaction_at_once") {
        return;
    }
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 8 << 30,
        pressure_interval_ms: 20,
        // Never on its own schedule in this test: only when woken.
        compaction_interval_secs: 3600,
        compact_when_due: false,
        ..EngineConfig::default()
    })
    .unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(2, ebb_engine::Metric::L2))
        .unwrap();
    for i in 0u32..100_000 {
        engine.put("a", &i.to_le_bytes(), &[1u8; 300]).unwrap();
    }
    for i in 0u32..100_000 {
        if i % 5 != 0 {
            engine.delete("a", &i.to_le_bytes()).unwrap();
        }
    }
    // Fill the pool's cache.
    let held: Vec<_> = (0..64)
        .map(|i| engine.get("a", &(i * 5u32).to_le_bytes()).unwrap())
        .collect();
    drop(held);
    assert!(engine.pool_stats("a").unwrap().retained_bytes > 0);
    assert_eq!(engine.compaction_stats().events_total, [[0; 3]; 3]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(engine.pressure_level(), PressureLevel::Normal);
    // RSS at 92 % of the (run-time) limit: over the soft limit.
    let started = Instant::now();
    engine.budget().set_limit(Some(rss() * 100 / 92));
    wait_for("Elevated", 2, || {
        engine.pressure_level() >= PressureLevel::Elevated
    });
    let to_elevated = started.elapsed();
    wait_for("a woken compaction", 5, || {
        engine.compaction_stats().events(
            ebb_engine::MaintenanceKind::Arena,
            ebb_engine::Outcome::Done,
        ) > 0
    });
    let to_compaction = started.elapsed();
    assert_eq!(
        engine.pool_stats("a").unwrap().retained_bytes,
        0,
        "pools trimmed"
    );
    eprintln!("to elevated {to_elevated:?}, to the first compaction {to_compaction:?}");
    engine.close_blocking().unwrap();
}
