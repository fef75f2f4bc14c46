//! [`OwnedSlab`]: slabs one owner bump-allocates in with no lock and no
//! atomic read-modify-write, for the thread-local caches of the layers above
//! (an arena keeps one per thread).
//!
//! An owned slab is an active slab like a shard's, only its cursor belongs
//! to whoever holds the `OwnedSlab` (`&mut`), not to a lock. Frees from any
//! thread go to the slab's [`LiveCounter`](crate::live) as always.
//!
//! Besides the slab it fills, an owner keeps at most one *spare*: its
//! previous slab, full but nearly all freed. It is left active (not sealed),
//! so when its last allocation is freed it becomes the next slab to fill as
//! it is, with no release to the OS and no page faults to map it back. A
//! churning owner (insert, remove, insert…) thus cycles between two resident
//! slabs. A spare not yet empty when the next one fills is sealed, and goes
//! back to the OS the moment it empties, like any sealed slab.
//!
//! Invariants:
//!
//! 1. An `OwnedSlab` allocates only in the arena whose id it carries;
//!    every entry point checks the id, so a slab of a dropped arena is never
//!    touched (arena ids are never reused).
//! 2. Its active and spare slabs are in state active and no one else moves
//!    their cursors (arena invariant 3).
//! 3. A spare is reset for reuse only when its live counter says every
//!    allocation in it was freed (so no free can race with the reset).

use ebb_core::sync::Ordering;
use std::alloc::Layout;

use crate::SlabAlloc;
use crate::active::{ActiveSlab, bump};
use crate::arena::SlabArena;
use crate::pool::Charge;
use crate::{Error, Result};

/// A full slab becomes the spare only if at most half of it is still live
/// (a churning owner's lag of not-yet-freed records is far less): a mostly
/// live slab holds memory that is not coming back soon, so it is sealed at
/// once and left to compaction and the release-on-empty rule. A spare that
/// has not emptied by the next refill is sealed then, so a wrong guess costs
/// one fill period, not the slab.
const SPARE_MAX_LIVE_SHIFT: u32 = 1;

/// Slabs one owner fills without a lock: see the module docs. Make one with
/// [`SlabArena::owned_slab`], allocate with [`SlabArena::alloc_owned`], give
/// the slabs back with [`SlabArena::seal_owned`] (dropping it without that
/// leaves its slabs active, so not compactable and not released, until the
/// arena drops).
///
/// ```
/// use std::alloc::Layout;
/// use ebb_slab::{SlabArena, SlabConfig};
///
/// let arena = SlabArena::new(SlabConfig::default())?;
/// let mut mine = arena.owned_slab();
/// let a = arena.alloc_owned(&mut mine, Layout::new::<[u8; 64]>())?;
/// assert_eq!(arena.stats().live_bytes, 64);
/// arena.free(a)?;
/// arena.seal_owned(&mut mine);
/// assert_eq!(arena.stats().live_bytes, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OwnedSlab {
    /// The arena's `owned_key` (its id and seal epoch) when these slabs were
    /// taken; 0 for no arena (ids start at 1).
    key: u64,
    active: Option<ActiveSlab>,
    spare: Option<ActiveSlab>,
}

// SAFETY: an `OwnedSlab` is exclusive ownership of up to two slabs' cursors
// (invariant 2); its pointers point into mappings and a table owned by the
// arena, which is `Sync`, and are only used through `&SlabArena` calls that
// check the arena id (invariant 1).
unsafe impl Send for OwnedSlab {}

impl std::fmt::Debug for OwnedSlab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedSlab")
            .field("arena", &(self.key >> 32))
            .field("active", &self.active.as_ref().map(|a| a.id))
            .field("spare", &self.spare.as_ref().map(|a| a.id))
            .finish()
    }
}

impl SlabArena {
    /// An empty [`OwnedSlab`] of this arena; it takes a slab at its first
    /// allocation.
    pub fn owned_slab(&self) -> OwnedSlab {
        OwnedSlab {
            key: self.owned_key.load(Ordering::Acquire),
            active: None,
            spare: None,
        }
    }

