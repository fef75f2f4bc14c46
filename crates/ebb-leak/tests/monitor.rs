//! LeakMonitor: names a kind whose live count keeps growing (a TrackedArc
//! cycle per tick) and stays quiet on a steady count; runs and stops on a
//! CancellationToken.

use std::sync::Mutex;
use std::time::Duration;

use ebb_leak::{
    GrowthThreshold, LeakMonitor, MonitorConfig, ResourceTracker, TrackedArc, TrackerConfig,
};
use tokio_util::sync::CancellationToken;

struct Cyclic {
    other: Mutex<Option<TrackedArc<Cyclic>>>,
}

fn config() -> MonitorConfig {
    MonitorConfig {
        interval: Duration::from_millis(10),
        threshold: Duration::from_secs(3600),
        growth_window: Duration::from_millis(200),
        growth_threshold: GrowthThreshold::BytesPerMinute(60.0),
    }
}

#[test]
fn a_growing_type_is_named_and_a_steady_one_is_not() {
    let tracker = ResourceTracker::new("monitor-growth", TrackerConfig::default());
    let mut monitor = LeakMonitor::new(tracker, config());
    let steady: Vec<_> = (0..5).map(|i| TrackedArc::new(i, &tracker)).collect();
    let mut cycles = Vec::new();
    for _ in 0..20 {
        let a = TrackedArc::new(
            Cyclic {
                other: Mutex::new(None),
            },
            &tracker,
        );
        let b = TrackedArc::new(
            Cyclic {
                other: Mutex::new(Some(a.clone())),
            },
            &tracker,
        );
        *a.other.lock().unwrap() = Some(b); // a cycle: never freed
        cycles.push(TrackedArc::downgrade(&a));
        monitor.tick();
        std::thread::sleep(Duration::from_millis(15));
    }
    let cyclic = std::any::type_name::<Cyclic>();
    assert!(monitor.is_growing(cyclic), "{cyclic} not reported");
    assert!(!monitor.is_growing(std::any::type_name::<i32>()));
    assert!(monitor.stats().growth_warnings_total > 0);
    drop(steady);
    // Break the cycles, so LeakSanitizer (`just asan`) does not fail the
    // test for the leak it planted.
    for weak in cycles {
        let a = weak.upgrade().expect("alive in its cycle");
        let b = a.other.lock().unwrap().take().expect("linked");
        b.other.lock().unwrap().take();
    }
}

#[test]
fn run_stops_at_once_on_cancel() {
    let tracker = ResourceTracker::new("monitor-run", TrackerConfig::default());
    let monitor = LeakMonitor::new(tracker, config());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let token = CancellationToken::new();
    let stats = rt.block_on(async {
        let t = token.clone();
        let task = tokio::spawn(monitor.run(t));
        tokio::time::sleep(Duration::from_millis(60)).await;
        token.cancel();
        task.await.unwrap()
    });
    assert!(stats.checks_total >= 2, "{stats:?}");

    let monitor = LeakMonitor::new(tracker, config());
    let token = CancellationToken::new();
    let handle = monitor.spawn_thread(token.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    token.cancel();
    assert!(handle.join().unwrap().checks_total >= 1);
}

#[test]
fn a_thread_monitor_with_an_endless_interval_never_ticks_and_stops_on_cancel() {
    // `Instant::now() + interval` overflowed (a panic on the monitor's
    // thread) for an interval of Duration::MAX.
    let tracker = ResourceTracker::new("monitor-endless", TrackerConfig::default());
    let monitor = LeakMonitor::new(
        tracker,
        MonitorConfig {
            interval: Duration::MAX,
            ..config()
        },
    );
    let token = CancellationToken::new();
    let handle = monitor.spawn_thread(token.clone()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    token.cancel();
    let stats = handle.join().expect("the monitor thread did not panic");
    assert_eq!(stats.checks_total, 0);
}

#[test]
fn stats_are_named_for_the_tracker_and_count_ticks_and_warnings() {
    use ebb_leak::{ResourceKind, TrackingLevel};
    let tracker = ResourceTracker::new(
        "monitor-stats",
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    );
    let mut monitor = LeakMonitor::new(
        tracker,
        MonitorConfig {
            threshold: Duration::ZERO,
            ..config()
        },
    );
    assert_eq!(monitor.stats().name, "monitor-stats");
    let held: Vec<_> = (0..3)
        .map(|_| tracker.track(ResourceKind::Iterator, "scan"))
        .collect();
    monitor.tick();
    monitor.tick();
    let s = monitor.stats();
    // One (kind, site) group past the threshold per tick, three guards in it.
    assert_eq!(
        (s.checks_total, s.held_warnings_total, s.held_now),
        (2, 2, 3)
    );
    drop(held);
    monitor.tick();
    let s = monitor.stats();
    assert_eq!(
        (s.checks_total, s.held_warnings_total, s.held_now),
        (3, 2, 0)
    );
    assert_eq!(s.growth_warnings_total, 0);
}
