//! [`BufferPool`]: byte buffers in size tiers, handed out as [`PooledBuf`]
//! guards that go back to their pool on drop.
//!
//! Invariants:
//! 1. A `PooledBuf`'s bytes `0..capacity` are always initialized (fresh
//!    buffers are zeroed; everything written since is initialized), so any
//!    length up to the capacity may be exposed.
//! 2. `len <= dirty <= capacity`, where `dirty` is the highest length the
//!    buffer reached while out: zeroing `0..dirty` on return wipes every
//!    byte its user could have written.
//! 3. A buffer of tier `t` has capacity `tiers[t]`; an oversized buffer
//!    (tier [`OVERSIZED`]) is never retained.

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use std::ptr::NonNull;
use std::sync::Mutex;

use ebb_core::maintenance::{
    Due, Maintenance, MaintenanceError, MaintenanceKind, MaintenanceReport,
};
use ebb_core::sync::{AtomicBool, AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

use crate::config::{PoolConfig, stripe_count};
use ebb_leak::{ResourceKind, ResourceTracker, Tracked};

use crate::error::{Error, Result};
use crate::local::{self, LocalCache, LocalCounters, TakenMagazine};
use crate::maint::{MaintenanceState, cancelled_report, trim_report};
use crate::owner::OwnerState;
use crate::raw::{RawBuf, layout};
use crate::retain::{RetainStore, TierBound};
use crate::stats::{PoolStats, TierStats};

/// Tier number of buffers larger than the largest tier (invariant 3).
const OVERSIZED: u32 = u32::MAX;

/// A pool of byte buffers in size tiers.
///
/// `get(len)` hands out a buffer from the smallest tier that fits (a
/// retained one when there is one, else a fresh zeroed allocation); the
/// [`PooledBuf`] guard gives it back on drop, wiped first when
/// `zero_on_return` is on. Each tier retains a bounded number of buffers
/// and bytes, the pool a bounded total; the rest are dropped and counted.
///
/// Cloning a pool is cheap and shares it. Each thread keeps a small
/// magazine per tier in front of the shared store (the `local` module): a
/// get and a drop on one thread take no lock and no atomic read-modify-write.
/// Behind the magazines, threads spread over stripes (twice the cores by
/// default), each a cache line of its own behind a test-and-set lock.
///
/// ```
/// use ebb_pool::{BufferPool, PoolConfig};
///
/// let pool = BufferPool::new(PoolConfig::default()).unwrap();
/// let mut buf = pool.get(3000);
/// assert_eq!(buf.len(), 3000);
/// assert_eq!(buf.capacity(), 4096);
/// buf[..5].copy_from_slice(b"hello");
/// drop(buf); // wiped and retained
///
/// let again = pool.get(100);
/// assert!(again.iter().all(|&b| b == 0));
/// let stats = pool.stats();
/// assert_eq!((stats.gets_total, stats.hits_total), (2, 0)); // 100 B fits 512 B, another tier
/// ```
#[derive(Clone)]
pub struct BufferPool {
    handle: Arc<PoolHandle>,
}

/// What the user's handles share; dropping the last closes the pool (its
/// thread caches give their buffers back at the threads' next pool call or
/// exit; guards still out keep the store alive until they drop).
struct PoolHandle {
    shared: Arc<BufferShared>,
    /// The cache guards count on where no thread cache can be used; this
    /// handle holds one reference to it.
    fallback: NonNull<LocalCache>,
}

// SAFETY: `fallback` points to a `LocalCache`, which is `Send + Sync`, and
// stays live while this handle holds its reference; the rest is `Arc`s of
// `Sync` data.
unsafe impl Send for PoolHandle {}
// SAFETY: as above; `&PoolHandle` only reads the pointer.
unsafe impl Sync for PoolHandle {}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        // The last user is gone: what the store and the threads' caches
        // retain goes now (and its charge with it), not when each thread
        // next calls or exits, so a dropped pool's budget share is zero at
        // once (only a thread inside a buffer's drop right now frees its
        // cache later).
        let _ = self.shared.trim_until(&CancellationToken::new());
        // SAFETY: this handle's reference, not used again.
        unsafe { LocalCache::release_shared(self.fallback) };
    }
}

/// A registered thread cache, as the pool's registry holds it.
struct CachePtr(*const LocalCache);

// SAFETY: the pointer is only dereferenced under the registry lock while
// the cache is registered (local invariant 4), and `LocalCache` is `Sync`.
unsafe impl Send for CachePtr {}

