//! Each detector of LeakCheck catches a planted leak and passes the clean
//! twin of the same workload. Every scenario runs in a process of its own
//! (threads, fds and the heap are process-wide).

use std::alloc::System;
use std::sync::Mutex;
use std::time::Duration;

use ebb_leak::{
    Finding, HeapSource, LeakCheck, ResourceKind, ResourceTracker, Tolerance, TrackedArc,
    TrackerConfig, TrackingAllocator, TrackingLevel,
};
use ebb_testkit::in_child;

#[global_allocator]
static ALLOC: TrackingAllocator<System> = TrackingAllocator::new(System);

fn quick() -> Tolerance {
    Tolerance::default().with_settle(Duration::from_millis(300))
}

fn findings(check: &LeakCheck) -> Vec<Finding> {
    check
        .verify(quick())
        .err()
        .map(|f| f.items)
        .unwrap_or_default()
}

#[test]
fn forgotten_guard_is_named_with_its_site() {
    if !in_child("forgotten_guard_is_named_with_its_site") {
        return;
    }
    let tracker = ResourceTracker::new(
        "leakcheck",
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    );
    let check = LeakCheck::baseline();
    drop(tracker.track(ResourceKind::Transaction, "committed"));
    check.assert_clean(quick());

    std::mem::forget(tracker.track(ResourceKind::Transaction, "never committed"));
    let found = check.verify(quick()).unwrap_err();
    let text = found.to_string();
    assert!(
        matches!(&found.items[..], [Finding::Tracked { kind, after: 1, sites, .. }]
            if kind == "transaction" && sites[0].contains("tests/leak_check.rs")),
        "{text}"
    );
}

