//! [`ObjectPool`]: reusable objects (iterators, batches, transactions,
//! record builders) handed out as [`Pooled`] guards that reset them and
//! give them back on drop.

use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use ebb_leak::{ResourceKind, ResourceTracker, Tracked};

use crate::config::{ObjectPoolConfig, stripe_count};
use crate::error::Result;
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
/// assert_eq!(pool.stats().total.hits, 1);
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
    store: RetainStore<Obj<T>>,
    factory: Factory<T>,
    tracker: Option<(ResourceTracker, ResourceKind)>,
}

impl<T: Recycle> fmt::Debug for ObjectPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPool")
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
        let reservation = config
            .budget
            .as_ref()
            .map(|b| b.budget.reservation(b.consumer.clone()));
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
            store,
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

    /// A retained object, or a new one from the factory.
    #[inline]
    #[track_caller]
    pub fn get(&self) -> Pooled<T> {
        let taken = self.shared.store.take(0);
        let value = match taken.item {
            Some(Obj(value)) => value,
            None => (self.shared.factory)(),
        };
        let tracked = match &self.shared.tracker {
            Some((tracker, kind)) => tracker.track(*kind, "object pool"),
            None => Tracked::inert(),
        };
        Pooled {
            value: ManuallyDrop::new(value),
            anchor: Arc::clone(&self.anchors[taken.stripe]),
            _tracked: tracked,
            _invariant: PhantomData,
        }
    }

    /// Drops every retained object; returns the bytes they held.
    pub fn trim(&self) -> usize {
        self.shared.store.trim().1
    }

    /// Runs the adaptive step now (see
    /// [`BufferPool::adjust_now`](crate::BufferPool::adjust_now)).
    pub fn adjust_now(&self) {
        self.shared.store.adjust_now();
    }

    /// A snapshot of the counters; one tier.
    pub fn stats(&self) -> PoolStats {
        let store = &self.shared.store;
        let tier = store.tier_stats(0, 0);
        PoolStats {
            tiers: vec![tier],
            total: tier,
            oversized: 0,
            oversized_in_use: 0,
            budget_refusals: store.budget_refusals(),
            charged_bytes: store.charged_bytes(),
        }
    }
}

/// An object out of an [`ObjectPool`]; recycled and given back on drop.
///
/// Invariant in `T` like its pool: it writes its value back into the pool.
pub struct Pooled<T: Recycle> {
    /// Taken exactly once, in `Drop`.
    value: ManuallyDrop<T>,
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
        let lost = LostOnUnwind { store };
        value.recycle();
        let bytes = value.retained_bytes();
        std::mem::forget(lost);
        store.give_sized(0, Obj(value), bytes);
    }
}

/// Counts a put and a discard if dropped: armed while user code runs in
/// [`Pooled`]'s drop, forgotten once it returned.
struct LostOnUnwind<'a, T: Recycle> {
    store: &'a RetainStore<Obj<T>>,
}

impl<T: Recycle> Drop for LostOnUnwind<'_, T> {
    #[cold]
    fn drop(&mut self) {
        self.store.count_lost_put(0);
    }
}
