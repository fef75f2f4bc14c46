//! [`GrowthDetector`]: is a quantity (RSS, heap bytes, live handles) still
//! growing, or has it settled?
//!
//! Feed `(time, bytes)` samples; the detector keeps those inside a sliding
//! window and fits a least-squares line through them. The slope, in bytes
//! per minute or in percent of the window's mean per minute, is compared
//! with a threshold. Samples taken during a warm-up after the first one are
//! ignored, so a process that fills its caches and then plateaus is not
//! "growing"; a sawtooth (fill, free, fill) averages out over the window.
//!
//! Invariants:
//!
//! 1. Samples in the window are in time order and span at most `window`.
//! 2. A verdict says `growing` only with at least `min_samples` samples
//!    spanning at least half the window (`enough_data`).
//!
//! Time is passed in (a `Duration` since any origin the caller chooses), so
//! the detector works on live samples and on recorded series alike, and
//! tests need no clock.

use std::collections::VecDeque;
use std::time::Duration;

/// How fast is too fast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GrowthThreshold {
    /// Growing if the slope exceeds this many bytes per minute.
    BytesPerMinute(f64),
    /// Growing if the slope exceeds this percentage of the window's mean
    /// per minute.
    PercentPerMinute(f64),
}

/// Sliding-window trend of a byte count.
///
/// ```
/// use std::time::Duration;
/// use ebb_leak::{GrowthDetector, GrowthThreshold};
///
/// let mut d = GrowthDetector::new(Duration::from_secs(300), GrowthThreshold::BytesPerMinute(1e6));
/// for s in 0..300u64 {
///     // 10 MB per minute, every second for five minutes
///     d.record(Duration::from_secs(s), 100_000_000 + s * 166_667);
/// }
/// let v = d.verdict();
/// assert!(v.growing);
/// assert!((v.slope_bytes_per_minute - 10e6).abs() < 1e3);
/// ```
#[derive(Clone, Debug)]
pub struct GrowthDetector {
    window: Duration,
    warmup: Duration,
    min_samples: usize,
    threshold: GrowthThreshold,
    first: Option<Duration>,
    /// (seconds since origin, bytes), time-ordered (invariant 1).
    samples: VecDeque<(f64, f64)>,
}

/// What the detector concludes from the samples in its window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrowthVerdict {
    /// Samples in the window.
    pub samples: usize,
    /// Time between the oldest and newest sample in the window.
    pub span: Duration,
    /// Least-squares slope, bytes per minute (negative when shrinking).
    pub slope_bytes_per_minute: f64,
    /// The same slope as a percentage of the window's mean, per minute.
    pub slope_percent_per_minute: f64,
    /// Mean of the samples in the window.
    pub mean_bytes: f64,
    /// At least `min_samples` samples spanning at least half the window.
    pub enough_data: bool,
    /// `enough_data` and the slope is over the threshold.
    pub growing: bool,
}

impl GrowthDetector {
    /// A detector over `window` with `threshold`; no warm-up, and at least
    /// 8 samples before it judges.
    pub fn new(window: Duration, threshold: GrowthThreshold) -> GrowthDetector {
        GrowthDetector {
            window,
            warmup: Duration::ZERO,
            min_samples: 8,
            threshold,
            first: None,
            samples: VecDeque::new(),
        }
    }

    /// Ignores samples taken within `warmup` of the first one.
    pub fn with_warmup(mut self, warmup: Duration) -> GrowthDetector {
        self.warmup = warmup;
        self
    }

    /// Judges only with at least `n` samples (at least 2).
    pub fn with_min_samples(mut self, n: usize) -> GrowthDetector {
        self.min_samples = n.max(2);
        self
    }

    /// Records `bytes` at time `at` (since the caller's origin). A sample
    /// older than the newest one is ignored (invariant 1).
    pub fn record(&mut self, at: Duration, bytes: u64) {
        let first = *self.first.get_or_insert(at);
        // `at - first`, not `first + warmup`: the warm-up is the caller's
        // and may be `Duration::MAX` ("never judge"), which overflowed.
        if at.saturating_sub(first) < self.warmup {
            return;
        }
        let t = at.as_secs_f64();
        if self.samples.back().is_some_and(|(last, _)| t < *last) {
            return;
        }
        self.samples.push_back((t, bytes as f64));
        let oldest = t - self.window.as_secs_f64();
        while self.samples.front().is_some_and(|(s, _)| *s < oldest) {
            self.samples.pop_front();
        }
    }

