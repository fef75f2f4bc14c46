//! Atomics and shared pointers that switch to [loom](https://docs.rs/loom)
//! under `cfg(loom)`.
//!
//! Algorithm code anywhere in ebb imports its atomics from here, never from
//! `std::sync::atomic` directly, so a loom model exercises the real code and
//! the algorithm carries no `cfg(loom)` of its own (crossbeam-epoch's
//! `primitive` module is the model for this).
//!
//! Only the types the concurrent cores use are re-exported; `Ordering` is
//! always std's (loom reuses it).

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
