//! The maintenance contract over both pools: the check answers from
//! counters with a reason from a fixed set, caps tightened at run time
//! make the next run trim to them, a cancelled run is an `Ok` report, a
//! second caller is refused at once, and an engine's worker drives either
//! pool as `Arc<dyn Maintenance>` from `spawn_blocking`.

use std::sync::{Arc, Barrier};

use ebb_core::maintenance::{Maintenance, MaintenanceError, MaintenanceKind};
use ebb_pool::{
    AdaptiveConfig, BufferPool, CancellationToken, ObjectPool, ObjectPoolConfig, PoolConfig,
    Recycle,
};

const _: () = {
    const fn driven_from_spawn_blocking<T: Maintenance + Send + Sync + 'static>() {}
    driven_from_spawn_blocking::<BufferPool>();
    driven_from_spawn_blocking::<ObjectPool<Vec<u8>>>();
    driven_from_spawn_blocking::<Arc<ObjectPool<String>>>();
};

fn store_only() -> BufferPool {
    BufferPool::new(
        PoolConfig::small_records()
            .with_name("store")
            .with_thread_cache(false)
            .with_adaptive(AdaptiveConfig::disabled()),
    )
    .unwrap()
}

fn run(m: &dyn Maintenance) -> ebb_core::maintenance::MaintenanceReport {
    m.run_maintenance(&CancellationToken::new()).expect("run")
}

#[test]
fn idle_retained_is_due_once_the_pool_sat_idle_and_a_run_clears_it() {
    let pool = store_only();
    assert_eq!(pool.maintenance_kind(), MaintenanceKind::Pool);
    assert!(pool.maintenance_due().is_none(), "nothing retained");
    let held: Vec<_> = (0..4).map(|_| pool.get(1000)).collect();
    drop(held);
    assert!(
        pool.maintenance_due().is_none(),
        "traffic since the last look: not idle yet"
    );
    let due = pool.maintenance_due().expect("idle since the last look");
    assert_eq!(due.reason, "idle_retained");
    assert_eq!(due.reclaimable_bytes, 4 * 1024);
    let report = run(&pool);
    assert_eq!(report.kind, Some(MaintenanceKind::Pool));
    assert!(!report.cancelled && !report.skipped);
    assert_eq!((report.items, report.bytes_released), (4, 4 * 1024));
    assert!(pool.maintenance_due().is_none());
    let s = pool.stats();
    assert_eq!((s.retained_bytes, s.charged_bytes), (0, 0));
    assert_eq!(s.maintenance_runs_total, 1);
    assert_eq!(s.maintenance_released_bytes_total, 4 * 1024);
    assert!(s.last_maintenance_seconds >= 0.0);
    // Nothing left: the next run is skipped.
    assert!(run(&pool).skipped);
}

#[test]
fn thread_caches_are_due_when_only_they_hold_buffers() {
    let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
    drop(pool.get(1000)); // a miss; the put goes to this thread's magazine
    assert_eq!(pool.stats().thread_cached_bytes, 1024);
    let _ = pool.maintenance_due();
    let due = pool.maintenance_due().expect("idle");
    assert_eq!(due.reason, "thread_caches");
    // An upper bound: the places lent to the magazine (a counter), not
    // the buffers in it (which only its owner counts).
    assert!(due.reclaimable_bytes >= 1024, "{due:?}");
    assert_eq!(run(&pool).bytes_released, 1024);
    assert_eq!(pool.stats().thread_cached_bytes, 0);
    assert!(pool.maintenance_due().is_none());
}

#[test]
fn lowering_a_cap_at_run_time_makes_the_next_run_trim_to_it() {
    // Per-tier cap.
    let pool = store_only();
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    assert!(
        pool.maintenance_due()
            .is_none_or(|d| d.reason != "over_cap")
    );
    pool.set_max_retained(2);
    let due = pool.maintenance_due().expect("over the new cap");
    assert_eq!(due.reason, "over_cap");
    assert_eq!(due.reclaimable_bytes, 8 * 1024);
    assert!(run(&pool).deferred.is_none());
    assert!(pool.stats().tiers[2].retained <= 2);
    assert!(pool.maintenance_due().is_none());
    // Puts follow the new cap at once.
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    assert_eq!(pool.stats().tiers[2].retained, 2);

    // Per-tier bytes and the total.
    let pool = store_only();
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    pool.set_max_retained_bytes(3 * 1024);
    assert_eq!(pool.maintenance_due().unwrap().reason, "over_cap");
    assert!(run(&pool).deferred.is_none());
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    assert_eq!(pool.stats().tiers[2].retained, 3);
    pool.set_max_total_retained_bytes(1024);
    assert_eq!(pool.max_total_retained_bytes(), 1024);
    let due = pool.maintenance_due().unwrap();
    assert_eq!((due.reason, due.reclaimable_bytes), ("over_cap", 2 * 1024));
    assert!(run(&pool).deferred.is_none());
    let held: Vec<_> = (0..10).map(|_| pool.get(1000)).collect();
    drop(held);
    assert!(pool.stats().retained_bytes <= 1024);

    // The object pool's cap.
    let objects = ObjectPool::new(
        ObjectPoolConfig::default()
            .with_stripes(1)
            .with_adaptive(AdaptiveConfig::disabled()),
        || vec![0u64; 16],
    )
    .unwrap();
    let held: Vec<_> = (0..10).map(|_| objects.get()).collect();
    drop(held);
    objects.set_max_retained(4);
    assert_eq!(objects.maintenance_due().unwrap().reason, "over_cap");
    assert!(run(&objects).deferred.is_none());
    assert!(objects.maintenance_due().is_none());
    let held: Vec<_> = (0..10).map(|_| objects.get()).collect();
    drop(held);
    assert_eq!(objects.stats().retained, 4);
    objects.set_max_retained_bytes(0);
    assert_eq!(objects.maintenance_due().unwrap().reason, "over_cap");
}

