//! Pool configuration: tiers, retention bounds, adaptive sizing, budget.

use ebb_core::budget::{MemoryBudget, Reservation};
use ebb_leak::{ResourceKind, ResourceTracker};

use crate::error::{Error, Result};

/// Default tiers of [`PoolConfig::default`]: 512 B to 16 MiB.
pub const DEFAULT_TIERS: [usize; 9] = [
    512,
    1 << 10,
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];

/// Tiers of [`PoolConfig::small_records`]: 64 B to 4 KiB.
pub const SMALL_RECORD_TIERS: [usize; 4] = [64, 256, 1 << 10, 4 << 10];

/// How a pool moves each tier's cap (the most items it retains) by the hit
/// rate it sees.
///
/// Every `interval` gets of a tier (counted per stripe, so exactly every
/// `interval` gets when one thread uses the pool):
/// - hit rate under `raise_below` (default 0.80): the cap rises by
///   `raise_step` (default 20 %, at least one item), up to what the tier's
///   byte limit can hold;
/// - hit rate over `lower_above` (default 0.95) while retained items sat
///   unused: the cap falls by `lower_step` (default 5 %, at least one),
///   never under `floor` (default 10), and items past the new cap are
///   dropped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Off: caps stay where configured.
    pub enabled: bool,
    /// Gets of a tier between two adjustments.
    pub interval: u64,
    /// A hit rate under this raises the cap.
    pub raise_below: f64,
    /// A hit rate over this (with unused items) lowers the cap.
    pub lower_above: f64,
    /// The fraction the cap rises by.
    pub raise_step: f64,
    /// The fraction the cap falls by.
    pub lower_step: f64,
    /// The cap never falls under this.
    pub floor: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            enabled: true,
            interval: 1024,
            raise_below: 0.80,
            lower_above: 0.95,
            raise_step: 0.20,
            lower_step: 0.05,
            floor: 10,
        }
    }
}

impl AdaptiveConfig {
    /// Adaptive sizing off.
    pub fn disabled() -> Self {
        AdaptiveConfig {
            enabled: false,
            ..AdaptiveConfig::default()
        }
    }

    /// The cap after a window with `hit_rate`, or `None` when it stays.
    /// `unused`: retained items sat idle through the window.
    ///
    /// ```
    /// use ebb_pool::AdaptiveConfig;
    /// let a = AdaptiveConfig::default();
    /// assert_eq!(a.next_cap(10, 0.5, false, 1000), Some(12));
    /// assert_eq!(a.next_cap(100, 0.99, true, 1000), Some(95));
    /// assert_eq!(a.next_cap(10, 0.99, true, 1000), None); // the floor
    /// assert_eq!(a.next_cap(100, 0.90, true, 1000), None); // in between
    /// ```
    pub fn next_cap(
        &self,
        cap: usize,
        hit_rate: f64,
        unused: bool,
        ceiling: usize,
    ) -> Option<usize> {
        let next = if hit_rate < self.raise_below {
            let step = ((cap as f64 * self.raise_step).ceil() as usize).max(1);
            cap.saturating_add(step).min(ceiling.max(cap))
        } else if hit_rate > self.lower_above && unused {
            let step = ((cap as f64 * self.lower_step).floor() as usize).max(1);
            cap.saturating_sub(step).max(self.floor.min(cap))
        } else {
            cap
        };
        (next != cap).then_some(next)
    }

    fn validate(&self) -> Result<()> {
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        let valid = self.interval > 0
            && fraction(self.raise_below)
            && fraction(self.lower_above)
            && self.raise_step.is_finite()
            && self.raise_step >= 0.0
            && fraction(self.lower_step);
        if !valid {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "adaptive: interval must be > 0, thresholds and lower_step in 0..=1, raise_step >= 0 (got {self:?})"
                ),
            });
        }
        Ok(())
    }
}

/// Where a pool charges the bytes it holds.
#[derive(Clone, Debug)]
pub(crate) struct BudgetTarget {
    pub(crate) budget: MemoryBudget,
    pub(crate) consumer: String,
}

/// The reservation a pool charges: on its budget, or on a private
/// unlimited one (so `charged_bytes` counts the same either way).
fn reservation_for(budget: Option<&BudgetTarget>, name: &str) -> Reservation {
    match budget {
        Some(b) => b.budget.reservation(b.consumer.clone()),
        None => MemoryBudget::unlimited().reservation(name),
    }
}

