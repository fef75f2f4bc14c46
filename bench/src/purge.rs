//! Each peer allocator's purge: what a binary with that allocator as its
//! `#[global_allocator]` registers with
//! `ebb_core::os::set_global_allocator_purge`, and what the fragmentation
//! bench calls after the frees.

/// glibc: `malloc_trim(0)`; true if it released any.
pub fn glibc() -> bool {
    // SAFETY: malloc_trim takes no pointers and is thread-safe.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// jemalloc: `arena.<MALLCTL_ARENAS_ALL>.purge` (every arena, dirty and
/// muzzy pages); true if the control succeeded. The `ebb` binary's own.
pub fn jemalloc() -> bool {
    ebb::allocator::purge_jemalloc()
}

/// mimalloc: `mi_collect(true)` (cannot tell what it released: true).
pub fn mimalloc() -> bool {
    // SAFETY: mi_collect has no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) };
    true
}
