#![doc = include_str!("../README.md")]

mod arena;
mod config;
mod error;
mod live;
mod owned;
mod stats;
mod table;

pub use arena::{
    RawSlabAlloc, SlabAddr, SlabAlloc, SlabArena, SlabId, SlabInfo, SlabState, TargetSlab,
};
pub use config::{HugePages, ReleaseMode, SlabConfig};
pub use error::{Error, Result};
pub use owned::OwnedSlab;
pub use stats::SlabStats;

#[doc(hidden)]
pub mod __private {
    //! Internals exposed for the loom model only; not part of the API.
    pub use crate::live::LiveCounter;
}
