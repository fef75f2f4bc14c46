//! Each thread's private state in each arena ([`Local`]), how a thread
//! reaches it (`with_local`, one thread-local compare on the fast path),
//! and how a reclaimer takes over the state of a thread that is not using
//! it (idle threads' slabs, stash and retired batch).
//!
//! The insert and remove paths touch only the calling thread's `Local`
//! for this arena, plus the one CAS of the slot protocol: its
//! [`OwnedSlab`] (bump allocation with no lock), its stash of vacant slot
//! indices, its count of records, and its batch of retired places. Nothing
//! there is shared with another writer, so two threads never write the same
//! cache line on those paths. A thread leaving leaves its slabs to the next
//! thread to arrive (up to two threads' worth wait), so a pool of
//! short-lived threads keeps reusing resident slabs.
//!
//! A thread that stops calling keeps its slabs active (not compactable,
//! not released), its stash and its retired batch (holding frees back). So
//! every entry is registered with its arena, and a reclaimer (compaction,
//! or an explicit [`reclaim_threads`](crate::BlobArena::reclaim_threads))
//! takes over the *takeable* part of an entry whose thread is outside the
//! arena, through the handshake of `ebb_core::presence`: the owner pays two
//! plain stores and a load per operation, the reclaimer one `membarrier`
//! per pass.
//!
//! ```text
//!   thread-local LOCALS ──► [ListEntry { uid, local, thread, arena }, ...]
//!                  LAST (uid, *mut Local, *const ThreadShared) caches one
//!                                   │
//!   Shared.threads (registry) ──────┘  ThreadEntry { thread, local, last_seen }
//!                                          │
//!                                          └─► ThreadShared { count, presence }
//! ```
//!
//! Invariants:
//!
//! 1. A `Local` is reached by its own thread through `with_local`, only
//!    once at a time: while `f` runs, the entry's presence reads entered
//!    (`ThreadShared`, outside the `Local`, so checking it never touches
//!    memory an outer `&mut Local` covers); a re-entrant call for the same
//!    arena, however deep and through whatever other arenas, finds it so
//!    and runs on a temporary `Local` rather than alias it, as does a call
//!    from a thread-local destructor once `LOCALS` is gone. The list and
//!    `LAST` keep each entry's uid and arena beside its pointer, so finding
//!    an entry never reads a `Local`. `pin` reads only the entry's `handle`
//!    field, which nothing else writes, and only when the entry is not
//!    entered.
//! 2. (See `reclaim`.) A place in a retired batch left its slot and
//!    belongs to no one else.
//! 3. A thread's record count is written by that thread only (a load and a
//!    store, no read-modify-write); the arena's `len` is the sum over the
//!    registered counts plus what departed threads left, and an entry's
//!    count moves to `departed` in the same critical section that removes
//!    it from the registry.
//! 4. The owner touches its entry (through `&mut Local`) only between
//!    `presence.enter` and `presence.exit`; a reclaimer touches only the
//!    takeable fields (`owned`, `free_slots`, `retired*`), through raw field
//!    pointers, only while it holds a `Takeover` and the registry lock, and
//!    there only moves them out (no user code, no system call).
//! 5. Every `Local` is a `Box::into_raw` allocation, freed only after it
//!    left the registry (`detach`, under the registry lock), so a
//!    reclaimer that found it under that lock never sees it freed.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
// std's atomics and fence, not ebb_core::sync's: this file is built on
// std's `Arc`/`Weak` (loom has no `Weak`) and its one fence pairs with std
// `Arc`'s release decrement; the thread registry is checked by the
// concurrent model tests and Miri, not by loom.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use crossbeam_epoch::{Collector, Guard, LocalHandle};
use crossbeam_utils::CachePadded;
use ebb_core::presence::Presence;
use ebb_slab::{OwnedSlab, SlabArena};
use parking_lot::Mutex;

use crate::reclaim::{RETIRE_BATCH, RETIRE_BYTES, ReadyQueue, Reclaimer, Retired, push_retired};
use crate::slots::{SlotTable, StashedSlot};

/// Owned slabs of threads that left, kept for threads that arrive.
const ORPHANS: usize = 2;

/// What a thread's entry shares with reclaimers: its record count and its
/// presence (one cache line, written by the owner only).
#[derive(Default)]
pub(crate) struct ThreadShared {
    count: AtomicI64,
    presence: Presence,
    /// The entry was made for one `with_local` call alone (see
    /// `enter_temporary`) and is freed after it. Set at creation, never
    /// written after.
    temporary: bool,
}

