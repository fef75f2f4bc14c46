//! ebb-metrics: Prometheus metrics for ebb, read from the crates' stats at
//! scrape time (no stale copies, no work on the data path).
//!
//! A scrape builds a [`Scrape`] of metric families from stats structs
//! ([`collect`]: `ArenaStats`, `PoolStats`, `IndexStats`, `BudgetStats`,
//! `MonitorStats` and the process, as docs/metrics.md lists them, name by
//! name), then encodes it: in the
//! Prometheus text format 0.0.4 ([`text`]) by default, which
//! `promtool check metrics` accepts as is.
//!
//! Labels are bounded: instance names and fixed enums, and dataset names
//! only up to a cap ([`LabelCap`], 64 by default in the engine), past which
//! they are reported together as `other`, their values summed.

pub mod collect;
pub mod histogram;
pub mod model;
pub mod text;

pub use histogram::{DURATION_BUCKETS, Histogram};
pub use model::{Family, HistogramValue, Kind, LabelCap, OTHER, Sample, Scrape, Value};
pub use text::Format;
