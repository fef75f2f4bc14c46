//! Plain snapshots of pool counters, read at scrape time.

/// Counters of one tier (or of a whole pool in [`PoolStats::total`]).
///
/// Invariants: `gets == hits + misses`; `in_use == gets - puts`;
/// `allocations == misses`; `retained <= cap` per tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierStats {
    /// Buffer size of this tier (0 for an object pool and for the total).
    pub size_bytes: usize,
    /// The most items this tier retains now (moved by adaptive sizing).
    pub cap: usize,
    /// Items handed out.
    pub gets: u64,
    /// Gets served from retained items.
    pub hits: u64,
    /// Gets that made a fresh item.
    pub misses: u64,
    /// Fresh items made (`misses`).
    pub allocations: u64,
    /// Items given back.
    pub puts: u64,
    /// Items handed out and not yet given back.
    pub in_use: u64,
    /// Items dropped instead of retained (a bound, the budget, or adaptive
    /// sizing lowering the cap).
    pub discarded: u64,
    /// Items retained now.
    pub retained: u64,
    /// Bytes retained now.
    pub retained_bytes: u64,
}

impl TierStats {
    /// The share of gets served from retained items (1.0 before any get).
    pub fn hit_rate(&self) -> f64 {
        if self.gets == 0 {
            1.0
        } else {
            self.hits as f64 / self.gets as f64
        }
    }

    pub(crate) fn add(&mut self, other: &TierStats) {
        self.cap += other.cap;
        self.gets += other.gets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.allocations += other.allocations;
        self.puts += other.puts;
        self.in_use += other.in_use;
        self.discarded += other.discarded;
        self.retained += other.retained;
        self.retained_bytes += other.retained_bytes;
    }
}

/// A snapshot of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// One entry per tier, smallest first.
    pub tiers: Vec<TierStats>,
    /// Sums over tiers (`cap` is the sum of caps).
    pub total: TierStats,
    /// Requests larger than the largest tier, allocated plainly.
    pub oversized: u64,
    /// Oversized buffers not yet dropped.
    pub oversized_in_use: u64,
    /// Puts dropped because the memory budget was full.
    pub budget_refusals: u64,
    /// Bytes the pool's budget reservation holds (at least
    /// `total.retained_bytes`, within a small slack per stripe).
    pub charged_bytes: u64,
}
