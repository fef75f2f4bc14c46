//! Stripes: a small set of cache-line-padded cells, each behind a
//! test-and-set lock, that threads spread over so two threads rarely meet
//! on one lock (the slab arena's shards use the same scheme).
//!
//! Invariants:
//! 1. A stripe's `state` is reached only through a [`StripeGuard`], which
//!    exists only while its thread holds `lock` (acquire on lock, release
//!    on unlock), so accesses to the state are serialized.
//! 2. A stripe's [`OwnerCounter`]s are written only by the holder of that
//!    stripe's lock, so a plain load + store counts exactly, and readers on
//!    any thread see a value that was true at some moment.

use std::cell::{Cell, UnsafeCell};

use crossbeam_utils::CachePadded;
use ebb_core::sync::{AtomicU64, Ordering, TasGuard, TasLock};

thread_local! {
    /// This thread's preferred stripe (before masking). Moves on when the
    /// stripe is found taken, so threads that collide spread out.
    static STRIPE_HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Hands out first hints round-robin, so the first N threads get N stripes.
/// Process-wide (std's atomic: a static, not loom-modelled state).
static NEXT_HINT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// This thread's hint. `try_with`, not `with`: a pool call may come from
/// another thread-local's destructor; without the hint a call takes the
/// next stripe round-robin (any stripe is correct, the hint only spreads
/// threads out).
#[inline]
fn stripe_hint() -> usize {
    STRIPE_HINT
        .try_with(|h| {
            let v = h.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT_HINT.fetch_add(1, Ordering::Relaxed);
            h.set(v);
            v
        })
        .unwrap_or_else(|_| NEXT_HINT.fetch_add(1, Ordering::Relaxed))
}

fn set_stripe_hint(v: usize) {
    let _ = STRIPE_HINT.try_with(|h| h.set(v));
}

/// A counter written only under its stripe's lock (invariant 2), read from
/// anywhere. Costs a plain load and store, no locked instruction.
#[derive(Default)]
pub(crate) struct OwnerCounter(AtomicU64);

impl OwnerCounter {
    /// Adds `n`. Callers hold the lock of the stripe that owns this counter.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Subtracts `n`, under the same rule as [`add`](Self::add).
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_sub(n), Ordering::Relaxed);
    }

    /// Sets the value, under the same rule as [`add`](Self::add).
    #[inline]
    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One stripe: counters readable without the lock, state behind it.
pub(crate) struct Stripe<S, C> {
    lock: TasLock,
    /// Readable by anyone; written only under `lock` (invariant 2).
    pub(crate) counters: C,
    /// Reached only through a guard (invariant 1).
    state: UnsafeCell<S>,
}

// SAFETY: `state` is only reached through a `StripeGuard`, which exists only
// while `lock` is held by its thread (invariant 1), so the state moves
// between threads like a value behind a mutex: `S: Send` is all it needs.
// The counters are atomics and need `C: Sync`.
unsafe impl<S: Send, C: Sync> Sync for Stripe<S, C> {}

/// Stripes of `S`, with lock-free readable counters `C` beside each.
pub(crate) struct Stripes<S, C> {
    stripes: Box<[CachePadded<Stripe<S, C>>]>,
    mask: usize,
}

impl<S, C> Stripes<S, C> {
    /// `count` stripes (rounded up to a power of two, at least 1), each
    /// made by `make(index)`.
    pub(crate) fn new(count: usize, mut make: impl FnMut(usize) -> (S, C)) -> Self {
        let count = count.max(1).next_power_of_two();
        let stripes = (0..count)
            .map(|i| {
                let (state, counters) = make(i);
                CachePadded::new(Stripe {
                    lock: TasLock::new(),
                    counters,
                    state: UnsafeCell::new(state),
                })
            })
            .collect();
        Stripes {
            stripes,
            mask: count - 1,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.stripes.len()
    }

    /// The stripe at `index`, for its counters.
    #[cfg(test)]
    pub(crate) fn get(&self, index: usize) -> &Stripe<S, C> {
        &self.stripes[index]
    }

    /// This thread's stripe, or the next free one when it is taken.
    #[inline]
    pub(crate) fn lock_home(&self) -> StripeGuard<'_, S, C> {
        let home = stripe_hint() & self.mask;
        match self.try_lock(home) {
            Some(guard) => guard,
            None => self.lock_contended(home),
        }
    }