/// Configuration of a [`BufferPool`](crate::BufferPool).
///
/// ```
/// use ebb_pool::{PoolConfig, BufferPool};
/// let pool = BufferPool::new(
///     PoolConfig::small_records()
///         .with_max_retained(256)
///         .with_zero_on_return(false),
/// )
/// .unwrap();
/// assert_eq!(pool.get(100).capacity(), 256);
/// ```
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub(crate) name: String,
    pub(crate) tiers: Vec<usize>,
    pub(crate) max_retained: usize,
    pub(crate) max_retained_bytes: usize,
    pub(crate) max_total_retained_bytes: usize,
    pub(crate) zero_on_return: bool,
    pub(crate) thread_cache: bool,
    pub(crate) tracker: Option<ResourceTracker>,
    pub(crate) adaptive: AdaptiveConfig,
    pub(crate) stripes: usize,
    pub(crate) budget: Option<BudgetTarget>,
}

impl Default for PoolConfig {
    /// Tiers [`DEFAULT_TIERS`]; 32 buffers and 64 MiB per tier, 256 MiB in
    /// all; zero on return; adaptive sizing on; stripes by core count; no
    /// budget.
    fn default() -> Self {
        PoolConfig {
            name: "buffer_pool".to_owned(),
            tiers: DEFAULT_TIERS.to_vec(),
            max_retained: 32,
            max_retained_bytes: 64 << 20,
            max_total_retained_bytes: 256 << 20,
            zero_on_return: true,
            thread_cache: true,
            tracker: None,
            adaptive: AdaptiveConfig::default(),
            stripes: 0,
            budget: None,
        }
    }
}

impl PoolConfig {
    /// Tiers [`SMALL_RECORD_TIERS`] (64 B, 256 B, 1 KiB, 4 KiB) for record
    /// encoding; 1024 buffers and 4 MiB per tier, 16 MiB in all.
    pub fn small_records() -> Self {
        PoolConfig {
            tiers: SMALL_RECORD_TIERS.to_vec(),
            max_retained: 1024,
            max_retained_bytes: 4 << 20,
            max_total_retained_bytes: 16 << 20,
            ..PoolConfig::default()
        }
    }

    /// The pool's name (default `buffer_pool`): its stats' `pool` label,
    /// so keep it to a bounded set (one per pool the engine makes).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn reservation(&self) -> Reservation {
        reservation_for(self.budget.as_ref(), &self.name)
    }

    /// Tier sizes in bytes, strictly increasing.
    pub fn with_tiers(mut self, tiers: impl Into<Vec<usize>>) -> Self {
        self.tiers = tiers.into();
        self
    }

    /// The starting cap of buffers each tier retains (adaptive sizing
    /// moves it).
    pub fn with_max_retained(mut self, buffers: usize) -> Self {
        self.max_retained = buffers;
        self
    }

    /// The most bytes one tier retains.
    pub fn with_max_retained_bytes(mut self, bytes: usize) -> Self {
        self.max_retained_bytes = bytes;
        self
    }

    /// The most bytes the whole pool retains.
    pub fn with_max_total_retained_bytes(mut self, bytes: usize) -> Self {
        self.max_total_retained_bytes = bytes;
        self
    }

    /// Wipe each buffer when it comes back, so no data crosses from one
    /// user to the next (default on). Off, a reused buffer holds whatever
    /// its last user wrote.
    pub fn with_zero_on_return(mut self, on: bool) -> Self {
        self.zero_on_return = on;
        self
    }

    /// Per-thread magazines in front of the shared store (default on): a
    /// get and a drop on one thread then take no lock and no atomic
    /// read-modify-write. Each thread holds at most 256 KiB (or one buffer)
    /// per tier, lent from the pool's bounds. Off, every call goes to the
    /// striped store (the model tests use this to count exactly).
    pub fn with_thread_cache(mut self, on: bool) -> Self {
        self.thread_cache = on;
        self
    }

    /// Track every buffer handed out (kind `Buffer`, the caller of `get` as
    /// the acquisition site) in `tracker`, so buffers held too long show in
    /// its leak reports. Without a tracker this costs one branch per get.
    pub fn with_tracker(mut self, tracker: ResourceTracker) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Adaptive sizing settings.
    pub fn with_adaptive(mut self, adaptive: AdaptiveConfig) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// Stripes to spread threads over (rounded up to a power of two);
    /// 0 picks twice the core count.
    pub fn with_stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// Charge every buffer the pool holds (lent out or retained, oversized
    /// ones too) to a reservation named `consumer` on `budget`, from when
    /// it is made (a miss) until it is freed. Hits and puts never touch the
    /// budget. At the limit [`try_get`](crate::BufferPool::try_get) is
    /// refused and [`get`](crate::BufferPool::get) charges past it.
    pub fn with_budget(mut self, budget: &MemoryBudget, consumer: impl Into<String>) -> Self {
        self.budget = Some(BudgetTarget {
            budget: budget.clone(),
            consumer: consumer.into(),
        });
        self
    }

    /// Tier sizes.
    pub fn tiers(&self) -> &[usize] {
        &self.tiers
    }

    /// Whether buffers are wiped on return.
    pub fn zero_on_return(&self) -> bool {
        self.zero_on_return
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.tiers.is_empty() || self.tiers.len() > 64 {
            return Err(Error::InvalidConfig {
                reason: format!("1 to 64 tiers needed, got {}", self.tiers.len()),
            });
        }
        if self.tiers[0] == 0 || self.tiers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "tiers must be > 0 and strictly increasing, got {:?}",
                    self.tiers
                ),
            });
        }
        let largest = *self.tiers.last().expect("not empty");
        if crate::raw::layout(largest).is_none() {
            return Err(Error::InvalidConfig {
                reason: format!("tier of {largest} bytes is larger than an allocation can be"),
            });
        }
        self.adaptive.validate()
    }
}

