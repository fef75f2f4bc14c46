//! Errors of ebb-pool.

use ebb_core::budget::BudgetExceeded;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a pool call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work; nothing was built.
    #[error("invalid pool configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, with the values given.
        reason: String,
    },
    /// The request is larger than any allocation can be.
    #[error("a buffer of {requested_bytes} bytes is larger than an allocation can be")]
    TooLarge {
        /// Bytes asked for.
        requested_bytes: usize,
    },
    /// The allocator refused a fresh buffer; the pool is unchanged.
    #[error("the allocator refused {requested_bytes} bytes")]
    OutOfMemory {
        /// Bytes asked for.
        requested_bytes: usize,
    },
    /// A fresh buffer or object would take the memory budget past its
    /// limit (a `try_` call); the pool is unchanged. The budget's numbers
    /// (requested, held, available, limit, consumer) are inside.
    #[error(transparent)]
    OverBudget(Box<BudgetExceeded>),
}

impl Error {
    /// The budget refusal, if this is one.
    ///
    /// ```
    /// use ebb_core::budget::MemoryBudget;
    /// use ebb_pool::{BufferPool, PoolConfig};
    ///
    /// let budget = MemoryBudget::new(1000);
    /// let pool = BufferPool::new(PoolConfig::small_records().with_budget(&budget, "pool:a")).unwrap();
    /// let e = pool.try_get(4000).unwrap_err();
    /// let refusal = e.budget_exceeded().unwrap();
    /// assert_eq!((refusal.requested_bytes, refusal.limit_bytes), (4096, 1000));
    /// ```
    pub fn budget_exceeded(&self) -> Option<&BudgetExceeded> {
        match self {
            Error::OverBudget(e) => Some(e),
            _ => None,
        }
    }
}