pub(crate) struct BufferShared {
    /// The `pool` label of its stats.
    name: String,
    pub(crate) store: RetainStore<RawBuf>,
    pub(crate) tiers: Box<[usize]>,
    /// `first_tier[k]`: the first tier that can hold a length whose
    /// rounded-up log2 is `k` (every smaller tier is shorter than it).
    first_tier: [u8; 65],
    zero_on_return: bool,
    thread_cache: bool,
    tracker: Option<ResourceTracker>,
    /// Bumped by `trim`: thread caches flush when they see it move.
    pub(crate) epoch: AtomicU64,
    /// Set when the last user handle drops.
    closed: AtomicBool,
    oversized: AtomicU64,
    oversized_in_use: AtomicU64,
    /// Live thread caches, for stats and for reclaimers (local
    /// invariants 1 and 4).
    caches: Mutex<Vec<CachePtr>>,
    /// Event counters of retired thread caches, per tier: gets, hits, puts.
    retired: Box<[[AtomicU64; 3]]>,
    maintenance: MaintenanceState,
}

/// What one trim did.
#[derive(Clone, Copy, Debug, Default)]
struct Trimmed {
    items: usize,
    bytes: usize,
    takeovers: u64,
    cancelled: bool,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.handle.shared;
        f.debug_struct("BufferPool")
            .field("name", &shared.name)
            .field("tiers", &shared.tiers)
            .field("zero_on_return", &shared.zero_on_return)
            .field("thread_cache", &shared.thread_cache)
            .field("stripes", &shared.store.stripe_count())
            .finish()
    }
}

impl BufferPool {
    /// A pool with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no tiers, tiers not strictly
    /// increasing, a zero or impossible tier size, or adaptive settings out
    /// of range.
    pub fn new(config: PoolConfig) -> Result<BufferPool> {
        config.validate()?;
        let tiers: Box<[usize]> = config.tiers.clone().into();
        let mut first_tier = [0u8; 65];
        for (k, slot) in first_tier.iter_mut().enumerate() {
            // The smallest length whose rounded-up log2 is k.
            let lowest = if k == 0 { 0 } else { (1u128 << (k - 1)) + 1 };
            *slot = tiers.iter().take_while(|&&s| (s as u128) < lowest).count() as u8;
        }
        let reservation = config.reservation();
        let bounds: Vec<TierBound> = tiers
            .iter()
            .map(|&size| {
                let fits = config.max_retained_bytes / size;
                TierBound {
                    max_items: fits,
                    ceiling: fits,
                }
            })
            .collect();
        let store = RetainStore::new(
            &bounds,
            stripe_count(config.stripes),
            config.max_retained,
            config.max_total_retained_bytes,
            config.adaptive,
            reservation,
        );
        let retired = tiers.iter().map(|_| Default::default()).collect();
        let shared = Arc::new(BufferShared {
            name: config.name.clone(),
            store,
            tiers,
            first_tier,
            zero_on_return: config.zero_on_return,
            thread_cache: config.thread_cache,
            tracker: config.tracker,
            epoch: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            oversized: AtomicU64::new(0),
            oversized_in_use: AtomicU64::new(0),
            caches: Mutex::new(Vec::new()),
            retired,
            maintenance: MaintenanceState::default(),
        });
        let fallback = LocalCache::new_fallback(Arc::clone(&shared));
        tracing::debug!(
            name = %shared.name,
            tiers = ?shared.tiers,
            max_retained = config.max_retained,
            max_retained_bytes = config.max_retained_bytes,
            max_total_retained_bytes = config.max_total_retained_bytes,
            zero_on_return = config.zero_on_return,
            thread_cache = config.thread_cache,
            stripes = shared.store.stripe_count(),
            "buffer pool created"
        );
        Ok(BufferPool {
            handle: Arc::new(PoolHandle { shared, fallback }),
        })
    }

    /// A buffer of `len` bytes from the smallest tier that fits, reused or
    /// new. A reused buffer holds zeros when `zero_on_return` is on, and
    /// its last user's bytes when it is off; a new one holds zeros.
    /// Requests above the largest tier are allocated plainly and counted
    /// as oversized.
    ///
    /// At the budget's limit a fresh buffer is made all the same and
    /// charged past the limit (counted in `budget_overruns_total`), so the
    /// budget still sees every byte the pool holds; use
    /// [`try_get`](Self::try_get) to be refused instead.
    ///
    /// # Panics
    ///
    /// When `len` is larger than any allocation can be or the allocator
    /// refuses, as `Vec::with_capacity` does; [`try_get`](Self::try_get)
    /// returns an error instead.
    #[inline]
    #[track_caller]
    pub fn get(&self, len: usize) -> PooledBuf {
        match self.get_inner::<false>(len) {
            Ok(buf) => buf,
            Err(e) => panic!("BufferPool::get({len}): {e}"),
        }
    }

