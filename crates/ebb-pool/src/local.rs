//! Thread caches of a [`BufferPool`](crate::BufferPool): per thread and
//! pool, a magazine of buffers per tier that the thread reaches without a
//! single atomic read-modify-write, and the reference count that keeps the
//! pool alive for the guards the thread handed out.
//!
//! A get and a drop on the same thread touch only thread-owned memory. The
//! guard's reference to its pool is a *biased* count (as in biased
//! reference counting, Choi et al., PACT 2018): the owner thread counts in
//! a plain integer, other threads in an atomic that starts at a large bias,
//! and the two are merged once, when the owner retires the cache.
//!
//! ```text
//!   thread A                      LocalCache (A, pool)            pool
//!   get ──pop──────────────────▶  magazine[t]  ──allotted from──▶ stripe s
//!   drop on A ──push, refs-1───▶  local_refs (plain)
//!   drop on B ──store.give─────▶  shared_refs (atomic, biased) ─▶ store
//!   A exits ──flush, merge─────▶  freed when local + shared = 0
//! ```
//!
//! A trim reaches every thread's magazines, not only its caller's: the
//! magazines sit in an [`OwnerState`], so a reclaimer can take over those
//! of every thread that is outside the pool now (idle, parked, or a tokio
//! blocking-pool thread that will never call again), free their buffers
//! and hand the places back to the store. A thread inside the pool at that
//! moment sees the trim's epoch at its next call and flushes itself.
//!
//! Invariants:
//! 1. `refs` is touched only on the thread whose token is `owner`, and by
//!    it only until it sets `exited` (tokens are never reused, so no other
//!    thread ever matches). `mags` is touched by that thread too, inside
//!    `with_owner`, and by a reclaimer only while it holds the takeover
//!    and the pool's registry lock (the `owner` module's invariant 1);
//!    once the cache has left the registry, by its owner alone.
//! 2. Before the merge, `shared_refs` is `BIAS - (drops on other threads)`,
//!    far above zero, so no drop frees the cache; the merge adds
//!    `local_refs - BIAS`, after which `shared_refs` is the number of live
//!    guards and whoever brings it to zero frees the cache.
//! 3. A magazine holds at most `allotted` buffers, each place lent by the
//!    store (the store's invariant 4), so thread caches stay within the
//!    pool's bounds. Every buffer in a magazine is charged to the budget
//!    (the store's invariant 6) until it is freed here (`flush`) or by a
//!    reclaimer that took it over.
//! 4. A cache is in its pool's registry (and its counters are summed by
//!    stats) from creation until it retires, when its event counters are
//!    folded into the pool's retired counters under the same lock.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use ebb_core::sync::Ordering;

use crate::biased::BiasedCount;
use crate::buffer::BufferShared;
use crate::owner::OwnerState;
use crate::raw::RawBuf;
use crate::stripe::OwnerCounter;

/// The owner of the pool-wide fallback cache: no thread has this token.
const NO_OWNER: u64 = 0;

/// Buffers a magazine may hold in one tier: this many bytes' worth, at
/// least 1 and at most [`MAGAZINE_MAX_ITEMS`].
const MAGAZINE_BYTES: usize = 256 << 10;
const MAGAZINE_MAX_ITEMS: usize = 16;

/// Process-wide (std's atomic: a static, not loom-modelled state).
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(NO_OWNER + 1);

// Every access below is `try_with` with a fallback, never `with`: pool
// calls may come from another thread-local's destructor, at any point of
// the thread's teardown. `TOKEN` and `MRU` have no destructor (so in
// today's std they stay readable to the end), `REGISTRY` has one; a
// failed access falls back to the shared store and the fallback cache.
thread_local! {
    /// This thread's token; 0 until first asked. No destructor, so it
    /// stays readable while other thread-locals are torn down.
    static TOKEN: Cell<u64> = const { Cell::new(NO_OWNER) };
    /// The cache used last: (pool, cache). Cleared before any cache of
    /// this thread is freed.
    static MRU: Cell<(*const BufferShared, *const LocalCache)> =
        const { Cell::new((ptr::null(), ptr::null())) };
    /// Every cache this thread owns; retired when the thread exits.
    static REGISTRY: RefCell<Registry> = const { RefCell::new(Registry(Vec::new())) };
}

