//! The maintenance contract: how an engine's background worker asks every
//! consumer of memory (arenas, indexes, pools) whether work is due and has
//! it done, in one vocabulary.
//!
//! ```text
//!   worker ──► maintenance_due()        counters only: never waits on a
//!     │            │                     writer, a flush or a running pass
//!     │            └─► Some(Due { reason, reclaimable_bytes })
//!     └──────► run_maintenance(&token)  on a blocking thread; a second
//!                  │                     caller gets AlreadyRunning at once
//!                  └─► MaintenanceReport { cancelled, bytes_released, .. ,
//!                                          deferred: Option<Deferred> }
//!                                            │
//!   worker schedules deferred.release() ◄────┘ (e.g. a retired graph's unmap,
//!   or release_step(max_bytes) in bounded chunks)
//! ```
//!
//! Callers guarantee: nothing (every method is safe to call from any thread
//! at any time, concurrently with reads and writes).
//!
//! Implementations must:
//!
//! 1. answer `maintenance_due` from counters only (no lock a writer or a
//!    running pass can hold), so a worker polling it never stalls;
//! 2. let a run stop soon after its token is cancelled (between slabs,
//!    batches or tiers), leaving everything readable and nothing lost, and
//!    say so with `cancelled: true` in an `Ok` report, not with an error;
//! 3. answer a run that starts while another runs with
//!    [`MaintenanceError::AlreadyRunning`] at once, without waiting;
//! 4. hand back, in `deferred`, any freeing too slow for the caller's
//!    thread, rather than doing it on whichever thread drops the last
//!    reference;
//! 5. take their policy (the thresholds behind `maintenance_due`) from
//!    setters that work at run time, so a pressure controller can tighten
//!    it.
//!
//! A worked scenario: the engine's compaction worker wakes every 5 s, asks
//! each dataset's arenas and index `maintenance_due()`, and for each
//! `Some(due)` runs `run_maintenance` under a child token on
//! `spawn_blocking`; at close it cancels the token and each run returns
//! within a slab or a batch with `cancelled: true`.

use std::fmt;

use tokio_util::sync::CancellationToken;

use crate::BudgetExceeded;

/// Which kind of consumer does the work (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaintenanceKind {
    /// Compaction of an arena's sparse slabs.
    Arena,
    /// A rebuild of a vector index full of tombstones.
    Index,
    /// A trim of a pool's retained buffers or objects.
    Pool,
}

impl MaintenanceKind {
    /// The label: `arena`, `index` or `pool`.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceKind::Arena => "arena",
            MaintenanceKind::Index => "index",
            MaintenanceKind::Pool => "pool",
        }
    }
}

/// Why work is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Due {
    /// A short reason from a fixed set (`sparse_slabs`, `deleted_ratio`,
    /// `over_model`, `over_cap`, ...), fit for a metric label.
    pub reason: &'static str,
    /// Bytes the work is expected to give back (an estimate).
    pub reclaimable_bytes: u64,
}

/// What a run did.
#[derive(Debug, Default)]
#[must_use = "a report may carry deferred work that frees memory only when released"]
pub struct MaintenanceReport {
    /// Who did it (`None` only in `Default`).
    pub kind: Option<MaintenanceKind>,
    /// True if the run stopped early because its token was cancelled; what
    /// was done stays done and everything stays readable.
    pub cancelled: bool,
    /// True if the run found nothing worth doing under its policy.
    pub skipped: bool,
    /// Resident bytes given back to the OS during the run.
    pub bytes_released: u64,
    /// Bytes copied (a compaction's moves, a rebuild's points).
    pub bytes_moved: u64,
    /// Units of work (records moved, points rebuilt, items trimmed).
    pub items: u64,
    /// Wall time in seconds.
    pub duration_secs: f64,
    /// Freeing left for the caller to schedule (see [`Deferred`]).
    pub deferred: Option<Deferred>,
}

/// Why a run did not happen or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaintenanceError {
    /// Another run of the same consumer is in progress; nothing was done.
    #[error("{} maintenance already running", kind.as_str())]
    AlreadyRunning {
        /// Who.
        kind: MaintenanceKind,
    },
    /// The run needed memory the budget refused (a rebuild's second
    /// generation); nothing visible changed.
    #[error(transparent)]
    OverBudget(Box<BudgetExceeded>),
    /// The run failed (the OS refused memory); nothing visible changed
    /// beyond the work reported done before.
    #[error("{} maintenance failed: {message}", kind.as_str())]
    Failed {
        /// Who.
        kind: MaintenanceKind,
        /// What went wrong.
        message: String,
    },
}

impl MaintenanceError {
    /// The budget refusal, if this is one.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            MaintenanceError::OverBudget(e) => Some(e),
            _ => None,
        }
    }
}

/// The maintenance contract; see the module docs for what callers and
/// implementations guarantee.
pub trait Maintenance: Send + Sync {
    /// Who does the work.
    fn maintenance_kind(&self) -> MaintenanceKind;

    /// Whether work is due under the current policy, and why (counters
    /// only: implementations must 1).
    fn maintenance_due(&self) -> Option<Due>;

    /// Does the work now, stopping soon after `token` is cancelled
    /// (implementations must 2 to 4).
    ///
    /// # Errors
    ///
    /// [`MaintenanceError::AlreadyRunning`] while another run is in
    /// progress; `OverBudget` or `Failed` when the work could not proceed.
    fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> Result<MaintenanceReport, MaintenanceError>;
}

