//! What both pools share to answer the maintenance contract
//! (`ebb_core::maintenance`): the one-run-at-a-time gate, the idle check
//! behind `maintenance_due`, and the run counters for stats.
//!
//! Reasons, a fixed set fit for a metric label, in this order:
//!
//! - `over_cap`: the pool holds more than a cap or its total bound allows
//!   (a setter lowered one); reclaimable: the excess.
//! - `idle_retained`: the shared store retains items and no get or put
//!   reached it since the previous check or run; reclaimable: everything
//!   retained.
//! - `thread_caches`: only thread caches hold items, and the pool was idle
//!   as above (threads that stopped calling: a tokio blocking pool's);
//!   reclaimable: their bytes.
//!
//! Invariant: `maintenance_due` reads atomics only (the store's stripe
//! counters, its lent-place counters, `seen_activity`), never a lock.

use std::time::Instant;

use ebb_core::maintenance::{Due, MaintenanceError, MaintenanceKind, MaintenanceReport};
use ebb_core::sync::{AtomicBool, AtomicU64, Ordering};

use crate::retain::Pressure;

/// See the module docs.
#[derive(Default)]
pub(crate) struct MaintenanceState {
    running: AtomicBool,
    /// The store's activity at the previous check or run.
    seen_activity: AtomicU64,
    runs: AtomicU64,
    released_bytes: AtomicU64,
    takeovers: AtomicU64,
    /// `f64` bits of the last run's wall time in seconds.
    last_seconds: AtomicU64,
}

/// Holds the gate while a run goes on; opens it on drop (unwind too).
pub(crate) struct Run<'a> {
    state: &'a MaintenanceState,
    start: Instant,
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        self.state.running.store(false, Ordering::Release);
    }
}

impl MaintenanceState {
    /// Starts a run, or refuses at once while one goes on.
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::AlreadyRunning`].
    pub(crate) fn begin(&self) -> Result<Run<'_>, MaintenanceError> {
        self.running
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| MaintenanceError::AlreadyRunning {
                kind: MaintenanceKind::Pool,
            })?;
        Ok(Run {
            state: self,
            start: Instant::now(),
        })
    }

    /// Whether work is due, from `p` (counters only).
    pub(crate) fn due(&self, p: Pressure) -> Option<Due> {
        if p.over_cap_bytes > 0 {
            return Some(Due {
                reason: "over_cap",
                reclaimable_bytes: p.over_cap_bytes,
            });
        }
        let before = self.seen_activity.swap(p.activity, Ordering::Relaxed);
        if before != p.activity {
            return None; // traffic since the previous look: not idle
        }
        if p.store_bytes > 0 {
            return Some(Due {
                reason: "idle_retained",
                reclaimable_bytes: p.store_bytes + p.lent_bytes,
            });
        }
        (p.lent_bytes > 0).then_some(Due {
            reason: "thread_caches",
            reclaimable_bytes: p.lent_bytes,
        })
    }

    /// Ends `run`: records what it did for stats and the idle check, and
    /// fills the report's duration.
    pub(crate) fn finish(&self, run: Run<'_>, activity: u64, report: &mut MaintenanceReport) {
        let seconds = run.start.elapsed().as_secs_f64();
        report.duration_secs = seconds;
        self.seen_activity.store(activity, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.last_seconds
            .store(seconds.to_bits(), Ordering::Relaxed);
    }

    /// Counts bytes a trim freed.
    pub(crate) fn count_released(&self, bytes: u64) {
        self.released_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts thread caches a trim took over.
    pub(crate) fn count_takeovers(&self, n: u64) {
        self.takeovers.fetch_add(n, Ordering::Relaxed);
    }

    /// (runs, released bytes, takeovers, last run's seconds) for stats.
    pub(crate) fn totals(&self) -> (u64, u64, u64, f64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.released_bytes.load(Ordering::Relaxed),
            self.takeovers.load(Ordering::Relaxed),
            f64::from_bits(self.last_seconds.load(Ordering::Relaxed)),
        )
    }
}

/// The report of a run that was cancelled before it began.
pub(crate) fn cancelled_report() -> MaintenanceReport {
    trim_report(0, 0, true)
}

/// The report of a trim that freed `items` holding `bytes`.
pub(crate) fn trim_report(items: usize, bytes: usize, cancelled: bool) -> MaintenanceReport {
    MaintenanceReport {
        kind: Some(MaintenanceKind::Pool),
        cancelled,
        skipped: items == 0 && !cancelled,
        bytes_released: bytes as u64,
        items: items as u64,
        ..MaintenanceReport::default()
    }
}
