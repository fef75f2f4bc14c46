//! A slab's life after its shard: refill, seal, release (warm, retained
//! or unmapped), reuse, new mappings, and dedicated mappings for large
//! allocations, with the slow-path bookkeeping ([`SlabPool`]) under one
//! lock. Invariants cited by number are the `arena` module's.
//!
//! What the budget is charged (the arena's reservation): the slabs whose
//! pages may be resident, i.e. a slab is charged from the moment it is
//! taken for filling (a new mapping, or a retained one reused) until its
//! pages are released (madvise), whether its mapping is then retained or
//! unmapped. Active, sealed and warm slabs and dedicated large mappings are
//! charged; released (retained) slabs are not. A slab taken for a
//! compaction's target is charged through the budget's headroom
//! ([`Charge::Reclaim`]), so compaction can run at the limit.

use ebb_core::sync::Ordering;
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use ebb_core::os::{Advice, Mapping};

use crate::active::ActiveSlab;
use crate::arena::SlabArena;
use crate::config::{HugePages, ReleaseMode};
use crate::shard::ShardGuard;
use crate::table::{
    MAX_SLABS, STATE_ACTIVE, STATE_LARGE, STATE_RELEASED, STATE_SEALED, STATE_UNUSED, STATE_WARM,
    SlabEntry,
};
use crate::{Error, Result, SlabAlloc};

/// Who a new slab is for, which decides how the budget is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Ordinary growth: within the limit less the headroom.
    Write,
    /// A compaction's target, which frees more than it takes: may use the
    /// headroom.
    Reclaim,
}

/// The slow-path bookkeeping, under one lock.
#[derive(Default)]
pub(crate) struct SlabPool {
    /// Empty but still resident, for immediate reuse (`max_warm_slabs`).
    pub(crate) warm: Vec<u32>,
    /// Released, still mapped, ready for reuse (LIFO: most recently used
    /// page tables first).
    pub(crate) retained: Vec<u32>,
    /// Ids whose mapping is gone, for reuse.
    pub(crate) free_ids: Vec<u32>,
    /// Next never-used id.
    pub(crate) next_id: u32,
    /// Mapping start -> (id, length), for address lookups.
    pub(crate) by_addr: BTreeMap<usize, (u32, usize)>,
}

impl SlabArena {
    /// Releases every warm slab (empty slabs kept resident for reuse) to the
    /// OS; returns the bytes released. For a pressure controller.
    pub fn release_warm_slabs(&self) -> u64 {
        self.release_warm_beyond(0)
    }

    /// Lets up to `slabs` more empty slabs stay warm (beyond
    /// `max_warm_slabs`) until it is set back to 0. A compaction raises it
    /// while it runs: the slabs it empties are then its next targets, with
    /// no release, page fault or zeroing in between. Setting it lower
    /// releases the excess at once.
    pub fn set_extra_warm_slabs(&self, slabs: usize) {
        self.extra_warm_slabs.store(slabs, Ordering::Relaxed);
        self.release_warm_beyond(self.max_warm_slabs + slabs);
    }

    /// Releases warm slabs until at most `keep` remain; returns the bytes.
    pub(crate) fn release_warm_beyond(&self, keep: usize) -> u64 {
        let warm = {
            let mut pool = self.pool.lock();
            let keep = keep.min(pool.warm.len());
            pool.warm.split_off(keep)
        };
        let mut bytes = 0;
        for id in warm {
            let entry = self.entry(id);
            bytes += entry.touched.load(Ordering::Relaxed) as u64;
            self.release_now(id, entry);
        }
        bytes
    }

    /// Seals the shard's full active slab (or restarts it if everything in
    /// it was freed) and installs a new one.
    #[cold]
    pub(crate) fn refill(&self, shard: &mut ShardGuard<'_>) -> Result<()> {
        if let Some(active) = shard.as_mut() {
            let entry = active.entry();
            if entry.live.active_is_empty(active.allocated) {
                // Every allocation in it was freed: no free can race with
                // the reset (invariant 3 of `live`), and no byte is live, so
                // the cursor may start over (invariant 3). Its pages stay
                // resident and `touched` keeps counting them.
                entry.live.reset_active();
                entry.allocated.store(0, Ordering::Relaxed);
                active.cursor = 0;
                active.allocated = 0;
                return Ok(());
            }
        }
        if let Some(active) = shard.take() {
            self.seal(active);
        }
        **shard = Some(self.acquire_slab(Charge::Write)?);
        Ok(())
    }

    pub(crate) fn seal(&self, active: ActiveSlab) {
        let entry = active.entry();
        entry.state.store(STATE_SEALED, Ordering::Release);
        if entry.live.seal(active.allocated) {
            self.release(active.id, entry);
        }
    }

