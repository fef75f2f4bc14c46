//! The maintenance contract over a vector index, and the budget, deferred
//! release and stats conventions it comes with.
//!
//! Properties:
//! 1. `maintenance_due` follows the rebuild policy set at run time, with a
//!    reason from a fixed set and an estimate of the bytes a run gives back;
//!    a run clears it.
//! 2. A cancelled run is an `Ok` report with `cancelled: true`; everything
//!    stays readable and nothing is lost.
//! 3. A second caller gets `AlreadyRunning` at once.
//! 4. The index is driven as `Arc<dyn Maintenance>` from `spawn_blocking`.
//! 5. A retired generation dropped unreleased goes to the index's reclaim
//!    queue (the drop frees nothing on its thread); `maintenance_due` says
//!    so and the next run frees it.
//! 6. The reservation holds exactly the serving generation's bytes plus
//!    the graph share reserved ahead plus retired generations not yet
//!    freed; a rebuild reserves its generation before it builds and, if
//!    refused, fails fast with the numbers and changes nothing.
//! 7. A cancelled `insert_batch` is a typed error with the count indexed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ebb_core::MemoryBudget;
use ebb_core::maintenance::{Maintenance, MaintenanceError, MaintenanceKind};
use ebb_hnsw::{
    Error, GraphBackend, HnswRsGraph, IndexConfig, Metric, NativeGraph, RebuildError,
    RebuildPolicy, VectorIndex,
};
use ebb_testkit::{Rng, clustered_vectors};
use tokio_util::sync::CancellationToken;

const _: () = {
    const fn driven_from_spawn_blocking<T: Maintenance + Send + Sync + 'static>() {}
    driven_from_spawn_blocking::<Arc<VectorIndex<HnswRsGraph>>>();
    driven_from_spawn_blocking::<Arc<VectorIndex<NativeGraph>>>();
};

/// An index of `n` clustered points of `dim`, with every `delete_every`-th
/// deleted.
fn index_with<B: GraphBackend>(
    config: IndexConfig,
    n: usize,
    delete_every: usize,
) -> (VectorIndex<B>, Vec<f32>) {
    let dim = config.dim();
    let mut rng = Rng::new(11);
    let data = clustered_vectors(&mut rng, n, dim, 8, 0.3);
    let index = VectorIndex::<B>::with_backend(config).unwrap();
    let points: Vec<(u64, &[f32])> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u64, v))
        .collect();
    index
        .insert_batch(&points, &CancellationToken::new())
        .unwrap();
    for i in (0..n as u64).step_by(delete_every) {
        assert!(index.delete(i));
    }
    (index, data)
}

fn small(dim: usize) -> IndexConfig {
    IndexConfig::new(dim, Metric::L2).with_ef_construction(40)
}

/// Invariant 5 of the index: what the reservation holds, from its stats.
fn accounted(index: &VectorIndex<impl GraphBackend>) -> u64 {
    let s = index.stats();
    s.memory_bytes + s.pending_graph_bytes + s.retired_bytes + s.rebuild_reserved_bytes
}

#[test]
fn due_follows_the_run_time_policy_and_a_run_clears_it() {
    // A quarter deleted: due under 0.2, not under 0.5.
    // (A size factor out of reach: the empty arrays of a fresh index sized
    // for a million points are oversized for 4000.)
    let policy = RebuildPolicy::default().with_max_size_factor(100.0);
    let (index, _) = index_with::<NativeGraph>(
        small(16).with_rebuild(policy.with_max_deleted_ratio(0.5)),
        4000,
        4,
    );
    assert_eq!(index.maintenance_kind(), MaintenanceKind::Index);
    assert!(index.maintenance_due().is_none(), "25 % is not over 0.5");
    index
        .set_rebuild_policy(policy.with_max_deleted_ratio(0.2))
        .unwrap();
    assert_eq!(index.rebuild_policy().max_deleted_ratio, 0.2);
    let due = index.maintenance_due().expect("25 % is over 0.2");
    assert_eq!(due.reason, "deleted_ratio");
    assert!(due.reclaimable_bytes > 0);
    // A bad policy is refused and the one in force stays.
    assert!(matches!(
        index.set_rebuild_policy(RebuildPolicy::default().with_max_size_factor(0.5)),
        Err(Error::InvalidConfig { .. })
    ));
    assert_eq!(index.rebuild_policy().max_deleted_ratio, 0.2);

    let report = index.run_maintenance(&CancellationToken::new()).unwrap();
    assert!(!report.cancelled && !report.skipped);
    assert_eq!(report.kind, Some(MaintenanceKind::Index));
    assert_eq!(report.items, 3000);
    assert!(report.bytes_moved > 0 && report.duration_secs > 0.0);
    let retired = report.deferred.expect("the retired generation");
    assert!(retired.bytes() > 0);
    retired.release();
    assert!(index.maintenance_due().is_none());
    let stats = index.stats();
    assert_eq!((stats.live_points, stats.deleted_points), (3000, 0));
    assert_eq!(stats.last_rebuild_reason, "deleted_ratio");

    // Nothing due: a run is skipped.
    let report = index.run_maintenance(&CancellationToken::new()).unwrap();
    assert!(report.skipped && report.deferred.is_none());
}