    /// Drops every sample and the warm-up origin (for example after a
    /// deliberate change of workload).
    pub fn reset(&mut self) {
        self.first = None;
        self.samples.clear();
    }

    /// The trend of the samples in the window.
    pub fn verdict(&self) -> GrowthVerdict {
        let n = self.samples.len();
        let (span, mean, slope_per_sec) = if n == 0 {
            (0.0, 0.0, 0.0)
        } else {
            let nf = n as f64;
            let t_mean = self.samples.iter().map(|(t, _)| t).sum::<f64>() / nf;
            let y_mean = self.samples.iter().map(|(_, y)| y).sum::<f64>() / nf;
            let (mut sxy, mut sxx) = (0.0, 0.0);
            for (t, y) in &self.samples {
                sxy += (t - t_mean) * (y - y_mean);
                sxx += (t - t_mean) * (t - t_mean);
            }
            let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
            let span = self.samples.back().map_or(0.0, |b| b.0)
                - self.samples.front().map_or(0.0, |f| f.0);
            (span, y_mean, slope)
        };
        let per_minute = slope_per_sec * 60.0;
        let percent = if mean > 0.0 {
            per_minute / mean * 100.0
        } else {
            0.0
        };
        let enough_data = n >= self.min_samples && span >= self.window.as_secs_f64() / 2.0;
        let over = match self.threshold {
            GrowthThreshold::BytesPerMinute(limit) => per_minute > limit,
            GrowthThreshold::PercentPerMinute(limit) => percent > limit,
        };
        GrowthVerdict {
            samples: n,
            // A span near `Duration::MAX` rounds past it as an f64.
            span: Duration::try_from_secs_f64(span.max(0.0)).unwrap_or(Duration::MAX),
            slope_bytes_per_minute: per_minute,
            slope_percent_per_minute: percent,
            mean_bytes: mean,
            enough_data,
            growing: enough_data && over,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: f64 = 1024.0 * 1024.0;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn steady_growth_is_growth() {
        let mut d = GrowthDetector::new(secs(600), GrowthThreshold::BytesPerMinute(MIB));
        for s in 0..=600 {
            d.record(secs(s), (500 << 20) + s * 50_000);
        }
        let v = d.verdict();
        assert!(v.enough_data && v.growing, "{v:?}");
        assert!(
            (v.slope_bytes_per_minute - 3_000_000.0).abs() < 1.0,
            "{v:?}"
        );
    }

    #[test]
    fn plateau_after_warmup_is_not_growth() {
        let mut d = GrowthDetector::new(secs(300), GrowthThreshold::BytesPerMinute(MIB))
            .with_warmup(secs(120));
        // Caches fill for two minutes, then the process holds steady.
        for s in 0..=600u64 {
            let bytes = if s < 120 {
                s * (8 << 20)
            } else {
                120 * (8 << 20)
            };
            d.record(secs(s), bytes);
        }
        let v = d.verdict();
        assert!(v.enough_data && !v.growing, "{v:?}");
        assert_eq!(v.slope_bytes_per_minute, 0.0);
    }

    #[test]
    fn without_warmup_the_fill_counts_while_it_is_in_the_window() {
        let mut d = GrowthDetector::new(secs(300), GrowthThreshold::BytesPerMinute(MIB));
        for s in 0..=200u64 {
            d.record(secs(s), s.min(120) * (8 << 20));
        }
        assert!(d.verdict().growing);
    }

    #[test]
    fn sawtooth_averages_out() {
        // Fill 64 MiB over 10 s, free it, again: no trend over 5 minutes.
        let mut d = GrowthDetector::new(secs(300), GrowthThreshold::BytesPerMinute(MIB));
        for s in 0..=1200u64 {
            d.record(secs(s), (256 << 20) + (s % 10) * (64 << 20) / 10);
        }
        let v = d.verdict();
        assert!(v.enough_data && !v.growing, "{v:?}");
    }

    #[test]
    fn slow_leak_on_a_sawtooth_is_found() {
        let mut d = GrowthDetector::new(secs(300), GrowthThreshold::BytesPerMinute(MIB));
        for s in 0..=1200u64 {
            // The same sawtooth plus 4 MiB per minute that never comes back.
            let leak = s * (4 << 20) / 60;
            d.record(secs(s), (256 << 20) + (s % 10) * (64 << 20) / 10 + leak);
        }
        let v = d.verdict();
        assert!(v.growing, "{v:?}");
        assert!((v.slope_bytes_per_minute / MIB - 4.0).abs() < 0.5, "{v:?}");
    }

    #[test]
    fn percent_threshold_scales_with_the_mean() {
        let mut d = GrowthDetector::new(secs(60), GrowthThreshold::PercentPerMinute(1.0));
        for s in 0..=60u64 {
            // 1 GiB growing 0.5 % per minute.
            d.record(secs(s), (1u64 << 30) + s * (1u64 << 30) / 200 / 60);
        }
        let v = d.verdict();
        assert!(!v.growing, "{v:?}");
        assert!((v.slope_percent_per_minute - 0.5).abs() < 0.01, "{v:?}");
    }

    #[test]
    fn too_few_or_too_short_is_no_verdict() {
        let mut d = GrowthDetector::new(secs(600), GrowthThreshold::BytesPerMinute(1.0));
        for s in 0..5 {
            d.record(secs(s), s * (1 << 30));
        }
        let v = d.verdict();
        assert!(!v.enough_data && !v.growing, "{v:?}");
        assert_eq!(
            GrowthDetector::new(secs(1), GrowthThreshold::BytesPerMinute(0.0))
                .verdict()
                .samples,
            0
        );
    }

    #[test]
    fn a_warmup_of_duration_max_ignores_everything_without_overflow() {
        // `first + warmup` overflowed (a panic) for a warm-up of MAX.
        let mut d = GrowthDetector::new(secs(60), GrowthThreshold::BytesPerMinute(1.0))
            .with_warmup(Duration::MAX);
        for s in 1..20 {
            d.record(secs(s), s << 20);
        }
        assert_eq!(d.verdict().samples, 0);
    }

    #[test]
    fn a_span_as_long_as_a_duration_holds_saturates() {
        // The span, 2^64 s once rounded to an f64, passed `Duration::MAX`
        // and `Duration::from_secs_f64` panicked.
        let mut d = GrowthDetector::new(Duration::MAX, GrowthThreshold::BytesPerMinute(1.0))
            .with_min_samples(2);
        d.record(Duration::ZERO, 1);
        d.record(Duration::MAX, 2);
        let v = d.verdict();
        assert_eq!((v.samples, v.span), (2, Duration::MAX));
    }

    #[test]
    fn old_samples_leave_the_window_and_late_ones_are_ignored() {
        let mut d = GrowthDetector::new(secs(100), GrowthThreshold::BytesPerMinute(MIB));
        for s in 0..=300u64 {
            d.record(secs(s), s * 1000);
        }
        d.record(secs(10), 0); // out of order: ignored
        let v = d.verdict();
        assert_eq!(v.samples, 101);
        assert_eq!(v.span, secs(100));
        d.reset();
        assert_eq!(d.verdict().samples, 0);
    }

    proptest! {
        /// On an exact line the fitted slope is the line's slope, and the
        /// verdict follows the threshold.
        #[test]
        fn fits_lines_exactly(base in 0u64..(1 << 40), per_sec in 0u64..(1 << 24), limit in 0.0f64..1e9) {
            let mut d = GrowthDetector::new(secs(120), GrowthThreshold::BytesPerMinute(limit));
            for s in 0..=120u64 {
                d.record(secs(s), base + s * per_sec);
            }
            let v = d.verdict();
            let expected = per_sec as f64 * 60.0;
            prop_assert!((v.slope_bytes_per_minute - expected).abs() <= 1e-6 * expected.max(1.0) + 1e-3);
            prop_assert!(v.enough_data);
            if (expected - limit).abs() > 1.0 {
                prop_assert_eq!(v.growing, expected > limit);
            }
        }
    }
}
