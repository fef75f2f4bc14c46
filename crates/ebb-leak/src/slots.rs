//! Per-thread counting slots: how a tracker counts every acquisition
//! without an atomic read-modify-write on the hot path.
//!
//! Each thread that tracks in a tracker owns one [`ThreadSlot`] of it. The
//! owner counts acquisitions and its own releases with a plain load and
//! store; a guard released on another thread (or after its thread began
//! to exit) subtracts from the slot's `remote` counters atomically. A
//! kind's live count is the sum over slots of `local + remote`.
//!
//! Invariants:
//! 1. `acquired`/`released` is written only by the slot's owner thread, identified by a
//!    token never reused, and only while that thread is not exiting;
//!    `remote` only with atomic read-modify-writes.
//! 2. A slot is released (owner 0) only by its owner's exit, after which
//!    the owner writes nothing; a new owner takes it with a CAS, so at most
//!    one thread writes `acquired`/`released` at any time. Counts left in a released
//!    slot stay in the sums.
//! 3. Slots are leaked with their tracker (trackers live for the process)
//!    and reused, so their number is bounded by the peak number of threads
//!    that tracked at once.

use std::cell::{Cell, RefCell};
use std::ptr;

use ebb_core::sync::{AtomicI64, AtomicU64, Ordering};

use crate::tracker::MAX_KINDS;

/// One thread's counters in one tracker.
pub(crate) struct ThreadSlot {
    /// The owner's token; 0 when free.
    owner: AtomicU64,
    /// Owner-only (invariant 1): acquisitions, and releases on the owner
    /// thread. Two counters, not one up-and-down count, so an acquire and
    /// a release in a tight loop do not wait on each other's store.
    acquired: [AtomicI64; MAX_KINDS],
    released: [AtomicI64; MAX_KINDS],
    /// Releases by other threads.
    remote: [AtomicI64; MAX_KINDS],
}

impl ThreadSlot {
    fn new(owner: u64) -> ThreadSlot {
        ThreadSlot {
            owner: AtomicU64::new(owner),
            acquired: std::array::from_fn(|_| AtomicI64::new(0)),
            released: std::array::from_fn(|_| AtomicI64::new(0)),
            remote: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }

    /// Live guards of `kind` counted in this slot.
    pub(crate) fn live(&self, kind: usize) -> i64 {
        // Released before acquired: a release follows its acquisition, so
        // this order never shows more releases than acquisitions.
        let released = self.released[kind].load(Ordering::Relaxed);
        self.acquired[kind].load(Ordering::Relaxed) - released
            + self.remote[kind].load(Ordering::Relaxed)
    }

    /// Counts an acquisition. Only the owner calls this (invariant 1).
    #[inline]
    fn count_acquired(&self, kind: usize) {
        let c = &self.acquired[kind];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Counts a release on the owner thread (invariant 1).
    #[inline]
    fn count_released(&self, kind: usize) {
        let c = &self.released[kind];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// Every slot of one tracker.
#[derive(Default)]
pub(crate) struct SlotTable {
    slots: std::sync::Mutex<Vec<&'static ThreadSlot>>,
}

impl SlotTable {
    /// A free slot for `owner`, or a new one.
    #[cold]
    fn claim(&self, owner: u64) -> &'static ThreadSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for &slot in slots.iter() {
            if slot
                .owner
                .compare_exchange(0, owner, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return slot;
            }
        }
        let slot: &'static ThreadSlot = Box::leak(Box::new(ThreadSlot::new(owner)));
        slots.push(slot);
        slot
    }

    /// Live guards of `kind` over all slots.
    pub(crate) fn live(&self, kind: usize) -> i64 {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|s| s.live(kind)).sum()
    }
}

/// This thread's state, const-initialized and without a destructor, so it
/// is readable while other thread-locals are torn down.
struct ThreadState {
    token: Cell<u64>,
    /// The last (table, slot) used.
    mru: Cell<(*const SlotTable, *const ThreadSlot)>,
    /// Set when the thread starts tearing down its slots (invariant 1).
    exiting: Cell<bool>,
    sample_tick: Cell<u32>,
}

/// Process-wide (std's atomic: a static, not loom-modelled state).
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

thread_local! {
    static STATE: ThreadState = const {
        ThreadState {
            token: Cell::new(0),
            mru: Cell::new((ptr::null(), ptr::null())),
            exiting: Cell::new(false),
            sample_tick: Cell::new(0),
        }
    };
    /// The slots this thread owns, released at its exit.
    static OWNED: RefCell<Owned> = const { RefCell::new(Owned(Vec::new())) };
}

struct Owned(Vec<(*const SlotTable, &'static ThreadSlot)>);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| {
            s.exiting.set(true);
            s.mru.set((ptr::null(), ptr::null()));
        });
        for (_, slot) in self.0.drain(..) {
            // Invariant 2: the owner writes nothing after this.
            slot.owner.store(0, Ordering::Release);
        }
    }
}