/// A registered thread entry (invariant 5).
struct ThreadEntry {
    thread: Arc<CachePadded<ThreadShared>>,
    local: NonNull<Local>,
    /// The entry's operation count at the last reclaim pass.
    last_seen: u64,
}

// SAFETY: `local` is dereferenced only by a reclaimer under the registry
// lock while it holds the entry's takeover (invariants 4 and 5), and only
// for the takeable fields, which are plain data (`OwnedSlab` is `Send`, the
// rest are vectors and counts).
unsafe impl Send for ThreadEntry {}

/// What an arena shares with the thread-local entries of the threads that
/// use it (they hold it weakly, to give their state back when they exit).
pub(crate) struct Shared {
    pub slab: SlabArena,
    pub slots: SlotTable,
    /// Every live entry (invariant 5).
    threads: Mutex<Vec<ThreadEntry>>,
    /// The counts of threads that left.
    departed: AtomicI64,
    /// The slabs of threads that left (at most `ORPHANS`), adopted by the
    /// next threads to arrive: a pool of short-lived threads then reuses
    /// resident slabs instead of faulting in fresh ones. Sealed by
    /// compaction, and when there is no room for them.
    orphans: Mutex<Vec<OwnedSlab>>,
}

impl Shared {
    pub fn new(slab: SlabArena, slots: SlotTable) -> Shared {
        Shared {
            slab,
            slots,
            threads: Mutex::new(Vec::new()),
            departed: AtomicI64::new(0),
            orphans: Mutex::new(Vec::new()),
        }
    }

    /// Slabs for a thread arriving: a departed thread's, or none yet.
    fn adopt(&self) -> OwnedSlab {
        self.orphans
            .lock()
            .pop()
            .unwrap_or_else(|| self.slab.owned_slab())
    }

    /// Keeps a departing thread's slabs for the next arrival, or seals them
    /// if `ORPHANS` are already waiting.
    fn orphan(&self, mut owned: OwnedSlab) {
        let mut orphans = self.orphans.lock();
        if orphans.len() < ORPHANS {
            orphans.push(owned);
        } else {
            drop(orphans);
            self.slab.seal_owned(&mut owned);
        }
    }

    /// Seals the slabs of departed threads (so compaction can empty them).
    pub fn seal_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.lock());
        for mut owned in orphans {
            self.slab.seal_owned(&mut owned);
        }
    }

    /// Live records: every thread's count summed (invariant 3). Exact when
    /// no insert or remove is in flight.
    pub fn len(&self) -> usize {
        let threads = self.threads.lock();
        let sum = self.departed.load(Ordering::Relaxed)
            + threads
                .iter()
                .map(|t| t.thread.count.load(Ordering::Relaxed))
                .sum::<i64>();
        sum.max(0) as usize
    }
}

/// One thread's state in one arena. Field order is drop order: the epoch
/// handle goes before `_collector`, which keeps the collector's global
/// state alive; otherwise, when the arena has dropped first, the handle's
/// drop would free that state from inside one of its own `&self` methods
/// (Miri's Tree Borrows flags exactly that).
pub(crate) struct Local {
    shared: Weak<Shared>,
    thread: Arc<CachePadded<ThreadShared>>,
    // ---- takeable (invariant 4) ----
    /// The slabs this thread bump-allocates in.
    pub owned: OwnedSlab,
    /// Vacant slots for this thread's next inserts (at most `SLOT_STASH`),
    /// with their generations and addresses.
    pub free_slots: Vec<StashedSlot>,
    /// Retired records not yet deferred, as runs per slab (invariant 2).
    retired: Vec<Retired>,
    /// Records and bytes in `retired`.
    retired_records: usize,
    retired_bytes: u64,
    // ---- end of takeable ----
    ready: Arc<ReadyQueue>,
    handle: LocalHandle,
    _collector: Collector,
}

