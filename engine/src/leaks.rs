//! The engine's own resources under ebb-leak: every scan iterator
//! ([`ResourceKind::Iterator`], labels `kv_scan` and `vector_scan`, the
//! site being the caller's `scan` / `scan_kv`) and every open snapshot file
//! ([`ResourceKind::FileDescriptor`], labels `snapshot_write` and
//! `snapshot_read`) holds a guard of one process-wide tracker named
//! `ebb-engine`, so a scan a caller forgot shows up in
//! [`Engine::leak_report`](crate::Engine::leak_report) with where it was
//! made.
//!
//! One tracker for the process (a tracker lives as long as the process,
//! so one per engine would pile up over open/close cycles); the level is
//! the `leak_level` of the engine opened last.

use std::sync::OnceLock;

use ebb_leak::{ResourceTracker, TrackerConfig, TrackingLevel};

use crate::config::LeakLevel;

/// The tracker's name in reports.
pub const TRACKER_NAME: &str = "ebb-engine";

/// The process-wide engine tracker.
pub(crate) fn tracker() -> ResourceTracker {
    static TRACKER: OnceLock<ResourceTracker> = OnceLock::new();
    *TRACKER.get_or_init(|| ResourceTracker::new(TRACKER_NAME, TrackerConfig::default()))
}

/// ebb-leak's level for a `leak_level`.
pub(crate) fn tracking_level(level: LeakLevel) -> TrackingLevel {
    match level {
        LeakLevel::Disabled => TrackingLevel::Disabled,
        LeakLevel::Sampled => TrackingLevel::Sampled(128),
        LeakLevel::Paranoid => TrackingLevel::Paranoid,
    }
}
