//! The live-byte counter of one slab, and who releases it.
//!
//! A slab is filled by one owner (a shard's active slab, or a compaction
//! target) while any thread may free allocations in it. The owner counts
//! what it allocated privately and publishes the total only when it seals
//! the slab; until then the counter carries [`ACTIVE_BIAS`], so frees can
//! never bring it to zero. Sealing adds `allocated - ACTIVE_BIAS` (wrapping)
//! in one atomic step. From then on the counter is exactly the slab's live
//! bytes, and whichever operation brings it to zero, the seal itself or the
//! last free, is the one (and only one) that releases the slab.
//!
//! Invariants:
//!
//! 1. While active, `value = ACTIVE_BIAS - freed`, where `freed` (bytes
//!    freed so far) is at most `allocated` (bytes the owner handed out), and
//!    `allocated` is at most the slab size (1 GiB at most), far below
//!    `ACTIVE_BIAS` (2^63); so the value is never zero, and it stays above
//!    `ACTIVE_BIAS / 2`, which is how `live_bytes` tells an active slab.
//! 2. After the seal, `value = allocated - freed`, the slab's live bytes.
//! 3. Exactly one of {seal, free} observes the transition to zero
//!    (fetch_add/fetch_sub are totally ordered on one atomic).
//!
//! Checked by the loom model in `tests/loom.rs`.

use ebb_core::sync::{AtomicU64, Ordering};

/// Added to an active slab's counter so frees cannot empty it (invariant 1).
pub const ACTIVE_BIAS: u64 = 1 << 63;

/// A slab's live bytes plus the active bias. See the module docs.
#[derive(Debug)]
pub struct LiveCounter(AtomicU64);

impl LiveCounter {
    /// A counter for a slab about to be filled.
    pub fn new_active() -> LiveCounter {
        LiveCounter(AtomicU64::new(ACTIVE_BIAS))
    }

    /// Makes the slab active again with nothing allocated. Only for a slab
    /// with no live allocation (a released slab being reused, or an active
    /// slab whose allocations are all freed): no free can race with it.
    pub fn reset_active(&self) {
        self.0.store(ACTIVE_BIAS, Ordering::Release);
    }

    /// Records the free of `bytes`. Returns true if this free emptied a
    /// sealed slab: the caller must then release it (invariant 3).
    pub fn free(&self, bytes: u64) -> bool {
        self.0.fetch_sub(bytes, Ordering::AcqRel) == bytes
    }

    /// Seals an active slab into which the owner allocated `allocated`
    /// bytes. Returns true if the slab is empty: the caller must then
    /// release it (invariant 3).
    pub fn seal(&self, allocated: u64) -> bool {
        let delta = allocated.wrapping_sub(ACTIVE_BIAS);
        self.0
            .fetch_add(delta, Ordering::AcqRel)
            .wrapping_add(delta)
            == 0
    }

    /// True if the active slab's `allocated` bytes have all been freed.
    /// Only meaningful to the owner of an active slab.
    pub fn active_is_empty(&self, allocated: u64) -> bool {
        self.0.load(Ordering::Acquire) == ACTIVE_BIAS - allocated
    }

    /// Live bytes, given what the owner allocated if the slab is still
    /// active (ignored once sealed). Approximate while frees are in flight.
    pub fn live_bytes(&self, allocated_if_active: u64) -> u64 {
        let v = self.0.load(Ordering::Acquire);
        if v >= ACTIVE_BIAS / 2 {
            // Active: v = ACTIVE_BIAS - freed (invariant 1).
            allocated_if_active.saturating_sub(ACTIVE_BIAS.wrapping_sub(v))
        } else {
            v
        }
    }

    /// Live bytes of a sealed slab; `None` while active.
    pub fn sealed_live_bytes(&self) -> Option<u64> {
        let v = self.0.load(Ordering::Acquire);
        (v < ACTIVE_BIAS / 2).then_some(v)
    }
}