    /// [`get`](Self::get) without the panic, and refused past the budget.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when `len` exceeds what an allocation can be,
    /// [`Error::OutOfMemory`] when the allocator refuses,
    /// [`Error::OverBudget`] when a fresh buffer would take the budget past
    /// its limit (a retained one is still handed out). The pool is
    /// unchanged either way.
    #[inline]
    #[track_caller]
    pub fn try_get(&self, len: usize) -> Result<PooledBuf> {
        self.get_inner::<true>(len)
    }

    /// `STRICT`: refused past the budget (`try_get`), else charged past it.
    #[inline(always)]
    #[track_caller]
    fn get_inner<const STRICT: bool>(&self, len: usize) -> Result<PooledBuf> {
        let shared = &self.handle.shared;
        let cache = if shared.thread_cache {
            local::cache_for(shared).unwrap_or(self.handle.fallback)
        } else {
            self.handle.fallback
        };
        // SAFETY: a cache from `cache_for` is registered on this thread and
        // live for this call; the fallback is held by our handle.
        let local = unsafe { cache.as_ref() };
        let (buf, tier) = match shared.tier_for(len) {
            // The reference is counted by `take_local` on a hit.
            Some(t) => match local.take_local(t) {
                Some(buf) => (buf, t as u32),
                None => {
                    let buf = shared.take_from_store(t, STRICT)?;
                    local.acquire();
                    (buf, t as u32)
                }
            },
            None => {
                let buf = shared.acquire_oversized(len, STRICT)?;
                local.acquire();
                (buf, OVERSIZED)
            }
        };
        #[expect(
            clippy::manual_map,
            reason = "a closure would report itself, not the caller, as the acquisition site"
        )]
        let tracked = match &shared.tracker {
            Some(tracker) => Some(track_buffer(tracker)),
            None => None,
        };
        Ok(PooledBuf {
            buf: ManuallyDrop::new(buf),
            len,
            dirty: len,
            tier,
            cache,
            tracked: ManuallyDrop::new(tracked),
        })
    }

    /// Drops every retained buffer: the shared store's and every thread
    /// cache's, returning the bytes freed (and uncharged from the budget).
    /// The magazines of threads outside the pool now (idle, parked, or
    /// never calling again) are taken over and freed here; a thread inside
    /// the pool at this moment frees its own at its next call. Where the
    /// kernel has no process-wide barrier (`membarrier`), other threads'
    /// caches are all left to their next call or their exit. Buffers in
    /// use are not affected. The pressure controller calls this; the
    /// maintenance run does the same under a token.
    pub fn trim(&self) -> usize {
        let shared = &self.handle.shared;
        let t = shared.trim_until(&CancellationToken::new());
        shared.maintenance.count_released(t.bytes as u64);
        t.bytes
    }

    /// Runs the adaptive step now for every tier that saw gets since its
    /// last step, instead of waiting for the interval.
    pub fn adjust_now(&self) {
        self.handle.shared.store.adjust_now();
    }

    /// Tier sizes, smallest first.
    pub fn tiers(&self) -> &[usize] {
        &self.handle.shared.tiers
    }

    /// The pool's name ([`PoolConfig::with_name`]), its stats' `pool`
    /// label.
    pub fn name(&self) -> &str {
        &self.handle.shared.name
    }

    /// Sets every tier's cap: the most buffers it retains, which adaptive
    /// sizing (when on) moves on from here; for a bound adaptive sizing
    /// cannot raise past, lower
    /// [`set_max_retained_bytes`](Self::set_max_retained_bytes). Takes effect at once for puts; buffers
    /// already retained past it go at the next maintenance run (which
    /// `maintenance_due` then asks for, reason `over_cap`).
    pub fn set_max_retained(&self, buffers: usize) {
        let store = &self.handle.shared.store;
        for t in 0..self.handle.shared.tiers.len() {
            store.set_cap(t, buffers);
        }
    }

    /// Sets the most bytes one tier retains (each tier), as
    /// [`PoolConfig::with_max_retained_bytes`] does at construction; the
    /// cap adaptive sizing may raise to follows it. Applied like
    /// [`set_max_retained`](Self::set_max_retained).
    pub fn set_max_retained_bytes(&self, bytes: usize) {
        let shared = &self.handle.shared;
        for (t, &size) in shared.tiers.iter().enumerate() {
            shared.store.set_max_items(t, bytes / size);
        }
    }

    /// Sets the most bytes the whole pool retains, as
    /// [`PoolConfig::with_max_total_retained_bytes`] does at construction.
    /// Applied like [`set_max_retained`](Self::set_max_retained).
    pub fn set_max_total_retained_bytes(&self, bytes: usize) {
        self.handle.shared.store.set_total_bytes(bytes);
    }

    /// The most bytes the whole pool retains now.
    pub fn max_total_retained_bytes(&self) -> u64 {
        self.handle.shared.store.total_bytes()
    }

    /// A snapshot of the counters: the store's and every thread cache's.
    pub fn stats(&self) -> PoolStats {
        let shared = &self.handle.shared;
        let store = &shared.store;
        let mut tiers: Vec<TierStats> = (0..shared.tiers.len())
            .map(|t| store.tier_stats(t, shared.tiers[t]))
            .collect();
        let mut thread_cached_bytes = 0;
        {
            let caches = shared.caches.lock().unwrap_or_else(|e| e.into_inner());
            for (t, s) in tiers.iter_mut().enumerate() {
                let retired = &shared.retired[t];
                s.puts_total += retired[2].load(Ordering::Relaxed);
                s.gets_total += retired[0].load(Ordering::Relaxed);
                s.hits_total += retired[1].load(Ordering::Relaxed);
                for cache in caches.iter() {
                    // SAFETY: registered caches are live until they
                    // unregister, which takes this lock (local invariant 4).
                    let c = unsafe { &(*cache.0).counters[t] };
                    s.puts_total += c.puts.get();
                    s.gets_total += c.gets.get();
                    s.hits_total += c.hits.get();
                    let bytes = c.retained.get() * shared.tiers[t] as u64;
                    s.retained += c.retained.get();
                    s.retained_bytes += bytes;
                    thread_cached_bytes += bytes;
                }
                s.misses_total = s.gets_total.saturating_sub(s.hits_total);
                s.allocations_total = s.misses_total;
                s.in_use = s.gets_total.saturating_sub(s.puts_total);
            }
        }
        let (runs, released, takeovers, last_seconds) = shared.maintenance.totals();
        let mut stats = PoolStats {
            name: shared.name.clone(),
            thread_cached_bytes,
            oversized_total: shared.oversized.load(Ordering::Relaxed),
            oversized_in_use: shared.oversized_in_use.load(Ordering::Relaxed),
            charged_bytes: store.charged_bytes(),
            budget_refusals_total: store.budget_refusals(),
            budget_overruns_total: store.budget_overruns(),
            maintenance_runs_total: runs,
            maintenance_released_bytes_total: released,
            thread_takeovers_total: takeovers,
            last_maintenance_seconds: last_seconds,
            tiers,
            ..PoolStats::default()
        };
        stats.sum_tiers();
        stats
    }
}