/// Configuration of an [`ObjectPool`](crate::ObjectPool).
#[derive(Clone, Debug)]
pub struct ObjectPoolConfig {
    pub(crate) name: String,
    pub(crate) max_retained: usize,
    pub(crate) max_retained_bytes: usize,
    pub(crate) adaptive: AdaptiveConfig,
    pub(crate) stripes: usize,
    pub(crate) budget: Option<BudgetTarget>,
    pub(crate) tracker: Option<(ResourceTracker, ResourceKind)>,
}

impl Default for ObjectPoolConfig {
    /// 64 objects, 64 MiB (by [`Recycle::retained_bytes`](crate::Recycle::retained_bytes)),
    /// adaptive sizing on, stripes by core count, no budget.
    fn default() -> Self {
        ObjectPoolConfig {
            name: "object_pool".to_owned(),
            max_retained: 64,
            max_retained_bytes: 64 << 20,
            adaptive: AdaptiveConfig::default(),
            stripes: 0,
            budget: None,
            tracker: None,
        }
    }
}

impl ObjectPoolConfig {
    /// The pool's name (default `object_pool`): its stats' `pool` label,
    /// so keep it to a bounded set.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub(crate) fn reservation(&self) -> Reservation {
        reservation_for(self.budget.as_ref(), &self.name)
    }

    /// Track every object handed out as `kind` in `tracker` (the caller of
    /// `get` as the acquisition site).
    pub fn with_tracker(mut self, tracker: ResourceTracker, kind: ResourceKind) -> Self {
        self.tracker = Some((tracker, kind));
        self
    }

    /// The starting cap of objects retained.
    pub fn with_max_retained(mut self, objects: usize) -> Self {
        self.max_retained = objects;
        self
    }

    /// The most bytes retained objects may hold.
    pub fn with_max_retained_bytes(mut self, bytes: usize) -> Self {
        self.max_retained_bytes = bytes;
        self
    }

    /// Adaptive sizing settings.
    pub fn with_adaptive(mut self, adaptive: AdaptiveConfig) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// Stripes to spread threads over; 0 picks twice the core count.
    pub fn with_stripes(mut self, stripes: usize) -> Self {
        self.stripes = stripes;
        self
    }

    /// Charge every object the pool holds (out or retained, by
    /// [`Recycle::retained_bytes`](crate::Recycle::retained_bytes)) to a
    /// reservation named `consumer` on `budget`, from when the factory
    /// makes it until it is freed. Hits never touch the budget; a put does
    /// only when the object's size changed since it was charged.
    pub fn with_budget(mut self, budget: &MemoryBudget, consumer: impl Into<String>) -> Self {
        self.budget = Some(BudgetTarget {
            budget: budget.clone(),
            consumer: consumer.into(),
        });
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.adaptive.validate()
    }
}

/// Stripes for `configured` (0 = twice the cores, at most 64).
pub(crate) fn stripe_count(configured: usize) -> usize {
    if configured != 0 {
        return configured.min(1024);
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (cores * 2).min(64)
}
