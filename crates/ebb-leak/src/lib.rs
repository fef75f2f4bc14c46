#![doc = include_str!("../README.md")]

pub mod growth;

pub use growth::{GrowthDetector, GrowthThreshold, GrowthVerdict};