/// The maintenance contract (`ebb_core::maintenance`): due from counters
/// only (reasons `over_cap`, `idle_retained`, `thread_caches`), and a run
/// that adjusts the adaptive caps now and trims, every thread's caches
/// included, stopping between stripes once the token is cancelled.
///
/// ```
/// use std::sync::Arc;
/// use ebb_core::maintenance::Maintenance;
/// use ebb_pool::{BufferPool, CancellationToken, PoolConfig};
///
/// let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
/// drop(pool.get(100));
/// pool.set_max_retained(0); // a pressure controller tightens the cap
/// let due = pool.maintenance_due().unwrap();
/// assert_eq!(due.reason, "over_cap");
/// let worker: Arc<dyn Maintenance> = Arc::new(pool.clone());
/// let report = worker.run_maintenance(&CancellationToken::new()).unwrap();
/// assert_eq!(report.bytes_released, 256);
/// assert_eq!(pool.stats().retained_bytes, 0);
/// ```
impl Maintenance for BufferPool {
    fn maintenance_kind(&self) -> MaintenanceKind {
        MaintenanceKind::Pool
    }

    fn maintenance_due(&self) -> Option<Due> {
        let shared = &self.handle.shared;
        shared.maintenance.due(shared.store.pressure())
    }

    fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> Result<MaintenanceReport, MaintenanceError> {
        let shared = &self.handle.shared;
        let run = shared.maintenance.begin()?;
        let mut report = if token.is_cancelled() {
            cancelled_report()
        } else {
            shared.store.adjust_now();
            let t = shared.trim_until(token);
            trim_report(t.items, t.bytes, t.cancelled)
        };
        shared.maintenance.count_released(report.bytes_released);
        let activity = shared.store.pressure().activity;
        shared.maintenance.finish(run, activity, &mut report);
        tracing::info!(
            pool = %shared.name,
            bytes_released = report.bytes_released,
            buffers = report.items,
            cancelled = report.cancelled,
            "buffer pool maintenance finished"
        );
        Ok(report)
    }
}

