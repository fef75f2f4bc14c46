//! The engine's one error type: every caller mistake is a variant of its
//! own, with the values that were wrong, and changes nothing.

use ebb_core::BudgetExceeded;

/// What went wrong; a refused call changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration key is unknown or its value is not allowed.
    #[error("config key `{key}`: {value:?} is not allowed ({allowed})")]
    Config {
        /// The key, as written in the file, env var or flag.
        key: String,
        /// The value given.
        value: String,
        /// What the key accepts.
        allowed: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// Why it could not be used.
        reason: String,
    },
    /// No dataset of that name.
    #[error("no dataset named {name:?}")]
    UnknownDataset {
        /// The name asked for.
        name: String,
    },
    /// A dataset of that name exists already.
    #[error("dataset {name:?} exists already")]
    DatasetExists {
        /// The name.
        name: String,
    },
    /// A dataset name that is empty, over 64 bytes or outside
    /// `[A-Za-z0-9_-]`.
    #[error("bad dataset name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More datasets than the engine's cap.
    #[error("the engine holds {max} datasets, its maximum")]
    TooManyDatasets {
        /// The cap (`max_datasets`).
        max: usize,
    },
    /// A dataset configuration that cannot work.
    #[error("bad dataset config: {reason}")]
    BadDatasetConfig {
        /// What is wrong, with the values given.
        reason: String,
    },
    /// A vector or query of the wrong length.
    #[error("vector has {got} dimensions, the dataset has {expected}")]
    DimensionMismatch {
        /// The dataset's dimension.
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
    /// A record batch whose schema is not the one the call takes.
    #[error("wrong schema: {reason}")]
    Schema {
        /// What differs, with the expected and given types.
        reason: String,
    },
    /// A null where the schema allows none.
    #[error("column {column:?} is null at row {row}")]
    Null {
        /// The column.
        column: &'static str,
        /// The first null row.
        row: usize,
    },
    /// The engine's token stopped a long operation between chunks; what
    /// was done before stays.
    #[error("cancelled after {done} rows")]
    Cancelled {
        /// Rows done before the stop.
        done: usize,
    },
    /// An empty key.
    #[error("keys must not be empty")]
    EmptyKey,
    /// A key over [`MAX_KEY_BYTES`](crate::MAX_KEY_BYTES).
    #[error("key of {len} bytes is over the maximum of {max}")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A value (or payload) over `max_value_bytes`.
    #[error("value of {len} bytes is over max_value_bytes = {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// `k` of 0 or over [`MAX_K`](crate::MAX_K).
    #[error("k = {k} is not allowed (1..={max})")]
    BadK {
        /// The `k` given.
        k: usize,
        /// The maximum.
        max: usize,
    },
    /// The memory budget refused the write (the numbers are in the
    /// refusal); nothing already accepted was dropped.
    #[error(transparent)]
    OverBudget(BudgetExceeded),
    /// The pressure controller is at Critical: writes are refused until
    /// memory is back under the soft limit (reads and deletes work; nothing
    /// accepted is lost).
    #[error(
        "memory pressure: RSS {rss} B and {reserved} B reserved against the limit {limit} B (largest consumers {top_consumers:?}); retry later"
    )]
    MemoryPressure {
        /// Process RSS at the last sample.
        rss: u64,
        /// `memory_limit_bytes`.
        limit: u64,
        /// Bytes reserved from the budget now.
        reserved: u64,
        /// The largest budget consumers, (name, bytes).
        top_consumers: Vec<(String, u64)>,
    },
    /// `close_blocking` was called on a thread that runs a tokio runtime.
    #[error("close_blocking called inside a tokio runtime: await close() instead")]
    InsideRuntime,
    /// The engine is closing or closed: no new work is taken.
    #[error("the engine is closing")]
    Closing,
    /// The system refused memory for an engine table.
    #[error("could not allocate {bytes} bytes for {what}")]
    Allocation {
        /// What the memory was for.
        what: &'static str,
        /// How much was asked for.
        bytes: usize,
    },
    /// Snapshots need `data_dir`, and the engine has none.
    #[error("no data_dir is set: snapshots need one")]
    NoDataDir,
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What was being done (`create`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// A snapshot file that is truncated, altered or not what its manifest
    /// says; its dataset is left out, the others load.
    #[error("snapshot file {file}: {reason}")]
    CorruptSnapshot {
        /// The file.
        file: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An arena failed (not a caller mistake: the system refused memory).
    #[error("arena: {0}")]
    Arena(ebb_arena::Error),
    /// The index failed.
    #[error("index: {0}")]
    Index(ebb_hnsw::Error),
    /// A pool failed.
    #[error("pool: {0}")]
    Pool(ebb_pool::Error),
}

impl Error {
    /// The budget's refusal, whichever layer it came from.
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            Error::OverBudget(e) => Some(e),
            Error::Arena(e) => e.budget_exceeded(),
            Error::Index(e) => e.budget_exceeded(),
            Error::Pool(e) => e.budget_exceeded(),
            _ => None,
        }
    }

    /// A budget refusal from a lower layer becomes [`Error::OverBudget`],
    /// so callers match one variant.
    fn lift(self) -> Error {
        match self.budget_exceeded() {
            Some(e) if !matches!(self, Error::OverBudget(_)) => Error::OverBudget(e.clone()),
            _ => self,
        }
    }
}

impl From<ebb_arena::Error> for Error {
    fn from(e: ebb_arena::Error) -> Error {
        Error::Arena(e).lift()
    }
}

impl From<ebb_hnsw::Error> for Error {
    fn from(e: ebb_hnsw::Error) -> Error {
        match e {
            ebb_hnsw::Error::DimensionMismatch { expected, got } => {
                Error::DimensionMismatch { expected, got }
            }
            ebb_hnsw::Error::NonFinite { index, value } => Error::NonFinite { index, value },
            e => Error::Index(e).lift(),
        }
    }
}

impl From<ebb_pool::Error> for Error {
    fn from(e: ebb_pool::Error) -> Error {
        Error::Pool(e).lift()
    }
}

impl From<BudgetExceeded> for Error {
    fn from(e: BudgetExceeded) -> Error {
        Error::OverBudget(e)
    }
}

/// The engine's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
