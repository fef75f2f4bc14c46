//! Asking the global allocator to give its free memory back.

/// Asks glibc's malloc to return the free memory at the top of its heaps
/// and in every arena to the kernel (`malloc_trim(0)`); true if it released
/// any. A no-op returning false on other C libraries, and on a process whose
/// global allocator is not malloc (jemalloc and mimalloc purge by
/// themselves; their `malloc` is not called here).
pub fn trim_global_allocator() -> bool {
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