    /// Disposes of an empty sealed slab: parks it warm (resident, for
    /// immediate reuse) while fewer than `max_warm_slabs` are, else gives it
    /// back to the OS. Called by exactly one thread per emptying
    /// (invariant 3 of `live`).
    pub(crate) fn release(&self, id: u32, entry: &SlabEntry) {
        let max_warm = self.max_warm_slabs + self.extra_warm_slabs.load(Ordering::Relaxed);
        if max_warm > 0 {
            let mut pool = self.pool.lock();
            if pool.warm.len() < max_warm {
                entry.state.store(STATE_WARM, Ordering::Release);
                pool.warm.push(id);
                return;
            }
        }
        self.release_now(id, entry);
    }

    /// Gives an empty slab's memory back: madvise, then retain or unmap.
    pub(crate) fn release_now(&self, id: u32, entry: &SlabEntry) {
        let touched = entry.touched.load(Ordering::Relaxed);
        let advice = match self.release_mode {
            ReleaseMode::DontNeed => Advice::DontNeed,
            ReleaseMode::Free => Advice::Free,
        };
        let released = {
            let mapping = entry.mapping.lock();
            match mapping.as_ref() {
                // The whole slab, not just `touched`: with huge pages a
                // partial range would split the page and leave it resident.
                // SAFETY: the slab's live count reached zero after its seal,
                // so no allocation in it is live (invariant 1) and no
                // reference to its bytes exists; nobody allocates in a
                // sealed, warm or released slab.
                Some(m) => unsafe { m.advise(0, m.len(), advice) },
                None => Ok(()),
            }
        };
        self.releases.fetch_add(1, Ordering::Relaxed);
        // Its pages are gone (or about to be, with the mapping): no longer
        // charged either way.
        self.uncharge(entry.len.load(Ordering::Acquire));
        if let Err(e) = &released {
            self.release_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(arena = self.id, slab = id, error = %e, "slab release failed; unmapping it instead");
        }
        let mut pool = self.pool.lock();
        if released.is_ok() && pool.retained.len() < self.max_retained_slabs {
            entry.touched.store(0, Ordering::Relaxed);
            entry.state.store(STATE_RELEASED, Ordering::Release);
            pool.retained.push(id);
            drop(pool);
            tracing::trace!(
                arena = self.id,
                slab = id,
                bytes_released = touched,
                "slab released"
            );
        } else {
            let mapping = self.forget_mapping(&mut pool, id, entry);
            drop(pool);
            drop(mapping);
            tracing::trace!(
                arena = self.id,
                slab = id,
                bytes_released = touched,
                "slab unmapped"
            );
        }
    }

    /// Detaches an id's mapping (to be dropped, i.e. unmapped, by the
    /// caller outside the locks) and frees the id. Caller holds the pool.
    pub(crate) fn forget_mapping(
        &self,
        pool: &mut SlabPool,
        id: u32,
        entry: &SlabEntry,
    ) -> Option<Mapping> {
        let mapping = entry.mapping.lock().take();
        let base = entry.base.swap(std::ptr::null_mut(), Ordering::AcqRel);
        entry.len.store(0, Ordering::Release);
        entry.state.store(STATE_UNUSED, Ordering::Release);
        pool.by_addr.remove(&(base as usize));
        entry.touched.store(0, Ordering::Relaxed);
        pool.free_ids.push(id);
        mapping
    }

    /// Charges `len` bytes of slab to the budget, as `charge` says.
    fn charge(&self, len: usize, charge: Charge) -> Result<()> {
        if let Some(r) = &self.reservation {
            match charge {
                Charge::Write => r.try_grow(len as u64)?,
                Charge::Reclaim => r.try_grow_for_reclaim(len as u64)?,
            }
        }
        Ok(())
    }

    /// Gives `len` bytes of slab back to the budget.
    pub(crate) fn uncharge(&self, len: usize) {
        if let Some(r) = &self.reservation {
            r.shrink(len as u64);
        }
    }

