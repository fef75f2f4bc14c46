//! Errors of ebb-arena.

use crate::compact::CompactionReport;
use ebb_core::BudgetExceeded;

/// Everything an insert or replace can fail with. A failed call stores
/// nothing and changes nothing already stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The slab layer refused memory: over budget, mmap failure, or a bad
    /// configuration.
    #[error(transparent)]
    Slab(#[from] ebb_slab::Error),
    /// The handle table is full (2^28 records at once). Once every index
    /// has been handed out, removed records' slots go to shared free lists,
    /// not to a thread's stash; slots a thread stashed before that and has
    /// not used since (at most 4096 per thread that has not inserted or
    /// removed since) are reached only when it next calls in.
    #[error("arena holds the maximum of {max} records")]
    TooManyRecords {
        /// The table's capacity.
        max: usize,
    },
    /// A blob longer than a record can be.
    #[error("blob of {len} bytes exceeds the {max} byte record limit")]
    BlobTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Error {
    /// The budget numbers, if this is a budget refusal.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            Error::Slab(ebb_slab::Error::BudgetExceeded(e)) => Some(e),
            _ => None,
        }
    }
}

/// `Result` with ebb-arena's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a compaction stopped early. Every variant leaves the arena
/// consistent: each record is readable at exactly one place, the handle
/// table is exact, and the stats agree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompactionError {
    /// Another compaction of this arena is running; nothing was done. (A
    /// cancelled compaction is not an error: its report says `cancelled`.)
    #[error("a compaction of this arena is already running")]
    AlreadyRunning,
    /// A new target slab would pass the memory budget.
    #[error("compaction stopped at the memory budget: {source}")]
    OverBudget {
        /// The budget's numbers.
        source: Box<BudgetExceeded>,
        /// Work done before.
        report: CompactionReport,
    },
    /// The OS refused memory for a target slab.
    #[error("compaction stopped: {source}")]
    Os {
        /// What the slab layer said.
        source: Box<ebb_slab::Error>,
        /// Work done before.
        report: CompactionReport,
    },
}

impl CompactionError {
    /// What was done before the compaction stopped.
    pub fn report(&self) -> Option<&CompactionReport> {
        match self {
            CompactionError::AlreadyRunning => None,
            CompactionError::OverBudget { report, .. } | CompactionError::Os { report, .. } => {
                Some(report)
            }
        }
    }

    /// The budget numbers, if this is a budget refusal.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            CompactionError::OverBudget { source, .. } => Some(source),
            _ => None,
        }
    }
}