impl Local {
    /// Adds `delta` to this thread's record count (invariant 3).
    #[inline]
    pub fn add_records(&self, delta: i64) {
        let c = &self.thread.count;
        c.store(c.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    }

    /// Keeps a place that left its slot for freeing once its readers are
    /// gone (invariant 2).
    /// Returns true if that completed a batch, which was deferred: the
    /// caller then frees what became ready (`RawArena::drain_ready`), so
    /// the other operations never look at the ready queue.
    #[inline]
    #[must_use]
    pub fn retire(&mut self, slab: u32, bytes: usize) -> bool {
        push_retired(&mut self.retired, slab, bytes as u64);
        self.retired_records += 1;
        self.retired_bytes += bytes as u64;
        if self.retired_records >= RETIRE_BATCH || self.retired_bytes >= RETIRE_BYTES {
            self.defer_retired();
            return true;
        }
        false
    }

    /// Pins this arena's epoch.
    #[inline]
    pub fn pin(&self) -> Guard {
        self.handle.pin()
    }

    /// Defers this thread's retired batch and lets the collector run what
    /// has expired (pushing earlier batches to the ready queue).
    #[cold]
    pub fn defer_retired(&mut self) {
        let guard = self.handle.pin();
        if !self.retired.is_empty() {
            let batch = std::mem::take(&mut self.retired);
            self.retired_records = 0;
            self.retired_bytes = 0;
            let ready = Arc::clone(&self.ready);
            guard.defer(move || ready.push_all(batch));
        }
        guard.flush();
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Detached already (invariant 5): nothing but this thread sees it.
        // Its pending retirements go to the collector like any batch.
        if !self.retired.is_empty() {
            self.defer_retired();
        }
        let Some(shared) = self.shared.upgrade() else {
            return; // the arena is gone, and its memory with it
        };
        for entry in self.free_slots.drain(..) {
            shared.slots.release(entry.index());
        }
        shared.orphan(std::mem::take(&mut self.owned));
    }
}

/// Removes an entry from its arena's registry, moving its count to
/// `departed` in the same critical section (invariant 3), then frees it.
///
/// # Safety
///
/// `local` came from `Box::into_raw` in `new_local`, is freed once, and no
/// reference to it is live (its thread is not inside `with_local` for it).
unsafe fn detach_and_free(local: NonNull<Local>) {
    // SAFETY: the caller's contract; `shared` and `thread` are never
    // written after construction, and a reclaimer touches only the
    // takeable fields (invariant 4), so these shared reads race with
    // nothing.
    let (shared, thread) = unsafe {
        let p = local.as_ptr();
        (&(*p).shared, &(*p).thread)
    };
    if let Some(shared) = shared.upgrade() {
        let mut threads = shared.threads.lock();
        threads.retain(|t| !Arc::ptr_eq(&t.thread, thread));
        shared
            .departed
            .fetch_add(thread.count.load(Ordering::Relaxed), Ordering::Relaxed);
    } else {
        // The arena is gone. A reclaimer may have written the takeable
        // fields last; it held the arena's `Arc`, whose Release decrement
        // this fence synchronizes with, so `Local::drop` below sees its
        // writes (a failed upgrade alone is a relaxed load).
        std::sync::atomic::fence(Ordering::Acquire);
    }
    // SAFETY: out of the registry now, so no reclaimer can reach it
    // (invariant 5); the caller's contract makes this the only owner.
    drop(unsafe { Box::from_raw(local.as_ptr()) });
}

/// One of this thread's entries, with what finding and pruning it need,
/// so neither reads the `Local` (invariant 1).
struct ListEntry {
    uid: u64,
    local: NonNull<Local>,
    thread: Arc<CachePadded<ThreadShared>>,
    arena: Weak<Shared>,
}

/// This thread's entries, as raw `Box` allocations so their addresses stay
/// put while the list grows (`LAST` points at one) and so every access
/// shares one provenance (invariant 5).
struct LocalList(Vec<ListEntry>);

impl Drop for LocalList {
    fn drop(&mut self) {
        // The entries are about to go: nothing may reach them through LAST.
        LAST.set(NO_ENTRY);
        for entry in self.0.drain(..) {
            // SAFETY: each entry came from `new_local` and is in this list
            // once; the thread is exiting, so it is inside no `with_local`.
            unsafe { detach_and_free(entry.local) };
        }
    }
}

/// `LAST` when it caches nothing (uids start at 1).
const NO_ENTRY: (u64, *mut Local, *const ThreadShared) =
    (0, std::ptr::null_mut(), std::ptr::null());

thread_local! {
    static LOCALS: RefCell<LocalList> = const { RefCell::new(LocalList(Vec::new())) };
    /// The entry this thread used last, `(arena uid, entry, its shared
    /// part)`: the fast path of `with_local` is two thread-local loads, a
    /// compare and the entry's presence check. Only a cache: whether the
    /// entry is in use is its presence's business (invariant 1). No
    /// destructor, so it stays readable while `LOCALS` is being torn down.
    static LAST: Cell<(u64, *mut Local, *const ThreadShared)> = const { Cell::new(NO_ENTRY) };
}

/// The takeable part of an idle thread's entry, moved out by a reclaimer
/// under the registry lock (nothing else runs there) and disposed of after
/// it (invariant 4).
pub(crate) struct TakenState {
    pub owned: OwnedSlab,
    pub free_slots: Vec<StashedSlot>,
    pub retired: Vec<Retired>,
}

/// What [`Reclaimer::take_over_threads`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadsReclaimed {
    /// Entries looked at (threads registered with the arena).
    pub threads: u64,
    /// Entries taken over (their thread was outside the arena and, unless
    /// every thread was asked for, idle since the last pass).
    pub taken: u64,
    /// False where the kernel offers no process-wide barrier
    /// (`membarrier`): then nothing is taken over.
    pub available: bool,
}

