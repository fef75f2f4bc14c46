//! The engine's lifecycle: its workers on a tokio runtime it owns (or the
//! host's), each spawned through one `TaskTracker` with a name and listed
//! by [`Engine::workers`]; the compaction and rebuild workers, the pressure
//! controller and the leak monitor; and `close()`, which keeps its deadline whatever a
//! worker does.
//!
//! Invariants:
//!
//! 1. Workers hold the engine weakly: each run upgrades, works, and lets
//!    go, so dropping the last `Engine` ends them (and warns: `close()` is
//!    the way out).
//! 2. CPU-heavy steps run on `spawn_blocking` through the tracker, with a
//!    child of the engine's token, so `close()` waits for them and
//!    cancellation stops them between slabs or batches.
//! 3. `close()` never waits past `shutdown_deadline_secs`: what is still
//!    running then is aborted (async) or detached (blocking) and named in
//!    the report, and an owned runtime is shut down in the background.

mod close;
pub mod compaction;
pub mod pressure;
pub mod workers;

use std::sync::{Arc, Weak};
use std::time::Duration;

use ebb_leak::{LeakMonitor, MonitorConfig, MonitorStats};
use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::dataset::ArenaPolicy;
use crate::error::{Error, Result};
use crate::{Engine, Inner};
use compaction::{CompactionLog, Lane, maintain_dataset};
use pressure::{PressureLevel, PressureSample, PressureState, decide};
use workers::{StopOnDrop, Worker, WorkerInfo, WorkerState};

pub use close::CloseReport;

/// Compaction thresholds at Elevated and above.
const TIGHT_ARENA_MAX_LIVE_RATIO: f64 = 0.8;
const TIGHT_INDEX_MAX_DELETED_RATIO: f64 = 0.1;
/// `arena_max_waste_ratio` under pressure (or the configured one if lower).
const TIGHT_ARENA_MAX_WASTE_RATIO: f64 = 0.05;

/// Level changes logged at most this often (the counter counts all).
const LOG_COOLDOWN: Duration = Duration::from_secs(10);

pub(crate) struct Lifecycle {
    /// The runtime the engine built, if it built one (taken at close).
    owned: Mutex<Option<Runtime>>,
    handle: Handle,
    pub tracker: TaskTracker,
    pub workers: Mutex<Vec<Arc<Worker>>>,
    pub wake_compaction: Arc<Notify>,
    pub wake_rebuild: Arc<Notify>,
    /// Wakes the pressure controller before its interval (a write the
    /// budget refused: the strongest sign of pressure there is).
    pub wake_pressure: Arc<Notify>,
    pub compaction: CompactionLog,
    pub pressure: PressureState,
    pub leak_stats: Mutex<MonitorStats>,
    pub close_report: tokio::sync::OnceCell<CloseReport>,
}

