//! Errors of ebb-pool.

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
}
