//! [`Histogram`]: a fixed-bucket histogram that records observations with
//! a few relaxed atomic adds (no lock, no allocation), for the callers that
//! time things (the engine's maintenance runs, the server's requests) and
//! read at scrape time as a [`HistogramValue`].
//!
//! Invariants: bounds are finite and strictly ascending (checked at
//! construction); `counts[i]` counts observations in `(bounds[i-1],
//! bounds[i]]`, the last slot those over every bound; the snapshot's
//! buckets are cumulative.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::HistogramValue;

/// Bounds for durations from 100 µs to 60 s, in seconds.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A histogram over fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits (updated by compare-exchange).
    sum_bits: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (finite, strictly ascending; anything else
    /// falls back to [`DURATION_BUCKETS`] rather than mis-bucketing).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        let ascending = bounds.windows(2).all(|w| w[0] < w[1]);
        let finite = bounds.iter().all(|b| b.is_finite());
        let bounds = if ascending && finite && !bounds.is_empty() {
            bounds
        } else {
            DURATION_BUCKETS
        };
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// A histogram over [`DURATION_BUCKETS`].
    pub fn durations() -> Histogram {
        Histogram::new(DURATION_BUCKETS)
    }

    /// Records one observation (a NaN is counted over every bound and
    /// left out of the sum).
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        let i = if v.is_nan() { self.bounds.len() } else { i };
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        if v.is_finite() {
            let _ = self
                .sum_bits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + v).to_bits())
                });
        }
    }

    /// The buckets (cumulative), sum and count now. Concurrent observations
    /// may land between two reads; each snapshot is still monotone.
    pub fn snapshot(&self) -> HistogramValue {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (b, c) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += c.load(Ordering::Relaxed);
            buckets.push((*b, cumulative));
        }
        let count = cumulative + self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramValue {
            buckets,
            sum: f64::from_bits(self.sum_bits.load(Ordering::Relaxed)),
            count,
        }
    }
}

impl Default for Histogram {
    /// Over [`DURATION_BUCKETS`].
    fn default() -> Histogram {
        Histogram::durations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_over_them() {
        let h = Histogram::new(&[0.1, 1.0, 10.0]);
        for v in [0.05, 0.1, 0.5, 1.0, 5.0, 50.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.1, 2), (1.0, 4), (10.0, 5)]);
        assert_eq!(s.count, 7);
        assert!((s.sum - 56.65).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn bad_bounds_fall_back_to_the_duration_buckets() {
        assert_eq!(
            Histogram::new(&[1.0, 0.5]).snapshot().buckets.len(),
            DURATION_BUCKETS.len()
        );
        assert_eq!(
            Histogram::new(&[]).snapshot().buckets.len(),
            DURATION_BUCKETS.len()
        );
    }
}