impl Lifecycle {
    pub fn new(host: Option<Handle>) -> Result<Lifecycle> {
        let (owned, handle) = match host {
            // A current-thread runtime runs tasks only inside its owner's
            // `block_on`: the workers could starve and `close_blocking`
            // could wait forever. Refused, saying why.
            Some(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => {
                return Err(Error::Config {
                    key: "runtime".into(),
                    value: "current_thread".into(),
                    allowed: "a handle of a multi-thread tokio runtime (a current-thread one runs the workers only inside its own block_on)".into(),
                });
            }
            Some(h) => (None, h),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .max_blocking_threads(8)
                    .thread_name("ebb-worker")
                    .enable_time()
                    .build()
                    .map_err(|source| Error::Io {
                        path: "tokio runtime".into(),
                        op: "build",
                        source,
                    })?;
                let handle = rt.handle().clone();
                (Some(rt), handle)
            }
        };
        Ok(Lifecycle {
            owned: Mutex::new(owned),
            handle,
            tracker: TaskTracker::new(),
            workers: Mutex::new(Vec::new()),
            wake_compaction: Arc::new(Notify::new()),
            wake_rebuild: Arc::new(Notify::new()),
            wake_pressure: Arc::new(Notify::new()),
            compaction: CompactionLog::default(),
            pressure: PressureState::default(),
            leak_stats: Mutex::new(MonitorStats::default()),
            close_report: tokio::sync::OnceCell::new(),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn take_owned_runtime(&self) -> Option<Runtime> {
        self.owned.lock().take()
    }

    /// Registers and spawns an async worker.
    pub fn spawn<F>(&self, worker: Arc<Worker>, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.workers.lock().push(Arc::clone(&worker));
        let guard = StopOnDrop(Arc::clone(&worker));
        let join = self.tracker.spawn_on(
            async move {
                let _guard = guard;
                future.await;
            },
            &self.handle,
        );
        worker.set_abort(join.abort_handle());
    }

    /// Registers and spawns a blocking step (through the tracker: close
    /// waits for it).
    pub fn spawn_blocking<F>(&self, worker: Arc<Worker>, f: F) -> tokio::task::JoinHandle<()>
    where
        F: FnOnce() + Send + 'static,
    {
        {
            let mut workers = self.workers.lock();
            // Ended steps leave the list; running ones are the audit.
            workers.retain(|w| w.state() != WorkerState::Stopped || !w.blocking);
            workers.push(Arc::clone(&worker));
        }
        let guard = StopOnDrop(Arc::clone(&worker));
        worker.set(WorkerState::Running);
        let join = self.tracker.spawn_blocking_on(
            move || {
                let _guard = guard;
                f();
            },
            &self.handle,
        );
        worker.set_abort(join.abort_handle());
        join
    }
}

impl Engine {
    /// Starts the compaction worker, the pressure controller and the leak
    /// monitor (at open).
    pub(crate) fn start_workers(&self) {
        let c = &self.inner.config;
        let lc = &self.inner.lifecycle;
        let weak = Arc::downgrade(&self.inner);
        let token = self.inner.token.clone();
        let interval = Duration::from_secs(c.compaction_interval_secs);
        for (lane, purpose, wake) in [
            (
                Lane::Memory,
                "compacts each dataset's arenas and trims its pools when due, one dataset at a time",
                &lc.wake_compaction,
            ),
            (
                Lane::Index,
                "rebuilds each dataset's index when due (its own worker: a rebuild takes seconds and never holds up arena compaction)",
                &lc.wake_rebuild,
            ),
        ] {
            let worker = Worker::new(
                lane.worker_name(),
                "engine",
                purpose,
                Some(interval),
                "the engine's token (close)",
                false,
            );
            lc.spawn(
                Arc::clone(&worker),
                compaction_worker(
                    weak.clone(),
                    lane,
                    worker,
                    Arc::clone(wake),
                    token.clone(),
                    interval,
                ),
            );
        }

        let interval = Duration::from_millis(c.pressure_interval_ms);
        let worker = Worker::new(
            "pressure",
            "engine",
            "samples RSS, budget, cgroup and PSI (and at once when the budget refuses a write); sets the pressure level; refuses writes at critical",
            Some(interval),
            "the engine's token (close)",
            false,
        );
        lc.spawn(
            Arc::clone(&worker),
            pressure_worker(
                weak.clone(),
                worker,
                Arc::clone(&lc.wake_pressure),
                token.clone(),
                interval,
            ),
        );

        let interval = Duration::from_secs(c.leak_check_interval_secs);
        let monitor = LeakMonitor::new(
            crate::leaks::tracker(),
            MonitorConfig {
                interval,
                threshold: Duration::from_secs(c.leak_threshold_secs),
                ..MonitorConfig::default()
            },
        );
        let worker = Worker::new(
            "leak-monitor",
            "engine",
            "reports scans and snapshot files held past leak_threshold_secs, and kinds whose count only grows",
            Some(interval),
            "the engine's token (close)",
            false,
        );
        lc.spawn(
            Arc::clone(&worker),
            leak_worker(weak, worker, token, interval, monitor),
        );
    }

    /// Every background task: the audit (name, owner, purpose, interval,
    /// stop condition, state).
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.inner
            .lifecycle
            .workers
            .lock()
            .iter()
            .map(|w| w.info())
            .collect()
    }

    /// The compaction worker's counters.
    pub fn compaction_stats(&self) -> compaction::CompactionStats {
        self.inner.lifecycle.compaction.stats()
    }

    /// The compaction worker's last events (up to 256), oldest first.
    pub fn compaction_events(&self) -> Vec<compaction::CompactionEvent> {
        self.inner.lifecycle.compaction.events()
    }

    /// The pressure controller's level and counters.
    pub fn pressure_stats(&self) -> pressure::PressureStats {
        self.inner.lifecycle.pressure.stats()
    }

    /// The pressure level now.
    pub fn pressure_level(&self) -> PressureLevel {
        self.inner.lifecycle.pressure.level()
    }

    /// The leak monitor's counters.
    pub fn leak_monitor_stats(&self) -> MonitorStats {
        *self.inner.lifecycle.leak_stats.lock()
    }

    /// Wakes the compaction and rebuild workers now (as the pressure
    /// controller does); each runs what is due.
    pub fn wake_compaction(&self) {
        self.inner.lifecycle.wake_compaction.notify_one();
        self.inner.lifecycle.wake_rebuild.notify_one();
    }

    /// Passes a write's result on; a refusal by the budget wakes the
    /// pressure controller at once, so the next writes get
    /// `MemoryPressure` without waiting for its interval.
    pub(crate) fn after_write<T>(&self, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::OverBudget(_))) {
            self.inner.lifecycle.wake_pressure.notify_one();
        }
        result
    }

