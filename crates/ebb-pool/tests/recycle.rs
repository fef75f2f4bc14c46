//! `Recycle` implementations that misbehave: a size that changes between
//! the give and the take, an absurd size, a panicking `recycle` or
//! `retained_bytes`, and one that calls back into its own pool. Whatever
//! the user's impl does, the pool's counts stay consistent
//! (`retained == 0` means `retained_bytes == 0`, `in_use == gets - puts`,
//! the budget charge covers what is retained and returns to zero on trim)
//! and no lock is left held (every test uses one stripe, so a held lock
//! would hang the next call).
//!
//! Properties:
//! 1. A take subtracts exactly what its give added (store invariant 5).
//! 2. A panic in user code drops the object and counts it as put and
//!    discarded; the pool stays usable.
//! 3. User code runs outside every pool lock.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ebb_core::budget::MemoryBudget;
use ebb_pool::{AdaptiveConfig, ObjectPool, ObjectPoolConfig, PoolStats, Recycle};

/// A `Recycle` whose size and panics are steered from the test.
struct Steered {
    bytes: Arc<AtomicUsize>,
    panic_in_recycle: Arc<AtomicBool>,
    panic_in_size: Arc<AtomicBool>,
}

impl Recycle for Steered {
    fn recycle(&mut self) {
        assert!(
            !self.panic_in_recycle.load(Ordering::Relaxed),
            "recycle panics (on purpose)"
        );
    }

    fn retained_bytes(&self) -> usize {
        assert!(
            !self.panic_in_size.load(Ordering::Relaxed),
            "retained_bytes panics (on purpose)"
        );
        self.bytes.load(Ordering::Relaxed)
    }
}

struct Knobs {
    bytes: Arc<AtomicUsize>,
    panic_in_recycle: Arc<AtomicBool>,
    panic_in_size: Arc<AtomicBool>,
}

fn steered_pool(budget: &MemoryBudget) -> (ObjectPool<Steered>, Knobs) {
    let knobs = Knobs {
        bytes: Arc::new(AtomicUsize::new(0)),
        panic_in_recycle: Arc::new(AtomicBool::new(false)),
        panic_in_size: Arc::new(AtomicBool::new(false)),
    };
    let (bytes, pr, ps) = (
        Arc::clone(&knobs.bytes),
        Arc::clone(&knobs.panic_in_recycle),
        Arc::clone(&knobs.panic_in_size),
    );
    let pool = ObjectPool::new(
        ObjectPoolConfig::default()
            .with_stripes(1)
            .with_adaptive(AdaptiveConfig::disabled())
            .with_budget(budget, "pool:recycle-test"),
        move || Steered {
            bytes: Arc::clone(&bytes),
            panic_in_recycle: Arc::clone(&pr),
            panic_in_size: Arc::clone(&ps),
        },
    )
    .unwrap();
    (pool, knobs)
}

/// The invariants a snapshot must satisfy whatever the user's impl did.
fn assert_consistent(s: &PoolStats, budget: &MemoryBudget) {
    let t = s;
    assert_eq!(t.gets_total, t.hits_total + t.misses_total, "{t:?}");
    assert_eq!(t.in_use, t.gets_total - t.puts_total, "{t:?}");
    if t.retained == 0 {
        assert_eq!(t.retained_bytes, 0, "nothing retained, yet bytes: {t:?}");
    }
    assert!(
        s.charged_bytes >= t.retained_bytes,
        "charge {} below retained {}",
        s.charged_bytes,
        t.retained_bytes
    );
    assert_eq!(budget.reserved_bytes(), s.charged_bytes);
}