    /// Allocates in `owned`'s slab: a bump with no lock. Sizes over half a
    /// slab get a mapping of their own, as in [`alloc`](Self::alloc).
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc); [`Error::ForeignAllocation`] if `owned`
    /// belongs to another arena. A failed call allocates nothing.
    #[inline]
    pub fn alloc_owned(&self, owned: &mut OwnedSlab, layout: Layout) -> Result<SlabAlloc<'_>> {
        if let Some(alloc) = self.try_alloc_owned(owned, layout) {
            return Ok(alloc);
        }
        let size = layout.size();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if owned.key >> 32 != u64::from(self.id) {
            return Err(Error::ForeignAllocation);
        }
        if size > self.large_threshold || layout.align() > self.large_threshold {
            return self.alloc_large(layout);
        }
        self.alloc_owned_slow(owned, layout)
    }

    /// The lock-free fast path of [`alloc_owned`](Self::alloc_owned) alone:
    /// a bump in `owned`'s slab, or `None` when that needs anything more
    /// (a new slab, a dedicated mapping, another arena's `owned`, a bad
    /// layout). Never fails otherwise and never blocks; callers fall back
    /// to `alloc_owned`.
    #[inline]
    pub fn try_alloc_owned(&self, owned: &mut OwnedSlab, layout: Layout) -> Option<SlabAlloc<'_>> {
        let size = layout.size();
        // An alignment over half a slab is a dedicated mapping's, as in
        // `alloc`: a slab's base is aligned only to the slab size.
        if size == 0
            || size > self.large_threshold
            || layout.align() > self.large_threshold
            || owned.key != self.owned_key.load(Ordering::Relaxed)
        {
            return None;
        }
        let active = owned.active.as_mut()?;
        let ptr = bump(active, size, layout.align(), self.slab_bytes, self.page)?;
        Some(self.make_alloc(ptr, size, active.id))
    }

    #[cold]
    fn alloc_owned_slow(&self, owned: &mut OwnedSlab, layout: Layout) -> Result<SlabAlloc<'_>> {
        let key = self.owned_key.load(Ordering::Acquire);
        if owned.key != key {
            self.seal_owned(owned);
            owned.key = key;
        }
        loop {
            if let Some(active) = owned.active.as_mut()
                && let Some(ptr) = bump(
                    active,
                    layout.size(),
                    layout.align(),
                    self.slab_bytes,
                    self.page,
                )
            {
                return Ok(self.make_alloc(ptr, layout.size(), active.id));
            }
            self.refill_owned(owned)?;
        }
    }

    /// Gives `owned` a slab with room: its own active slab started over if
    /// everything in it was freed, else its spare if that emptied, else a
    /// new one; the full slab becomes the spare if nearly all freed, else
    /// it is sealed.
    fn refill_owned(&self, owned: &mut OwnedSlab) -> Result<()> {
        if let Some(active) = owned.active.as_mut()
            && restart_if_empty(active)
        {
            return Ok(());
        }
        let mut spare = owned.spare.take();
        let next = match spare.as_mut().map(restart_if_empty) {
            Some(true) => spare.take().expect("spare is there"),
            _ => {
                // Sealed now, it goes back to the OS when it empties.
                if let Some(spare) = spare {
                    self.seal(spare);
                }
                self.acquire_slab(Charge::Write)?
            }
        };
        if let Some(full) = owned.active.replace(next) {
            let live = full.entry().live.live_bytes(full.allocated);
            if live <= (self.slab_bytes as u64) >> SPARE_MAX_LIVE_SHIFT {
                owned.spare = Some(full);
            } else {
                self.seal(full);
            }
        }
        Ok(())
    }

    /// Seals `owned`'s slabs (those already empty are released at once);
    /// it takes new ones at its next allocation. For a thread leaving, an
    /// owner going idle, or shutdown. A no-op for another arena's slabs.
    pub fn seal_owned(&self, owned: &mut OwnedSlab) {
        if owned.key >> 32 != u64::from(self.id) {
            return;
        }
        for slab in [owned.active.take(), owned.spare.take()]
            .into_iter()
            .flatten()
        {
            self.seal(slab);
        }
    }

    /// Frees `bytes` bytes of allocations in `slab` at once: a layer that
    /// frees many allocations together (an arena draining retired records)
    /// sums them per slab, one atomic update instead of one per allocation.
    /// Releases the slab if that emptied it, as [`free`](Self::free) does.
    ///
    /// # Safety
    ///
    /// `bytes` is the sum of the lengths of live allocations of *this*
    /// arena in `slab` (a dedicated mapping holds one), given up by their
    /// owners (their `SlabAlloc`s consumed by `into_raw`), and none of them
    /// is used or freed again.
    pub unsafe fn free_bytes(&self, slab: crate::SlabId, bytes: u64) {
        self.free_parts(slab.0, bytes as usize);
    }
}

/// Starts an owned slab over if every allocation in it was freed
/// (invariant 3); true if it did.
fn restart_if_empty(slab: &mut ActiveSlab) -> bool {
    let entry = slab.entry();
    if !entry.live.active_is_empty(slab.allocated) {
        return false;
    }
    entry.live.reset_active();
    entry.allocated.store(0, Ordering::Relaxed);
    slab.cursor = 0;
    slab.allocated = 0;
    true
}

impl Default for OwnedSlab {
    /// An owned slab of no arena (every allocation through it is refused
    /// with [`Error::ForeignAllocation`]); a placeholder.
    fn default() -> Self {
        OwnedSlab {
            key: 0,
            active: None,
            spare: None,
        }
    }
}
