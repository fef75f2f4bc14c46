//! [`Engine::release_memory`]: everything given back now, and
//! [`Engine::compact`]: the maintenance that is due, now; both on the
//! caller's thread (the lifecycle's workers do the same on their schedule).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_arena::CompactionPolicy;
use ebb_core::maintenance::{Maintenance, MaintenanceError, MaintenanceKind};
use tokio_util::sync::CancellationToken;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::{Engine, ReleaseReport};

impl Engine {
    /// Gives back what can be given back now: compacts every arena, takes
    /// over idle threads' slabs, rebuilds indexes that need it (freeing
    /// the retired graphs here: the caller asked), trims pools on every
    /// thread, shrinks sparse tables and asks the global allocator to
    /// purge. Stops between steps when `token` (or the engine's) is
    /// cancelled.
    pub fn release_memory_with(&self, token: &CancellationToken) -> Result<ReleaseReport> {
        self.sweep(token, Sweep::Everything)
    }

    /// Runs, now, the maintenance the workers would run on their next
    /// pass: every arena compacted under its current policy (the
    /// configured one, or the pressure controller's tighter one), indexes
    /// rebuilt where `needs_compaction` says so, pools whose maintenance
    /// is due; no table shrink, no allocator purge (that is
    /// [`release_memory_with`](Self::release_memory_with)). Stops between
    /// steps when `token` (or the engine's) is cancelled.
    pub fn compact_with(&self, token: &CancellationToken) -> Result<ReleaseReport> {
        self.sweep(token, Sweep::Due)
    }

    /// [`compact_with`](Self::compact_with) with a token of its own (the
    /// engine's still stops it).
    pub fn compact(&self) -> Result<ReleaseReport> {
        self.compact_with(&CancellationToken::new())
    }

    fn sweep(&self, token: &CancellationToken, mode: Sweep) -> Result<ReleaseReport> {
        self.open_for_work()?;
        let started = Instant::now();
        let token = token.child_token();
        let engine_token = self.inner.token.clone();
        let stop = || token.is_cancelled() || engine_token.is_cancelled();
        let datasets: Vec<Arc<Dataset>> = self.inner.datasets.read().values().cloned().collect();
        let mut report = ReleaseReport::default();
        // "Everything sparse now", not only what the worker's policy asks
        // for: any sealed slab under 90 % live, however little it frees.
        let everything = CompactionPolicy::default()
            .with_max_live_ratio(0.9)
            .with_min_reclaim_bytes(0);
        'datasets: for d in &datasets {
            for arena in [d.kv.arena(), d.vectors.payloads()] {
                if stop() {
                    report.cancelled = true;
                    break 'datasets;
                }
                arena.reclaim_threads(true);
                let sweep = match mode {
                    Sweep::Everything => everything,
                    Sweep::Due => arena.compaction_policy(),
                };
                // The compaction worker may be compacting this arena: the
                // caller asked for everything now, so wait for it and run.
                match retry_while_running(
                    &stop,
                    || arena.compact(&sweep, &token),
                    |e| matches!(e, ebb_arena::CompactionError::AlreadyRunning),
                ) {
                    Ok(run) => {
                        report.arena_bytes += run.bytes_released;
                        report.cancelled |= run.cancelled;
                    }
                    Err(e) => report.failures.push(format!("{}: arena: {e}", d.name)),
                }
            }
            let parts: [&dyn Maintenance; 2] = [d.vectors.index().maintenance(), &d.pool];
            for part in parts {
                if stop() {
                    report.cancelled = true;
                    break 'datasets;
                }
                if mode == Sweep::Due && part.maintenance_due().is_none() {
                    continue;
                }
                match retry_while_running(
                    &stop,
                    || part.run_maintenance(&token),
                    |e| matches!(e, MaintenanceError::AlreadyRunning { .. }),
                ) {
                    Ok(mut run) => {
                        let mut released = run.bytes_released;
                        if let Some(deferred) = run.deferred.take() {
                            released += deferred.bytes();
                            deferred.release();
                        }
                        match part.maintenance_kind() {
                            MaintenanceKind::Index => report.index_bytes += released,
                            _ => report.pool_bytes += released,
                        }
                        report.cancelled |= run.cancelled;
                    }
                    Err(e) => report.failures.push(format!(
                        "{}: {}: {e}",
                        d.name,
                        part.maintenance_kind().as_str()
                    )),
                }
            }
            if mode == Sweep::Everything {
                report.table_bytes += d.kv.shrink_tables();
            }
        }
        if mode == Sweep::Everything {
            report.allocator_trimmed = ebb_core::os::trim_global_allocator();
        }
        report.duration_secs = started.elapsed().as_secs_f64();
        // Memory is back now: so are writes, without waiting for the
        // controller's interval.
        self.pressure_tick();
        Ok(report)
    }

    /// [`release_memory_with`](Self::release_memory_with) under the
    /// engine's own token.
    pub fn release_memory(&self) -> Result<ReleaseReport> {
        self.release_memory_with(&CancellationToken::new())
    }
}

/// What a sweep runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Everything sparse, every index and pool, tables, the allocator.
    Everything,
    /// What the policies say is due.
    Due,
}

/// Runs `f` again while `running(err)` says another run of the same
/// consumer was going on (the worker's), for at most 10 s or until `stop`;
/// the last result otherwise.
fn retry_while_running<T, E>(
    stop: &dyn Fn() -> bool,
    mut f: impl FnMut() -> std::result::Result<T, E>,
    running: impl Fn(&E) -> bool,
) -> std::result::Result<T, E> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Err(e) if running(&e) && !stop() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}