#[test]
fn a_size_that_grows_between_give_and_take_subtracts_what_was_added() {
    let budget = MemoryBudget::new(1 << 30);
    let (pool, knobs) = steered_pool(&budget);
    knobs.bytes.store(1000, Ordering::Relaxed);
    drop(pool.get());
    let s = pool.stats();
    assert_eq!((s.retained, s.retained_bytes), (1, 1000));
    // The object now claims more than it was charged. Subtracting the new
    // answer underflowed the tier's byte count (a panic under the stripe
    // lock in debug builds).
    knobs.bytes.store(5000, Ordering::Relaxed);
    let again = pool.get();
    let s = pool.stats();
    assert_eq!((s.retained, s.retained_bytes), (0, 0));
    assert_consistent(&s, &budget);
    drop(again);
    let s = pool.stats();
    assert_eq!((s.retained, s.retained_bytes), (1, 5000));
    assert_consistent(&s, &budget);
    assert_eq!(pool.trim(), 5000);
    assert_consistent(&pool.stats(), &budget);
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn a_size_that_shrinks_between_give_and_take_leaves_no_phantom_bytes() {
    let budget = MemoryBudget::new(1 << 30);
    let (pool, knobs) = steered_pool(&budget);
    knobs.bytes.store(5000, Ordering::Relaxed);
    drop(pool.get());
    knobs.bytes.store(1000, Ordering::Relaxed);
    let again = pool.get();
    // Subtracting the smaller new answer left 4000 bytes counted as
    // retained with nothing retained.
    let s = pool.stats();
    assert_eq!((s.retained, s.retained_bytes), (0, 0));
    assert_consistent(&s, &budget);
    drop(again);
    assert_eq!(pool.trim(), 1000);
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn an_absurd_size_is_discarded_not_overflowed() {
    let budget = MemoryBudget::unlimited();
    let (pool, knobs) = steered_pool(&budget);
    knobs.bytes.store(1000, Ordering::Relaxed);
    drop(pool.get());
    // Another object comes back claiming usize::MAX bytes: adding it to the
    // 1000 retained overflowed under the stripe lock.
    let (a, b) = (pool.get(), pool.get());
    drop(a);
    knobs.bytes.store(usize::MAX, Ordering::Relaxed);
    drop(b);
    let s = pool.stats();
    assert_eq!(s.discarded_total, 1);
    assert_eq!((s.retained, s.retained_bytes), (1, 1000));
    assert_consistent(&s, &budget);
    assert_eq!(pool.trim(), 1000);
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn a_size_that_panics_at_the_take_cannot_corrupt_the_counts() {
    let budget = MemoryBudget::new(1 << 30);
    let (pool, knobs) = steered_pool(&budget);
    knobs.bytes.store(1000, Ordering::Relaxed);
    drop(pool.get());
    // The size is asked only as the object comes back, never at the take:
    // a take used to ask again, under the stripe lock, and a panic there
    // lost the object with its bytes still counted as retained.
    knobs.panic_in_size.store(true, Ordering::Relaxed);
    let got = catch_unwind(AssertUnwindSafe(|| pool.get()));
    let obj = got.expect("a take runs no user code");
    knobs.panic_in_size.store(false, Ordering::Relaxed);
    let s = pool.stats();
    assert_eq!((s.hits_total, s.retained, s.retained_bytes), (1, 0, 0));
    assert_consistent(&s, &budget);
    drop(obj);
    assert_consistent(&pool.stats(), &budget);
}

#[test]
fn a_panicking_size_or_recycle_counts_the_object_as_discarded() {
    let budget = MemoryBudget::new(1 << 30);
    let (pool, knobs) = steered_pool(&budget);
    knobs.bytes.store(1000, Ordering::Relaxed);
    for knob in [&knobs.panic_in_size, &knobs.panic_in_recycle] {
        let obj = pool.get();
        knob.store(true, Ordering::Relaxed);
        let dropped = catch_unwind(AssertUnwindSafe(move || drop(obj)));
        knob.store(false, Ordering::Relaxed);
        assert!(dropped.is_err(), "the user's panic propagates");
    }
    let s = pool.stats();
    // Both objects were dropped by the unwind: each a put and a discard.
    assert_eq!((s.gets_total, s.puts_total, s.in_use), (2, 2, 0));
    assert_eq!(s.discarded_total, 2);
    assert_eq!((s.retained, s.retained_bytes), (0, 0));
    assert_consistent(&s, &budget);
    // No lock was left held: with one stripe the next call would hang.
    drop(pool.get());
    let s = pool.stats();
    assert_eq!((s.retained, s.retained_bytes), (1, 1000));
    assert_consistent(&s, &budget);
}

/// The pool `Reentrant` calls into (a static, so no cycle is leaked).
static REENTRANT_POOL: std::sync::OnceLock<ObjectPool<Reentrant>> = std::sync::OnceLock::new();

/// A `Recycle` that calls into its own pool from both methods.
struct Reentrant;

impl Recycle for Reentrant {
    fn recycle(&mut self) {
        if let Some(pool) = REENTRANT_POOL.get() {
            let _ = pool.stats();
        }
    }

    fn retained_bytes(&self) -> usize {
        // Trim takes every stripe lock: called under a held stripe lock (as
        // before the fix) this spins forever.
        if let Some(pool) = REENTRANT_POOL.get() {
            pool.trim();
        }
        64
    }
}

#[test]
fn user_code_may_call_into_its_own_pool() {
    let pool = REENTRANT_POOL.get_or_init(|| {
        ObjectPool::new(ObjectPoolConfig::default().with_stripes(1), || Reentrant).unwrap()
    });
    drop(pool.get());
    let s = pool.stats();
    assert_eq!((s.puts_total, s.retained, s.retained_bytes), (1, 1, 64));
    assert_eq!(pool.trim(), 64);
}

#[test]
fn an_unbounded_item_count_is_accepted() {
    // `max_retained * 16` overflowed for "no item bound".
    let pool = ObjectPool::new(
        ObjectPoolConfig::default().with_max_retained(usize::MAX),
        Vec::<u8>::new,
    )
    .unwrap();
    drop(pool.get());
    assert_eq!(pool.stats().retained, 1);
}
