//! The compaction worker's pass: for each dataset in turn, each arena's,
//! the index's and the pool's maintenance check, then the work that is due
//! through the maintenance contract, on a blocking thread with a child
//! token. Events are counted by kind and outcome; an error is logged and
//! counted and never ends the worker. A rebuild's retired graph is freed
//! on the same blocking thread, never on the worker's async thread.

use std::collections::VecDeque;
use std::time::Instant;

use ebb_core::maintenance::{Maintenance, MaintenanceError, MaintenanceKind};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::dataset::Dataset;

/// A retired generation at least this large is followed by a purge of the
/// global allocator.
const PURGE_AFTER_RELEASE_BYTES: u64 = 8 << 20;

/// How a maintenance run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran to the end.
    Done,
    /// Its token stopped it between steps (what was done stays).
    Cancelled,
    /// It failed (logged; nothing visible changed beyond work done).
    Failed,
}

impl Outcome {
    /// The label: `done`, `cancelled`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Cancelled => "cancelled",
            Outcome::Failed => "failed",
        }
    }
}

/// One maintenance run the worker made.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionEvent {
    /// The dataset.
    pub dataset: String,
    /// Arena, index or pool.
    pub kind: MaintenanceKind,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time.
    pub duration_secs: f64,
    /// Resident bytes it gave back (a retired graph's included).
    pub bytes_released: u64,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// The worker's counters, flat for metrics: totals by kind and outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactionStats {
    /// Passes over every dataset.
    pub passes_total: u64,
    /// Events by `[arena, index, pool]` x `[done, cancelled, failed]`.
    pub events_total: [[u64; 3]; 3],
    /// Seconds spent in events, by kind.
    pub duration_secs_total: [f64; 3],
    /// Bytes released by events, by kind.
    pub bytes_released_total: [u64; 3],
    /// Runs skipped because another run of the same consumer was going on
    /// (a caller's `release_memory`, say).
    pub already_running_total: u64,
}

impl CompactionStats {
    /// Events of `kind` that ended `outcome`.
    pub fn events(&self, kind: MaintenanceKind, outcome: Outcome) -> u64 {
        self.events_total[kind_index(kind)][outcome as usize]
    }
}

fn kind_index(kind: MaintenanceKind) -> usize {
    match kind {
        MaintenanceKind::Arena => 0,
        MaintenanceKind::Index => 1,
        MaintenanceKind::Pool => 2,
    }
}

/// Events kept for [`Engine::compaction_events`](crate::Engine::compaction_events).
const EVENTS_KEPT: usize = 256;

#[derive(Default)]
pub(crate) struct CompactionLog {
    stats: Mutex<CompactionStats>,
    events: Mutex<VecDeque<CompactionEvent>>,
    /// Durations by kind (`[arena, index, pool]`), for the histogram.
    durations: [ebb_metrics::Histogram; 3],
}

impl CompactionLog {
    pub fn record(&self, event: CompactionEvent) {
        {
            let mut s = self.stats.lock();
            let k = kind_index(event.kind);
            s.events_total[k][event.outcome as usize] += 1;
            s.duration_secs_total[k] += event.duration_secs;
            s.bytes_released_total[k] += event.bytes_released;
            self.durations[k].observe(event.duration_secs);
        }
        if let Some(e) = &event.error {
            tracing::warn!(dataset = %event.dataset, kind = event.kind.as_str(), error = %e, "maintenance failed");
        }
        let mut events = self.events.lock();
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(event);
    }

    pub fn already_running(&self) {
        self.stats.lock().already_running_total += 1;
    }

    pub fn pass_done(&self) {
        self.stats.lock().passes_total += 1;
    }

    pub fn stats(&self) -> CompactionStats {
        self.stats.lock().clone()
    }

    pub fn events(&self) -> Vec<CompactionEvent> {
        self.events.lock().iter().cloned().collect()
    }

    /// The duration histogram of `kind`'s runs.
    pub fn durations(&self, kind: MaintenanceKind) -> ebb_metrics::HistogramValue {
        self.durations[kind_index(kind)].snapshot()
    }
}

/// Which maintenance a worker runs: arena compaction and pool trims are
/// short and frequent; an index rebuild can take seconds, so it has a
/// worker of its own and never holds up the arenas' compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Arena compaction and pool trims (the `compaction` worker).
    Memory,
    /// Index rebuilds (the `rebuild` worker).
    Index,
}

impl Lane {
    /// The worker's name, which prefixes its steps' (`compaction/<ds>`).
    pub fn worker_name(self) -> &'static str {
        match self {
            Lane::Memory => "compaction",
            Lane::Index => "rebuild",
        }
    }
}

/// One dataset's due maintenance in `lane`, run here (a blocking thread);
/// records its events. The memory lane takes over the arenas' idle
/// threads' slabs first.
pub(crate) fn maintain_dataset(
    d: &Dataset,
    lane: Lane,
    token: &CancellationToken,
    log: &CompactionLog,
) {
    let memory: [&dyn Maintenance; 3] = [d.kv.arena(), d.vectors.payloads(), &d.pool];
    let index: [&dyn Maintenance; 1] = [d.vectors.index().maintenance()];
    let parts: &[&dyn Maintenance] = match lane {
        Lane::Memory => {
            for arena in [d.kv.arena(), d.vectors.payloads()] {
                arena.reclaim_threads(false);
            }
            &memory
        }
        Lane::Index => &index,
    };
    for part in parts {
        if token.is_cancelled() {
            return;
        }
        if part.maintenance_due().is_none() {
            continue;
        }
        let started = Instant::now();
        let kind = part.maintenance_kind();
        let (outcome, bytes_released, error) = match part.run_maintenance(token) {
            Ok(mut run) => {
                let mut released = run.bytes_released;
                if let Some(deferred) = run.deferred.take() {
                    // Here, on the blocking thread (the worker's contract).
                    let bytes = deferred.bytes();
                    released += bytes;
                    deferred.release();
                    // A retired generation's point store and maps were heap:
                    // the allocator keeps freed pages resident for seconds
                    // (jemalloc's decay) unless asked. Once per generation,
                    // so the cost (a purge, milliseconds) is rare.
                    if bytes >= PURGE_AFTER_RELEASE_BYTES {
                        ebb_core::os::trim_global_allocator();
                    }
                }
                let outcome = if run.cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Done
                };
                (outcome, released, None)
            }
            Err(MaintenanceError::AlreadyRunning { .. }) => {
                log.already_running();
                continue;
            }
            Err(e) => (Outcome::Failed, 0, Some(e.to_string())),
        };
        log.record(CompactionEvent {
            dataset: d.name.clone(),
            kind,
            outcome,
            duration_secs: started.elapsed().as_secs_f64(),
            bytes_released,
            error,
        });
    }
}