/// Out of line: inlined, the tracker call made `get` too large to inline
/// and cost every untracked get about 2 ns.
#[cold]
#[inline(never)]
#[track_caller]
fn track_buffer(tracker: &ResourceTracker) -> Box<Tracked> {
    Box::new(tracker.track(ResourceKind::Buffer, "buffer pool"))
}

impl BufferShared {
    /// The tier for `len`, or `None` above the largest.
    #[inline]
    fn tier_for(&self, len: usize) -> Option<usize> {
        let k = if len <= 1 {
            0
        } else {
            (usize::BITS - (len - 1).leading_zeros()) as usize
        };
        let mut t = usize::from(self.first_tier[k]);
        while t < self.tiers.len() {
            if self.tiers[t] >= len {
                return Some(t);
            }
            t += 1;
        }
        None
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self, cache: *const LocalCache) {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.push(CachePtr(cache));
    }

    /// Removes a retiring cache and folds its event counters into the
    /// retired ones, under one lock (local invariant 4).
    pub(crate) fn unregister(&self, cache: *const LocalCache, counters: &[LocalCounters]) {
        let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|c| !std::ptr::eq(c.0, cache));
        for (retired, c) in self.retired.iter().zip(counters) {
            retired[0].fetch_add(c.gets.get(), Ordering::Relaxed);
            retired[1].fetch_add(c.hits.get(), Ordering::Relaxed);
            retired[2].fetch_add(c.puts.get(), Ordering::Relaxed);
        }
    }

    /// A buffer of tier `t` from the shared store, or a fresh one charged
    /// to the budget (`strict`: refused past its limit).
    #[inline]
    fn take_from_store(&self, t: usize, strict: bool) -> Result<RawBuf> {
        let taken = self.store.take(t);
        match taken.item {
            Some((buf, _)) => Ok(buf),
            None => self.make_fresh(t, taken.stripe, strict),
        }
    }

    /// A miss: a fresh buffer of tier `t`, charged first (the store's
    /// invariant 6). On failure the get counted in `stripe` is taken back
    /// and nothing stays charged.
    #[cold]
    fn make_fresh(&self, t: usize, stripe: usize, strict: bool) -> Result<RawBuf> {
        let size = self.tiers[t];
        let charged = match self.store.charge_new(size as u64, strict) {
            Ok(charged) => charged,
            Err(e) => {
                self.store.uncount_get(stripe, t);
                return Err(Error::OverBudget(Box::new(e)));
            }
        };
        RawBuf::try_alloc_zeroed(size).ok_or_else(|| {
            self.store.free_charged(charged);
            self.store.uncount_get(stripe, t);
            Error::OutOfMemory {
                requested_bytes: size,
            }
        })
    }

    /// A buffer of at least `len` bytes straight from the store (no thread
    /// cache), and its tier.
    fn acquire_uncached(&self, len: usize, strict: bool) -> Result<(RawBuf, u32)> {
        match self.tier_for(len) {
            Some(t) => Ok((self.take_from_store(t, strict)?, t as u32)),
            None => Ok((self.acquire_oversized(len, strict)?, OVERSIZED)),
        }
    }

    #[cold]
    fn acquire_oversized(&self, len: usize, strict: bool) -> Result<RawBuf> {
        let cap = len.checked_next_multiple_of(crate::BUFFER_ALIGN);
        let cap = cap
            .filter(|&c| layout(c).is_some())
            .ok_or(Error::TooLarge {
                requested_bytes: len,
            })?;
        // A layout's size fits `isize`, so every byte of it is charged
        // (never the "too large to be memory" case of `charge_new`).
        let charged = self
            .store
            .charge_new(cap as u64, strict)
            .map_err(|e| Error::OverBudget(Box::new(e)))?;
        let buf = RawBuf::try_alloc_zeroed(cap).ok_or_else(|| {
            self.store.free_charged(charged);
            Error::OutOfMemory {
                requested_bytes: cap,
            }
        })?;
        self.oversized.fetch_add(1, Ordering::Relaxed);
        self.oversized_in_use.fetch_add(1, Ordering::Relaxed);
        Ok(buf)
    }

    /// Frees an oversized buffer coming back: counted out, uncharged.
    #[cold]
    pub(crate) fn free_oversized(&self, buf: RawBuf) {
        self.oversized_in_use.fetch_sub(1, Ordering::Relaxed);
        self.store.free_charged(buf.cap() as u64);
        drop(buf);
    }

    /// Bumps the epoch (threads inside the pool now flush at their next
    /// call), frees this thread's cache, takes over and frees the caches
    /// of threads outside the pool, then trims the store stripe by stripe
    /// until `token` is cancelled.
    fn trim_until(&self, token: &CancellationToken) -> Trimmed {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        let own = local::trim_own(self);
        let mut t = Trimmed {
            bytes: own,
            ..Trimmed::default()
        };
        if token.is_cancelled() {
            t.cancelled = true;
            return t;
        }
        let (items, bytes, takeovers) = self.take_over_caches();
        t.items += items;
        t.bytes += bytes;
        t.takeovers = takeovers;
        self.maintenance.count_takeovers(takeovers);
        let (items, bytes, cancelled) = self.store.trim_until(token);
        t.items += items;
        t.bytes += bytes;
        t.cancelled = cancelled;
        tracing::debug!(
            pool = %self.name,
            buffers = t.items,
            bytes_freed = t.bytes,
            thread_caches = takeovers,
            "buffer pool trimmed"
        );
        t
    }

    /// Takes over the magazines of every registered thread cache whose
    /// thread is outside the pool (local invariant 1): under the registry
    /// lock it only moves their buffers out; after it, gives the places
    /// back to the stripes and frees the buffers. Returns (buffers, bytes,
    /// caches taken over).
    fn take_over_caches(&self) -> (usize, usize, u64) {
        let mut moved: Vec<TakenMagazine> = Vec::new();
        let taken = {
            let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: registered caches are live while registered, and
            // they unregister under this lock (local invariant 4).
            let caches: Vec<&LocalCache> = caches.iter().map(|c| unsafe { &*c.0 }).collect();
            OwnerState::take_over(caches.iter().map(|c| &c.mags), |i, mags| {
                caches[i].take_mags(mags, &mut moved);
            })
            .unwrap_or(0)
        };
        let (mut items, mut bytes) = (0, 0);
        for m in moved {
            let size = self.tiers[m.tier];
            self.store.unallot(m.stripe, m.tier, m.allotted, size);
            items += m.items.len();
            bytes += m.items.len() * size;
            drop(m.items);
        }
        self.store.free_charged(bytes as u64);
        (items, bytes, taken as u64)
    }

    /// Wipes what a user could have written (`0..dirty`) when
    /// `zero_on_return` is on (never an oversized buffer: it is freed).
    #[inline]
    fn wipe(&self, buf: &RawBuf, tier: u32, dirty: usize) {
        if tier != OVERSIZED && self.zero_on_return && dirty > 0 {
            // SAFETY:
            // - `buf` owns `cap >= dirty` bytes at `ptr` (invariant 2 and
            //   the RawBuf invariant), and no guard points at them anymore;
            // - writing zeros keeps them initialized (invariant 1).
            unsafe { buf.ptr().as_ptr().write_bytes(0, dirty) };
        }
    }

    /// Takes back a buffer straight into the store (no thread cache).
    fn release_uncached(&self, buf: RawBuf, tier: u32, dirty: usize) {
        self.wipe(&buf, tier, dirty);
        if tier == OVERSIZED {
            self.free_oversized(buf);
        } else {
            self.store.give(tier as usize, buf);
        }
    }
}

