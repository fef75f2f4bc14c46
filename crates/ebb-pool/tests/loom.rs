//! loom model of the biased reference count behind thread caches: the
//! owner counts in a plain integer, other threads release atomically, the
//! owner merges when it retires. Exactly one party must see "last".
//!
//! Run with `just loom` (`RUSTFLAGS="--cfg loom" cargo test --release -p
//! ebb-pool --test loom`).

#![cfg(loom)]

use ebb_core::sync::{Arc, AtomicUsize, Ordering};
use ebb_pool::__private::BiasedCount;

/// The owner made three guards (plus its registry hold): it drops one
/// itself, two other threads drop one each, and the owner retires, all at
/// once. Exactly one of them frees.
#[test]
fn exactly_one_of_merge_and_remote_releases_frees() {
    loom::model(|| {
        let count = Arc::new(BiasedCount::owned());
        let frees = Arc::new(AtomicUsize::new(0));
        let remote = |count: Arc<BiasedCount>, frees: Arc<AtomicUsize>| {
            loom::thread::spawn(move || {
                if count.release_remote() {
                    frees.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let a = remote(Arc::clone(&count), Arc::clone(&frees));
        let b = remote(Arc::clone(&count), Arc::clone(&frees));
        // Owner: 1 registry hold + 3 guards, minus 1 dropped at home, minus
        // the registry hold at retirement = 2 counted locally that the
        // remote threads release.
        let mut local: i64 = 1 + 3;
        local -= 1;
        local -= 1;
        if count.merge(local) {
            frees.fetch_add(1, Ordering::Relaxed);
        }
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(frees.load(Ordering::Relaxed), 1);
    });
}

/// With no guard left out, the merge itself frees.
#[test]
fn the_merge_frees_when_nothing_is_out() {
    loom::model(|| {
        let count = BiasedCount::owned();
        assert!(count.merge(0));
    });
}

/// An unowned count (the pool-wide fallback): the last of concurrent
/// releases frees, once.
#[test]
fn unowned_releases_free_once() {
    loom::model(|| {
        let count = Arc::new(BiasedCount::unowned(1));
        count.acquire_remote();
        let frees = Arc::new(AtomicUsize::new(0));
        let t = {
            let (count, frees) = (Arc::clone(&count), Arc::clone(&frees));
            loom::thread::spawn(move || {
                if count.release_remote() {
                    frees.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        if count.release_remote() {
            frees.fetch_add(1, Ordering::Relaxed);
        }
        t.join().unwrap();
        assert_eq!(frees.load(Ordering::Relaxed), 1);
    });
}
