#![doc = include_str!("../README.md")]

mod active;
mod alloc;
mod arena;
mod config;
mod error;
mod live;
mod owned;
mod pool;
mod shard;
mod stats;
mod table;

pub use active::TargetSlab;
pub use alloc::{RawSlabAlloc, SlabAlloc};
pub use arena::{SlabAddr, SlabArena, SlabId, SlabInfo, SlabState};
pub use config::{HugePages, ReleaseMode, SlabConfig};
pub use error::{Error, Result};
pub use owned::OwnedSlab;
pub use stats::SlabStats;

#[doc(hidden)]
pub mod __private {
    //! Internals exposed for the loom model only; not part of the API.
    pub use crate::live::LiveCounter;
}
