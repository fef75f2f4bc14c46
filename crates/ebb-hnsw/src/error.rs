//! Errors of ebb-hnsw. Every one leaves the index (or graph) as it was:
//! nothing of a refused call is indexed.

use ebb_core::budget::BudgetExceeded;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call was refused.
///
/// The variants up to [`ZeroK`](Error::ZeroK) come from
/// [`VectorIndex`](crate::VectorIndex)'s own checks; the rest from a
/// [`GraphBackend`](crate::GraphBackend) (they name internal u32 ids), and
/// reach an index's caller only as [`AllocationFailed`](Error::AllocationFailed)
/// (the index never hands a graph a bad batch).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid index configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, with the values given.
        reason: String,
    },
    /// A vector or query of the wrong length.
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
    /// The index holds its configured capacity of live points, or has used
    /// up its internal ids ([`MAX_POINTS`](crate::MAX_POINTS) per
    /// generation; a rebuild renumbers them).
    #[error("the index is full: {capacity} live points")]
    CapacityExceeded {
        /// The configured capacity.
        capacity: usize,
    },
    /// The memory budget refused the point (or, from
    /// [`VectorIndex::with_backend`](crate::VectorIndex::with_backend), the
    /// empty graph).
    #[error(transparent)]
    OverBudget(#[from] Box<BudgetExceeded>),
    /// [`VectorIndex::insert_batch`](crate::VectorIndex::insert_batch) saw
    /// its token cancelled: the first `inserted` points of the batch are
    /// indexed, none after.
    #[error("batch cancelled after {inserted} points were inserted")]
    BatchCancelled {
        /// Points of the batch indexed (a prefix of it).
        inserted: usize,
    },
    /// k was 0.
    #[error("k must be at least 1")]
    ZeroK,
    /// k over [`MAX_K`](crate::MAX_K).
    #[error("k is {k}, the most one search returns is {max}")]
    KTooLarge {
        /// The k asked for.
        k: usize,
        /// The limit ([`MAX_K`](crate::MAX_K)).
        max: usize,
    },
    /// A [`GraphParams`](crate::GraphParams) field out of its range.
    #[error("graph parameter {name} is {value}, it must be {min}..={max}")]
    ParamOutOfRange {
        /// The field.
        name: &'static str,
        /// The value given.
        value: usize,
        /// The least allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// An array of the graph would not fit in the address space.
    #[error(
        "the graph's {what} need {points} points x {per_point} x {elem_bytes} bytes, \
         over isize::MAX ({limit}) bytes"
    )]
    SizeOverflow {
        /// The array (`"vectors"`, `"layer-0 links"`).
        what: &'static str,
        /// Points it must hold.
        points: usize,
        /// Elements per point.
        per_point: usize,
        /// Bytes per element.
        elem_bytes: usize,
        /// `isize::MAX`.
        limit: usize,
    },
    /// The graph could not map or allocate memory (mmap or the allocator
    /// refused); the graph is unchanged.
    #[error("could not allocate {bytes} bytes for the graph's {what}: {reason}")]
    AllocationFailed {
        /// The array (`"vectors"`, `"layer-0 links"`, `"upper layers"`).
        what: &'static str,
        /// Bytes asked for.
        bytes: usize,
        /// What the OS or allocator said.
        reason: String,
    },
    /// A batch point whose vector is not `dim` long.
    #[error("point {id} has {got} components, the graph has dim {expected}")]
    VectorLength {
        /// The internal id of the point.
        id: u32,
        /// The graph's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A batch point whose id is in the graph already.
    #[error("point {id} is already in the graph")]
    IdAlreadyInserted {
        /// The internal id.
        id: u32,
    },
    /// An id twice in one batch.
    #[error("point {id} is in the batch twice, at {first} and {second}")]
    IdRepeatedInBatch {
        /// The internal id.
        id: u32,
        /// Its first position in the batch.
        first: usize,
        /// Its second position.
        second: usize,
    },
    /// A batch point whose id is at or over the graph's `max_points`.
    #[error("point {id} is out of range: the graph takes ids below {max_points}")]
    IdOutOfRange {
        /// The internal id.
        id: u32,
        /// The graph's [`GraphParams::max_points`](crate::GraphParams::max_points).
        max_points: usize,
    },
}

impl Error {
    /// The budget refusal, if this is one (the one refusal type every ebb
    /// crate uses).
    ///
    /// ```
    /// use ebb_core::MemoryBudget;
    /// use ebb_hnsw::{IndexConfig, Metric, VectorIndex};
    ///
    /// let budget = MemoryBudget::new(64 << 10);
    /// let index =
    ///     VectorIndex::new(IndexConfig::new(1024, Metric::L2).with_budget(&budget, "hnsw"));
    /// let index = index.unwrap();
    /// let v = vec![1.0; 1024];
    /// let err = (0..100).find_map(|i| index.insert(i, &v).err()).unwrap();
    /// assert_eq!(err.budget_exceeded().unwrap().consumer, "hnsw");
    /// ```
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            Error::OverBudget(e) => Some(e),
            _ => None,
        }
    }
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
    /// The budget refused the second generation's bytes, reserved before
    /// the build starts; nothing was built.
    #[error("rebuild refused by the memory budget: {0}")]
    OverBudget(Box<BudgetExceeded>),
    /// The new graph refused its parameters or a batch, or could not get
    /// memory ([`Error::AllocationFailed`]).
    #[error("building the new graph failed: {0}")]
    Graph(#[from] Error),
}

impl RebuildError {
    /// The budget refusal, if this is one.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            RebuildError::OverBudget(e) => Some(e),
            RebuildError::Graph(e) => e.budget_exceeded(),
            _ => None,
        }
    }
}
