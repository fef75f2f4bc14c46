//! Plain snapshots of pool counters, read at scrape time.
//!
//! Flat plain data (the house convention): `u64` counts, bytes named
//! `*_bytes`, counters (only ever rising) named `*_total`, gauges bare,
//! durations in seconds, and the pool's name for the `pool` label. The
//! workspace's docs/metrics.md maps each field to the Prometheus metric
//! ebb-metrics exports it as.

/// Counters of one tier (an object pool has one, of size 0).
///
/// Invariants: `gets_total == hits_total + misses_total`;
/// `in_use == gets_total - puts_total`; `allocations_total ==
/// misses_total`; `retained <= cap` per tier once a maintenance run or a
/// put has applied a lowered cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Buffer size of this tier (the `tier` label; 0 for an object pool).
    pub size_bytes: u64,
    /// The most items this tier retains now (moved by adaptive sizing and
    /// [`set_max_retained`](crate::BufferPool::set_max_retained)).
    pub cap: u64,
    /// Items handed out.
    pub gets_total: u64,
    /// Gets served from retained items.
    pub hits_total: u64,
    /// Gets that made a fresh item.
    pub misses_total: u64,
    /// Fresh items made (`misses_total`).
    pub allocations_total: u64,
    /// Items given back.
    pub puts_total: u64,
    /// Items handed out and not yet given back (a gauge).
    pub in_use: u64,
    /// Items freed instead of retained at a put (a bound full, an object
    /// grown past the budget) or evicted by adaptive sizing; items a trim
    /// or maintenance run frees count in `maintenance_released_bytes_total`.
    pub discarded_total: u64,
    /// Items retained now, in the shared store and in thread caches.
    pub retained: u64,
    /// Bytes retained now.
    pub retained_bytes: u64,
}

impl TierStats {
    /// The share of gets served from retained items (1.0 before any get).
    pub fn hit_ratio(&self) -> f64 {
        if self.gets_total == 0 {
            1.0
        } else {
            self.hits_total as f64 / self.gets_total as f64
        }
    }
}

/// A snapshot of a pool: its totals over tiers, flat, then one entry per
/// tier.
///
/// ```
/// use ebb_pool::{BufferPool, PoolConfig};
/// let pool = BufferPool::new(PoolConfig::small_records().with_name("records")).unwrap();
/// drop(pool.get(100));
/// let s = pool.stats();
/// assert_eq!(s.name, "records");
/// assert_eq!((s.gets_total, s.puts_total, s.in_use), (1, 1, 0));
/// assert_eq!(s.charged_bytes, 256); // the one buffer it made, retained
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// The pool's name (`with_name`; the `pool` label).
    pub name: String,
    /// Sum of the tiers' caps.
    pub cap: u64,
    /// Items handed out, over tiers (oversized buffers not included).
    pub gets_total: u64,
    /// Gets served from retained items.
    pub hits_total: u64,
    /// Gets that made a fresh item.
    pub misses_total: u64,
    /// Fresh items made in the tiers (`misses_total`).
    pub allocations_total: u64,
    /// Items given back.
    pub puts_total: u64,
    /// Items out now (a gauge; oversized buffers not included).
    pub in_use: u64,
    /// Items freed instead of retained.
    pub discarded_total: u64,
    /// Items retained now.
    pub retained: u64,
    /// Bytes retained now, in the shared store and in thread caches.
    pub retained_bytes: u64,
    /// Bytes of `retained_bytes` that sit in thread caches.
    pub thread_cached_bytes: u64,
    /// Requests larger than the largest tier, allocated plainly.
    pub oversized_total: u64,
    /// Oversized buffers not yet dropped (a gauge).
    pub oversized_in_use: u64,
    /// Bytes charged to the budget: every buffer or object the pool made
    /// and has not freed, out or retained (see the README's "Budget").
    pub charged_bytes: u64,
    /// Fresh allocations refused because the budget was full (`try_get`,
    /// `try_reserve`, an object grown past what the budget allows).
    pub budget_refusals_total: u64,
    /// Fresh allocations the infallible `get`/`reserve` made past the
    /// budget's limit (charged all the same, so the budget sees them).
    pub budget_overruns_total: u64,
    /// Maintenance runs finished (cancelled ones included).
    pub maintenance_runs_total: u64,
    /// Bytes maintenance runs and trims freed.
    pub maintenance_released_bytes_total: u64,
    /// Thread caches maintenance took over from threads outside the pool.
    pub thread_takeovers_total: u64,
    /// Wall time of the last maintenance run, in seconds.
    pub last_maintenance_seconds: f64,
    /// One entry per tier, smallest first.
    pub tiers: Vec<TierStats>,
}

impl PoolStats {
    /// The share of gets served from retained items (1.0 before any get).
    pub fn hit_ratio(&self) -> f64 {
        if self.gets_total == 0 {
            1.0
        } else {
            self.hits_total as f64 / self.gets_total as f64
        }
    }

    /// Sets the totals from `tiers`.
    pub(crate) fn sum_tiers(&mut self) {
        let t = &self.tiers;
        let sum = |f: fn(&TierStats) -> u64| t.iter().map(f).fold(0u64, u64::wrapping_add);
        self.cap = sum(|t| t.cap);
        self.gets_total = sum(|t| t.gets_total);
        self.hits_total = sum(|t| t.hits_total);
        self.misses_total = sum(|t| t.misses_total);
        self.allocations_total = sum(|t| t.allocations_total);
        self.puts_total = sum(|t| t.puts_total);
        self.in_use = sum(|t| t.in_use);
        self.discarded_total = sum(|t| t.discarded_total);
        self.retained = sum(|t| t.retained);
        self.retained_bytes = sum(|t| t.retained_bytes);
    }
}
