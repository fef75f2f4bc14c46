//! [`ObjectPool`]: reusable objects (iterators, batches, transactions,
//! record builders) handed out as [`Pooled`] guards that reset them and
//! give them back on drop.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use ebb_core::maintenance::{
    Due, Maintenance, MaintenanceError, MaintenanceKind, MaintenanceReport,
};
use ebb_leak::{ResourceKind, ResourceTracker, Tracked};
use tokio_util::sync::CancellationToken;

use crate::config::{ObjectPoolConfig, stripe_count};
use crate::error::{Error, Result};
use crate::maint::{MaintenanceState, cancelled_report, trim_report};
use crate::retain::{RetainStore, Retainable, TierBound};
use crate::stats::PoolStats;

/// An object a pool can reuse.
///
/// Implementations must leave the object, after [`recycle`](Self::recycle),
/// in a state a fresh user can take as new: no data of the previous user
/// visible, no resource of theirs still held. Keeping allocated capacity is
/// the point (a cleared `Vec` keeps its buffer).
///
/// The pool guarantees, whatever an implementation does:
/// - both methods run on the thread dropping the [`Pooled`], outside every
///   lock of the pool, so they may call into the pool (even this one);
/// - [`retained_bytes`](Self::retained_bytes) is asked once, right after
///   `recycle`, and its answer is recorded with the object: the pool's
///   byte counts and budget charge go up by exactly that number while it is
///   retained and down by exactly that number when it is taken again. An
///   answer that changes later, or is absurd (`usize::MAX`), cannot corrupt
///   a count; an object too large for the bounds is dropped (discarded);
/// - if either method panics, the object is dropped as the panic unwinds
///   and counted as put and discarded; the pool stays usable.
///
/// The trait requires `'static`: a pool hands an object retained by one
/// user to the next, so the object may not borrow anything shorter-lived
/// (`ObjectPool` and `Pooled` are invariant in `T` besides).
///
/// ```
/// use ebb_pool::Recycle;
///
/// struct Batch { keys: Vec<u64>, bytes: Vec<u8> }
///
/// impl Recycle for Batch {
///     fn recycle(&mut self) {
///         self.keys.clear();
///         self.bytes.clear();
///     }
///     fn retained_bytes(&self) -> usize {
///         size_of::<Self>() + self.keys.capacity() * 8 + self.bytes.capacity()
///     }
/// }
/// ```
pub trait Recycle: Send + 'static {
    /// Resets the object for its next user; runs as it comes back.
    fn recycle(&mut self);

    /// Heap bytes the object keeps while retained, for the pool's byte
    /// bounds and budget (default: its inline size).
    fn retained_bytes(&self) -> usize {
        size_of_val(self)
    }
}

impl<T: Send + 'static> Recycle for Vec<T> {
    fn recycle(&mut self) {
        self.clear();
    }

    fn retained_bytes(&self) -> usize {
        size_of::<Self>() + self.capacity() * size_of::<T>()
    }
}

impl Recycle for String {
    fn recycle(&mut self) {
        self.clear();
    }

    fn retained_bytes(&self) -> usize {
        size_of::<Self>() + self.capacity()
    }
}

struct Obj<T>(T);

impl<T: Recycle> Retainable for Obj<T> {
    fn retained_bytes(&self) -> usize {
        self.0.retained_bytes()
    }
}

/// A bounded pool of reusable `T`, made by a factory when empty.
///
/// Same bounds, stats, stripes and adaptive sizing as
/// [`BufferPool`](crate::BufferPool), with one tier.
///
/// ```
/// use ebb_pool::{ObjectPool, ObjectPoolConfig};
///
/// let pool = ObjectPool::new(ObjectPoolConfig::default(), || Vec::<u64>::with_capacity(1024)).unwrap();
/// {
///     let mut keys = pool.get();
///     keys.extend([1, 2, 3]);
/// } // cleared and retained
/// let keys = pool.get();
/// assert!(keys.is_empty() && keys.capacity() >= 1024);
/// assert_eq!(pool.stats().hits_total, 1);
/// ```
pub struct ObjectPool<T: Recycle> {
    shared: Arc<ObjectShared<T>>,
    anchors: Arc<[Arc<CachePadded<ObjectAnchor<T>>>]>,
    _invariant: Invariant<T>,
}

/// Makes a pool and its guards invariant in `T` by declaration, not only
/// through their insides (the store's `UnsafeCell`, the factory's
/// `dyn Fn() -> T`). The pool stores a `T` through `&self` and hands it out
/// again, so covariance would let a value of a supertype be given back and
/// then taken out as the subtype. `T: 'static` (from [`Recycle`]) does not
/// prevent that alone: `for<'a> fn(&'a str) -> &'a str` and
/// `fn(&'static str) -> &'static str` are both `'static` and one is a
/// subtype of the other. `fn(T) -> T` keeps `Send` and `Sync` untouched.
/// `tests/variance.rs` checks that each coercion is refused.
type Invariant<T> = PhantomData<fn(T) -> T>;

