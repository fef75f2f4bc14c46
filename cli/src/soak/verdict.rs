//! The soak's verdict: six criteria over the samples and the end figures,
//! each with its figure and its bound (what summary.json and the plot
//! show). Pure: the same inputs give the same verdict, so each criterion's
//! failure is tested on planted series as well as on planted soaks.
//!
//! 1. `steady`: after the warm-up (the first 25 % of the run, at most
//!    2 minutes) RSS grows by less than 2 % in total over the rest: the
//!    least-squares slope ([`ebb_leak::GrowthDetector`]) times the steady
//!    span, over the steady mean.
//! 2. `bounded`: in steady state every sample has RSS <= baseline + 1.3 x
//!    (arena live + index + pool retained bytes), the index's bytes being
//!    every generation it holds (a rebuild's second one included:
//!    [`Sample::accounted_live_bytes`]).
//! 3. `released`: after every dataset is dropped and `release_memory()`
//!    ran, RSS <= baseline + max(5 % of baseline, 64 MiB).
//! 4. `threads_fds`: threads and fds at the end at most their count at the
//!    end of the warm-up (rayon's and the runtime's threads stay).
//! 5. `leaks`: the leak report at the end is empty, and tracked resources
//!    were seen during the run (so the check looked at something live).
//! 6. `close`: close() returned within its deadline, no worker abandoned.

use std::time::Duration;

use ebb_leak::{GrowthDetector, GrowthThreshold};
use serde_json::{Value, json};

use super::sample::Sample;

/// Growth allowed over the steady part, percent.
pub const STEADY_GROWTH_PERCENT: f64 = 2.0;
/// RSS over baseline allowed per accounted live byte in steady state.
pub const BOUNDED_FACTOR: f64 = 1.3;
/// RSS over baseline allowed after the release, as a share of baseline...
pub const RELEASED_SHARE: f64 = 0.05;
/// ... or this many bytes, whichever is larger.
pub const RELEASED_FLOOR_BYTES: u64 = 64 << 20;
/// The warm-up's longest.
pub const MAX_WARMUP_SECS: f64 = 120.0;

/// What the soak measured after the load stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndFigures {
    /// RSS after dropping every dataset and `release_memory()`.
    pub rss_after_release: u64,
    /// Threads then.
    pub threads: u64,
    /// Fds then.
    pub fds: u64,
    /// Groups held past the threshold in the final leak report.
    pub leak_groups: usize,
    /// Tracked resources alive in the final report.
    pub tracked_live: u64,
    /// close()'s wall time.
    pub close_secs: f64,
    /// Its deadline.
    pub close_deadline_secs: f64,
    /// True if a worker was still running at the deadline.
    pub close_missed: bool,
}

/// One criterion's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Criterion {
    /// `steady`, `bounded`, `released`, `threads_fds`, `leaks`, `close`.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// The measured figure.
    pub figure: f64,
    /// Its bound.
    pub bound: f64,
    /// The figure in words.
    pub detail: String,
}

/// All six.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Every criterion held.
    pub passed: bool,
    /// The criteria in order.
    pub criteria: Vec<Criterion>,
    /// Where the steady state starts, seconds.
    pub warmup_secs: f64,
}

impl Verdict {
    /// The criterion `name`.
    pub fn criterion(&self, name: &str) -> Option<&Criterion> {
        self.criteria.iter().find(|c| c.name == name)
    }

