//! Pool and leak calls from inside another thread-local's destructor, on a
//! thread that exits: before the pool's and tracker's own thread-locals are
//! torn down, after, and on a thread whose only calls are in the
//! destructor. A panic there would abort the process; the destructor
//! catches any, and the test asserts there was none and that every count
//! balances once the thread is gone.
//!
//! Thread-local destructors run in reverse order of first use (glibc's
//! `__cxa_thread_atexit_impl`, and std's own list), so the order is set
//! by which thread-local the thread touches first.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use ebb_leak::{ResourceKind, ResourceTracker, Tracked, TrackedArc, TrackerConfig, TrackingLevel};
use ebb_pool::{BufferPool, ObjectPool, ObjectPoolConfig, PoolConfig, Pooled, PooledBuf};

/// Runs its closure when the thread-local holding it is destroyed, and
/// reports whether the closure panicked.
struct AtExit {
    work: Option<Box<dyn FnOnce()>>,
    report: mpsc::Sender<Result<(), String>>,
}

impl Drop for AtExit {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            });
            let _ = self.report.send(outcome);
        }
    }
}

thread_local! {
    static AT_EXIT: RefCell<Option<AtExit>> = const { RefCell::new(None) };
}

/// Registers `AT_EXIT`'s destructor now (first use) and gives it `work`.
fn at_exit(work: Box<dyn FnOnce()>, report: mpsc::Sender<Result<(), String>>) {
    AT_EXIT.with(|slot| {
        *slot.borrow_mut() = Some(AtExit {
            work: Some(work),
            report,
        });
    });
}

struct Fixture {
    buffers: BufferPool,
    objects: ObjectPool<Vec<u64>>,
    tracker: ResourceTracker,
}

fn fixture(name: &str) -> Fixture {
    let tracker = ResourceTracker::new(
        name,
        TrackerConfig::default().with_level(TrackingLevel::Paranoid),
    );
    Fixture {
        buffers: BufferPool::new(PoolConfig::small_records().with_tracker(tracker)).unwrap(),
        objects: ObjectPool::new(
            ObjectPoolConfig::default().with_tracker(tracker, ResourceKind::Iterator),
            || Vec::with_capacity(16),
        )
        .unwrap(),
        tracker,
    }
}

/// What a thread holds from its normal life into its teardown.
struct Held {
    _buf: PooledBuf,
    _obj: Pooled<Vec<u64>>,
    _guard: Tracked,
    _arc: TrackedArc<u64>,
}

/// Every public call of the four APIs, plus the drop of what the thread
/// held (made before teardown, possibly on its thread cache and slot).
fn teardown_work(f: &Fixture, held: Option<Held>) -> Box<dyn FnOnce()> {
    let (buffers, objects, tracker) = (f.buffers.clone(), f.objects.clone(), f.tracker);
    Box::new(move || {
        drop(held);
        let mut buf = buffers.get(100);
        buf.extend_from_slice(b"in a destructor");
        let big = buffers.get(3000);
        drop(buf);
        drop(big);
        let _ = buffers.try_get(usize::MAX);
        buffers.trim();
        let mut obj = objects.get();
        obj.push(7);
        drop(obj);
        let guard = tracker.track(ResourceKind::Transaction, "teardown");
        guard.touch();
        drop(guard);
        let a = TrackedArc::new(5u64, &tracker);
        let b = a.clone();
        drop((a, b));
        let _ = tracker.check(std::time::Duration::ZERO);
    })
}

fn hold(f: &Fixture) -> Held {
    Held {
        _buf: f.buffers.get(200),
        _obj: f.objects.get(),
        _guard: f.tracker.track(ResourceKind::Connection, "held"),
        _arc: TrackedArc::new(1u64, &f.tracker),
    }
}

fn assert_balanced(f: &Fixture) {
    let b = f.buffers.stats();
    assert_eq!(
        (b.in_use, b.gets_total),
        (0, b.puts_total),
        "buffers: {b:?}"
    );
    assert_eq!(b.gets_total, b.hits_total + b.misses_total);
    let o = f.objects.stats();
    assert_eq!(
        (o.in_use, o.gets_total),
        (0, o.puts_total),
        "objects: {o:?}"
    );
    assert!(
        f.tracker.live_counts().is_empty(),
        "tracked: {:?}",
        f.tracker.live_counts()
    );
    assert!(f.tracker.check(std::time::Duration::ZERO).is_clean());
}

fn run_thread(body: impl FnOnce(mpsc::Sender<Result<(), String>>) + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || body(tx))
        .join()
        .expect("the thread exits cleanly");
    let outcome = rx.recv().expect("the destructor ran");
    assert_eq!(
        outcome,
        Ok(()),
        "a call from a thread-local destructor panicked"
    );
}

#[test]
fn calls_from_a_destructor_that_runs_before_the_pools_thread_locals_go() {
    let f = fixture("tls-before");
    let (buffers, objects, tracker) = (f.buffers.clone(), f.objects.clone(), f.tracker);
    let work_fixture = Fixture {
        buffers: f.buffers.clone(),
        objects: f.objects.clone(),
        tracker: f.tracker,
    };
    run_thread(move |tx| {
        // Pool and tracker thread-locals first: their destructors run last.
        let held = hold(&Fixture {
            buffers,
            objects,
            tracker,
        });
        drop(tracker.track(ResourceKind::Task, "warm"));
        at_exit(teardown_work(&work_fixture, Some(held)), tx);
    });
    assert_balanced(&f);
}

#[test]
fn calls_from_a_destructor_that_runs_after_the_pools_thread_locals_are_gone() {
    let f = fixture("tls-after");
    let (buffers, objects, tracker) = (f.buffers.clone(), f.objects.clone(), f.tracker);
    let work_fixture = Fixture {
        buffers: f.buffers.clone(),
        objects: f.objects.clone(),
        tracker: f.tracker,
    };
    run_thread(move |tx| {
        // Our thread-local first: its destructor runs after the pool's
        // thread cache registry and the tracker's slots are torn down.
        let (late_tx, late_rx) = mpsc::channel::<Held>();
        let work = teardown_work(&work_fixture, None);
        at_exit(
            Box::new(move || {
                let held = late_rx.try_recv().ok();
                drop(held);
                work();
            }),
            tx,
        );
        let held = hold(&Fixture {
            buffers,
            objects,
            tracker,
        });
        late_tx.send(held).expect("the receiver lives in AT_EXIT");
    });
    assert_balanced(&f);
}

#[test]
fn a_thread_whose_only_calls_are_in_a_destructor() {
    let f = fixture("tls-only");
    let work_fixture = Fixture {
        buffers: f.buffers.clone(),
        objects: f.objects.clone(),
        tracker: f.tracker,
    };
    run_thread(move |tx| at_exit(teardown_work(&work_fixture, None), tx));
    assert_balanced(&f);
}