impl<T: Recycle> Clone for ObjectPool<T> {
    fn clone(&self) -> Self {
        ObjectPool {
            shared: Arc::clone(&self.shared),
            anchors: Arc::clone(&self.anchors),
            _invariant: PhantomData,
        }
    }
}

/// Keeps a pool alive for the guards counted in one stripe.
struct ObjectAnchor<T: Recycle> {
    shared: Arc<ObjectShared<T>>,
}

type Factory<T> = Box<dyn Fn() -> T + Send + Sync>;

struct ObjectShared<T: Recycle> {
    name: String,
    store: RetainStore<Obj<T>>,
    maintenance: MaintenanceState,
    factory: Factory<T>,
    tracker: Option<(ResourceTracker, ResourceKind)>,
}

impl<T: Recycle> fmt::Debug for ObjectPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPool")
            .field("name", &self.shared.name)
            .field("type", &std::any::type_name::<T>())
            .field("stripes", &self.shared.store.stripe_count())
            .finish()
    }
}

impl<T: Recycle> ObjectPool<T> {
    /// A pool that makes objects with `factory` when it has none retained.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig) for adaptive
    /// settings out of range.
    pub fn new(
        config: ObjectPoolConfig,
        factory: impl Fn() -> T + Send + Sync + 'static,
    ) -> Result<ObjectPool<T>> {
        config.validate()?;
        let reservation = config.reservation();
        // Objects have no fixed size: the byte bound is the store's total,
        // and the cap may rise to 16 times where it started.
        let bound = TierBound {
            max_items: usize::MAX,
            // Saturating: `max_retained` is the caller's, and may be
            // `usize::MAX` for "no item bound".
            ceiling: config
                .max_retained
                .max(config.adaptive.floor)
                .saturating_mul(16),
        };
        let store = RetainStore::new(
            &[bound],
            stripe_count(config.stripes),
            config.max_retained,
            config.max_retained_bytes,
            config.adaptive,
            reservation,
        );
        let shared = Arc::new(ObjectShared {
            name: config.name.clone(),
            store,
            maintenance: MaintenanceState::default(),
            factory: Box::new(factory),
            tracker: config.tracker,
        });
        let anchors = (0..shared.store.stripe_count())
            .map(|_| {
                Arc::new(CachePadded::new(ObjectAnchor {
                    shared: Arc::clone(&shared),
                }))
            })
            .collect();
        Ok(ObjectPool {
            shared,
            anchors,
            _invariant: PhantomData,
        })
    }

    /// A retained object, or a new one from the factory. A new one is
    /// charged to the budget by its `retained_bytes`, past the limit if
    /// the budget is full (counted in `budget_overruns_total`);
    /// [`try_get`](Self::try_get) is refused there instead.
    #[inline]
    #[track_caller]
    pub fn get(&self) -> Pooled<T> {
        match self.get_inner(false) {
            Ok(p) => p,
            Err(_) => unreachable!("only a strict get is refused"),
        }
    }

    /// [`get`](Self::get), refused when a new object would take the budget
    /// past its limit.
    ///
    /// # Errors
    ///
    /// [`Error::OverBudget`] (the new object is dropped; nothing stays
    /// charged, and a retained object is still handed out when there is
    /// one).
    #[inline]
    #[track_caller]
    pub fn try_get(&self) -> Result<Pooled<T>> {
        self.get_inner(true)
    }

    #[inline]
    #[track_caller]
    fn get_inner(&self, strict: bool) -> Result<Pooled<T>> {
        let store = &self.shared.store;
        let taken = store.take(0);
        let (value, charged) = match taken.item {
            Some((Obj(value), bytes)) => (value, bytes as u64),
            None => {
                let value = (self.shared.factory)();
                // User code, outside every lock: if it panics, `value` is
                // dropped by the unwind and nothing was charged.
                let bytes = value.retained_bytes() as u64;
                match store.charge_new(bytes, strict) {
                    Ok(charged) => (value, charged),
                    Err(e) => {
                        store.uncount_get(taken.stripe, 0);
                        return Err(Error::OverBudget(Box::new(e)));
                    }
                }
            }
        };
        let tracked = match &self.shared.tracker {
            Some((tracker, kind)) => tracker.track(*kind, "object pool"),
            None => Tracked::inert(),
        };
        Ok(Pooled {
            value: ManuallyDrop::new(value),
            charged,
            anchor: Arc::clone(&self.anchors[taken.stripe]),
            _tracked: tracked,
            _invariant: PhantomData,
        })
    }

    /// Drops every retained object; returns the bytes they held (and
    /// uncharges them from the budget).
    pub fn trim(&self) -> usize {
        let bytes = self.shared.store.trim().1;
        self.shared.maintenance.count_released(bytes as u64);
        bytes
    }

    /// Runs the adaptive step now (see
    /// [`BufferPool::adjust_now`](crate::BufferPool::adjust_now)).
    pub fn adjust_now(&self) {
        self.shared.store.adjust_now();
    }