    /// Refuses a write at Critical, with the numbers.
    pub(crate) fn check_pressure(&self) -> Result<()> {
        let p = &self.inner.lifecycle.pressure;
        if p.level() != PressureLevel::Critical {
            return Ok(());
        }
        p.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let last = *p.last.lock();
        let mut consumers: Vec<(String, u64)> = self
            .inner
            .budget
            .stats()
            .consumers
            .into_iter()
            .map(|c| (c.name, c.reserved_bytes))
            .collect();
        consumers.sort_by_key(|c| std::cmp::Reverse(c.1));
        consumers.truncate(3);
        Err(Error::MemoryPressure {
            rss: last.rss_bytes,
            limit: last.limit_bytes,
            reserved: self.inner.budget.reserved_bytes(),
            top_consumers: consumers,
        })
    }

    /// The compaction thresholds for `level`, on every dataset.
    pub(crate) fn apply_policies(&self, level: PressureLevel) {
        let c = &self.inner.config;
        let (arena, index) = if level >= PressureLevel::Elevated {
            let arena = ArenaPolicy {
                max_live_ratio: TIGHT_ARENA_MAX_LIVE_RATIO,
                max_waste_ratio: TIGHT_ARENA_MAX_WASTE_RATIO.min(c.arena_max_waste_ratio),
            };
            (arena, TIGHT_INDEX_MAX_DELETED_RATIO)
        } else {
            let arena = ArenaPolicy {
                max_live_ratio: c.arena_max_live_ratio,
                max_waste_ratio: c.arena_max_waste_ratio,
            };
            (arena, c.index_max_deleted_ratio)
        };
        for d in self.inner.datasets.read().values() {
            d.set_policies(arena, index);
        }
    }

    /// One sample of what the controller reads.
    fn pressure_sample(&self) -> PressureSample {
        let (mut live, mut resident) = (0, 0);
        for d in self.inner.datasets.read().values() {
            for a in [d.kv.arena(), d.vectors.payloads()] {
                let s = a.stats();
                live += s.live_bytes;
                resident += s.resident_bytes;
            }
        }
        PressureSample {
            rss_bytes: ebb_core::os::rss_bytes().unwrap_or(0),
            // The budget's limit, which can change at run time.
            limit_bytes: self
                .inner
                .budget
                .limit_bytes()
                .unwrap_or(self.inner.config.memory_limit_bytes),
            soft_limit_ratio: self.inner.config.soft_limit_ratio,
            reserved_bytes: self.inner.budget.reserved_bytes(),
            budget_available_bytes: self.inner.budget.available_bytes(),
            arena_live_bytes: live,
            arena_resident_bytes: resident,
            cgroup_limit_bytes: crate::limits::cgroup_limit(),
            psi_some_avg10: ebb_core::os::memory_pressure().map(|p| p.some.avg10),
        }
    }

    /// One controller tick: sample, decide, act on a change. The worker
    /// calls it every interval; `release_memory` and `drop_dataset` call it
    /// when done, so writes come back as soon as memory has.
    pub(crate) fn pressure_tick(&self) -> PressureLevel {
        let p = &self.inner.lifecycle.pressure;
        let _one = p.tick.lock();
        let sample = self.pressure_sample();
        let before = p.level();
        let mut latch = p.budget_exit.load(std::sync::atomic::Ordering::Relaxed);
        let after = decide(before, &sample, &mut latch);
        p.budget_exit
            .store(latch, std::sync::atomic::Ordering::Relaxed);
        *p.last.lock() = sample;
        p.samples.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if after != before {
            p.set_level(after);
            p.changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut last_log = p.last_log.lock();
            if last_log.is_none_or(|t| t.elapsed() >= LOG_COOLDOWN) {
                *last_log = Some(std::time::Instant::now());
                tracing::warn!(
                    from = before.as_str(),
                    to = after.as_str(),
                    rss = sample.rss_bytes,
                    limit = sample.limit_bytes,
                    reserved = sample.reserved_bytes,
                    "memory pressure level changed"
                );
            }
            if (before >= PressureLevel::Elevated) != (after >= PressureLevel::Elevated) {
                self.apply_policies(after);
            }
            if after > before {
                self.relieve();
            }
        }
        // Garbage never waits for the compaction interval: work due
        // anywhere wakes the worker within one sample (a churn heavier
        // than the interval can absorb is the common case, not the edge).
        if after == PressureLevel::Critical
            || (self.inner.config.compact_when_due && self.maintenance_due_anywhere())
        {
            self.wake_compaction();
        }
        after
    }

