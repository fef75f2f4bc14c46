//! loom model of the slab release protocol (`LiveCounter`): the race
//! between the seal of a slab and the last frees of its allocations, and
//! between the owner's restart of an emptied active slab and a late free.
//!
//! Run with `just loom` (`RUSTFLAGS="--cfg loom" cargo test --release
//! -p ebb-slab --test loom`).

#![cfg(loom)]

use ebb_core::sync::{Arc, AtomicUsize, Ordering};
use ebb_slab::__private::LiveCounter;

/// The owner allocated 100 bytes in three allocations (50, 30, 20); two
/// other threads free two of them while the owner frees the third and
/// seals. Exactly one operation must see the slab empty.
#[test]
fn exactly_one_of_seal_and_last_free_releases() {
    loom::model(|| {
        let live = Arc::new(LiveCounter::new_active());
        let releases = Arc::new(AtomicUsize::new(0));
        let spawn_free = |bytes: u64| {
            let live = Arc::clone(&live);
            let releases = Arc::clone(&releases);
            loom::thread::spawn(move || {
                if live.free(bytes) {
                    releases.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let a = spawn_free(50);
        let b = spawn_free(30);
        if live.free(20) {
            releases.fetch_add(1, Ordering::Relaxed);
        }
        if live.seal(100) {
            releases.fetch_add(1, Ordering::Relaxed);
        }
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(releases.load(Ordering::Relaxed), 1);
        assert_eq!(live.sealed_live_bytes(), Some(0));
    });
}

/// With one allocation still live, the seal must not release, and the free
/// racing with the seal must release exactly once.
#[test]
fn seal_with_live_bytes_leaves_release_to_the_free() {
    loom::model(|| {
        let live = Arc::new(LiveCounter::new_active());
        let l2 = Arc::clone(&live);
        let t = loom::thread::spawn(move || l2.free(64));
        let sealed_empty = live.seal(64);
        let freed_empty = t.join().unwrap();
        assert!(
            sealed_empty ^ freed_empty,
            "seal {sealed_empty} free {freed_empty}"
        );
    });
}

/// The owner restarts an active slab only after seeing every byte freed;
/// a free racing with the check can never make the restarted counter
/// wrong: after the restart and a new 10-byte allocation sealed, the slab
/// holds exactly 10 live bytes.
#[test]
fn restart_of_an_emptied_active_slab_is_exact() {
    loom::model(|| {
        let live = Arc::new(LiveCounter::new_active());
        let l2 = Arc::clone(&live);
        let t = loom::thread::spawn(move || assert!(!l2.free(40)));
        let mut allocated = 40;
        loop {
            if live.active_is_empty(allocated) {
                live.reset_active();
                allocated = 0;
                break;
            }
            loom::thread::yield_now();
        }
        t.join().unwrap();
        allocated += 10;
        assert!(!live.seal(allocated));
        assert_eq!(live.sealed_live_bytes(), Some(10));
    });
}