    /// The pool's name ([`ObjectPoolConfig::with_name`]), its stats'
    /// `pool` label.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Sets the cap: the most objects retained, which adaptive sizing
    /// moves on from here. Takes effect at once for puts; objects already
    /// retained past it go at the next maintenance run (which
    /// `maintenance_due` then asks for, reason `over_cap`).
    pub fn set_max_retained(&self, objects: usize) {
        self.shared.store.set_cap(0, objects);
    }

    /// Sets the most bytes retained objects may hold, applied like
    /// [`set_max_retained`](Self::set_max_retained).
    pub fn set_max_retained_bytes(&self, bytes: usize) {
        self.shared.store.set_total_bytes(bytes);
    }

    /// A snapshot of the counters; one tier.
    pub fn stats(&self) -> PoolStats {
        let store = &self.shared.store;
        let (runs, released, takeovers, last_seconds) = self.shared.maintenance.totals();
        let mut stats = PoolStats {
            name: self.shared.name.clone(),
            charged_bytes: store.charged_bytes(),
            budget_refusals_total: store.budget_refusals(),
            budget_overruns_total: store.budget_overruns(),
            maintenance_runs_total: runs,
            maintenance_released_bytes_total: released,
            thread_takeovers_total: takeovers,
            last_maintenance_seconds: last_seconds,
            tiers: vec![store.tier_stats(0, 0)],
            ..PoolStats::default()
        };
        stats.sum_tiers();
        stats
    }
}

/// The maintenance contract (`ebb_core::maintenance`), as for
/// [`BufferPool`](crate::BufferPool): due from counters only (`over_cap`,
/// `idle_retained`), a run that adjusts the cap now and trims, stripe by
/// stripe until the token is cancelled.
impl<T: Recycle> Maintenance for ObjectPool<T> {
    fn maintenance_kind(&self) -> MaintenanceKind {
        MaintenanceKind::Pool
    }

    fn maintenance_due(&self) -> Option<Due> {
        self.shared.maintenance.due(self.shared.store.pressure())
    }

    fn run_maintenance(
        &self,
        token: &CancellationToken,
    ) -> Result<MaintenanceReport, MaintenanceError> {
        let shared = &self.shared;
        let run = shared.maintenance.begin()?;
        let mut report = if token.is_cancelled() {
            cancelled_report()
        } else {
            shared.store.adjust_now();
            let (items, bytes, cancelled) = shared.store.trim_until(token);
            trim_report(items, bytes, cancelled)
        };
        shared.maintenance.count_released(report.bytes_released);
        let activity = shared.store.pressure().activity;
        shared.maintenance.finish(run, activity, &mut report);
        tracing::info!(
            pool = %shared.name,
            bytes_released = report.bytes_released,
            objects = report.items,
            cancelled = report.cancelled,
            "object pool maintenance finished"
        );
        Ok(report)
    }
}

/// An object out of an [`ObjectPool`]; recycled and given back on drop.
///
/// Invariant in `T` like its pool: it writes its value back into the pool.
pub struct Pooled<T: Recycle> {
    /// Taken exactly once, in `Drop`.
    value: ManuallyDrop<T>,
    /// Bytes this object is charged to the budget (store invariant 6).
    charged: u64,
    anchor: Arc<CachePadded<ObjectAnchor<T>>>,
    _tracked: Tracked,
    _invariant: Invariant<T>,
}

impl<T: Recycle> Deref for Pooled<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Recycle> DerefMut for Pooled<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Recycle + fmt::Debug> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.value, f)
    }
}

impl<T: Recycle> Drop for Pooled<T> {
    fn drop(&mut self) {
        // SAFETY: `value` is taken only here, and drop runs once.
        let mut value = unsafe { ManuallyDrop::take(&mut self.value) };
        let store = &self.anchor.shared.store;
        // The user's `recycle` and `retained_bytes` run here, outside every
        // lock (store invariant 5). If either panics, `value` is dropped by
        // the unwind and the guard counts it as put and discarded, so the
        // stats still balance; no lock is held, none is left held.
        let lost = LostOnUnwind {
            store,
            charged: self.charged,
        };
        value.recycle();
        let bytes = value.retained_bytes();
        std::mem::forget(lost);
        // The charge follows the object's size (store invariant 6); the
        // budget is touched only when the size changed while it was out.
        let now = bytes as u64;
        if now > self.charged {
            if store.charge_growth(now - self.charged).is_err() {
                // Grown past what the budget allows: freed, not retained.
                store.free_charged(self.charged);
                store.count_lost_put(0);
                drop(value);
                return;
            }
        } else if now < self.charged {
            store.free_charged(self.charged - now);
        }
        store.give_sized(0, Obj(value), bytes);
    }
}

/// Counts a put and a discard, and uncharges the object, if dropped: armed
/// while user code runs in [`Pooled`]'s drop, forgotten once it returned.
struct LostOnUnwind<'a, T: Recycle> {
    store: &'a RetainStore<Obj<T>>,
    charged: u64,
}

impl<T: Recycle> Drop for LostOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        self.store.free_charged(self.charged);
        self.store.count_lost_put(0);
    }
}
