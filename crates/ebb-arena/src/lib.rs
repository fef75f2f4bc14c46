#![doc = include_str!("../README.md")]

mod blob;
mod compact;
mod copy;
mod error;
mod handle;
mod local;
mod raw;
mod reclaim;
mod scan;
mod slots;
mod typed;
#[cfg(test)]
mod unit_tests;

pub use blob::{BlobArena, BlobRef};
pub use compact::{CompactionPolicy, CompactionReport, WASTE_SLAB_MAX_LIVE};
pub use error::{CompactionError, Error, Result};
pub use handle::{BlobHandle, Handle};
pub use local::ThreadsReclaimed;
pub use raw::{ArenaStats, DEFAULT_COMPACTION_HEADROOM_SLABS};
pub use scan::{DEFAULT_SCAN_CHUNK, ScanCursor, ScanReport};
pub use typed::{Ref, TypedArena};

/// The slab configuration an arena passes through to its `SlabArena`.
pub use ebb_slab::SlabConfig;
/// The cancellation token compaction takes.
pub use tokio_util::sync::CancellationToken;

#[doc(hidden)]
pub mod __private {
    //! The slot protocol, exposed for the loom model only; not API.
    /// The ready queue, for the loom model alone.
    #[cfg(loom)]
    pub use crate::reclaim::{ReadyQueue, Retired};
    /// The table and its free lists, for the loom model alone (its
    /// `release` trusts its caller, so it is not reachable otherwise).
    #[cfg(loom)]
    pub use crate::slots::SlotTable;
    pub use crate::slots::{NO_PLACE, Slot};
}

// Both arenas are shared between threads by reference (the issue's
// contract); keep it true at compile time.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TypedArena<[u8; 64]>>();
    assert_send_sync::<BlobArena>();
    assert_send_sync::<ebb_slab::SlabArena>();
};
