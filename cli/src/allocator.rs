//! The global allocator of the `ebb` binary: jemalloc (in a 20-minute
//! churn it kept RSS at ~1.56x the live bytes against glibc's 1.67-1.71x
//! and mimalloc's 1.68-1.69x: bench/RESULTS.md, session 11), and its purge
//! registered with ebb-core so the pressure controller and
//! `release_memory` can ask it to give memory back.

/// jemalloc's purge: `arena.<MALLCTL_ARENAS_ALL>.purge` (every arena's
/// dirty and muzzy pages); true if the control succeeded. Meaningful only
/// in a binary whose `#[global_allocator]` is jemalloc.
pub fn purge_jemalloc() -> bool {
    let name = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name of a void control; no old or new value
    // is passed, so jemalloc reads and writes no caller memory.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        ) == 0
    }
}

/// Registers [`purge_jemalloc`] as the process's allocator purge (call it
/// once, at start, in a binary that runs on jemalloc).
pub fn register_jemalloc_purge() {
    ebb_core::os::set_global_allocator_purge(purge_jemalloc);
}