/// A buffer out of a [`BufferPool`]: derefs to `[u8]` of its length,
/// grows like a `Vec`, and goes back to its pool on drop (wiped first when
/// `zero_on_return` is on).
///
/// It holds a reference to its pool, so it may outlive the pool handle it
/// came from (an Arrow buffer or `Bytes` made from it does).
///
/// ```
/// use std::io::Write;
/// use ebb_pool::{BufferPool, PoolConfig};
///
/// let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
/// let mut buf = pool.get(0);
/// buf.extend_from_slice(&7u32.to_le_bytes());
/// write!(buf, "key={}", 42).unwrap();
/// assert_eq!(&buf[4..], b"key=42");
/// buf.resize(300, b'x'); // past 64 B: moves to the 1 KiB tier
/// assert_eq!(buf.capacity(), 1024);
/// assert_eq!(&buf[4..10], b"key=42");
/// ```
pub struct PooledBuf {
    /// Taken exactly once, in `Drop`.
    buf: ManuallyDrop<RawBuf>,
    len: usize,
    /// Invariant 2.
    dirty: usize,
    tier: u32,
    /// The cache this guard's reference is counted on (local invariant 2).
    cache: NonNull<LocalCache>,
    /// Acquisition site and age for a leak tracker. Boxed: a guard without
    /// a tracker stays small (a `Tracked` inline costs ~3 ns per get+drop
    /// in moves alone); with one, the box is one more allocation.
    /// Dropped by hand in `Drop`, only when present, so an untracked
    /// guard's drop has no call for it.
    tracked: ManuallyDrop<Option<Box<Tracked>>>,
}

