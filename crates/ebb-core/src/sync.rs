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