#[test]
fn a_cancelled_run_is_an_ok_report_and_loses_nothing() {
    let (index, data) = index_with::<HnswRsGraph>(small(16), 3000, 3);
    let before = index.stats();
    let token = CancellationToken::new();
    token.cancel();
    let report = index
        .run_maintenance(&token)
        .expect("a cancel is not an error");
    assert!(report.cancelled && report.deferred.is_none());
    let after = index.stats();
    assert_eq!(
        (after.live_points, after.deleted_points, after.generation),
        (before.live_points, before.deleted_points, 0)
    );
    for id in (1..3000u64).step_by(97).filter(|id| id % 3 != 0) {
        let v = &data[id as usize * 16..(id as usize + 1) * 16];
        assert_eq!(index.get_vector(id).as_deref(), Some(v));
        assert_eq!(index.search_with_ef(v, 1, 200).unwrap()[0].0, id);
    }
    // Due still, and a run with a live token does it.
    assert!(index.maintenance_due().is_some());
    let report = index.run_maintenance(&CancellationToken::new()).unwrap();
    assert!(!report.cancelled);
    report.deferred.expect("retired").release();
}

#[test]
fn a_second_caller_gets_already_running_at_once() {
    let (index, _) = index_with::<HnswRsGraph>(
        IndexConfig::new(64, Metric::L2).with_ef_construction(200),
        20_000,
        2,
    );
    let index = Arc::new(index);
    let token = CancellationToken::new();
    let refused = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (i, t) = (Arc::clone(&index), token.clone());
        let runner = s.spawn(move || i.run_maintenance(&t));
        // Wait until the rebuild has reserved its generation (it is under
        // way), then try a second run and a rebuild while it goes on.
        while !runner.is_finished() {
            if index.stats().rebuild_reserved_bytes > 0 {
                match index.run_maintenance(&CancellationToken::new()) {
                    Err(MaintenanceError::AlreadyRunning { kind }) => {
                        assert_eq!(kind, MaintenanceKind::Index);
                    }
                    other => panic!("second caller got {other:?}"),
                }
                assert_eq!(
                    index.rebuild(&CancellationToken::new()).unwrap_err(),
                    RebuildError::AlreadyRunning
                );
                refused.store(true, Ordering::Relaxed);
                token.cancel();
                break;
            }
            std::hint::spin_loop();
        }
        let report = runner.join().unwrap().expect("first run");
        if let Some(d) = report.deferred {
            d.release();
        }
    });
    assert!(
        refused.load(Ordering::Relaxed),
        "the first run ended too soon"
    );
}

#[test]
fn driven_as_arc_dyn_maintenance_from_spawn_blocking() {
    let (index, _) = index_with::<NativeGraph>(small(8), 2000, 2);
    let index = Arc::new(index);
    let worker: Arc<dyn Maintenance> = index.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(async move {
        let due = worker.maintenance_due().expect("half deleted");
        assert_eq!(due.reason, "deleted_ratio");
        let w = Arc::clone(&worker);
        let report =
            tokio::task::spawn_blocking(move || w.run_maintenance(&CancellationToken::new()))
                .await
                .unwrap()
                .unwrap();
        // The release goes to a blocking thread too.
        let deferred = report.deferred.expect("retired");
        tokio::task::spawn_blocking(move || deferred.release())
            .await
            .unwrap();
        report.items
    });
    assert_eq!(report, 1000);
    assert_eq!(index.stats().retired_bytes, 0);
    assert!(index.maintenance_due().is_none());
}