fn token(s: &ThreadState) -> u64 {
    let t = s.token.get();
    if t != 0 {
        return t;
    }
    let t = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
    s.token.set(t);
    t
}

/// Where an acquisition was counted; the guard keeps it for the release.
#[derive(Clone, Copy)]
pub(crate) struct Counted {
    slot: &'static ThreadSlot,
}

/// Counts an acquisition of `kind` in this thread's slot of `table`, and
/// says whether this is the `every`th on this thread (to be recorded).
#[inline]
pub(crate) fn acquire(table: &'static SlotTable, kind: usize, every: u32) -> (Counted, bool) {
    let got = STATE.try_with(|s| {
        let sampled = {
            let next = s.sample_tick.get() + 1;
            if next >= every {
                s.sample_tick.set(0);
                true
            } else {
                s.sample_tick.set(next);
                false
            }
        };
        if s.exiting.get() {
            return None;
        }
        let (t, slot) = s.mru.get();
        let slot = if ptr::eq(t, table) {
            // SAFETY: MRU holds only slots this thread owns, and slots are
            // leaked (invariant 3), so the pointer is valid.
            unsafe { &*slot }
        } else {
            own_slot(s, table)?
        };
        slot.count_acquired(kind);
        Some((Counted { slot }, sampled))
    });
    match got {
        Ok(Some(c)) => c,
        // Exiting or torn down: count atomically in a slot of no thread.
        _ => (acquire_remote(table, kind), every == 1),
    }
}

#[cold]
fn acquire_remote(table: &'static SlotTable, kind: usize) -> Counted {
    let slot = table.claim(u64::MAX);
    // A slot claimed for no thread is released at once: the count lives on
    // in `remote`, which anyone may write.
    slot.owner.store(0, Ordering::Release);
    slot.remote[kind].fetch_add(1, Ordering::Relaxed);
    Counted { slot }
}

#[cold]
fn own_slot(s: &ThreadState, table: &'static SlotTable) -> Option<&'static ThreadSlot> {
    let owner = token(s);
    let slot = OWNED
        .try_with(|owned| {
            let mut owned = owned.try_borrow_mut().ok()?;
            if let Some((_, slot)) = owned.0.iter().find(|(t, _)| ptr::eq(*t, table)) {
                return Some(*slot);
            }
            let slot = table.claim(owner);
            owned.0.push((table, slot));
            Some(slot)
        })
        .ok()
        .flatten()?;
    s.mru.set((table, slot));
    Some(slot)
}

/// Takes back an acquisition counted in `counted`. On the slot's current
/// owner thread this is a plain count in `released`, even for a guard a
/// previous owner acquired: only the owner writes there (invariant 1), and
/// the sums do not care which owner counted what.
#[inline]
pub(crate) fn release(counted: Counted, kind: usize) {
    let mine = STATE
        .try_with(|s| {
            let me = s.token.get();
            me != 0 && !s.exiting.get() && counted.slot.owner.load(Ordering::Relaxed) == me
        })
        .unwrap_or(false);
    if mine {
        // Invariant 1: this is the owner thread, not exiting.
        counted.slot.count_released(kind);
    } else {
        counted.slot.remote[kind].fetch_sub(1, Ordering::Relaxed);
    }
}
