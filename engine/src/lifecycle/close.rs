//! `close()`: Open -> Closing (every new call gets `Error::Closing`), the
//! writes already admitted waited for (so every write that returned `Ok` is
//! in what follows), a snapshot if `data_dir` is set, the root token cancelled, the tracker
//! closed, and a wait of at most `shutdown_deadline_secs`; past it, async
//! workers are aborted and blocking ones detached, each named in the
//! report. A second `close()` returns the first one's report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::workers::{Worker, WorkerState};
use crate::error::{Error, Result};
use crate::{Engine, SnapshotReport};

/// A worker still running at the close deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct MissedWorker {
    /// Its name.
    pub name: String,
    /// True for a blocking step (detached); false for an async task
    /// (aborted).
    pub blocking: bool,
    /// How long its current run had lasted.
    pub running_secs: f64,
}

/// What `close()` did.
#[derive(Clone, Debug, PartialEq)]
pub struct CloseReport {
    /// Wall time of the close.
    pub duration_secs: f64,
    /// `shutdown_deadline_secs`.
    pub deadline_secs: f64,
    /// True if a worker was still running at the deadline.
    pub deadline_missed: bool,
    /// Workers still running at the deadline (aborted or detached).
    pub missed: Vec<MissedWorker>,
    /// The closing snapshot, with `data_dir` set.
    pub snapshot: Option<SnapshotReport>,
    /// Why the closing snapshot failed, if it did (the previous snapshot
    /// stays the newest).
    pub snapshot_error: Option<String>,
    /// Seconds the closing snapshot took (it counts against the deadline).
    pub snapshot_secs: f64,
    /// Writes still in flight when close gave up waiting for them (at the
    /// deadline); 0 means every write that returned `Ok` is in the closing
    /// snapshot.
    pub writes_unfinished: usize,
}

impl Engine {
    /// Closes the engine (see the [module docs](self)); never waits past
    /// `shutdown_deadline_secs` (plus the time to abort what is left). An
    /// engine-owned runtime is shut down in the background afterwards.
    pub async fn close(&self) -> CloseReport {
        let report = self.close_once().await;
        if let Some(rt) = self.inner.lifecycle.take_owned_runtime() {
            rt.shutdown_background();
        }
        report
    }

    /// [`close`](Self::close) for code outside any async runtime.
    ///
    /// # Errors
    ///
    /// [`Error::InsideRuntime`] when called from a thread that runs a tokio
    /// runtime (blocking there could stall it): await
    /// [`close`](Self::close) instead.
    pub fn close_blocking(&self) -> Result<CloseReport> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InsideRuntime);
        }
        let handle = self.inner.lifecycle.handle().clone();
        let report = handle.block_on(self.close_once());
        if let Some(rt) = self.inner.lifecycle.take_owned_runtime() {
            if report.deadline_missed {
                // What is left was detached or aborted: waiting for it
                // would only add to the deadline.
                rt.shutdown_background();
            } else {
                // Every task ended: this returns at once.
                rt.shutdown_timeout(Duration::from_millis(50));
            }
        }
        Ok(report)
    }

    async fn close_once(&self) -> CloseReport {
        self.inner
            .lifecycle
            .close_report
            .get_or_init(|| async {
                let engine = self.clone();
                let join = self
                    .inner
                    .lifecycle
                    .handle()
                    .spawn(async move { engine.close_steps().await });
                join.await.unwrap_or_else(|e| CloseReport {
                    duration_secs: 0.0,
                    deadline_secs: self.inner.config.shutdown_deadline_secs as f64,
                    deadline_missed: true,
                    missed: Vec::new(),
                    snapshot: None,
                    snapshot_error: Some(format!("the close task failed: {e}")),
                    snapshot_secs: 0.0,
                    writes_unfinished: 0,
                })
            })
            .await
            .clone()
    }

    async fn close_steps(&self) -> CloseReport {
        let started = Instant::now();
        let deadline = Duration::from_secs(self.inner.config.shutdown_deadline_secs);
        let lc = &self.inner.lifecycle;
        self.inner.admission.close();
        // Every write that will return Ok is in flight now: wait for them
        // (an ingest stops at its next chunk), so the snapshot has them.
        while self.inner.admission.writes_in_flight() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let writes_unfinished = self.inner.admission.writes_in_flight();
        if writes_unfinished > 0 {
            tracing::warn!(
                writes_unfinished,
                "close: writes still in flight at the deadline"
            );
        }
        let (mut snapshot, mut snapshot_error, mut snapshot_secs) = (None, None, 0.0);
        if self.inner.config.data_dir.is_some() {
            let engine = self.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let step = Worker::new(
                "close/snapshot",
                "engine",
                "the closing snapshot (blocking)",
                None,
                "done, or cancelled at the close deadline",
                true,
            );
            // Its own token: the engine's is cancelled only after it.
            let snap_token = CancellationToken::new();
            let step_token = snap_token.clone();
            lc.spawn_blocking(step, move || {
                let _ = tx.send(engine.snapshot_unchecked(&step_token, &mut |_| {}));
            });
            let snap_started = Instant::now();
            // What is left of the deadline after the writes' wait.
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(Ok(r))) => snapshot = Some(r),
                Ok(Ok(Err(e))) => snapshot_error = Some(e.to_string()),
                Ok(Err(_)) => {
                    snapshot_error = Some("the snapshot step ended without a report".into())
                }
                Err(_) => {
                    // It stops at its next file and commits nothing: the
                    // previous snapshot stays the newest.
                    snap_token.cancel();
                    snapshot_error =
                        Some("not done by the deadline: cancelled, nothing committed".into());
                }
            }
            snapshot_secs = snap_started.elapsed().as_secs_f64();
        }
        self.inner.token.cancel();
        lc.tracker.close();
        let remaining = deadline.saturating_sub(started.elapsed());
        let on_time = tokio::time::timeout(remaining, lc.tracker.wait())
            .await
            .is_ok();
        let mut missed = Vec::new();
        if !on_time {
            let workers: Vec<Arc<Worker>> = lc.workers.lock().clone();
            for w in workers {
                if matches!(w.state(), WorkerState::Stopped | WorkerState::Abandoned) {
                    continue;
                }
                missed.push(MissedWorker {
                    name: w.name.clone(),
                    blocking: w.blocking,
                    running_secs: w.running_secs(),
                });
                w.abandon();
            }
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                missed = ?missed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                "close: workers still running at the deadline were aborted or detached"
            );
        }
        CloseReport {
            duration_secs: started.elapsed().as_secs_f64(),
            deadline_secs: deadline.as_secs_f64(),
            deadline_missed: !on_time,
            missed,
            snapshot,
            snapshot_error,
            snapshot_secs,
            writes_unfinished,
        }
    }

    /// Test hook: a worker that ignores cancellation for `hold` (async, or
    /// a blocking step), to show that `close()` keeps its deadline anyway.
    #[doc(hidden)]
    pub fn spawn_stubborn_worker(&self, blocking: bool, hold: Duration) {
        let lc = &self.inner.lifecycle;
        let name = if blocking {
            "stubborn/blocking"
        } else {
            "stubborn/async"
        };
        let worker = Worker::new(
            name,
            "test",
            "ignores cancellation (test hook)",
            None,
            "never",
            blocking,
        );
        if blocking {
            lc.spawn_blocking(worker, move || std::thread::sleep(hold));
        } else {
            worker.set(WorkerState::Running);
            lc.spawn(worker, async move { tokio::time::sleep(hold).await });
        }
    }
}
