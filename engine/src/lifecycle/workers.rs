//! The registry of the engine's background tasks: every worker is spawned
//! through one `TaskTracker` with a name, an owner, a purpose, an interval
//! and a stop condition, and keeps its state where
//! [`Engine::workers`](crate::Engine::workers) (the audit of every
//! background task) and `close()` can read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::AbortHandle;

/// What a worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next interval (or a wake-up).
    Idle,
    /// Doing its work now.
    Running,
    /// Ended (cancelled, or its work is done).
    Stopped,
    /// Still running past the close deadline: aborted (async) or detached
    /// (blocking).
    Abandoned,
}

impl WorkerState {
    /// The state's name (`idle`, `running`, `stopped`, `abandoned`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Running => "running",
            WorkerState::Stopped => "stopped",
            WorkerState::Abandoned => "abandoned",
        }
    }

    fn from_u8(v: u8) -> WorkerState {
        match v {
            0 => WorkerState::Idle,
            1 => WorkerState::Running,
            2 => WorkerState::Stopped,
            _ => WorkerState::Abandoned,
        }
    }
}

/// One background task, as [`Engine::workers`](crate::Engine::workers)
/// lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// Its name (unique in the engine).
    pub name: String,
    /// Who owns it (`engine`, or the dataset it works for).
    pub owner: String,
    /// What it does.
    pub purpose: &'static str,
    /// How often it runs (none: once, or only when woken).
    pub interval_secs: Option<f64>,
    /// When it stops.
    pub stop_condition: &'static str,
    /// What it is doing now.
    pub state: WorkerState,
    /// Seconds since it was spawned.
    pub age_secs: f64,
    /// Seconds it has been in its current run (0 when idle).
    pub running_secs: f64,
}

/// A worker's shared state.
pub(crate) struct Worker {
    pub name: String,
    pub owner: String,
    pub purpose: &'static str,
    pub interval: Option<Duration>,
    pub stop_condition: &'static str,
    /// True for a `spawn_blocking` task (detached, not aborted, past the
    /// deadline).
    pub blocking: bool,
    state: AtomicU8,
    spawned: Instant,
    run_started: Mutex<Option<Instant>>,
    abort: Mutex<Option<AbortHandle>>,
}

impl Worker {
    pub fn new(
        name: impl Into<String>,
        owner: impl Into<String>,
        purpose: &'static str,
        interval: Option<Duration>,
        stop_condition: &'static str,
        blocking: bool,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            name: name.into(),
            owner: owner.into(),
            purpose,
            interval,
            stop_condition,
            blocking,
            state: AtomicU8::new(0),
            spawned: Instant::now(),
            run_started: Mutex::new(None),
            abort: Mutex::new(None),
        })
    }

    pub fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set(&self, state: WorkerState) {
        // An abandoned worker stays abandoned.
        if self.state() == WorkerState::Abandoned {
            return;
        }
        *self.run_started.lock() = (state == WorkerState::Running).then(Instant::now);
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn set_abort(&self, abort: AbortHandle) {
        *self.abort.lock() = Some(abort);
    }

    /// Past the deadline: abort an async task, detach a blocking one.
    pub fn abandon(&self) {
        if let Some(abort) = self.abort.lock().take()
            && !self.blocking
        {
            abort.abort();
        }
        self.state
            .store(WorkerState::Abandoned as u8, Ordering::Release);
    }

    pub fn running_secs(&self) -> f64 {
        self.run_started
            .lock()
            .map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    pub fn info(&self) -> WorkerInfo {
        WorkerInfo {
            name: self.name.clone(),
            owner: self.owner.clone(),
            purpose: self.purpose,
            interval_secs: self.interval.map(|d| d.as_secs_f64()),
            stop_condition: self.stop_condition,
            state: self.state(),
            age_secs: self.spawned.elapsed().as_secs_f64(),
            running_secs: self.running_secs(),
        }
    }
}

/// Marks a worker stopped when its future ends or is dropped (aborted).
pub(crate) struct StopOnDrop(pub Arc<Worker>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.set(WorkerState::Stopped);
    }
}
