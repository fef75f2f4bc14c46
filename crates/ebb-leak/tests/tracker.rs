//! ResourceTracker: a planted leak is found with its site, a clean run is
//! clean, and the tracker's own memory stays bounded.

use std::time::Duration;

use ebb_leak::{ResourceKind, ResourceTracker, TrackerConfig, TrackingLevel};

fn paranoid(name: &str) -> ResourceTracker {
    ResourceTracker::new(
        name,
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    )
}

#[test]
fn a_forgotten_guard_past_the_threshold_is_reported_with_its_site() {
    let tracker = paranoid("forgotten");
    let leaked = tracker.track(ResourceKind::Iterator, "scan users");
    leaked.touch();
    let fresh = tracker.track(ResourceKind::Iterator, "scan orders");
    std::thread::sleep(Duration::from_millis(30));
    let young = tracker.track(ResourceKind::Iterator, "young");
    let report = tracker.check(Duration::from_millis(20));
    assert_eq!(
        report.held.len(),
        2,
        "two sites past the threshold:\n{report}"
    );
    let g = &report.held[0];
    assert_eq!(g.kind, "iterator");
    assert!(g.site.contains("tests/tracker.rs"), "site {}", g.site);
    assert!(g.oldest_age_secs >= 0.02);
    assert!(g.backtrace.is_some());
    assert_eq!(
        report.held.iter().map(|g| g.count).sum::<usize>(),
        2,
        "young is under it"
    );
    let touched = report
        .held
        .iter()
        .find(|g| g.labels == ["scan users"])
        .unwrap();
    assert_eq!(touched.last_touches.len(), 1);
    assert!(touched.last_touches[0].contains("tests/tracker.rs"));
    drop((leaked, fresh, young));
    let clean = tracker.check(Duration::ZERO);
    assert!(clean.is_clean(), "{clean}");
    assert_eq!(tracker.live(ResourceKind::Iterator), 0);
}

#[test]
fn sampled_counts_every_guard_and_records_one_in_n() {
    let tracker = ResourceTracker::new(
        "sampled",
        TrackerConfig::default().with_level(TrackingLevel::Sampled(4)),
    );
    let held: Vec<_> = (0..100)
        .map(|_| tracker.track(ResourceKind::Connection, "conn"))
        .collect();
    assert_eq!(tracker.live(ResourceKind::Connection), 100);
    let recorded = held.iter().filter(|t| t.is_recorded()).count();
    assert_eq!(recorded, 25);
    assert_eq!(tracker.check(Duration::ZERO).recorded, 25);
    drop(held);
    assert_eq!(tracker.live(ResourceKind::Connection), 0);
    assert_eq!(tracker.check(Duration::ZERO).recorded, 0);
}

#[test]
fn disabled_guards_are_inert() {
    let tracker = ResourceTracker::new(
        "disabled",
        TrackerConfig::default().with_level(TrackingLevel::Disabled),
    );
    let t = tracker.track(ResourceKind::Task, "t");
    assert!(t.is_inert());
    assert_eq!(tracker.live(ResourceKind::Task), 0);
    tracker.set_level(TrackingLevel::Paranoid);
    let u = tracker.track(ResourceKind::Task, "u");
    assert!(u.is_recorded());
    drop((t, u));
    assert_eq!(tracker.live(ResourceKind::Task), 0);
}

#[test]
fn the_tracker_keeps_at_most_max_entries_and_evicts_the_oldest() {
    let tracker = ResourceTracker::new(
        "bounded",
        TrackerConfig::default()
            .with_level(TrackingLevel::Paranoid)
            .with_max_entries(10)
            .with_max_backtraces(3),
    );
    let first: Vec<_> = (0..10)
        .map(|_| tracker.track(ResourceKind::Buffer, "first"))
        .collect();
    let second: Vec<_> = (0..10)
        .map(|_| tracker.track(ResourceKind::Buffer, "second"))
        .collect();
    let report = tracker.check(Duration::ZERO);
    assert_eq!((report.recorded, report.evicted), (10, 10));
    assert_eq!(report.backtraces_dropped, 17, "20 captured, 3 kept");
    assert_eq!(report.held[0].labels, ["second"], "the oldest were evicted");
    // Dropping an evicted guard must not remove another guard's entry.
    drop(first);
    assert_eq!(tracker.check(Duration::ZERO).recorded, 10);
    assert_eq!(tracker.live(ResourceKind::Buffer), 10);
    drop(second);
    assert_eq!(tracker.check(Duration::ZERO).recorded, 0);
}