#[test]
fn a_dropped_retired_generation_goes_to_the_index_and_the_next_run_frees_it() {
    let budget = MemoryBudget::unlimited();
    let (index, _) = index_with::<NativeGraph>(small(32).with_budget(&budget, "hnsw"), 4000, 2);
    let report = index.rebuild(&CancellationToken::new()).unwrap();
    let share = report.retired.bytes();
    assert!(
        share > 4000 * 32 * 4,
        "the share covers the old vectors: {share}"
    );
    assert_eq!(index.stats().retired_bytes, share);
    drop(report); // e.g. on an async thread: must not free there
    let stats = index.stats();
    assert_eq!(stats.queued_release_bytes, share, "queued, not freed");
    assert_eq!(stats.retired_bytes, share);
    let due = index.maintenance_due().expect("the queue is due");
    assert_eq!(
        (due.reason, due.reclaimable_bytes),
        ("retired_graph", share)
    );
    assert_eq!(budget.reserved_bytes(), accounted(&index));

    let run = index.run_maintenance(&CancellationToken::new()).unwrap();
    assert_eq!(run.bytes_released, share);
    assert!(run.deferred.is_none(), "nothing else was due");
    let stats = index.stats();
    assert_eq!((stats.queued_release_bytes, stats.retired_bytes), (0, 0));
    assert_eq!(stats.released_bytes_total, share);
    assert!(index.maintenance_due().is_none());
    assert_eq!(budget.reserved_bytes(), accounted(&index));
}

#[test]
fn a_retired_generation_frees_in_bounded_steps() {
    let (index, _) = index_with::<NativeGraph>(small(64), 6000, 2);
    let mut retired = index.rebuild(&CancellationToken::new()).unwrap().retired;
    let total = retired.bytes();
    let mut steps = 0;
    let mut last = total;
    while !retired.release_step(256 << 10) {
        steps += 1;
        let now = retired.remaining_bytes();
        assert!(now < last, "every step frees something");
        assert!(
            last - now <= 2 * (256 << 10),
            "a step frees about its bound: {last} -> {now} of {total}"
        );
        last = now;
    }
    assert!(steps > 4, "{total} bytes in {steps} steps");
    assert!(retired.is_released());
    assert_eq!(retired.remaining_bytes(), 0);
    assert_eq!(index.stats().retired_bytes, 0);
}

#[test]
fn the_reservation_holds_what_the_index_holds() {
    let budget = MemoryBudget::unlimited();
    let dim = 24;
    let index =
        VectorIndex::<NativeGraph>::with_backend(small(dim).with_budget(&budget, "hnsw")).unwrap();
    assert_eq!(budget.reserved_bytes(), accounted(&index));
    let mut rng = Rng::new(5);
    let data = clustered_vectors(&mut rng, 3000, dim, 8, 0.3);
    for (i, v) in data.chunks_exact(dim).enumerate() {
        index.insert(i as u64, v).unwrap();
        if i % 500 == 0 {
            assert_eq!(
                budget.reserved_bytes(),
                accounted(&index),
                "after insert {i}"
            );
        }
    }
    let s = index.stats();
    // What it holds, not a model: the points' vectors by capacity, the
    // graph's own figure.
    assert!(s.points_bytes >= 3000 * dim as u64 * 4);
    assert!(s.graph_bytes >= (3000 - s.delta_points) * dim as u64 * 4);
    index.flush_delta().unwrap();
    assert_eq!(index.stats().pending_graph_bytes, 0);
    assert_eq!(budget.reserved_bytes(), accounted(&index));
    for i in 0..1500 {
        index.delete(i);
    }
    assert_eq!(budget.reserved_bytes(), accounted(&index));
    let before = budget.reserved_bytes();
    let report = index.rebuild(&CancellationToken::new()).unwrap();
    assert_eq!(budget.reserved_bytes(), accounted(&index));
    assert!(budget.reserved_bytes() > before, "both generations held");
    report.retired.release();
    assert_eq!(budget.reserved_bytes(), accounted(&index));
    assert!(budget.reserved_bytes() < before, "the old share given back");
}