// SAFETY: a PooledBuf uniquely owns its buffer (like `Vec<u8>`); the pool
// reference is an `Arc` of `Sync` state, and dropping on another thread
// just returns the buffer through that thread's stripe.
unsafe impl Send for PooledBuf {}
// SAFETY: `&PooledBuf` gives only shared access to initialized bytes.
unsafe impl Sync for PooledBuf {}

impl PooledBuf {
    /// Bytes in use.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it holds without moving: its tier's size (or, oversized, the
    /// request rounded up to 64).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.cap()
    }

    /// Whether it came from above the largest tier (it will be freed, not
    /// retained).
    pub fn is_oversized(&self) -> bool {
        self.tier == OVERSIZED
    }

    /// Makes room for `additional` more bytes. Within the capacity this is
    /// free; past it the bytes move to a buffer of a larger tier (the old
    /// one goes back to the pool), or to an oversized allocation past the
    /// largest tier.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`], [`Error::OutOfMemory`], or
    /// [`Error::OverBudget`] when a fresh buffer would take the budget past
    /// its limit; the buffer is unchanged.
    pub fn try_reserve(&mut self, additional: usize) -> Result<()> {
        self.reserve_inner(additional, true)
    }

    /// [`try_reserve`](Self::try_reserve) that panics on failure, as `Vec`
    /// does. At the budget's limit it grows all the same, charged past the
    /// limit, as [`BufferPool::get`] does.
    ///
    /// # Panics
    ///
    /// When the new size is larger than any allocation can be or the
    /// allocator refuses.
    pub fn reserve(&mut self, additional: usize) {
        if let Err(e) = self.reserve_inner(additional, false) {
            panic!("PooledBuf::reserve({additional}): {e}");
        }
    }

    fn reserve_inner(&mut self, additional: usize, strict: bool) -> Result<()> {
        let needed = self.len.checked_add(additional).ok_or(Error::TooLarge {
            requested_bytes: usize::MAX,
        })?;
        if needed <= self.capacity() {
            return Ok(());
        }
        self.move_to_larger(needed, strict)
    }

    #[cold]
    fn move_to_larger(&mut self, needed: usize, strict: bool) -> Result<()> {
        // Grow geometrically past the tiers, as Vec does, so a long append
        // loop of oversized data stays linear.
        let want = needed.max(self.capacity().saturating_mul(2));
        // SAFETY: the guard holds a reference to its cache.
        let shared = &unsafe { self.cache.as_ref() }.pool;
        let (new, tier) = match shared.acquire_uncached(want, strict) {
            Ok(got) => got,
            Err(_) => shared.acquire_uncached(needed, strict)?,
        };
        // SAFETY:
        // - the source holds `len` initialized bytes (invariant 1);
        // - `new` owns at least `needed > len` bytes;
        // - two distinct allocations never overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.ptr().as_ptr(), new.ptr().as_ptr(), self.len);
        }
        let old = std::mem::replace(&mut *self.buf, new);
        let old_tier = std::mem::replace(&mut self.tier, tier);
        let old_dirty = std::mem::replace(&mut self.dirty, self.len);
        shared.release_uncached(old, old_tier, old_dirty);
        Ok(())
    }

    /// Sets the length to `new_len`, filling new bytes with `value`
    /// (growing as [`reserve`](Self::reserve) does).
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn resize(&mut self, new_len: usize, value: u8) {
        if new_len > self.len {
            self.reserve(new_len - self.len);
            let len = self.len;
            self.set_len_within_capacity(new_len);
            self[len..].fill(value);
        } else {
            self.len = new_len;
        }
    }

    /// Appends `bytes` (growing as [`reserve`](Self::reserve) does).
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let len = self.len;
        self.set_len_within_capacity(len + bytes.len());
        self[len..].copy_from_slice(bytes);
    }

    /// Appends one byte.
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    /// Shortens to `len` bytes (no effect when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Length 0; the capacity stays.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Exposes bytes up to `new_len` without writing them: they hold what
    /// the buffer held (zeros, or a previous user's bytes when
    /// `zero_on_return` is off), all initialized (invariant 1). For reading
    /// into the buffer from a socket or file.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] past the capacity; the length is unchanged.
    pub fn try_set_len(&mut self, new_len: usize) -> Result<()> {
        if new_len > self.capacity() {
            return Err(Error::TooLarge {
                requested_bytes: new_len,
            });
        }
        self.set_len_within_capacity(new_len);
        Ok(())
    }

    #[inline]
    fn set_len_within_capacity(&mut self, new_len: usize) {
        debug_assert!(new_len <= self.capacity());
        self.len = new_len;
        self.dirty = self.dirty.max(new_len);
    }

    /// Hands the bytes to Arrow without copying. The buffer goes back to
    /// the pool when the last clone of the Arrow buffer drops.
    ///
    /// ```
    /// use ebb_pool::{BufferPool, PoolConfig};
    /// let pool = BufferPool::new(PoolConfig::default()).unwrap();
    /// let mut buf = pool.get(8);
    /// buf.copy_from_slice(&42u64.to_le_bytes());
    /// let arrow = buf.into_arrow_buffer();
    /// assert_eq!(arrow.typed_data::<u64>(), &[42]);
    /// assert_eq!(pool.stats().in_use, 1);
    /// drop(arrow);
    /// assert_eq!(pool.stats().in_use, 0);
    /// ```
    pub fn into_arrow_buffer(self) -> arrow_buffer::Buffer {
        let ptr = self.buf.ptr();
        let len = self.len;
        let owner: Arc<dyn arrow_buffer::alloc::Allocation> = Arc::new(ArrowOwner(self));
        // SAFETY:
        // - `ptr` points at `len` initialized bytes (invariant 1), 64-byte
        //   aligned as Arrow requires;
        // - `owner` owns the PooledBuf, whose heap bytes do not move when
        //   the guard does, and frees them only when Arrow drops the last
        //   reference to `owner`;
        // - nothing else writes them while Arrow holds them: the guard is
        //   inside `owner` and no `&mut` to it is reachable.
        unsafe { arrow_buffer::Buffer::from_custom_allocation(ptr, len, owner) }
    }

    /// Hands the bytes to a `bytes::Bytes` without copying; the buffer goes
    /// back to the pool when the last clone drops.
    ///
    /// ```
    /// use ebb_pool::{BufferPool, PoolConfig};
    /// let pool = BufferPool::new(PoolConfig::default()).unwrap();
    /// let mut buf = pool.get(0);
    /// buf.extend_from_slice(b"value");
    /// let bytes = buf.into_bytes();
    /// assert_eq!(&bytes[..], b"value");
    /// drop(bytes);
    /// assert_eq!(pool.stats().puts_total, 1);
    /// ```
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

