//! [`LeakMonitor`]: the periodic check a long-running engine runs. It has
//! no thread of its own: the engine's worker calls [`tick`](LeakMonitor::tick)
//! every interval, or awaits [`run`](LeakMonitor::run) with a
//! `CancellationToken`; [`spawn_thread`](LeakMonitor::spawn_thread) is
//! there for callers without a worker.
//!
//! Each tick checks the tracker for guards held past the threshold (a
//! `warn!` per acquisition site), feeds every kind's live count to a
//! [`GrowthDetector`] (a `warn!` naming the kind whose count only grows,
//! the usual sign of a cycle or a cache without a bound), and keeps
//! counters an exporter can read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::growth::{GrowthDetector, GrowthThreshold};
use crate::tracker::{LeakReport, ResourceTracker};

/// Settings of a [`LeakMonitor`].
#[derive(Clone, Copy, Debug)]
pub struct MonitorConfig {
    /// Between two ticks in [`LeakMonitor::run`] (default 30 s).
    pub interval: Duration,
    /// A guard held longer is reported (default 5 min).
    pub threshold: Duration,
    /// Window of the live-count trend (default 30 min).
    pub growth_window: Duration,
    /// A live count growing faster is reported (default 1 %/min).
    pub growth_threshold: GrowthThreshold,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: Duration::from_secs(30),
            threshold: Duration::from_secs(300),
            growth_window: Duration::from_secs(1800),
            growth_threshold: GrowthThreshold::PercentPerMinute(1.0),
        }
    }
}

/// Counters of a monitor, flat plain data for metrics (docs/metrics.md
/// maps each field to its Prometheus metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    /// The monitored tracker's name ([`ResourceTracker::name`]; the
    /// `tracker` label).
    pub name: &'static str,
    /// Ticks run (was `checks`).
    pub checks_total: u64,
    /// Held-too-long warnings emitted, one per (kind, site) group past the
    /// threshold per tick (was `held_warnings`).
    pub held_warnings_total: u64,
    /// Growth warnings emitted, one per growing kind per tick (was
    /// `growth_warnings`).
    pub growth_warnings_total: u64,
    /// Guards past the threshold at the last tick (a gauge).
    pub held_now: u64,
}

/// Periodic leak checks over one tracker; see the module docs.
///
/// ```
/// use std::time::Duration;
/// use ebb_leak::{LeakMonitor, MonitorConfig, ResourceKind, ResourceTracker, TrackerConfig, TrackingLevel};
///
/// let tracker = ResourceTracker::new("monitor-doc", TrackerConfig::default().with_level(TrackingLevel::Paranoid));
/// let mut monitor = LeakMonitor::new(tracker, MonitorConfig { threshold: Duration::ZERO, ..Default::default() });
/// let _forgotten = tracker.track(ResourceKind::Iterator, "scan");
/// let report = monitor.tick();
/// assert_eq!(report.held.len(), 1);
/// assert_eq!(monitor.stats().held_warnings_total, 1);
/// ```
#[derive(Debug)]
pub struct LeakMonitor {
    tracker: ResourceTracker,
    config: MonitorConfig,
    started: Instant,
    trends: BTreeMap<String, GrowthDetector>,
    stats: MonitorStats,
}

impl LeakMonitor {
    /// A monitor of `tracker`.
    pub fn new(tracker: ResourceTracker, config: MonitorConfig) -> LeakMonitor {
        LeakMonitor {
            tracker,
            config,
            started: Instant::now(),
            trends: BTreeMap::new(),
            stats: MonitorStats {
                name: tracker.name(),
                ..MonitorStats::default()
            },
        }
    }

    /// One check now: warnings for what is held too long and for live
    /// counts that grow; returns the report.
    pub fn tick(&mut self) -> LeakReport {
        let report = self.tracker.check(self.config.threshold);
        self.stats.checks_total += 1;
        self.stats.held_now = report.held.iter().map(|g| g.count as u64).sum();
        for g in &report.held {
            self.stats.held_warnings_total += 1;
            tracing::warn!(
                tracker = %report.tracker,
                kind = %g.kind,
                site = %g.site,
                count = g.count,
                oldest_age_secs = g.oldest_age_secs,
                labels = ?g.labels,
                "resource held past the leak threshold"
            );
        }
        let at = self.started.elapsed();
        for k in &report.live {
            let trend = self.trends.entry(k.kind.clone()).or_insert_with(|| {
                GrowthDetector::new(self.config.growth_window, self.config.growth_threshold)
            });
            trend.record(at, k.live.max(0) as u64);
            let verdict = trend.verdict();
            if verdict.growing {
                self.stats.growth_warnings_total += 1;
                tracing::warn!(
                    tracker = %report.tracker,
                    kind = %k.kind,
                    live = k.live,
                    per_minute = verdict.slope_bytes_per_minute,
                    "live count keeps growing (a cycle or an unbounded cache?)"
                );
            }
        }
        report
    }

    /// Whether `kind`'s live count is growing by the last ticks.
    pub fn is_growing(&self, kind: &str) -> bool {
        self.trends.get(kind).is_some_and(|t| t.verdict().growing)
    }

    /// Counters so far.
    pub fn stats(&self) -> MonitorStats {
        self.stats
    }

    /// Ticks every `interval` until `token` is cancelled; returns at once
    /// on cancel. Runs on the caller's runtime (needs tokio's timer).
    pub async fn run(mut self, token: CancellationToken) -> MonitorStats {
        loop {
            if token
                .run_until_cancelled(tokio::time::sleep(self.config.interval))
                .await
                .is_none()
            {
                return self.stats;
            }
            self.tick();
        }
    }

    /// Ticks on a thread of its own until `token` is cancelled (checked
    /// every 50 ms), for callers without a worker.
    ///
    /// # Errors
    ///
    /// When the OS refuses the thread.
    pub fn spawn_thread(
        mut self,
        token: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<MonitorStats>> {
        std::thread::Builder::new()
            .name("ebb-leak-monitor".into())
            .spawn(move || {
                // `checked_add`: the interval is the caller's, and one past
                // what an `Instant` holds (`Duration::MAX`) means "never".
                let mut next = Instant::now().checked_add(self.config.interval);
                while !token.is_cancelled() {
                    let now = Instant::now();
                    if next.is_some_and(|n| now >= n) {
                        self.tick();
                        next = now.checked_add(self.config.interval);
                    }
                    let wait = next.map_or(Duration::MAX, |n| n - now);
                    std::thread::sleep(wait.min(Duration::from_millis(50)));
                }
                self.stats
            })
    }
}
