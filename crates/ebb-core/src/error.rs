//! The error type of ebb-core.

use crate::budget::BudgetExceeded;

/// Everything ebb-core can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed; `op` names it (`"mmap"`, `"madvise(DONTNEED)"`, ...).
    #[error("{op} failed: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// A file under /proc or /sys did not have the expected shape.
    #[error("could not parse {path}: {what}")]
    Parse {
        /// The file.
        path: String,
        /// What was missing or malformed.
        what: String,
    },
    /// An argument was out of range (a zero-length mapping, an alignment that
    /// is not a power of two, a range outside a mapping).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A reservation could not grow; carries the numbers.
    #[error(transparent)]
    BudgetExceeded(#[from] BudgetExceeded),
}

/// `Result` with ebb-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The budget refusal, if this is one (every ebb crate's error answers
    /// the same question the same way).
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            Error::BudgetExceeded(e) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn os(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::Os {
            op,
            source: source.into(),
        }
    }
}