    /// True if some dataset's arena, index or pool has maintenance due.
    fn maintenance_due_anywhere(&self) -> bool {
        use ebb_core::maintenance::Maintenance;
        self.inner.datasets.read().values().any(|d| {
            d.kv.arena().maintenance_due().is_some()
                || d.vectors.payloads().maintenance_due().is_some()
                || d.vectors.index().maintenance().maintenance_due().is_some()
                || d.pool.maintenance_due().is_some()
        })
    }

    /// What the controller does when pressure rises: pools trimmed on
    /// every thread, warm slabs released, the allocator purged, the
    /// compaction worker woken.
    fn relieve(&self) {
        for d in self.inner.datasets.read().values() {
            d.pool.trim();
            d.kv.arena().release_warm_slabs();
            d.vectors.payloads().release_warm_slabs();
        }
        ebb_core::os::trim_global_allocator();
        self.wake_compaction();
    }
}

/// A worker's wait for its next round: the interval, or a wake, or the
/// token. The engine for the round (the worker marked running), or `None`
/// when the worker should end (cancelled, or the engine gone).
async fn next_round(
    engine: &Weak<Inner>,
    worker: &Worker,
    wake: Option<&Notify>,
    token: &tokio_util::sync::CancellationToken,
    interval: Duration,
) -> Option<Arc<Inner>> {
    worker.set(WorkerState::Idle);
    let woken = async {
        match wake {
            Some(w) => w.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = token.cancelled() => return None,
        _ = tokio::time::sleep(interval) => {}
        _ = woken => {}
    }
    let inner = engine.upgrade()?;
    worker.set(WorkerState::Running);
    Some(inner)
}

async fn compaction_worker(
    engine: Weak<Inner>,
    lane: Lane,
    worker: Arc<Worker>,
    wake: Arc<Notify>,
    token: tokio_util::sync::CancellationToken,
    interval: Duration,
) {
    while let Some(inner) = next_round(&engine, &worker, Some(&wake), &token, interval).await {
        let datasets: Vec<_> = inner.datasets.read().values().cloned().collect();
        drop(inner);
        for d in datasets {
            if token.is_cancelled() {
                return;
            }
            // The engine is held only to spawn, never across the wait
            // (invariant 1); the dataset moves to the blocking thread, so
            // one dropped meanwhile is freed there, not here.
            let Some(inner) = engine.upgrade() else {
                return;
            };
            let step = Worker::new(
                format!("{}/{}", lane.worker_name(), d.name),
                d.name.clone(),
                "one dataset's due maintenance (blocking)",
                None,
                "done, or the engine's token",
                true,
            );
            let child = token.child_token();
            let weak = Arc::downgrade(&inner);
            let join = inner.lifecycle.spawn_blocking(step, move || {
                if let Some(inner) = weak.upgrade() {
                    maintain_dataset(&d, lane, &child, &inner.lifecycle.compaction);
                }
                drop(d);
            });
            drop(inner);
            let _ = join.await;
        }
        if let Some(inner) = engine.upgrade() {
            inner.lifecycle.compaction.pass_done();
        }
    }
}

async fn pressure_worker(
    engine: Weak<Inner>,
    worker: Arc<Worker>,
    wake: Arc<Notify>,
    token: tokio_util::sync::CancellationToken,
    interval: Duration,
) {
    while let Some(inner) = next_round(&engine, &worker, Some(&wake), &token, interval).await {
        let engine_ref = Engine { inner };
        // Sampling reads /proc and the arenas' counters: short, and the
        // purge it may call is bounded; no dataset is dropped here.
        engine_ref.pressure_tick();
    }
}

async fn leak_worker(
    engine: Weak<Inner>,
    worker: Arc<Worker>,
    token: tokio_util::sync::CancellationToken,
    interval: Duration,
    mut monitor: LeakMonitor,
) {
    while let Some(inner) = next_round(&engine, &worker, None, &token, interval).await {
        let _ = monitor.tick();
        *inner.lifecycle.leak_stats.lock() = monitor.stats();
    }
}