/// This thread's token (never 0, never reused), or `None` when the
/// thread-local is gone: such a thread owns no cache, so every cache treats
/// it as a remote thread (invariant 1 holds without it).
#[inline]
pub(crate) fn thread_token() -> Option<u64> {
    TOKEN
        .try_with(|t| {
            let v = t.get();
            if v != NO_OWNER {
                return v;
            }
            let v = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
            t.set(v);
            v
        })
        .ok()
}

/// Sets the most recently used (pool, cache); a no-op once the
/// thread-local is gone (then nothing reads it either).
#[inline]
fn set_mru(value: (*const BufferShared, *const LocalCache)) {
    let _ = MRU.try_with(|m| m.set(value));
}

/// Per-tier event counters of one cache, written by its owner only (and
/// `retained` by a reclaimer holding the takeover, invariant 1).
#[derive(Default)]
pub(crate) struct LocalCounters {
    pub(crate) gets: OwnerCounter,
    pub(crate) hits: OwnerCounter,
    pub(crate) puts: OwnerCounter,
    /// Buffers in the magazine (all of the tier's size, so bytes are
    /// this times the size).
    pub(crate) retained: OwnerCounter,
}

struct Magazine {
    /// At most `allotted` (invariant 3).
    items: Vec<RawBuf>,
    allotted: usize,
    /// The stripe the places came from.
    stripe: usize,
    /// How many places to ask for.
    target: usize,
    /// Asked since the last flush (a refusal is not retried until then).
    asked: bool,
    /// Gets served here since the store's adaptive window last heard.
    window_gets: u64,
}

/// The owner-only part (invariant 1): never reached by a reclaimer.
struct Refs {
    local_refs: i64,
    exited: bool,
}

/// The part a reclaimer may take over (invariant 1).
pub(crate) struct Mags {
    /// The pool's trim epoch this cache has caught up with.
    epoch: u64,
    mags: Box<[Magazine]>,
}

/// What a reclaimer moved out of one magazine: the buffers, and the
/// places to give back to `stripe`.
pub(crate) struct TakenMagazine {
    pub(crate) tier: usize,
    pub(crate) stripe: usize,
    pub(crate) allotted: usize,
    pub(crate) items: Vec<RawBuf>,
}

/// One thread's cache of one pool; see the module docs.
pub(crate) struct LocalCache {
    owner: u64,
    pub(crate) pool: Arc<BufferShared>,
    /// The atomic half of the biased count (invariant 2).
    shared_refs: BiasedCount,
    refs: UnsafeCell<Refs>,
    /// The magazines, which reclaimers may take over (invariant 1).
    pub(crate) mags: OwnerState<Mags>,
    pub(crate) counters: Box<[LocalCounters]>,
    /// The store's adaptive interval (`u64::MAX` when adaptive is off).
    window_interval: u64,
}

// SAFETY: `refs` is reached only on the owner thread (invariant 1), so it
// is never accessed from two threads; `mags` is an `OwnerState`, `Sync`
// for `Send` contents (buffers); every other field is immutable after
// construction or atomic. A cache is shared between threads only through
// raw pointers held by guards, whose lifetime the reference counts govern.
unsafe impl Sync for LocalCache {}
// SAFETY: as above; a cache is freed by whichever thread drops the last
// reference, and nothing in it is tied to the thread that made it.
unsafe impl Send for LocalCache {}

impl LocalCache {
    fn new(owner: u64, pool: Arc<BufferShared>, shared_refs: BiasedCount) -> Box<LocalCache> {
        let tiers = pool.tiers.len();
        let mags = pool
            .tiers
            .iter()
            .map(|&size| Magazine {
                items: Vec::new(),
                allotted: 0,
                stripe: 0,
                target: (MAGAZINE_BYTES / size).clamp(1, MAGAZINE_MAX_ITEMS),
                asked: false,
                window_gets: 0,
            })
            .collect();
        let epoch = pool.epoch.load(Ordering::Relaxed);
        let window_interval = pool.store.adaptive_interval().unwrap_or(u64::MAX);
        Box::new(LocalCache {
            owner,
            pool,
            shared_refs,
            refs: UnsafeCell::new(Refs {
                local_refs: 1, // the registry's hold
                exited: false,
            }),
            mags: OwnerState::new(Mags { epoch, mags }),
            counters: (0..tiers).map(|_| LocalCounters::default()).collect(),
            window_interval,
        })
    }

