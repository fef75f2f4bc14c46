//! loom models of the thread caches' concurrent cores, over the real code:
//!
//! - the biased reference count: the owner counts in a plain integer,
//!   other threads release atomically, the owner merges when it retires;
//!   exactly one party must see "last";
//! - the magazines' takeover (`OwnerState` over `ebb_core::presence`): an
//!   owner working on its state and a reclaimer taking it over are never
//!   inside at once, and nothing is lost or seen twice.
//!
//! Run with `just loom` (`RUSTFLAGS="--cfg loom" cargo test --release -p
//! ebb-pool --test loom`).

#![cfg(loom)]

use ebb_core::sync::{Arc, AtomicUsize, Ordering};
use ebb_pool::__private::{BiasedCount, OwnerState};

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

/// The owner puts two items into its state, each in its own `with_owner`
/// (as two drops into a magazine), while a reclaimer takes the state over
/// and drains it (as a trim). They are never inside together (a shared
/// counter would show 2), and every item ends exactly once either taken
/// or still in the state.
#[test]
fn an_owner_and_a_takeover_never_overlap_and_lose_nothing() {
    loom::model(|| {
        let state = Arc::new(OwnerState::new(Vec::<u32>::new()));
        let inside = Arc::new(AtomicUsize::new(0));
        let reclaimer = {
            let (state, inside) = (Arc::clone(&state), Arc::clone(&inside));
            loom::thread::spawn(move || {
                let mut taken = Vec::new();
                let n = OwnerState::take_over(std::iter::once(&*state), |i, s| {
                    assert_eq!(i, 0);
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "both inside");
                    taken.append(s);
                    inside.fetch_sub(1, Ordering::Relaxed);
                });
                assert!(n.is_some(), "loom always has its barrier");
                taken
            })
        };
        for item in [1, 2] {
            // SAFETY: this thread is the only owner of `state`.
            let done = unsafe {
                state.with_owner(|s| {
                    assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0, "both inside");
                    s.push(item);
                    inside.fetch_sub(1, Ordering::Relaxed);
                })
            };
            assert!(done.is_some(), "not re-entrant");
        }
        let mut all = reclaimer.join().unwrap();
        // SAFETY: the owner, and the reclaimer is gone (joined: its writes
        // happen before this).
        all.extend(unsafe { state.get_unchecked() }.drain(..));
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
    });
}
