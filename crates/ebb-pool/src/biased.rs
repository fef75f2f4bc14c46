//! [`BiasedCount`]: the atomic half of a biased reference count (Choi et
//! al., PACT 2018), the protocol that lets a thread cache count its guards
//! with plain integers.
//!
//! The owner thread counts its own acquisitions and releases in a plain
//! integer elsewhere; other threads release through this atomic, which
//! starts at [`BIAS`](BiasedCount::BIAS) so that no remote release can
//! bring it to zero while the owner still counts. When the owner retires,
//! it merges its plain count in once; from then on the atomic is the number
//! of live references, and whoever brings it to zero frees the object.
//!
//! Invariant: exactly one of the merge and the remote releases reports
//! "last", and it reports it after every other reference's uses (release on
//! every decrement, acquire before freeing). Checked by the loom model in
//! `tests/loom.rs`.

use ebb_core::sync::{AtomicI64, Ordering, fence};

/// The shared part of a biased reference count.
#[derive(Debug)]
pub struct BiasedCount {
    shared: AtomicI64,
}

impl BiasedCount {
    /// Added at creation and taken off at the merge.
    pub const BIAS: i64 = 1 << 62;

    /// A count whose owner thread still counts in its own integer.
    pub fn owned() -> BiasedCount {
        BiasedCount {
            shared: AtomicI64::new(Self::BIAS),
        }
    }

    /// A count with no owner, holding `refs` references (every operation
    /// atomic).
    pub fn unowned(refs: i64) -> BiasedCount {
        BiasedCount {
            shared: AtomicI64::new(refs),
        }
    }

    /// One more reference counted here (a thread that is not the owner).
    pub fn acquire_remote(&self) {
        self.shared.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up a reference counted here or merged here; true when it was
    /// the last (the caller frees, and every other user is done).
    #[must_use]
    pub fn release_remote(&self) -> bool {
        if self.shared.fetch_sub(1, Ordering::Release) == 1 {
            fence(Ordering::Acquire);
            true
        } else {
            false
        }
    }

    /// The owner's retirement: merges the `local` references it still
    /// counts. True when none is left anywhere (the caller frees).
    #[must_use]
    pub fn merge(&self, local: i64) -> bool {
        let delta = local - Self::BIAS;
        let before = self.shared.fetch_add(delta, Ordering::AcqRel);
        before + delta == 0
    }
}