    /// As JSON (summary.json's `verdict`).
    pub fn to_json(&self) -> Value {
        json!({
            "passed": self.passed,
            "warmup_secs": self.warmup_secs,
            "criteria": self.criteria.iter().map(|c| json!({
                "name": c.name,
                "passed": c.passed,
                "figure": c.figure,
                "bound": c.bound,
                "detail": c.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The warm-up of a run of `duration_secs`.
pub fn warmup_secs(duration_secs: f64) -> f64 {
    (duration_secs * 0.25).min(MAX_WARMUP_SECS)
}

const MIB: f64 = 1048576.0;

/// Judges a soak: `samples` (one a second), the RSS `baseline` taken
/// before any data, and the end figures.
pub fn judge(samples: &[Sample], duration_secs: f64, baseline: u64, end: &EndFigures) -> Verdict {
    let warmup = warmup_secs(duration_secs);
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.t_secs >= warmup).collect();
    let mut criteria = Vec::with_capacity(6);

    // 1. Steady.
    let span = steady
        .last()
        .zip(steady.first())
        .map_or(0.0, |(l, f)| l.t_secs - f.t_secs);
    let mut d = GrowthDetector::new(
        Duration::from_secs_f64(span.max(1.0)),
        GrowthThreshold::PercentPerMinute(f64::INFINITY),
    )
    .with_min_samples(2);
    for s in &steady {
        d.record(Duration::from_secs_f64(s.t_secs), s.rss_bytes);
    }
    let g = d.verdict();
    let growth = if g.mean_bytes > 0.0 && steady.len() >= 2 {
        g.slope_bytes_per_minute * (span / 60.0) / g.mean_bytes * 100.0
    } else {
        f64::NAN
    };
    criteria.push(Criterion {
        name: "steady",
        passed: growth.is_finite() && growth < STEADY_GROWTH_PERCENT,
        figure: growth,
        bound: STEADY_GROWTH_PERCENT,
        detail: format!(
            "RSS grew {growth:.2} % over the {span:.0} s after the {warmup:.0} s warm-up ({:.1} MiB/min at a mean {:.1} MiB)",
            g.slope_bytes_per_minute / MIB,
            g.mean_bytes / MIB
        ),
    });

    // 2. Bounded.
    let worst = steady
        .iter()
        .map(|s| {
            let over = s.rss_bytes.saturating_sub(baseline) as f64;
            over / (s.accounted_live_bytes().max(1) as f64)
        })
        .fold(f64::NAN, f64::max);
    let worst_at = steady
        .iter()
        .max_by(|a, b| {
            let r = |s: &&&Sample| {
                s.rss_bytes.saturating_sub(baseline) as f64 / s.accounted_live_bytes().max(1) as f64
            };
            r(a).total_cmp(&r(b))
        })
        .map_or(0.0, |s| s.t_secs);
    criteria.push(Criterion {
        name: "bounded",
        passed: worst.is_finite() && worst <= BOUNDED_FACTOR,
        figure: worst,
        bound: BOUNDED_FACTOR,
        detail: format!(
            "steady RSS over baseline at most {worst:.3}x the accounted live bytes (at {worst_at:.0} s)"
        ),
    });

    // 3. Released.
    let allowed = (baseline as f64 * RELEASED_SHARE).max(RELEASED_FLOOR_BYTES as f64);
    let over = end.rss_after_release as f64 - baseline as f64;
    criteria.push(Criterion {
        name: "released",
        passed: over <= allowed,
        figure: over,
        bound: allowed,
        detail: format!(
            "after dropping every dataset and release_memory: RSS {:.1} MiB, {:.1} MiB over the baseline {:.1} MiB (allowed {:.1} MiB)",
            end.rss_after_release as f64 / MIB,
            over / MIB,
            baseline as f64 / MIB,
            allowed / MIB
        ),
    });

    // 4. Threads and fds.
    let (t0, f0) = steady.first().map_or((0, 0), |s| (s.threads, s.fds));
    let extra = end.threads.saturating_sub(t0) + end.fds.saturating_sub(f0);
    criteria.push(Criterion {
        name: "threads_fds",
        passed: !steady.is_empty() && extra == 0,
        figure: extra as f64,
        bound: 0.0,
        detail: format!(
            "threads {} at the end against {t0} after the warm-up; fds {} against {f0}",
            end.threads, end.fds
        ),
    });

    // 5. Leaks.
    let seen = samples.iter().map(|s| s.tracked).max().unwrap_or(0);
    let leaks = end.leak_groups as u64 + end.tracked_live;
    criteria.push(Criterion {
        name: "leaks",
        passed: leaks == 0 && seen > 0,
        figure: leaks as f64,
        bound: 0.0,
        detail: format!(
            "{} groups held past the threshold and {} tracked resources alive at the end; up to {seen} tracked during the run{}",
            end.leak_groups,
            end.tracked_live,
            if seen == 0 {
                " (none: the check saw nothing live, so it fails)"
            } else {
                ""
            }
        ),
    });

    // 6. Close.
    criteria.push(Criterion {
        name: "close",
        passed: !end.close_missed && end.close_secs <= end.close_deadline_secs,
        figure: end.close_secs,
        bound: end.close_deadline_secs,
        detail: format!(
            "close() took {:.3} s of its {:.0} s deadline{}",
            end.close_secs,
            end.close_deadline_secs,
            if end.close_missed {
                ", a worker missed it"
            } else {
                ""
            }
        ),
    });

    Verdict {
        passed: criteria.iter().all(|c| c.passed),
        criteria,
        warmup_secs: warmup,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn run(rss: impl Fn(f64) -> u64, live: u64) -> Vec<Sample> {
        (0..=100)
            .map(|t| Sample {
                t_secs: t as f64,
                rss_bytes: rss(t as f64),
                arena_live_bytes: live,
                threads: 10,
                fds: 5,
                tracked: if t % 10 == 0 { 1 } else { 0 },
                ..Sample::default()
            })
            .collect()
    }

    fn end() -> EndFigures {
        EndFigures {
            rss_after_release: 60 * MB,
            threads: 10,
            fds: 5,
            close_secs: 0.01,
            close_deadline_secs: 30.0,
            ..EndFigures::default()
        }
    }

    #[test]
    fn a_flat_bounded_run_passes() {
        let v = judge(
            &run(|_| 50 * MB + 120 * MB, 100 * MB),
            100.0,
            50 * MB,
            &end(),
        );
        assert!(v.passed, "{v:#?}");
        assert_eq!(v.warmup_secs, 25.0);
    }

    #[test]
    fn each_criterion_fails_on_its_own_plant() {
        // Growth: 10 % over the steady part.
        let v = judge(
            &run(|t| 170 * MB + (t * 0.2 * MB as f64) as u64, 100 * MB),
            100.0,
            50 * MB,
            &end(),
        );
        assert!(!v.criterion("steady").unwrap().passed, "{v:#?}");
        // Bloat: flat, but 2x the live bytes.
        let v = judge(&run(|_| 250 * MB, 100 * MB), 100.0, 50 * MB, &end());
        assert!(v.criterion("steady").unwrap().passed);
        assert!(!v.criterion("bounded").unwrap().passed, "{v:#?}");
        let samples = run(|_| 170 * MB, 100 * MB);
        // Not released.
        let e = EndFigures {
            rss_after_release: 200 * MB,
            ..end()
        };
        assert!(
            !judge(&samples, 100.0, 50 * MB, &e)
                .criterion("released")
                .unwrap()
                .passed
        );
        // A thread left behind.
        let e = EndFigures {
            threads: 11,
            ..end()
        };
        assert!(
            !judge(&samples, 100.0, 50 * MB, &e)
                .criterion("threads_fds")
                .unwrap()
                .passed
        );
        // A leak.
        let e = EndFigures {
            leak_groups: 1,
            tracked_live: 1,
            ..end()
        };
        assert!(
            !judge(&samples, 100.0, 50 * MB, &e)
                .criterion("leaks")
                .unwrap()
                .passed
        );
        // Nothing tracked ever: the leak check saw nothing.
        let mut quiet = samples.clone();
        quiet.iter_mut().for_each(|s| s.tracked = 0);
        assert!(
            !judge(&quiet, 100.0, 50 * MB, &end())
                .criterion("leaks")
                .unwrap()
                .passed
        );
        // A hung worker.
        let e = EndFigures {
            close_missed: true,
            close_secs: 30.5,
            ..end()
        };
        let v = judge(&samples, 100.0, 50 * MB, &e);
        assert!(!v.criterion("close").unwrap().passed);
        assert!(!v.passed);
        assert_eq!(
            v.criteria.iter().filter(|c| !c.passed).count(),
            1,
            "only close fails: {v:#?}"
        );
    }
}