impl Reclaimer {
    /// Runs `f` on this thread's entry for this arena, registering it on
    /// first use. Never panics of its own: where the thread's entry cannot
    /// be had (the thread-locals are being torn down, so this is a call
    /// from a thread-local destructor; or the entry is in use by an outer
    /// call on this thread, however deep), `f` runs on a temporary entry
    /// that hands everything back as it drops (invariant 1). If `f` panics,
    /// the entry is released all the same.
    ///
    /// `f` is called at one site, inline, for both paths, and is never
    /// handed to an out-of-line function: a closure passed to one (or
    /// called from two sites, which makes LLVM outline it) must exist in
    /// memory, and then everything it captures by reference does too,
    /// which costs the fast path its constants (a record's length and
    /// alignment) and a dozen stores. Only the entry is found out of line
    /// (`enter_slow`).
    #[inline(always)]
    pub fn with_local<R>(&self, f: impl FnOnce(&mut Local) -> R) -> R {
        let (uid, entry, thread) = LAST.get();
        let mut cached = None;
        if uid == self.uid {
            // SAFETY: a cached entry of this arena is alive while the arena
            // is (we are in one of its methods); `thread` is its shared
            // part, in an `Arc` the entry holds.
            if unsafe { &(*thread).presence }.try_enter().is_some() {
                // SAFETY: `LAST` caches `Box` and `Arc` pointers, never
                // null, whenever its uid is an arena's (`NO_ENTRY`'s is no
                // arena's).
                cached = Some(unsafe { EnteredEntry::new(entry, thread) });
            }
        }
        let entered = match cached {
            Some(entered) => entered,
            None => self.enter_slow(),
        };
        // SAFETY: `entered` holds a live entry of this thread for this
        // arena, entered (so no other reference to it is handed out and
        // reclaimers keep out, invariants 1 and 4) until it drops, after
        // `f` returns or unwinds.
        f(unsafe { &mut *entered.entry.as_ptr() })
    }

    /// `with_local` past its one-compare fast path: another arena was used
    /// last, the entry is new, in use (re-entrant call) or gone. Returns
    /// the entry entered, this thread's own or a temporary one.
    #[cold]
    #[inline(never)]
    fn enter_slow(&self) -> EnteredEntry {
        if let Some((entry, thread)) = self.find_local() {
            // SAFETY: `find_local` returns live entries of this arena and
            // their shared parts.
            if unsafe { &(*thread).presence }.try_enter().is_some() {
                // SAFETY: `find_local` returns `Box` and `Arc` pointers,
                // never null, just entered.
                return unsafe { EnteredEntry::new(entry, thread) };
            }
        }
        self.enter_temporary()
    }

    /// An entry made for one call alone (see `with_local`), entered. Slow
    /// (a registration with the collector), and only for calls from
    /// thread-local destructors and re-entrant calls. `LAST` is left as it
    /// was: it never caches a temporary entry.
    #[cold]
    #[inline(never)]
    fn enter_temporary(&self) -> EnteredEntry {
        let ListEntry { local, thread, .. } = self.new_local(true);
        // The entry's own `thread` keeps its shared part alive until the
        // entry is freed, which `EnteredEntry` does only after its exit.
        let shared: *const ThreadShared = &**thread;
        drop(thread);
        // SAFETY: the shared part is the new entry's, which holds it (see
        // above) and is not freed before the entry is.
        if unsafe { &(*shared).presence }.try_enter().is_none() {
            // SAFETY: made by `new_local` just now, referenced by no one.
            unsafe { detach_and_free(local) };
            unreachable!("a new entry is not entered");
        }
        // SAFETY: a `Box` pointer and its entry's shared part, just entered.
        unsafe { EnteredEntry::new(local.as_ptr(), shared) }
    }

