//! The error type of ebb-slab.

use ebb_core::BudgetExceeded;

/// Everything a [`SlabArena`](crate::SlabArena) can fail with. A failed call
/// leaves the arena as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A zero-size allocation was asked for.
    #[error("zero-size allocations are not supported")]
    ZeroSize,
    /// The layout cannot be served (alignment above the slab size for a
    /// small size, or a size that overflows when rounded to pages).
    #[error("layout of {size} bytes aligned to {align} cannot be allocated: {why}")]
    BadLayout {
        /// Requested size.
        size: usize,
        /// Requested alignment.
        align: usize,
        /// Why not.
        why: &'static str,
    },
    /// The configuration is invalid.
    #[error("invalid slab configuration: {0}")]
    BadConfig(String),
    /// The arena's budget reservation could not grow.
    #[error(transparent)]
    BudgetExceeded(#[from] BudgetExceeded),
    /// The OS refused memory (`mmap` failed).
    #[error("slab arena could not map memory: {0}")]
    Os(#[from] ebb_core::Error),
    /// More slabs than the slab table can address.
    #[error("slab table full: {max} slabs")]
    TooManySlabs {
        /// The table's capacity.
        max: usize,
    },
    /// An allocation was handed to an arena that did not make it.
    #[error("allocation belongs to another slab arena")]
    ForeignAllocation,
    /// This process has made as many slab arenas as there are arena ids
    /// ({max}); ids are never reused (an owned slab of a dropped arena must
    /// never match a new one), so no more can be made.
    #[error("slab arena ids exhausted: this process has made {max} arenas")]
    ArenaIdsExhausted {
        /// Arena ids a process has.
        max: u64,
    },
}

/// `Result` with ebb-slab's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