    #[cold]
    fn lock_contended(&self, home: usize) -> StripeGuard<'_, S, C> {
        let mut rounds = 0u32;
        loop {
            for k in 1..=self.stripes.len() {
                let index = (home + k) & self.mask;
                if let Some(guard) = self.try_lock(index) {
                    set_stripe_hint(index);
                    return guard;
                }
            }
            rounds += 1;
            if rounds < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Takes stripe `index` if it is free, without waiting.
    #[inline]
    pub(crate) fn try_lock(&self, index: usize) -> Option<StripeGuard<'_, S, C>> {
        let stripe = &self.stripes[index];
        Some(StripeGuard {
            stripe,
            index,
            _lock: stripe.lock.try_lock()?,
        })
    }

    /// Takes stripe `index`, waiting for it.
    pub(crate) fn lock(&self, index: usize) -> StripeGuard<'_, S, C> {
        let stripe = &self.stripes[index];
        StripeGuard {
            stripe,
            index,
            _lock: stripe.lock.lock(),
        }
    }

    /// Every stripe's counters, for stats.
    pub(crate) fn counters(&self) -> impl Iterator<Item = &C> {
        self.stripes.iter().map(|s| &s.counters)
    }
}

/// Exclusive access to one stripe's state; unlocks on drop.
pub(crate) struct StripeGuard<'a, S, C> {
    stripe: &'a Stripe<S, C>,
    index: usize,
    /// Held for the guard's life; released as it drops.
    _lock: TasGuard<'a>,
}

impl<'a, S, C> StripeGuard<'a, S, C> {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn counters(&self) -> &'a C {
        &self.stripe.counters
    }

    /// The state and the counters at once (the borrow checker cannot split
    /// a guard's methods).
    pub(crate) fn parts(&mut self) -> (&mut S, &'a C) {
        // SAFETY:
        // - this guard exists only while its thread holds the stripe's lock
        //   (invariant 1), so no other reference to the state is live;
        // - the `&mut self` borrow ties the returned reference to the guard,
        //   so it cannot outlive the lock.
        let state = unsafe { &mut *self.stripe.state.get() };
        (state, &self.stripe.counters)
    }
}

/// `total` split over `parts` shares that sum to `total`; share `index`.
/// `parts` is a power of two (stripe counts are), so this is a shift and
/// a mask, not a division: it runs on every put.
#[inline]
pub(crate) fn share(total: usize, parts: usize, index: usize) -> usize {
    debug_assert!(parts.is_power_of_two());
    let shift = parts.trailing_zeros();
    (total >> shift) + usize::from(index < (total & (parts - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_total() {
        for total in [0, 1, 9, 10, 11, 64, 1000] {
            for parts in [1, 2, 4, 8] {
                let sum: usize = (0..parts).map(|i| share(total, parts, i)).sum();
                assert_eq!(sum, total, "total {total} parts {parts}");
            }
        }
    }

    #[test]
    fn a_taken_stripe_is_not_handed_out_twice() {
        let stripes: Stripes<u32, OwnerCounter> = Stripes::new(2, |_| (0, OwnerCounter::default()));
        let a = stripes.try_lock(0).expect("free");
        assert!(stripes.try_lock(0).is_none());
        // A failed attempt must not have unlocked the holder.
        assert!(stripes.try_lock(0).is_none());
        let b = stripes.lock_home();
        assert_ne!(a.index(), b.index());
        drop(a);
        assert!(stripes.try_lock(0).is_some());
    }

    #[test]
    fn owner_counters_count_exactly_under_the_lock() {
        let stripes: Stripes<u64, OwnerCounter> = Stripes::new(1, |_| (0, OwnerCounter::default()));
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        let mut g = stripes.lock_home();
                        let (state, counter) = g.parts();
                        *state += 1;
                        counter.add(1);
                    }
                });
            }
        });
        assert_eq!(stripes.get(0).counters.get(), 20_000);
        let mut g = stripes.lock(0);
        assert_eq!(*g.parts().0, 20_000);
    }
}