#[test]
fn a_rebuild_the_budget_cannot_hold_fails_fast_with_the_numbers() {
    let budget = MemoryBudget::new(64 << 20);
    let (index, data) = index_with::<NativeGraph>(small(32).with_budget(&budget, "hnsw"), 4000, 4);
    // Everything else takes the rest of the budget but a little.
    let hog = budget.reservation("hog");
    hog.try_grow(budget.available_bytes() - (64 << 10)).unwrap();
    let before = index.stats();
    let reserved = budget.reserved_bytes();

    let err = index.rebuild(&CancellationToken::new()).unwrap_err();
    let refusal = err.budget_exceeded().expect("a budget refusal");
    assert_eq!(refusal.consumer, "hnsw");
    assert!(refusal.requested_bytes > refusal.available_bytes);
    assert_eq!(refusal.available_bytes, 64 << 10);
    let err = index
        .run_maintenance(&CancellationToken::new())
        .unwrap_err();
    assert!(matches!(err, MaintenanceError::OverBudget(_)));
    assert_eq!(err.budget_exceeded().unwrap().consumer, "hnsw");

    // Nothing changed.
    assert_eq!(budget.reserved_bytes(), reserved);
    let after = index.stats();
    assert_eq!(
        (
            after.generation,
            after.live_points,
            after.deleted_points,
            after.memory_bytes
        ),
        (
            0,
            before.live_points,
            before.deleted_points,
            before.memory_bytes
        )
    );
    assert_eq!(after.rebuild_failures_total, 2);
    let v = &data[33 * 32..34 * 32];
    assert_eq!(index.search_with_ef(v, 1, 200).unwrap()[0].0, 33);

    // With room, the same rebuild goes through.
    drop(hog);
    let report = index.run_maintenance(&CancellationToken::new()).unwrap();
    report.deferred.expect("retired").release();
    assert_eq!(index.stats().generation, 1);
    assert_eq!(budget.reserved_bytes(), accounted(&index));
}

#[test]
fn a_cancelled_insert_batch_says_so_with_the_count() {
    let index = VectorIndex::new(small(4)).unwrap();
    let v = [1.0, 2.0, 3.0, 4.0];
    let points: Vec<(u64, &[f32])> = (0..10).map(|i| (i, &v[..])).collect();
    let token = CancellationToken::new();
    token.cancel();
    assert_eq!(
        index.insert_batch(&points, &token),
        Err(Error::BatchCancelled { inserted: 0 })
    );
    assert!(index.is_empty());
    assert_eq!(
        index.insert_batch(&points, &CancellationToken::new()),
        Ok(10)
    );
}

#[test]
fn stats_carry_the_instance_name() {
    let index = VectorIndex::new(small(4).with_name("docs")).unwrap();
    assert_eq!(index.name(), "docs");
    assert_eq!(index.stats().name, "docs");
    assert_eq!(VectorIndex::new(small(4)).unwrap().stats().name, "default");
}

#[test]
fn a_known_workload_gives_exact_counts_and_totals() {
    let index = VectorIndex::new(small(4).with_name("docs")).unwrap();
    for id in 0..100u64 {
        index.insert(id, &[id as f32, 1.0, 2.0, 3.0]).unwrap();
    }
    for id in 0..25u64 {
        assert!(index.delete(id));
    }
    let s = index.stats();
    assert_eq!(s.name, "docs");
    assert_eq!((s.live_points, s.deleted_points), (75, 25));
    assert_eq!(s.deleted_ratio, 0.25);
    assert_eq!(s.memory_bytes, s.graph_bytes + s.points_bytes);
    assert_eq!(
        (s.generation, s.rebuilds_total, s.released_bytes_total),
        (0, 0, 0)
    );
    assert_eq!(s.rebuild_duration_seconds_total, 0.0);

    let report = index.rebuild(&CancellationToken::new()).unwrap();
    let retired = report.retired.bytes();
    report.retired.release();
    let s = index.stats();
    assert_eq!((s.live_points, s.deleted_points), (75, 0));
    assert_eq!((s.generation, s.rebuilds_total), (1, 1));
    assert_eq!(
        (s.rebuilds_cancelled_total, s.rebuild_failures_total),
        (0, 0)
    );
    assert_eq!(s.last_rebuild_reason, "manual");
    assert_eq!(
        s.rebuild_duration_seconds_total,
        s.last_rebuild_duration_seconds
    );
    assert_eq!((s.retired_bytes, s.released_bytes_total), (0, retired));
}
