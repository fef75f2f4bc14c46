//! Every raw operating-system call of the workspace.
//!
//! This module owns the boundary between ebb and the kernel: anonymous
//! mappings and `madvise` ([`Mapping`]), page residency ([`resident_bytes`]),
//! and the cheap and exact views of the process's memory, threads, file
//! descriptors, cgroup and pressure stall information ([`rss_bytes`],
//! [`memory_breakdown`], [`thread_count`], [`open_fd_count`],
//! [`cgroup_memory`], [`memory_pressure`]), and the process-wide memory
//! barrier of asymmetric synchronization ([`process_barrier`]), and the
//! request to the global allocator to give free memory back
//! ([`trim_global_allocator`]).
//!
//! Invariants:
//!
//! 1. No other module of any ebb crate calls `mmap`, `munmap`, `madvise` or
//!    `mincore`; clippy's `disallowed-methods` (workspace `clippy.toml`)
//!    enforces it, and the items here opt out with an `#[expect]`.
//! 2. Nothing here panics on what the kernel returns: a missing file is
//!    `None` where absence is normal (cgroup v1, no PSI), a malformed file is
//!    [`Error::Parse`](crate::Error::Parse), a failed call is
//!    [`Error::Os`](crate::Error::Os).
//! 3. Under `cfg(miri)` a [`Mapping`] is heap memory, so Miri can check the
//!    logic above it; `DontNeed` then zeroes the range, as the kernel would.

mod allocator;
mod barrier;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod mapping;
mod proc;

pub use allocator::{set_global_allocator_purge, trim_global_allocator};
pub use barrier::{process_barrier, process_barrier_available};
pub use mapping::{Advice, Mapping, page_size, resident_bytes};
pub use proc::{
    CgroupMemory, MemoryBreakdown, MemoryEvents, MemoryPressure, PressureAverages, cgroup_memory,
    memory_breakdown, memory_pressure, open_fd_count, rss_bytes, thread_count, thread_names,
};