#[test]
fn thread_never_joined_is_named() {
    if !in_child("thread_never_joined_is_named") {
        return;
    }
    let check = LeakCheck::baseline();
    std::thread::Builder::new()
        .name("joined".into())
        .spawn(|| ())
        .unwrap()
        .join()
        .unwrap();
    check.assert_clean(quick());

    static PARKED: Mutex<Option<std::sync::mpsc::Receiver<()>>> = Mutex::new(None);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    *PARKED.lock().unwrap() = Some(rx);
    std::thread::Builder::new()
        .name("planted-leak".into())
        .spawn(move || {
            let _keep = tx;
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    let found = findings(&check);
    assert!(
        found
            .iter()
            .any(|f| matches!(f, Finding::Threads { new_names, .. }
            if new_names.iter().any(|n| n == "planted-leak"))),
        "{found:?}"
    );
}

#[test]
fn tokio_task_never_stopped_is_counted() {
    if !in_child("tokio_task_never_stopped_is_counted") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let check = LeakCheck::with_runtime(rt.handle().clone());
    rt.block_on(async {
        tokio::spawn(async { tokio::time::sleep(Duration::from_millis(1)).await })
            .await
            .unwrap();
    });
    check.assert_clean(quick());

    rt.spawn(std::future::pending::<()>());
    let found = findings(&check);
    assert!(
        found.iter().any(|f| matches!(
            f,
            Finding::Tasks {
                before: 0,
                after: 1
            }
        )),
        "{found:?}"
    );
}

#[test]
fn fd_never_closed_is_counted() {
    if !in_child("fd_never_closed_is_counted") {
        return;
    }
    let check = LeakCheck::baseline();
    drop(std::fs::File::open("/proc/self/status").unwrap());
    check.assert_clean(quick());

    std::mem::forget(std::fs::File::open("/proc/self/status").unwrap());
    let found = findings(&check);
    assert!(
        found.iter().any(|f| matches!(f, Finding::Fds { .. })),
        "{found:?}"
    );
}

#[test]
fn box_leak_loop_grows_the_heap() {
    if !in_child("box_leak_loop_grows_the_heap") {
        return;
    }
    let check = LeakCheck::baseline();
    assert_eq!(check.heap_source(), HeapSource::TrackingAllocator);
    for _ in 0..64 {
        drop(std::hint::black_box(vec![1u8; 64 << 10]));
    }
    check.assert_clean(quick());

    // Leaked for good, but kept reachable from a static so LeakSanitizer
    // (`just asan`) does not fail this test for the leak it plants.
    static LEAKED: Mutex<Vec<&'static mut [u8]>> = Mutex::new(Vec::new());
    for _ in 0..64 {
        let leaked = Box::leak(std::hint::black_box(vec![1u8; 64 << 10]).into_boxed_slice());
        LEAKED.lock().unwrap().push(leaked);
    }
    let found = findings(&check);
    assert!(
        found
            .iter()
            .any(|f| matches!(f, Finding::Heap { before, after, .. }
            if after - before >= 4 << 20)),
        "{found:?}"
    );
}

struct Node {
    next: Mutex<Option<TrackedArc<Node>>>,
    back: Mutex<Option<ebb_leak::TrackedWeak<Node>>>,
}

fn pair(tracker: &ResourceTracker, strong_back: bool) -> TrackedArc<Node> {
    let a = TrackedArc::new(
        Node {
            next: Mutex::new(None),
            back: Mutex::new(None),
        },
        tracker,
    );
    let b = TrackedArc::new(
        Node {
            next: Mutex::new(None),
            back: Mutex::new(None),
        },
        tracker,
    );
    *a.next.lock().unwrap() = Some(b.clone());
    if strong_back {
        *b.next.lock().unwrap() = Some(a.clone()); // the cycle
    } else {
        *b.back.lock().unwrap() = Some(TrackedArc::downgrade(&a));
    }
    a
}

#[test]
fn tracked_arc_cycle_is_named_by_type() {
    if !in_child("tracked_arc_cycle_is_named_by_type") {
        return;
    }
    let tracker = ResourceTracker::new("arcs", TrackerConfig::default());
    let check = LeakCheck::baseline();
    for _ in 0..10 {
        drop(pair(&tracker, false));
    }
    check.assert_clean(quick());

    // Keep a weak handle to each cycle to break it after the check, so
    // LeakSanitizer (`just asan`) does not fail the test for its own plant.
    let cycles: Vec<_> = (0..10)
        .map(|_| TrackedArc::downgrade(&pair(&tracker, true)))
        .collect();
    let found = findings(&check);
    assert!(
        found
            .iter()
            .any(|f| matches!(f, Finding::Tracked { kind, after: 20, .. }
            if kind.ends_with("leak_check::Node"))),
        "{found:?}"
    );
    for weak in cycles {
        let a = weak.upgrade().expect("the cycle keeps it alive");
        let b = a.next.lock().unwrap().take();
        if let Some(b) = b {
            b.next.lock().unwrap().take();
        }
    }
    check.assert_clean(quick());
}

#[test]
fn tolerances_at_their_maximum_mean_ignore_not_overflow() {
    // `before + tolerance` overflowed (a panic) for a tolerance of MAX.
    let check = LeakCheck::baseline();
    let anything = Tolerance {
        heap_bytes: u64::MAX,
        threads: usize::MAX,
        fds: usize::MAX,
        tracked: i64::MAX,
        tasks: usize::MAX,
        ..quick()
    };
    let tracker = ResourceTracker::new("leakcheck-max", TrackerConfig::default());
    let held = tracker.track(ResourceKind::Task, "held");
    let thread = std::thread::spawn(|| std::thread::sleep(Duration::from_millis(200)));
    check.assert_clean(anything);
    drop(held);
    thread.join().unwrap();
}

#[test]
fn a_finding_whose_numbers_fell_still_displays() {
    // `after - before` in the message overflowed for a hand-made finding.
    let findings = ebb_leak::LeakFindings {
        items: vec![Finding::Heap {
            source: HeapSource::Rss,
            before: 10,
            after: 5,
            percent: -50.0,
            allowed: 0,
        }],
    };
    assert!(
        findings.to_string().contains("10 -> 5 bytes: +0"),
        "{findings}"
    );
}