    /// This thread's entry for this arena and its shared part, registered
    /// on first use and cached in `LAST`; `None` if the thread-locals are
    /// gone (a call from a thread-local destructor). Whether the entry is
    /// in use is the caller's to check (its presence). Reads no `Local`
    /// (invariant 1).
    #[cold]
    #[inline(never)]
    fn find_local(&self) -> Option<(*mut Local, *const ThreadShared)> {
        LOCALS
            .try_with(|locals| {
                let mut locals = locals.try_borrow_mut().ok()?;
                let k = match locals.0.iter().position(|e| e.uid == self.uid) {
                    Some(k) => k,
                    None => {
                        prune(&mut locals.0);
                        let entry = self.new_local(false);
                        locals.0.push(entry);
                        locals.0.len() - 1
                    }
                };
                let e = &locals.0[k];
                let found: (*mut Local, *const ThreadShared) = (e.local.as_ptr(), &**e.thread);
                LAST.set((self.uid, found.0, found.1));
                Some(found)
            })
            .ok()
            .flatten()
    }

    /// A new entry for the calling thread, registered with the collector
    /// and with the arena (invariant 5); `temporary` for one call alone.
    #[cold]
    fn new_local(&self, temporary: bool) -> ListEntry {
        let shared = self
            .shared
            .upgrade()
            .expect("the arena calling in keeps its shared state alive");
        let thread = Arc::new(CachePadded::new(ThreadShared {
            temporary,
            ..ThreadShared::default()
        }));
        let local = Box::new(Local {
            shared: Arc::downgrade(&shared),
            thread: Arc::clone(&thread),
            owned: shared.adopt(),
            free_slots: Vec::new(),
            retired: Vec::new(),
            retired_records: 0,
            retired_bytes: 0,
            ready: Arc::clone(&self.ready),
            handle: self.collector.register(),
            _collector: self.collector.clone(),
        });
        let local = NonNull::from(Box::leak(local));
        shared.threads.lock().push(ThreadEntry {
            thread: Arc::clone(&thread),
            local,
            last_seen: 0,
        });
        ListEntry {
            uid: self.uid,
            local,
            thread,
            arena: Arc::downgrade(&shared),
        }
    }

    /// Pins this arena's epoch on the calling thread. Reads only the
    /// entry's epoch handle, so it does not mark the entry in use: readers
    /// never wait for a takeover (invariant 1).
    #[inline]
    pub fn pin(&self) -> Guard {
        let (uid, entry, thread) = LAST.get();
        // SAFETY: as in `with_local`.
        let entry = if uid == self.uid && !unsafe { (*thread).presence.is_entered() } {
            Some(entry)
        } else {
            // SAFETY: `find_local` returns live entries and their shared
            // parts.
            self.find_local()
                .filter(|&(_, thread)| !unsafe { (*thread).presence.is_entered() })
                .map(|(entry, _)| entry)
        };
        match entry {
            // SAFETY: a live entry of this thread that no `&mut` covers now
            // (it is not entered); `handle` is written by no one, and a
            // reclaimer touches only the takeable fields (invariant 4).
            Some(entry) => unsafe { (*std::ptr::addr_of!((*entry).handle)).pin() },
            // A guard outlives its handle (crossbeam keeps the participant
            // until both are gone).
            None => self.collector.register().pin(),
        }
    }