    /// The pool-wide cache no thread owns: guards made where no thread
    /// cache can be used count on it atomically. Starts with one reference,
    /// the pool handle's.
    pub(crate) fn new_fallback(pool: Arc<BufferShared>) -> NonNull<LocalCache> {
        NonNull::from(Box::leak(LocalCache::new(
            NO_OWNER,
            pool,
            BiasedCount::unowned(1),
        )))
    }

    /// Counts one more guard on the fallback cache.
    pub(crate) fn acquire_shared(&self) {
        self.shared_refs.acquire_remote();
    }

    /// Gives up one reference counted in `shared_refs`; frees the cache if
    /// it was the last (invariant 2).
    ///
    /// # Safety
    ///
    /// - `cache` points to a live cache and the caller owns one reference
    ///   counted in `shared_refs` (or merged into it);
    /// - the caller does not use `cache` afterwards.
    pub(crate) unsafe fn release_shared(cache: NonNull<LocalCache>) {
        // SAFETY: live by the caller's reference.
        let refs = unsafe { &cache.as_ref().shared_refs };
        if refs.release_remote() {
            // SAFETY: the count reached zero, so no guard, registry or
            // pool handle refers to the cache any more, and it came from
            // `Box::leak` in `cache_for`/`new_fallback`.
            drop(unsafe { Box::from_raw(cache.as_ptr()) });
        }
    }

