//! Errors of ebb-hnsw. Every one leaves the index as it was: nothing of a
//! refused call is indexed.

use ebb_core::budget::BudgetExceeded;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid index configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, with the values given.
        reason: String,
    },
    /// A vector of the wrong length.
    #[error("vector has {got} dimensions, the index has {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A NaN or infinite component.
    #[error("component {index} is {value}: vectors must be finite")]
    NonFinite {
        /// Position of the first bad component.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A zero vector under the cosine metric (it has no direction).
    #[error("a zero vector has no cosine distance to anything")]
    ZeroVector,
    /// The id is already in the index (`upsert` replaces).
    #[error("id {id} is already in the index (use upsert to replace it)")]
    DuplicateId {
        /// The id.
        id: u64,
    },
    /// The index holds its configured capacity of live points.
    #[error("the index is full: {capacity} live points")]
    CapacityExceeded {
        /// The configured capacity.
        capacity: usize,
    },
    /// The memory budget refused the point.
    #[error(transparent)]
    OverBudget(#[from] Box<BudgetExceeded>),
    /// k was 0.
    #[error("k must be at least 1")]
    ZeroK,
}

/// Why a rebuild did not complete; the index is unchanged in every case.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// The token was cancelled; at most one chunk was built after it.
    #[error("rebuild cancelled after {points_built} points")]
    Cancelled {
        /// Points built before it stopped.
        points_built: usize,
    },
    /// Another rebuild of this index is running.
    #[error("a rebuild of this index is already running")]
    AlreadyRunning,
}