/// Owns a PooledBuf for Arrow.
struct ArrowOwner(#[allow(dead_code)] PooledBuf);

// Arrow requires `RefUnwindSafe` of an allocation owner. The owner is never
// used after construction except to be dropped, and a drop that unwinds
// halfway can only leave a buffer out of the pool (counted as in use), never
// a broken pool: the stripe locks release on unwind like any guard.
impl std::panic::RefUnwindSafe for ArrowOwner {}

impl Deref for PooledBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes at `ptr` are owned by this guard
        // and initialized (invariant 1); `&self` keeps them from mutation.
        unsafe { std::slice::from_raw_parts(self.buf.ptr().as_ptr(), self.len) }
    }
}

impl DerefMut for PooledBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique;
        // every byte written lies below `len <= dirty` (invariant 2).
        unsafe { std::slice::from_raw_parts_mut(self.buf.ptr().as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl io::Write for PooledBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.try_reserve(data.len())
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("oversized", &self.is_oversized())
            .field("tracked", &self.tracked.is_some())
            .finish()
    }
}

impl Drop for PooledBuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `buf` is taken only here, and drop runs once.
        let buf = unsafe { ManuallyDrop::take(&mut self.buf) };
        // SAFETY: the guard holds a reference to its cache.
        unsafe { self.cache.as_ref() }
            .pool
            .wipe(&buf, self.tier, self.dirty);
        let tier = (self.tier != OVERSIZED).then_some(self.tier as usize);
        // SAFETY: the guard's reference, given up here and not used again.
        unsafe { LocalCache::release(self.cache, tier, buf) };
        if self.tracked.is_some() {
            // SAFETY: dropped only here, and drop runs once.
            unsafe { ManuallyDrop::drop(&mut self.tracked) };
        }
    }
}