    /// The owner-only part, when called on the owner thread before it
    /// retired the cache.
    ///
    /// # Safety
    ///
    /// The caller holds no other reference to the owner-only part (each
    /// pool entry point takes it once, and they do not re-enter each
    /// other: nothing they call runs user code or another pool call).
    #[inline]
    #[expect(
        clippy::mut_from_ref,
        reason = "an UnsafeCell owned by one thread; the caller upholds uniqueness (# Safety)"
    )]
    unsafe fn refs_here(&self) -> Option<&mut Refs> {
        // The fallback cache's owner, NO_OWNER, is never a thread's token.
        if Some(self.owner) != thread_token() {
            return None;
        }
        // SAFETY: this is the owner thread (invariant 1), and by the
        // caller's guarantee no other reference to `refs` is live.
        let refs = unsafe { &mut *self.refs.get() };
        (!refs.exited).then_some(refs)
    }

    /// Runs `f` on the magazines, on the owner thread (which the caller
    /// checked with `refs_here`), marked inside; `None` on a re-entrant
    /// call.
    #[inline(always)]
    fn with_mags<R>(&self, f: impl FnOnce(&mut Mags) -> R) -> Option<R> {
        // SAFETY: called only after `refs_here` found this the owner
        // thread, the only one that calls `with_owner` or `get_unchecked`
        // on these magazines (invariant 1).
        unsafe { self.mags.with_owner(f) }
    }

    /// A buffer of tier `t` from this thread's magazine, counted as a get
    /// and a hit, with the guard's reference counted; `None` (nothing
    /// counted) off the owner thread or with an empty magazine.
    #[inline]
    pub(crate) fn take_local(&self, t: usize) -> Option<RawBuf> {
        // SAFETY: the only reference to the owner-only part in this call.
        let refs = unsafe { self.refs_here() }?;
        let buf = self
            .with_mags(|mags| {
                self.catch_up(mags);
                let mag = &mut mags.mags[t];
                let buf = mag.items.pop()?;
                // Every hit here is a hit for adaptive sizing too; the store
                // hears of them in batches of its interval.
                mag.window_gets += 1;
                if mag.window_gets >= self.window_interval {
                    self.pool
                        .store
                        .feed_window(t, mag.window_gets, mag.window_gets);
                    mag.window_gets = 0;
                }
                let c = &self.counters[t];
                c.gets.add(1);
                c.hits.add(1);
                c.retained.sub(1);
                Some(buf)
            })
            .flatten()?;
        refs.local_refs += 1;
        Some(buf)
    }

    /// Counts a guard made by this thread on this cache.
    ///
    /// Only on the owner thread before it retired (checked: falls back to
    /// the atomic count otherwise).
    #[inline]
    pub(crate) fn acquire(&self) {
        // SAFETY: the only reference to the owner-only part in this call.
        match unsafe { self.refs_here() } {
            Some(refs) => refs.local_refs += 1,
            None => self.acquire_shared(),
        }
    }

    /// Takes back a guard's buffer of tier `t` (`None` for oversized, which
    /// is freed) and its reference.
    ///
    /// # Safety
    ///
    /// - `cache` points to a live cache, and the caller owns one reference
    ///   to it (the guard's);
    /// - the caller does not use `cache` afterwards.
    #[inline]
    pub(crate) unsafe fn release(cache: NonNull<LocalCache>, t: Option<usize>, buf: RawBuf) {
        // SAFETY: live by the caller's reference.
        let this = unsafe { cache.as_ref() };
        // SAFETY: the only reference to the owner-only part in this call.
        if let Some(refs) = unsafe { this.refs_here() } {
            // By invariant 2 the registry's hold keeps the cache alive past
            // this plain decrement.
            refs.local_refs -= 1;
            match t {
                Some(t) => this.put_local(t, buf),
                None => this.pool.free_oversized(buf),
            }
            return;
        }
        match t {
            Some(t) => {
                this.pool.store.give(t, buf);
            }
            None => this.pool.free_oversized(buf),
        }
        // SAFETY: the caller's reference, not used again.
        unsafe { LocalCache::release_shared(cache) };
    }

    #[inline]
    fn put_local(&self, t: usize, buf: RawBuf) {
        let mut buf = Some(buf);
        self.with_mags(|mags| {
            self.catch_up(mags);
            let mag = &mut mags.mags[t];
            if mag.items.len() >= mag.allotted && !self.allot(mag, t) {
                return;
            }
            let c = &self.counters[t];
            c.puts.add(1);
            c.retained.add(1);
            if let Some(buf) = buf.take() {
                mag.items.push(buf);
            }
        });
        if let Some(buf) = buf {
            self.pool.store.give(t, buf);
        }
    }

    /// Asks the store for the magazine's places, once per flush cycle.
    #[cold]
    fn allot(&self, mag: &mut Magazine, t: usize) -> bool {
        if mag.asked {
            return false;
        }
        mag.asked = true;
        let (stripe, granted) = self.pool.store.try_allot(t, self.pool.tiers[t], mag.target);
        if granted == 0 {
            return false;
        }
        mag.stripe = stripe;
        mag.allotted = granted;
        true
    }

    /// Flushes the magazines when the pool was trimmed since last time.
    #[inline]
    fn catch_up(&self, mags: &mut Mags) {
        if mags.epoch != self.pool.epoch.load(Ordering::Relaxed) {
            self.flush(mags, false);
        }
    }

    /// Empties every magazine and gives the places back: the buffers go to
    /// the store (`give_back`) or are freed (and uncharged, invariant 3).
    /// Returns the bytes freed.
    #[cold]
    fn flush(&self, mags: &mut Mags, give_back: bool) -> usize {
        mags.epoch = self.pool.epoch.load(Ordering::Relaxed);
        let mut freed = 0;
        for (t, mag) in mags.mags.iter_mut().enumerate() {
            let size = self.pool.tiers[t];
            let items = std::mem::take(&mut mag.items);
            let c = &self.counters[t];
            c.retained.sub(items.len() as u64);
            self.pool.store.unallot(mag.stripe, t, mag.allotted, size);
            mag.allotted = 0;
            mag.asked = false;
            for buf in items {
                if give_back {
                    self.pool.store.adopt(t, buf);
                } else {
                    freed += buf.cap();
                    drop(buf);
                }
            }
        }
        self.pool.store.free_charged(freed as u64);
        freed
    }

    /// Reclaimer: moves everything out of the magazines of a cache it took
    /// over (invariant 1: the caller holds the takeover and the registry
    /// lock), leaving them empty with no places, as a flush would; the
    /// caller gives the places back and frees the buffers after unlocking.
    pub(crate) fn take_mags(&self, mags: &mut Mags, out: &mut Vec<TakenMagazine>) {
        mags.epoch = self.pool.epoch.load(Ordering::Relaxed);
        for (t, mag) in mags.mags.iter_mut().enumerate() {
            if mag.allotted == 0 && mag.items.is_empty() {
                continue;
            }
            self.counters[t].retained.set(0);
            out.push(TakenMagazine {
                tier: t,
                stripe: mag.stripe,
                allotted: std::mem::take(&mut mag.allotted),
                items: std::mem::take(&mut mag.items),
            });
            mag.asked = false;
        }
    }
}

/// The caches one thread owns; retires them when the thread exits.
struct Registry(Vec<NonNull<LocalCache>>);

impl Drop for Registry {
    fn drop(&mut self) {
        set_mru((ptr::null(), ptr::null()));
        for cache in self.0.drain(..) {
            // SAFETY: registered caches are live (the registry holds a
            // reference) and owned by this, the exiting, thread.
            unsafe { retire(cache, true) };
        }
    }
}

