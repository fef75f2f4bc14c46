#![doc = include_str!("../README.md")]

mod biased;
mod buffer;
mod config;
mod error;
mod local;
mod maint;
mod object;
mod owner;
mod raw;
mod retain;
mod stats;
mod stripe;

pub use buffer::{BufferPool, PooledBuf};
pub use config::{AdaptiveConfig, DEFAULT_TIERS, ObjectPoolConfig, PoolConfig, SMALL_RECORD_TIERS};
pub use error::{Error, Result};
pub use object::{ObjectPool, Pooled, Recycle};
pub use raw::BUFFER_ALIGN;
pub use stats::{PoolStats, TierStats};
pub use tokio_util::sync::CancellationToken;

#[doc(hidden)]
pub mod __private {
    //! Internals exposed for the loom model only; not part of the API.
    pub use crate::biased::BiasedCount;
    pub use crate::owner::OwnerState;
}
