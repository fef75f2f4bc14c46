//! Slabs being filled: [`ActiveSlab`] (a shard's, an owner's or a
//! compaction target's), the bump that allocates in one, and
//! [`TargetSlab`], a slab a compaction fills outside every shard.
//! Invariants cited by number are the `arena` module's.

use ebb_core::sync::Ordering;
use std::alloc::Layout;
use std::ptr::NonNull;

use crate::arena::{SlabArena, SlabId};
use crate::pool::Charge;
use crate::table::SlabEntry;
use crate::{Error, Result, SlabAlloc};

/// The slab a shard (or a compaction target) is filling.
pub(crate) struct ActiveSlab {
    pub(crate) id: u32,
    pub(crate) base: NonNull<u8>,
    /// The slab's table entry (stable for the table's life, table
    /// invariant 1).
    pub(crate) entry: NonNull<SlabEntry>,
    /// Next free offset.
    pub(crate) cursor: usize,
    /// Bytes allocated into this slab, published at seal (see `live`).
    pub(crate) allocated: u64,
    /// Page-rounded high-water mark of the cursor.
    pub(crate) touched: usize,
    /// Write a byte of each page the cursor enters past `touched` before
    /// handing out memory there ([`ReleaseMode::Free`]: that page may have
    /// been lazily freed, and only a write stops the kernel from zeroing it
    /// later, under a live reference).
    pub(crate) touch_new_pages: bool,
}

impl ActiveSlab {
    pub(crate) fn entry(&self) -> &SlabEntry {
        // SAFETY: entries live as long as the arena's table, which outlives
        // every ActiveSlab (they belong to the arena's shards or to a
        // TargetSlab borrowing the arena).
        unsafe { self.entry.as_ref() }
    }
}

/// Bumps `size` bytes aligned to `align` in an active slab, or `None` if
/// it does not fit. Runs under the shard's lock (or on a target's owner).
#[inline]
pub(crate) fn bump(
    active: &mut ActiveSlab,
    size: usize,
    align: usize,
    slab_bytes: usize,
    page: usize,
) -> Option<NonNull<u8>> {
    // By invariant 4 the slab base is aligned to slab_bytes >= align, so
    // aligning the offset aligns the address.
    let start = (active.cursor + align - 1) & !(align - 1);
    let end = start + size;
    if end > slab_bytes {
        return None;
    }
    active.cursor = end;
    active.allocated += size as u64;
    // Only the owner writes these: plain stores, no read-modify-write.
    active
        .entry()
        .allocated
        .store(active.allocated, Ordering::Relaxed);
    if end > active.touched {
        let first_new = active.touched;
        active.touched = end.next_multiple_of(page);
        if active.touch_new_pages {
            touch_pages(active, first_new, page, slab_bytes);
        }
        active
            .entry()
            .touched
            .store(active.touched, Ordering::Relaxed);
    }
    // SAFETY: `start < end <= slab_bytes`: inside the slab's mapping.
    Some(unsafe { active.base.add(start) })
}

/// Writes a byte of each page from `from` up to the slab's `touched` mark
/// ([`ReleaseMode::Free`](crate::ReleaseMode::Free); see `touch_new_pages`).
/// Out of line: once per page, and it keeps the bump small enough to inline.
#[cold]
#[inline(never)]
fn touch_pages(active: &ActiveSlab, from: usize, page: usize, slab_bytes: usize) {
    let end = active.touched.min(slab_bytes);
    for at in (from..end).step_by(page) {
        // SAFETY: `at < touched <= slab_bytes` (slabs are whole pages):
        // inside the slab's mapping. The page is past the cursor's previous
        // high-water mark, so no live allocation is in it (every allocation
        // made since the slab was acquired ends below that mark, and the
        // slab was empty when acquired); nothing can read these bytes until
        // the bump that called this returns.
        unsafe { active.base.add(at).as_ptr().write_volatile(0) };
    }
}

/// A slab reserved by [`SlabArena::reserve_target`] for a compaction pass.
/// Only [`SlabArena::alloc_in`] allocates in it; it is sealed on drop (and
/// released at once if nothing in it is live).
pub struct TargetSlab<'a> {
    pub(crate) arena: &'a SlabArena,
    pub(crate) slab: ActiveSlab,
}

// SAFETY: a target is exclusive ownership of one slab's cursor; its base
// pointer points into a mapping owned by the arena, which is `Sync`.
unsafe impl Send for TargetSlab<'_> {}

impl TargetSlab<'_> {
    /// The slab being filled.
    pub fn id(&self) -> SlabId {
        SlabId(self.slab.id)
    }

    /// Bytes still free at the end of the slab.
    pub fn remaining_bytes(&self) -> usize {
        self.arena.slab_bytes - self.slab.cursor
    }
}

impl Drop for TargetSlab<'_> {
    fn drop(&mut self) {
        let slab = ActiveSlab {
            id: self.slab.id,
            base: self.slab.base,
            entry: self.slab.entry,
            cursor: self.slab.cursor,
            allocated: self.slab.allocated,
            touched: self.slab.touched,
            touch_new_pages: self.slab.touch_new_pages,
        };
        self.arena.seal(slab);
    }
}

impl SlabArena {
    /// A fresh slab owned by the caller, outside every shard, so that
    /// records moved by a compaction never land in a slab being emptied.
    /// Fill it with [`alloc_in`](Self::alloc_in); it is sealed when dropped.
    ///
    /// # Errors
    ///
    /// As [`alloc`](Self::alloc) when a new slab is needed.
    pub fn reserve_target(&self) -> Result<TargetSlab<'_>> {
        Ok(TargetSlab {
            arena: self,
            slab: self.acquire_slab(Charge::Reclaim)?,
        })
    }

    /// Allocates in `target`; `Ok(None)` when the target is full (seal it
    /// and reserve another).
    ///
    /// # Errors
    ///
    /// [`Error::ZeroSize`]; [`Error::BadLayout`] for a layout over half a
    /// slab (those are never in slabs); [`Error::ForeignAllocation`] if the
    /// target belongs to another arena.
    pub fn alloc_in<'t>(
        &'t self,
        target: &mut TargetSlab<'t>,
        layout: Layout,
    ) -> Result<Option<SlabAlloc<'t>>> {
        if !std::ptr::eq(target.arena, self) {
            return Err(Error::ForeignAllocation);
        }
        let size = layout.size();
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size > self.large_threshold || layout.align() > self.large_threshold {
            return Err(Error::BadLayout {
                size,
                align: layout.align(),
                why: "larger than half a slab: not movable between slabs",
            });
        }
        let slab = &mut target.slab;
        let id = slab.id;
        Ok(bump(slab, size, layout.align(), self.slab_bytes, self.page)
            .map(|ptr| self.make_alloc(ptr, size, id)))
    }
}