    /// Takes over the takeable state of every registered thread that is
    /// outside the arena now and (unless `all`) did nothing in it since the
    /// previous pass: under the registry lock it only moves the state out
    /// (a fresh owned slab, an empty stash and batch left in its place), so
    /// an owner coming back waits for a few moves, and no user code runs
    /// there. Returns the state taken, for the caller to dispose of.
    pub fn take_over_threads(&self, all: bool) -> (ThreadsReclaimed, Vec<TakenState>) {
        let Some(shared) = self.shared.upgrade() else {
            return (ThreadsReclaimed::default(), Vec::new());
        };
        let mut taken = Vec::new();
        let mut threads = shared.threads.lock();
        let mut report = ThreadsReclaimed {
            threads: threads.len() as u64,
            taken: 0,
            available: true,
        };
        let mut requests = Vec::new();
        for t in threads.iter_mut() {
            let (seq, busy) = t.thread.presence.observe();
            let idle = seq == t.last_seen;
            t.last_seen = seq;
            if busy || !(all || idle) {
                continue;
            }
            if let Some(request) = t.thread.presence.request() {
                requests.push((request, t.local));
            }
        }
        if requests.is_empty() {
            return (report, taken);
        }
        let (mut pending, locals): (Vec<_>, Vec<_>) = requests.into_iter().unzip();
        if !ebb_core::presence::fence_requests(&mut pending) {
            report.available = false;
            return (report, taken); // the requests withdraw as they drop
        }
        for (request, local) in pending.into_iter().zip(locals) {
            let Some(takeover) = request.confirm() else {
                continue;
            };
            let p = local.as_ptr();
            // SAFETY: the entry is registered, so alive (invariant 5, and we
            // hold the registry lock); we hold its takeover, so its owner is
            // outside and waits (invariant 4); these are the takeable fields
            // only, disjoint from what the owner's thread may still read
            // (`handle`, `thread`, `shared`).
            let state = unsafe {
                let fresh = shared.slab.owned_slab();
                *std::ptr::addr_of_mut!((*p).retired_records) = 0;
                *std::ptr::addr_of_mut!((*p).retired_bytes) = 0;
                TakenState {
                    owned: std::mem::replace(&mut *std::ptr::addr_of_mut!((*p).owned), fresh),
                    free_slots: std::mem::take(&mut *std::ptr::addr_of_mut!((*p).free_slots)),
                    retired: std::mem::take(&mut *std::ptr::addr_of_mut!((*p).retired)),
                }
            };
            drop(takeover);
            taken.push(state);
            report.taken += 1;
        }
        (report, taken)
    }
}

/// An entry entered by `with_local`, on either path: exits it when dropped,
/// on return and on unwind alike, and frees it if it was made for this call
/// alone (invariants 1 and 4). Two pointers, so the slow path returns it in
/// registers and the fast path keeps it there.
struct EnteredEntry {
    /// A live `Local` of the calling thread, entered by it.
    entry: NonNull<Local>,
    /// The entry's shared part (in an `Arc` the entry holds, so alive as
    /// long as the entry is): its presence, and whether it is temporary.
    thread: NonNull<ThreadShared>,
}

impl EnteredEntry {
    /// # Safety
    ///
    /// `entry` is a live, non-null `Local` of the calling thread, `thread`
    /// its shared part, and the calling thread has just entered its
    /// presence (`try_enter` returned `Some`).
    #[inline(always)]
    unsafe fn new(entry: *mut Local, thread: *const ThreadShared) -> EnteredEntry {
        // SAFETY: non-null, the caller's contract.
        unsafe {
            EnteredEntry {
                entry: NonNull::new_unchecked(entry),
                thread: NonNull::new_unchecked(thread.cast_mut()),
            }
        }
    }
}

impl Drop for EnteredEntry {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the entry is alive, and so its shared part (see
        // `thread`): a temporary one is freed only below, after this.
        let thread = unsafe { self.thread.as_ref() };
        let temporary = thread.temporary;
        thread.presence.exit_current();
        if temporary {
            // SAFETY: made by `new_local` for this call alone; `f` has
            // returned or unwound, so no reference to it is live; no `LAST`
            // or list holds it; its presence was exited just now and is
            // not used after this.
            unsafe { free_temporary(self.entry) };
        }
    }
}

/// Frees a temporary entry after its call (out of line: only calls from
/// thread-local destructors and re-entrant calls make one).
///
/// # Safety
///
/// As [`detach_and_free`]: `entry` is a temporary entry whose call is over.
#[cold]
#[inline(never)]
unsafe fn free_temporary(entry: NonNull<Local>) {
    // SAFETY: the caller's contract is `detach_and_free`'s.
    unsafe { detach_and_free(entry) };
}

/// Frees this thread's entries of arenas that are gone (reads no `Local`).
fn prune(locals: &mut Vec<ListEntry>) {
    locals.retain(|e| {
        let alive = e.arena.strong_count() > 0;
        if !alive {
            // SAFETY: an entry of a dropped arena: no `with_local` of that
            // arena can be running, and it leaves the list here.
            unsafe { detach_and_free(e.local) };
        }
        alive
    });
}