/// Retires a cache of this thread: flushes it, unregisters it from its
/// pool, and merges its counts (invariant 2).
///
/// # Safety
///
/// `cache` is live, owned by this thread, not yet retired, and the
/// registry's reference to it is given up here.
unsafe fn retire(cache: NonNull<LocalCache>, give_back: bool) {
    // SAFETY: live, by the registry's reference.
    let this = unsafe { cache.as_ref() };
    // SAFETY: this is the owner thread and the cache is not retired
    // (invariant 1); no other reference to `refs` is live.
    let refs = unsafe { &mut *this.refs.get() };
    // Out of the pool's registry first: no reclaimer reaches the
    // magazines after this (invariant 1), and one that took them over
    // before released the registry lock this took.
    this.pool.unregister(cache.as_ptr(), &this.counters);
    // SAFETY: the owner thread, no other reference to the magazines; no
    // reclaimer can reach them any more (just unregistered, above).
    let mags = unsafe { this.mags.get_unchecked() };
    this.flush(mags, give_back);
    refs.exited = true;
    refs.local_refs -= 1; // the registry's hold
    if this.shared_refs.merge(refs.local_refs) {
        // SAFETY: no guard or registry refers to the cache any more
        // (invariant 2), and it came from `Box::leak` in `cache_for`.
        drop(unsafe { Box::from_raw(cache.as_ptr()) });
    }
}

/// This thread's cache of `pool`, made on first use; `None` while the
/// thread is being torn down.
#[inline]
pub(crate) fn cache_for(pool: &Arc<BufferShared>) -> Option<NonNull<LocalCache>> {
    let key = Arc::as_ptr(pool);
    let (k, cache) = MRU
        .try_with(Cell::get)
        .unwrap_or((ptr::null(), ptr::null()));
    if k == key {
        // SAFETY: MRU points only at a registered cache of this thread
        // (it is cleared before any is freed).
        return Some(unsafe { NonNull::new_unchecked(cache.cast_mut()) });
    }
    cache_for_slow(pool)
}

#[cold]
fn cache_for_slow(pool: &Arc<BufferShared>) -> Option<NonNull<LocalCache>> {
    let key = Arc::as_ptr(pool);
    REGISTRY
        .try_with(|registry| {
            let mut registry = registry.try_borrow_mut().ok()?;
            let token = thread_token()?;
            set_mru((ptr::null(), ptr::null()));
            // Caches of pools nobody holds any more give their buffers
            // back now instead of at thread exit.
            registry.0.retain(|&cache| {
                // SAFETY: registered caches are live.
                let closed = unsafe { cache.as_ref() }.pool.is_closed();
                if closed {
                    // SAFETY: owned by this thread, registered, not retired.
                    unsafe { retire(cache, false) };
                }
                !closed
            });
            let found = registry
                .0
                .iter()
                // SAFETY: registered caches are live.
                .find(|c| ptr::eq(Arc::as_ptr(&unsafe { c.as_ref() }.pool), key))
                .copied();
            let cache = match found {
                Some(cache) => cache,
                None => {
                    let cache = NonNull::from(Box::leak(LocalCache::new(
                        token,
                        Arc::clone(pool),
                        BiasedCount::owned(),
                    )));
                    pool.register(cache.as_ptr());
                    registry.0.push(cache);
                    cache
                }
            };
            set_mru((key, cache.as_ptr()));
            Some(cache)
        })
        .ok()
        .flatten()
}

/// Flushes this thread's cache of `pool`, freeing its buffers; returns the
/// bytes freed (0 when the thread has none).
pub(crate) fn trim_own(pool: &BufferShared) -> usize {
    let key: *const BufferShared = pool;
    REGISTRY
        .try_with(|registry| {
            let registry = registry.try_borrow().ok()?;
            let cache = registry
                .0
                .iter()
                // SAFETY: registered caches are live.
                .find(|c| ptr::eq(Arc::as_ptr(&unsafe { c.as_ref() }.pool), key))?;
            // SAFETY: registered caches are live.
            let this = unsafe { cache.as_ref() };
            // SAFETY: the only reference to the owner-only part in this call.
            unsafe { this.refs_here() }?;
            this.with_mags(|mags| this.flush(mags, false))
        })
        .ok()
        .flatten()
        .unwrap_or(0)
}
