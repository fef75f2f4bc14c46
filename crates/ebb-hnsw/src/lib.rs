#![doc = include_str!("../README.md")]

mod backend;
mod config;
mod error;
mod index;
mod native;

pub use backend::{
    BUILD_CHUNK, GraphBackend, GraphDistance, GraphParams, HnswRsGraph, MAX_EF, MAX_K, MAX_M,
    MAX_POINTS, Tombstones,
};
pub use config::{IndexConfig, Metric, RebuildPolicy};
pub use error::{Error, RebuildError, Result};
pub use index::{IndexStats, RELEASE_STEP_BYTES, RebuildReason, RebuildReport, VectorIndex};
pub use native::NativeGraph;
