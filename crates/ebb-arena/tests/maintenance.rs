//! The maintenance contract over arenas: the check answers from counters
//! and follows the run-time policy; a run reports what it did, a cancelled
//! run says so in an `Ok` report, and a second caller is refused at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ebb_arena::{BlobArena, CancellationToken, CompactionPolicy, SlabConfig, TypedArena};
use ebb_core::maintenance::{Maintenance, MaintenanceError, MaintenanceKind};

fn sparse_arena(records: usize, keep_every: usize) -> BlobArena {
    let arena = BlobArena::new(SlabConfig::default().with_slab_bytes(64 << 10)).expect("config");
    let handles: Vec<_> = (0..records)
        .map(|i| arena.insert(&[i as u8; 200]).expect("insert"))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        if i % keep_every != 0 {
            assert!(arena.remove(h));
        }
    }
    arena.reclaim();
    arena
}

const _: () = {
    const fn driven_from_spawn_blocking<T: Maintenance + Send + Sync + 'static>() {}
    driven_from_spawn_blocking::<Arc<BlobArena>>();
    driven_from_spawn_blocking::<Arc<TypedArena<[u8; 32]>>>();
};

#[test]
fn due_follows_the_run_time_policy_and_a_run_clears_it() {
    let arena = sparse_arena(20_000, 3); // a third live: under 0.5
    arena.set_compaction_policy(CompactionPolicy::default().with_min_reclaim_bytes(0));
    let due = arena
        .maintenance_due()
        .expect("a third live is sparse under 0.5");
    assert_eq!(due.reason, "sparse_slabs");
    assert!(due.reclaimable_bytes > 0);
    assert_eq!(arena.maintenance_kind(), MaintenanceKind::Arena);

    let report = arena
        .run_maintenance(&CancellationToken::new())
        .expect("run");
    assert!(!report.cancelled && !report.skipped);
    assert!(report.items > 0 && report.bytes_moved > 0);
    assert!(arena.maintenance_due().is_none(), "nothing sparse left");

    // Tightening the policy at run time makes more work due.
    let arena = sparse_arena(20_000, 3);
    arena.set_compaction_policy(
        CompactionPolicy::default()
            .with_max_live_ratio(0.2)
            .with_max_waste_ratio(1.0)
            .with_min_reclaim_bytes(0),
    );
    assert!(
        arena.maintenance_due().is_none(),
        "a third live is not under 0.2"
    );
    arena.set_compaction_policy(
        CompactionPolicy::default()
            .with_max_live_ratio(0.8)
            .with_min_reclaim_bytes(0),
    );
    assert!(arena.maintenance_due().is_some());
    assert_eq!(arena.compaction_policy().max_live_ratio, 0.8);
}

#[test]
fn waste_past_the_bound_compacts_denser_slabs_until_it_is_within() {
    // Two records of three live in every slab: none under 0.5, a third of
    // the sealed bytes waste.
    let records = 30_000;
    let arena = BlobArena::new(SlabConfig::default().with_slab_bytes(64 << 10)).expect("config");
    let handles: Vec<_> = (0..records)
        .map(|i| arena.insert(&[i as u8; 200]).expect("insert"))
        .collect();
    let mut kept = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if i % 3 == 0 {
            assert!(arena.remove(h));
        } else {
            kept.push((i, h));
        }
    }
    arena.reclaim();
    let waste = |a: &BlobArena| {
        let s = a.stats();
        1.0 - s.live_bytes as f64 / s.resident_bytes as f64
    };
    let before = waste(&arena);
    assert!(before > 0.3, "{before}");
    let off = CompactionPolicy::default()
        .with_max_waste_ratio(1.0)
        .with_min_reclaim_bytes(0);
    arena.set_compaction_policy(off);
    assert!(arena.maintenance_due().is_none(), "no slab is under 0.5");

    arena.set_compaction_policy(off.with_max_waste_ratio(0.2));
    assert!(arena.maintenance_due().is_some(), "a third is waste");
    let report = arena
        .run_maintenance(&CancellationToken::new())
        .expect("run");
    assert!(report.bytes_released > 0 && report.items > 0, "{report:?}");
    arena.reclaim();
    let after = waste(&arena);
    // Within the bound, give or take the active target slab's free tail.
    assert!(after < 0.22, "waste {before:.3} -> {after:.3}");
    for (i, h) in kept {
        assert_eq!(&*arena.get(h).expect("kept"), &[i as u8; 200][..]);
    }
}

#[test]
fn a_cancelled_run_is_an_ok_report_and_loses_nothing() {
    let arena = sparse_arena(20_000, 3);
    arena.set_compaction_policy(CompactionPolicy::default().with_min_reclaim_bytes(0));
    let token = CancellationToken::new();
    token.cancel();
    let report = arena
        .run_maintenance(&token)
        .expect("a cancel is not an error");
    assert!(report.cancelled);
    assert_eq!(report.items, 0, "cancelled before the first slab");
    assert_eq!(arena.len(), 20_000usize.div_ceil(3));
}

#[test]
fn a_second_caller_gets_already_running_at_once() {
    let arena = Arc::new(sparse_arena(400_000, 4));
    arena.set_compaction_policy(CompactionPolicy::default().with_min_reclaim_bytes(0));
    let running = AtomicBool::new(false);
    let mut refused = false;
    let running = &running;
    std::thread::scope(|s| {
        let a = Arc::clone(&arena);
        let runner = s.spawn(move || {
            running.store(true, Ordering::Release);
            let r = a.run_maintenance(&CancellationToken::new());
            running.store(false, Ordering::Release);
            r
        });
        // Wait until the pass has emptied a slab (it is under way), then
        // try a second run while it goes on.
        while !runner.is_finished() {
            if running.load(Ordering::Acquire) && arena.stats().slabs_compacted_total > 0 {
                match arena.run_maintenance(&CancellationToken::new()) {
                    Err(MaintenanceError::AlreadyRunning { kind }) => {
                        assert_eq!(kind, MaintenanceKind::Arena);
                        refused = true;
                        break;
                    }
                    Ok(_) => break, // the first pass ended just before
                    Err(e) => panic!("{e}"),
                }
            }
            std::hint::spin_loop();
        }
        let first = runner.join().expect("runner").expect("the first run");
        assert!(first.deferred.is_none());
    });
    assert!(
        refused,
        "the first pass ended before a second caller could try"
    );
}