#[test]
fn growth_since_the_last_check_is_reported_per_kind() {
    let tracker = paranoid("growth");
    let a: Vec<_> = (0..3)
        .map(|_| tracker.track(ResourceKind::Transaction, "txn"))
        .collect();
    let first = tracker.check(Duration::from_secs(3600));
    assert_eq!(first.live[0].live, 3);
    assert_eq!(first.live[0].growth, 3);
    let b: Vec<_> = (0..2)
        .map(|_| tracker.track(ResourceKind::Transaction, "txn"))
        .collect();
    let second = tracker.check(Duration::from_secs(3600));
    assert_eq!((second.live[0].live, second.live[0].growth), (5, 2));
    drop((a, b));
    let third = tracker.check(Duration::from_secs(3600));
    assert_eq!((third.live[0].live, third.live[0].growth), (0, -5));
}

#[test]
fn reports_serialize_to_json() {
    let tracker = paranoid("json");
    let _held = tracker.track(ResourceKind::FileDescriptor, "wal segment");
    let json = tracker.check(Duration::ZERO).to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["tracker"], "json");
    assert_eq!(v["held"][0]["kind"], "file_descriptor");
    assert_eq!(v["held"][0]["labels"][0], "wal segment");
    assert!(v["held"][0]["backtrace"].is_string());
    assert_eq!(v["live"][0]["live"], 1);
}

#[test]
fn custom_kinds_past_the_table_share_other() {
    let tracker = paranoid("custom");
    // Kind names must be 'static; a static keeps them reachable (for
    // LeakSanitizer) once the tracker's table is full.
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..80)
            .map(|i| &*Box::leak(format!("kind{i}").into_boxed_str()))
            .collect()
    });
    let held: Vec<_> = names
        .iter()
        .map(|n| tracker.track(ResourceKind::Custom(n), "x"))
        .collect();
    let counts = tracker.live_counts();
    assert_eq!(counts["kind0"], 1);
    assert_eq!(counts["other"], 80 - (64 - 7 - 1), "{counts:?}");
    assert_eq!(counts.values().sum::<i64>(), 80);
    drop(held);
    assert!(tracker.live_counts().is_empty());
}

#[test]
fn a_guard_dropped_on_another_thread_is_released() {
    let tracker = paranoid("cross");
    let t = tracker.track(ResourceKind::Thread, "worker");
    std::thread::spawn(move || drop(t)).join().unwrap();
    assert_eq!(tracker.live(ResourceKind::Thread), 0);
    assert!(tracker.check(Duration::ZERO).is_clean());
}

#[test]
fn sampled_mode_reuses_a_sites_backtrace() {
    let tracker = ResourceTracker::new(
        "reuse",
        TrackerConfig::default().with_level(TrackingLevel::Sampled(2)),
    );
    let held: Vec<_> = (0..400)
        .map(|_| tracker.track(ResourceKind::Buffer, "b"))
        .collect();
    let report = tracker.check(Duration::ZERO);
    assert_eq!(report.recorded, 200);
    assert_eq!(
        report.backtraces_captured, 4,
        "one capture per 64 recordings at one site"
    );
    assert!(report.held[0].backtrace.is_some());
    drop(held);
}

#[test]
fn guards_outliving_their_thread_and_reused_slots_count_exactly() {
    let tracker = ResourceTracker::new(
        "slots",
        TrackerConfig::default().with_level(TrackingLevel::Sampled(1000)),
    );
    // Guards made on threads that exit, dropped here later.
    let mut kept = Vec::new();
    for _ in 0..20 {
        let t = tracker;
        kept.push(
            std::thread::spawn(move || {
                let a = t.track(ResourceKind::Task, "kept");
                drop(t.track(ResourceKind::Task, "dropped at home"));
                a
            })
            .join()
            .unwrap(),
        );
    }
    assert_eq!(tracker.live(ResourceKind::Task), 20);
    // New threads reuse the released slots and count on top.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let held: Vec<_> = (0..100)
                    .map(|_| tracker.track(ResourceKind::Task, "churn"))
                    .collect();
                assert!(tracker.live(ResourceKind::Task) >= 120);
                drop(held);
            });
        }
    });
    assert_eq!(tracker.live(ResourceKind::Task), 20);
    drop(kept);
    assert_eq!(tracker.live(ResourceKind::Task), 0);
}
