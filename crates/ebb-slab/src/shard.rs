//! Allocation shards: a tiny test-and-set lock around each shard's active
//! slab, and the thread's home shard. Invariants cited by number are the
//! `arena` module's.

use std::cell::{Cell, UnsafeCell};

use ebb_core::sync::{Ordering, TasGuard, TasLock};

use crate::active::ActiveSlab;
use crate::arena::SlabArena;

// std's atomic, not the shim's: a static needs a const constructor, and a
// thread's slot is only a shard hint (not loom-modelled state).
static NEXT_THREAD_SLOT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    /// This thread's preferred shard index (before `% shards`). Moves on
    /// when the shard is found contended, so threads spread out.
    static THREAD_SLOT: Cell<u32> = const { Cell::new(u32::MAX) };
}

#[inline]
fn thread_slot() -> u32 {
    THREAD_SLOT.with(|s| {
        let v = s.get();
        if v != u32::MAX {
            return v;
        }
        let v = NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed) & (u32::MAX >> 1);
        s.set(v);
        v
    })
}

/// One allocation shard: a tiny test-and-set lock around its active slab.
///
/// The lock is taken with one atomic swap and released with a plain store,
/// half the atomic work of a general mutex; critical sections are a few
/// instructions except the rare refill, and a thread that finds its shard
/// taken moves to another one rather than wait (`lock_shard`).
pub(crate) struct Shard {
    lock: TasLock,
    active: UnsafeCell<Option<ActiveSlab>>,
}

// SAFETY: `active` is only reached through a `ShardGuard`, which exists only
// while `lock` is held by its thread (acquire on lock, release on unlock),
// so accesses to it are serialized; `ActiveSlab`'s pointers point into the
// arena's mappings and table, which are shared by design.
unsafe impl Sync for Shard {}
// SAFETY: as above; nothing in a shard is tied to a thread.
unsafe impl Send for Shard {}

impl Shard {
    pub(crate) fn new() -> Shard {
        Shard {
            lock: TasLock::new(),
            active: UnsafeCell::new(None),
        }
    }

    #[inline]
    pub(crate) fn try_lock(&self) -> Option<ShardGuard<'_>> {
        Some(ShardGuard {
            shard: self,
            _lock: self.lock.try_lock()?,
        })
    }

    #[cold]
    pub(crate) fn lock(&self) -> ShardGuard<'_> {
        ShardGuard {
            shard: self,
            _lock: self.lock.lock(),
        }
    }
}

/// Access to a shard's active slab; exists only while `_lock` holds the
/// shard's lock, which it releases as it drops.
pub(crate) struct ShardGuard<'a> {
    shard: &'a Shard,
    _lock: TasGuard<'a>,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Option<ActiveSlab>;
    fn deref(&self) -> &Option<ActiveSlab> {
        // SAFETY: the guard holds the shard's lock (see `Shard`'s Sync).
        unsafe { &*self.shard.active.get() }
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Option<ActiveSlab> {
        // SAFETY: the guard holds the shard's lock, and `&mut self` makes
        // this the only reference through it.
        unsafe { &mut *self.shard.active.get() }
    }
}

impl SlabArena {
    /// Locks the calling thread's home shard; if it is taken, tries the
    /// others and moves the thread's home to the first free one.
    #[inline]
    pub(crate) fn lock_shard(&self) -> ShardGuard<'_> {
        let slot = thread_slot() as usize;
        let home = slot & (self.shards.len() - 1);
        if let Some(g) = self.shards[home].try_lock() {
            return g;
        }
        self.lock_other_shard(slot, home)
    }

    #[cold]
    fn lock_other_shard(&self, slot: usize, home: usize) -> ShardGuard<'_> {
        let n = self.shards.len();
        for step in 1..n {
            if let Some(g) = self.shards[(home + step) % n].try_lock() {
                THREAD_SLOT.with(|s| s.set((slot + step) as u32 & (u32::MAX >> 1)));
                return g;
            }
        }
        self.shards[home].lock()
    }
}
