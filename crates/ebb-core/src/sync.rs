//! Atomics and shared pointers that switch to [loom](https://docs.rs/loom)
//! under `cfg(loom)`.
//!
//! Algorithm code anywhere in ebb imports its atomics from here, never from
//! `std::sync::atomic` directly, so a loom model exercises the real code and
//! the algorithm carries no `cfg(loom)` of its own (crossbeam-epoch's
//! `primitive` module is the model for this).
//!
//! Only the types the concurrent cores use are re-exported; `Ordering` is
//! always std's (loom reuses it). [`Mutex`] wraps std's or loom's, for the
//! rare slow paths of lock-free structures (a table growing).

pub use std::sync::atomic::Ordering;

#[cfg(not(loom))]
pub use std::sync::{
    Arc,
    atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
    },
};

#[cfg(loom)]
pub use loom::sync::{
    Arc,
    atomic::{
        AtomicBool, AtomicI64, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, fence,
    },
};

/// Waits a little in a spin loop that retries an atomic operation: a CPU
/// hint for the first spins, then a yield to the scheduler (the holder may
/// be descheduled). Under loom every call yields, so the model explores the
/// other threads instead of spinning.
#[inline]
pub fn spin_wait(spins: u32) {
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// A mutex that loom can see: std's outside loom, loom's under it. Poisoning
/// is ignored (`lock` never fails): the data it guards in ebb is plain
/// counters and lists whose every update is complete before a panic could
/// unwind past it.
pub struct Mutex<T> {
    #[cfg(not(loom))]
    inner: std::sync::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

/// The guard of a [`Mutex`].
#[cfg(not(loom))]
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;
/// The guard of a [`Mutex`].
#[cfg(loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub fn new(value: T) -> Mutex<T> {
        Mutex {
            #[cfg(not(loom))]
            inner: std::sync::Mutex::new(value),
            #[cfg(loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Locks it, waiting while another thread holds it.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A test-and-set lock: one atomic swap to take, one store to give back,
/// for critical sections of a few instructions that a waiter would rather
/// skip than queue for (an allocation shard, a pool stripe, a graph node's
/// links). [`try_lock`](Self::try_lock) tests before it swaps, so a taken
/// lock costs the asker no write; [`lock`](Self::lock) spins, then yields
/// ([`spin_wait`]). Unfair and without poisoning: a holder that panics
/// unlocks as its guard unwinds.
///
/// The lock guards nothing by itself; a type that puts data behind it
/// (an `UnsafeCell`) reaches that data only while it holds a [`TasGuard`]
/// of this lock.
#[derive(Default)]
pub struct TasLock {
    locked: AtomicBool,
}

impl TasLock {
    /// An unlocked lock.
    pub fn new() -> TasLock {
        TasLock {
            locked: AtomicBool::new(false),
        }
    }

    /// Takes the lock if it is free, without waiting.
    #[inline]
    pub fn try_lock(&self) -> Option<TasGuard<'_>> {
        // The guard is made only on success: a guard dropped after a failed
        // attempt would unlock the holder's lock.
        if !self.locked.load(Ordering::Relaxed) && !self.locked.swap(true, Ordering::Acquire) {
            Some(TasGuard { lock: self })
        } else {
            None
        }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub fn lock(&self) -> TasGuard<'_> {
        match self.try_lock() {
            Some(guard) => guard,
            None => self.lock_contended(),
        }
    }

    #[cold]
    fn lock_contended(&self) -> TasGuard<'_> {
        let mut spins = 0u32;
        loop {
            spin_wait(spins);
            spins = spins.saturating_add(1);
            if let Some(guard) = self.try_lock() {
                return guard;
            }
        }
    }

    /// Whether some thread holds the lock now (a hint: it may change at once).
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// Proof that this thread holds a [`TasLock`]; unlocks on drop (with
/// release ordering, so everything written under the lock is seen by the
/// next holder).
#[must_use = "the lock is released as soon as the guard drops"]
pub struct TasGuard<'a> {
    lock: &'a TasLock,
}

impl TasGuard<'_> {
    /// Whether this guard holds `lock`.
    pub fn holds(&self, lock: &TasLock) -> bool {
        std::ptr::eq(self.lock, lock)
    }
}

impl Drop for TasGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn tas_lock_excludes_and_unlocks_on_drop_and_unwind() {
        let lock = TasLock::new();
        let g = lock.try_lock().expect("free");
        assert!(g.holds(&lock));
        assert!(lock.try_lock().is_none(), "a held lock is not taken twice");
        drop(g);
        assert!(!lock.is_locked());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _g = lock.lock();
            panic!("holder panics");
        }));
        assert!(r.is_err());
        assert!(lock.try_lock().is_some(), "unwinding released the lock");
    }

    #[test]
    fn tas_lock_serializes_increments() {
        let lock = TasLock::new();
        let count = std::cell::UnsafeCell::new(0u64);
        struct Shared<'a>(&'a std::cell::UnsafeCell<u64>);
        // SAFETY: the counter is only touched under `lock` below.
        unsafe impl Sync for Shared<'_> {}
        let shared = Shared(&count);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let shared = &shared;
                    for _ in 0..20_000 {
                        let _g = lock.lock();
                        // SAFETY: this thread holds the lock, so no other
                        // reference to the counter is live.
                        unsafe { *shared.0.get() += 1 };
                    }
                });
            }
        });
        assert_eq!(count.into_inner(), 40_000);
    }
}
