//! The `ebb` binary's library: [`serve`] (the engine over HTTP), [`soak`]
//! (the engine under sustained load, judged) and the [`allocator`] the
//! binary runs on. The binary (`src/main.rs`) parses
//! the command line and runs these; tests and the `peers serve` bench run
//! the same server in-process.
//!
//! Why a crate of its own rather than a binary inside ebb-engine: a
//! database that links the engine as a library should not compile an HTTP
//! stack, a CLI parser and a global allocator it does not use.

#[cfg(feature = "jemalloc")]
pub mod allocator;
pub mod cli;
pub mod serve;
pub mod soak;