#[test]
fn a_cancelled_run_is_an_ok_report_and_frees_nothing() {
    let pool = store_only();
    let held: Vec<_> = (0..4).map(|_| pool.get(1000)).collect();
    drop(held);
    let token = CancellationToken::new();
    token.cancel();
    let report = pool.run_maintenance(&token).expect("a cancel is no error");
    assert!(report.cancelled);
    assert_eq!((report.items, report.bytes_released), (0, 0));
    assert_eq!(pool.stats().retained, 4, "nothing lost, nothing freed");
    let again = pool.get(1000);
    assert_eq!(pool.stats().hits_total, 1);
    drop(again);

    let objects = ObjectPool::new(ObjectPoolConfig::default(), String::new).unwrap();
    drop(objects.get());
    let report = objects.run_maintenance(&token).unwrap();
    assert!(report.cancelled);
    assert_eq!(objects.stats().retained, 1);
}

/// An object whose drop waits at a barrier twice: a run that frees it is
/// held in progress between the two.
struct Blocking(Option<Arc<Barrier>>);

impl Recycle for Blocking {
    fn recycle(&mut self) {}
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.wait();
            b.wait();
        }
    }
}

#[test]
fn a_second_caller_gets_already_running_at_once() {
    let barrier = Arc::new(Barrier::new(2));
    let b = Arc::clone(&barrier);
    let pool = Arc::new(
        ObjectPool::new(ObjectPoolConfig::default(), move || {
            Blocking(Some(Arc::clone(&b)))
        })
        .unwrap(),
    );
    drop(pool.get()); // retained: the run's trim will drop it
    let p = Arc::clone(&pool);
    let runner = std::thread::spawn(move || p.run_maintenance(&CancellationToken::new()));
    barrier.wait(); // the run is inside the object's drop
    let second = pool.run_maintenance(&CancellationToken::new());
    // The check answers while the run is under way.
    let due = pool.maintenance_due();
    barrier.wait();
    let first = runner.join().unwrap().expect("the first run");
    assert_eq!(first.items, 1);
    match second {
        Err(MaintenanceError::AlreadyRunning { kind }) => assert_eq!(kind, MaintenanceKind::Pool),
        other => panic!("expected AlreadyRunning, got {other:?}"),
    }
    assert!(due.is_none());
    // Once it ended, a run goes ahead again.
    assert!(run(&*pool).skipped);
}

#[test]
fn both_pools_run_as_dyn_maintenance_from_spawn_blocking() {
    let buffers = BufferPool::new(PoolConfig::small_records().with_name("records")).unwrap();
    let objects = ObjectPool::new(
        ObjectPoolConfig::default().with_name("batches"),
        Vec::<u8>::new,
    )
    .unwrap();
    assert_eq!((buffers.name(), objects.name()), ("records", "batches"));
    drop(buffers.get(100));
    drop(objects.get());
    let workers: Vec<Arc<dyn Maintenance>> =
        vec![Arc::new(buffers.clone()), Arc::new(objects.clone())];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let reports = rt.block_on(async move {
        let mut reports = Vec::new();
        for w in workers {
            let token = CancellationToken::new();
            let r = tokio::task::spawn_blocking(move || w.run_maintenance(&token))
                .await
                .unwrap();
            reports.push(r.expect("run"));
        }
        reports
    });
    assert_eq!(
        reports[0].bytes_released, 256,
        "this thread's cache, reached"
    );
    assert_eq!(reports[1].items, 1);
    assert_eq!(buffers.stats().retained, 0);
    assert_eq!(objects.stats().retained, 0);
    assert_eq!(buffers.stats().name, "records");
    assert_eq!(objects.stats().name, "batches");
}