/// Freeing that can be done a bounded piece at a time: what a
/// [`Deferred`] made by [`Deferred::chunked`] holds (a retired index graph
/// whose mappings are released a few megabytes per step).
///
/// Implementations must:
///
/// 1. free at most about `max_bytes` per [`release_step`](Self::release_step)
///    (at least some progress when `max_bytes > 0`, so a loop ends), and
///    return `true` once nothing is left, after which the value drops in
///    constant time;
/// 2. in [`abandon`](Self::abandon), called when the `Deferred` is dropped
///    unreleased, either free everything there (the default) or hand the
///    remaining work to an owner that frees it later (a reclaim queue its
///    maintenance run drains), so that a plain drop costs its thread nothing
///    when the owner says so.
pub trait ChunkedRelease: Send + 'static {
    /// Frees up to about `max_bytes`; true when nothing is left to free.
    fn release_step(&mut self, max_bytes: u64) -> bool;

    /// About how many bytes are still to free.
    fn remaining_bytes(&self) -> u64;

    /// The `Deferred` holding this was dropped unreleased. The default
    /// frees everything now, on the dropping thread.
    fn abandon(mut self: Box<Self>) {
        while !self.release_step(u64::MAX) {}
    }
}

enum Work {
    Once(Box<dyn FnOnce() + Send>),
    Chunked(Box<dyn ChunkedRelease>),
}

/// Freeing handed back by a run, for the caller to do where it costs no
/// one (a blocking thread).
///
/// Two shapes: [`Deferred::new`] wraps one closure (dropping the value runs
/// it on the dropping thread: call [`release`](Self::release) where that
/// thread is the right one); [`Deferred::chunked`] wraps a
/// [`ChunkedRelease`], freed in bounded steps by
/// [`release_step`](Self::release_step), and on an unreleased drop does
/// what its `abandon` says (for a retired index graph: hand itself to the
/// index's reclaim queue, so the drop costs nothing).
///
/// ```
/// use ebb_core::maintenance::Deferred;
///
/// let mut d = Deferred::new("buffers", 4096, || {});
/// assert_eq!((d.what(), d.bytes()), ("buffers", 4096));
/// assert!(d.release_step(1 << 20), "a closure frees in one step");
/// assert!(d.is_released());
/// ```
#[must_use = "deferred freeing happens on whichever thread drops it; schedule release() instead"]
pub struct Deferred {
    what: &'static str,
    bytes: u64,
    work: Option<Work>,
}

impl Deferred {
    /// Freeing of about `bytes` (`what`: a short label) done by `release`.
    pub fn new(what: &'static str, bytes: u64, release: impl FnOnce() + Send + 'static) -> Self {
        Deferred {
            what,
            bytes,
            work: Some(Work::Once(Box::new(release))),
        }
    }

    /// Freeing done a bounded step at a time by `work` (`what`: a short
    /// label; the size is `work.remaining_bytes()` now).
    pub fn chunked(what: &'static str, work: impl ChunkedRelease) -> Self {
        Deferred {
            what,
            bytes: work.remaining_bytes(),
            work: Some(Work::Chunked(Box::new(work))),
        }
    }

    /// What it frees (a short label).
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// About how many bytes it frees (in all, as made).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// About how many bytes are still to free.
    pub fn remaining_bytes(&self) -> u64 {
        match &self.work {
            None => 0,
            Some(Work::Once(_)) => self.bytes,
            Some(Work::Chunked(w)) => w.remaining_bytes(),
        }
    }

    /// Whether everything is freed.
    pub fn is_released(&self) -> bool {
        self.work.is_none()
    }

    /// Frees up to about `max_bytes` now, on the calling thread; true when
    /// nothing is left. A [`Deferred::new`] closure runs whole on the first
    /// step.
    pub fn release_step(&mut self, max_bytes: u64) -> bool {
        match &mut self.work {
            None => true,
            Some(Work::Chunked(w)) => {
                if w.release_step(max_bytes) {
                    self.work = None;
                }
                self.work.is_none()
            }
            Some(Work::Once(_)) => {
                if let Some(Work::Once(f)) = self.work.take() {
                    f();
                }
                true
            }
        }
    }

    /// Frees everything now, on the calling thread.
    pub fn release(mut self) {
        while !self.release_step(u64::MAX) {}
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        match self.work.take() {
            None => {}
            Some(Work::Once(f)) => f(),
            Some(Work::Chunked(w)) => w.abandon(),
        }
    }
}

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("what", &self.what)
            .field("bytes", &self.bytes)
            .field("remaining_bytes", &self.remaining_bytes())
            .finish()
    }
}

/// A shared consumer is maintained through its `Arc` (the engine's worker
/// holds `Arc<dyn Maintenance>` and runs it from `spawn_blocking`).
impl<M: Maintenance + ?Sized> Maintenance for std::sync::Arc<M> {
    fn maintenance_kind(&self) -> MaintenanceKind {
        (**self).maintenance_kind()
    }

    fn maintenance_due(&self) -> Option<Due> {
        (**self).maintenance_due()
    }

    fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> Result<MaintenanceReport, MaintenanceError> {
        (**self).run_maintenance(token)
    }
}