    /// A slab to fill: a warm one (already charged), a retained one
    /// (charged now), or a new mapping (charged before it is made). On a
    /// refusal nothing changes.
    pub(crate) fn acquire_slab(&self, charge: Charge) -> Result<ActiveSlab> {
        let reused = {
            let mut pool = self.pool.lock();
            match pool.warm.pop() {
                Some(id) => Some(id),
                None => match pool.retained.last() {
                    Some(&id) => {
                        // Charged under the pool lock, so a refusal leaves
                        // the slab where it was.
                        self.charge(self.slab_bytes, charge)?;
                        pool.retained.pop();
                        Some(id)
                    }
                    None => None,
                },
            }
        };
        let (id, base) = match reused {
            Some(id) => {
                let entry = self.entry(id);
                let base = NonNull::new(entry.base.load(Ordering::Acquire))
                    .expect("a warm or retained slab is mapped");
                (id, base)
            }
            None => {
                let hint = match self.huge_pages {
                    HugePages::System => None,
                    HugePages::Enable => Some(Advice::HugePage),
                    HugePages::Disable => Some(Advice::NoHugePage),
                };
                self.map_new(self.slab_bytes, self.slab_bytes, hint, None, charge)?
            }
        };
        let entry = self.entry(id);
        // Nothing in the slab is live, so no free races with the reset.
        entry.live.reset_active();
        entry.allocated.store(0, Ordering::Relaxed);
        entry.state.store(STATE_ACTIVE, Ordering::Release);
        Ok(ActiveSlab {
            id,
            base,
            entry: NonNull::from(entry),
            cursor: 0,
            allocated: 0,
            // A warm slab's pages are still resident: keep counting them.
            touched: entry.touched.load(Ordering::Relaxed),
            touch_new_pages: self.release_mode == ReleaseMode::Free,
        })
    }

    /// Maps `len` bytes aligned to `align` under a new id, charging the
    /// budget first; on any failure nothing changes.
    pub(crate) fn map_new(
        &self,
        len: usize,
        align: usize,
        hint: Option<Advice>,
        large_bytes: Option<u64>,
        charge: Charge,
    ) -> Result<(u32, NonNull<u8>)> {
        let len = len
            .checked_next_multiple_of(self.page)
            .ok_or(Error::BadLayout {
                size: len,
                align,
                why: "size overflows",
            })?;
        self.charge(len, charge)?;
        let undo = |e: Error| {
            self.uncharge(len);
            e
        };
        let mapping = Mapping::new(len, align).map_err(|e| undo(e.into()))?;
        if let Some(advice) = hint {
            // SAFETY: the mapping was just made; nothing references it.
            if let Err(e) = unsafe { mapping.advise(0, len, advice) } {
                tracing::debug!(error = %e, "huge page hint refused");
            }
        }
        let base = NonNull::new(mapping.as_ptr()).ok_or_else(|| {
            undo(Error::BadLayout {
                size: len,
                align,
                why: "null mapping",
            })
        })?;
        let mut pool = self.pool.lock();
        let id = match pool.free_ids.pop() {
            Some(id) => id,
            None if (pool.next_id as usize) < MAX_SLABS => {
                pool.next_id += 1;
                pool.next_id - 1
            }
            None => {
                drop(pool);
                return Err(undo(Error::TooManySlabs { max: MAX_SLABS }));
            }
        };
        // Table invariant 2: publish the chunk before the id escapes.
        self.table.ensure(id);
        let entry = self.entry(id);
        // The entry is unused: nobody else reads its counter.
        entry.live.reset_active();
        let state = match large_bytes {
            Some(bytes) => {
                // A dedicated mapping is sealed from the start, holding its
                // one allocation.
                entry.live.seal(bytes);
                STATE_LARGE
            }
            None => STATE_ACTIVE,
        };
        entry.touched.store(0, Ordering::Relaxed);
        entry.allocated.store(0, Ordering::Relaxed);
        entry.len.store(len, Ordering::Release);
        entry.base.store(base.as_ptr(), Ordering::Release);
        entry.state.store(state, Ordering::Release);
        *entry.mapping.lock() = Some(mapping);
        pool.by_addr.insert(base.as_ptr() as usize, (id, len));
        drop(pool);
        Ok((id, base))
    }

    #[cold]
    pub(crate) fn alloc_large(&self, layout: Layout) -> Result<SlabAlloc<'_>> {
        let size = layout.size();
        let len = size
            .checked_next_multiple_of(self.page)
            .ok_or(Error::BadLayout {
                size,
                align: layout.align(),
                why: "size overflows when rounded to pages",
            })?;
        let (id, base) =
            self.map_new(len, layout.align(), None, Some(size as u64), Charge::Write)?;
        Ok(self.make_alloc(base, size, id))
    }

    #[cold]
    pub(crate) fn free_large(&self, id: u32, entry: &SlabEntry, size: usize) {
        if !entry.live.free(size as u64) {
            debug_assert!(false, "a dedicated mapping holds one allocation");
            return;
        }
        let len = entry.len.load(Ordering::Acquire);
        let mapping = {
            let mut pool = self.pool.lock();
            self.forget_mapping(&mut pool, id, entry)
        };
        self.uncharge(len);
        self.releases.fetch_add(1, Ordering::Relaxed);
        // Unmapped here, outside the locks.
        drop(mapping);
    }
}
