#![doc = include_str!("../README.md")]

pub mod alloc;
pub mod arc;
pub mod check;
pub mod growth;
pub mod monitor;
mod slots;
pub mod tracker;

pub use alloc::{AllocStats, TrackingAllocator};
pub use arc::{TrackedArc, TrackedWeak};
pub use check::{Finding, HeapSource, LeakCheck, LeakFindings, Tolerance};
pub use growth::{GrowthDetector, GrowthThreshold, GrowthVerdict};
pub use monitor::{LeakMonitor, MonitorConfig, MonitorStats};
pub use tracker::{
    HeldGroup, KindCount, LeakReport, ResourceKind, ResourceTracker, Tracked, TrackerConfig,
    TrackingLevel,
};
