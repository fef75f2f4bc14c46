//! Asking the global allocator to give its free memory back.
//!
//! The process's global allocator is the binary's choice, so the purge is
//! too: a binary that sets jemalloc or mimalloc as its
//! `#[global_allocator]` registers that allocator's purge once at start
//! ([`set_global_allocator_purge`]); everything in ebb that purges (the
//! engine's pressure controller, `release_memory`) then calls it through
//! [`trim_global_allocator`]. Without one registered, glibc's
//! `malloc_trim(0)` is called.

use std::sync::OnceLock;

static PURGE: OnceLock<fn() -> bool> = OnceLock::new();

/// Registers the purge of the process's global allocator (jemalloc's
/// `arena.<all>.purge`, mimalloc's `mi_collect(true)`); it returns true if
/// it released anything (or cannot tell). The first registration wins;
/// false if one was already set.
pub fn set_global_allocator_purge(purge: fn() -> bool) -> bool {
    PURGE.set(purge).is_ok()
}

/// Asks the global allocator to return its free memory to the kernel: the
/// registered purge (see [`set_global_allocator_purge`]), else glibc's
/// `malloc_trim(0)` (free memory at the top of its heaps and in every
/// arena). True if it released any; false on other C libraries without a
/// registered purge.
pub fn trim_global_allocator() -> bool {
    if let Some(purge) = PURGE.get() {
        return purge();
    }
    malloc_trim()
}

fn malloc_trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    {
        // SAFETY: `malloc_trim` takes no pointers and is thread-safe; 0 asks
        // it to keep no padding.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(miri))))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counting_purge() -> bool {
        CALLS.fetch_add(1, Ordering::Relaxed);
        true
    }

    #[test]
    fn a_registered_purge_is_what_trim_calls() {
        // The only test in this crate that registers one (it is global).
        assert!(set_global_allocator_purge(counting_purge));
        assert!(!set_global_allocator_purge(|| false), "the first wins");
        let before = CALLS.load(Ordering::Relaxed);
        assert!(trim_global_allocator());
        assert_eq!(CALLS.load(Ordering::Relaxed), before + 1);
    }
}
