//! One planted leak per run, for comparing detectors on the same leak:
//! LeakCheck (printed here), LeakSanitizer (`just asan-leaks`) and valgrind
//! memcheck (`just valgrind-leaks`), which judge the process at exit.
//!
//! ```text
//! cargo run --example planted_leaks -- <guard|thread|task|fd|box-leak|arc-cycle|none>
//! ```

use std::time::Duration;

use ebb_leak::{
    LeakCheck, ResourceKind, ResourceTracker, Tolerance, TrackedArc, TrackedWeak, TrackerConfig,
    TrackingLevel,
};

struct Node {
    next: std::sync::Mutex<Option<TrackedArc<Node>>>,
    _back: Option<TrackedWeak<Node>>,
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "none".into());
    let tracker = ResourceTracker::new(
        "planted",
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("runtime");
    let check = LeakCheck::with_runtime(runtime.handle().clone());
    match scenario.as_str() {
        "guard" => std::mem::forget(tracker.track(ResourceKind::Transaction, "never committed")),
        "thread" => {
            std::thread::Builder::new()
                .name("planted-leak".into())
                .spawn(|| {
                    loop {
                        std::thread::park();
                    }
                })
                .expect("thread");
        }
        "task" => {
            runtime.spawn(std::future::pending::<()>());
        }
        "fd" => std::mem::forget(std::fs::File::open("/proc/self/status").expect("open")),
        "box-leak" => {
            for _ in 0..64 {
                Box::leak(vec![1u8; 64 << 10].into_boxed_slice());
            }
        }
        "arc-cycle" => {
            for _ in 0..10 {
                let a = TrackedArc::new(
                    Node {
                        next: std::sync::Mutex::new(None),
                        _back: None,
                    },
                    &tracker,
                );
                let b = TrackedArc::new(
                    Node {
                        next: std::sync::Mutex::new(Some(a.clone())),
                        _back: None,
                    },
                    &tracker,
                );
                *a.next.lock().expect("lock") = Some(b);
            }
        }
        "none" => {}
        other => panic!("unknown scenario {other}"),
    }
    let tolerance = Tolerance::default()
        .with_heap_bytes(1 << 20)
        .with_settle(Duration::from_millis(300));
    match check.verify(tolerance) {
        Ok(()) => println!("leakcheck {scenario}: clean"),
        Err(found) => print!("leakcheck {scenario}: FOUND\n{found}"),
    }
}
