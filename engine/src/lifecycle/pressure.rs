//! The memory-pressure controller: every `pressure_interval_ms` it samples
//! RSS (statm), the budget, the cgroup limit and memory PSI and sets a
//! level; the engine refuses writes at `Critical` instead of being
//! OOM-killed.
//!
//! Levels (`limit` = `memory_limit_bytes`, `soft` = `soft_limit_ratio` x
//! `limit`, `hysteresis` = 5 % of `limit`):
//!
//! - **Normal**.
//! - **Elevated**: RSS (or the budget's reserved bytes) over `soft`, or
//!   the arenas hold under half live in over 70 % of RSS, or the kernel
//!   reports memory stalls (PSI `some` avg10 over 10 %), or RSS over 90 %
//!   of the cgroup's limit. Entering it
//!   tightens compaction (arena max live ratio to 0.8, index max deleted
//!   ratio to 0.1), trims every pool on every thread, purges the global
//!   allocator and wakes the compaction worker; leaving it restores the
//!   configured thresholds. Left when RSS is back under `soft -
//!   hysteresis` and nothing else holds it.
//! - **Critical**: RSS over `limit` (or 95 % of the cgroup's), or the
//!   budget within `hysteresis` of refusing ordinary growth: writes get
//!   [`Error::MemoryPressure`](crate::Error::MemoryPressure); reads and
//!   deletes work; the compaction worker is woken every interval. Left when
//!   what ebb holds (the budget's reserved bytes) is under `soft -
//!   hysteresis`. If RSS is then still over that mark, this is the **exit on
//!   the budget alone**: the rest of RSS is memory outside ebb's arenas
//!   (the global allocator's, say) that refusing writes cannot shrink; the
//!   controller then stays out of Critical on RSS until the budget itself
//!   grows back over `soft` (or RSS falls under `soft - hysteresis`), so
//!   such memory never locks writes out for good. Critical is never left
//!   while the budget is still within `hysteresis` of refusing.
//!
//! `limit` is the budget's limit; after `MemoryBudget::set_limit(None)` it
//! is `memory_limit_bytes` still: an unlimited budget refuses nothing
//! itself, but the controller keeps guarding RSS against the configured
//! limit.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// The controller's level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PressureLevel {
    /// Nothing to do.
    Normal = 0,
    /// Compaction tightened, pools trimmed, allocator purged.
    Elevated = 1,
    /// Writes refused.
    Critical = 2,
}

impl PressureLevel {
    /// The level's name (`normal`, `elevated`, `critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            PressureLevel::Normal => "normal",
            PressureLevel::Elevated => "elevated",
            PressureLevel::Critical => "critical",
        }
    }

    fn from_u8(v: u8) -> PressureLevel {
        match v {
            0 => PressureLevel::Normal,
            1 => PressureLevel::Elevated,
            _ => PressureLevel::Critical,
        }
    }
}

/// One sample of what the controller reads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureSample {
    /// Process RSS.
    pub rss_bytes: u64,
    /// `memory_limit_bytes`.
    pub limit_bytes: u64,
    /// `soft_limit_ratio`.
    pub soft_limit_ratio: f64,
    /// Bytes reserved from the budget.
    pub reserved_bytes: u64,
    /// Bytes ordinary growth can still reserve from the budget.
    pub budget_available_bytes: u64,
    /// Live bytes in every dataset's arenas.
    pub arena_live_bytes: u64,
    /// Resident bytes of every dataset's arenas.
    pub arena_resident_bytes: u64,
    /// The cgroup's limit, where there is one.
    pub cgroup_limit_bytes: Option<u64>,
    /// PSI memory `some` avg10 (percent), where the kernel has it.
    pub psi_some_avg10: Option<f64>,
}

const HYSTERESIS: f64 = 0.05;

/// The next level from `current` and a sample; `budget_exit` is the latch
/// of the exit on the budget alone (see the module docs).
pub fn decide(current: PressureLevel, s: &PressureSample, budget_exit: &mut bool) -> PressureLevel {
    let limit = s.limit_bytes.max(1) as f64;
    let rss = s.rss_bytes as f64;
    let reserved = s.reserved_bytes as f64;
    let soft = s.soft_limit_ratio * limit;
    let below_soft = soft - HYSTERESIS * limit;
    if rss < below_soft {
        *budget_exit = false;
    }
    let cgroup = s.cgroup_limit_bytes.map(|c| c as f64);
    let over_limit = rss > limit || cgroup.is_some_and(|c| rss > 0.95 * c);
    // Ordinary writes are about to be refused by the budget itself: refuse
    // them here first, with the error that says why and who holds what.
    let budget_full = (s.budget_available_bytes as f64) < HYSTERESIS * limit;
    let critical = if current == PressureLevel::Critical {
        // While the budget is still about to refuse, writes stay refused
        // here (with the numbers) rather than flapping between this and
        // the budget's own refusal; the budget shrinks only by reclaim.
        if reserved < below_soft && !budget_full {
            // Both under (a plain exit) or RSS still high with little in
            // ebb (the exit on the budget alone, latched).
            *budget_exit = rss >= below_soft;
            false
        } else {
            true
        }
    } else {
        budget_full || (over_limit && (!*budget_exit || reserved > soft))
    };
    if critical {
        return PressureLevel::Critical;
    }
    let held = rss.max(reserved);
    let fragmented = s.arena_resident_bytes as f64 > 0.7 * rss
        && (s.arena_live_bytes as f64) < 0.5 * s.arena_resident_bytes as f64;
    let stalled = s.psi_some_avg10.is_some_and(|p| p > 10.0);
    let near_cgroup = cgroup.is_some_and(|c| rss > 0.9 * c);
    let elevated = if current >= PressureLevel::Elevated {
        held >= below_soft || fragmented || stalled || near_cgroup
    } else {
        held > soft || fragmented || stalled || near_cgroup
    };
    if elevated {
        PressureLevel::Elevated
    } else {
        PressureLevel::Normal
    }
}

/// The controller's counters, flat for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureStats {
    /// The level now.
    pub level: Option<PressureLevel>,
    /// Level changes since open.
    pub level_changes_total: u64,
    /// Writes refused at Critical.
    pub writes_refused_total: u64,
    /// Samples taken.
    pub samples_total: u64,
    /// True while Critical was left on the budget alone (see the module
    /// docs).
    pub budget_exit: bool,
    /// The last sample.
    pub last: PressureSample,
}

/// The controller's shared state.
#[derive(Default)]
pub(crate) struct PressureState {
    level: AtomicU8,
    pub budget_exit: AtomicBool,
    pub changes: AtomicU64,
    pub refused: AtomicU64,
    pub samples: AtomicU64,
    pub last: Mutex<PressureSample>,
    pub last_log: Mutex<Option<Instant>>,
    /// One tick at a time (the worker's, or a caller's after it freed
    /// memory), so sample, decision and latch stay one step.
    pub tick: Mutex<()>,
}

impl PressureState {
    pub fn level(&self) -> PressureLevel {
        PressureLevel::from_u8(self.level.load(Ordering::Acquire))
    }

    pub fn set_level(&self, level: PressureLevel) {
        self.level.store(level as u8, Ordering::Release);
    }

    pub fn stats(&self) -> PressureStats {
        PressureStats {
            level: Some(self.level()),
            level_changes_total: self.changes.load(Ordering::Relaxed),
            writes_refused_total: self.refused.load(Ordering::Relaxed),
            samples_total: self.samples.load(Ordering::Relaxed),
            budget_exit: self.budget_exit.load(Ordering::Relaxed),
            last: *self.last.lock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PressureLevel::*;

    const MIB: u64 = 1 << 20;

    fn sample(rss: u64, reserved: u64) -> PressureSample {
        PressureSample {
            rss_bytes: rss * MIB,
            limit_bytes: 1000 * MIB,
            soft_limit_ratio: 0.85,
            reserved_bytes: reserved * MIB,
            budget_available_bytes: (1000 - reserved) * MIB,
            ..PressureSample::default()
        }
    }

    fn run(steps: &[(u64, u64)]) -> Vec<PressureLevel> {
        let (mut level, mut latch) = (Normal, false);
        steps
            .iter()
            .map(|&(rss, reserved)| {
                level = decide(level, &sample(rss, reserved), &mut latch);
                level
            })
            .collect()
    }

    #[test]
    fn levels_rise_and_fall_with_hysteresis() {
        assert_eq!(
            run(&[
                (500, 400),
                (860, 700),
                (820, 700),
                (790, 700),
                (1001, 950),
                (900, 900),
                (790, 700)
            ]),
            [
                Normal, Elevated, Elevated, Normal, Critical, Critical, Normal
            ]
        );
    }

    #[test]
    fn memory_outside_the_budget_cannot_lock_writes_out() {
        // RSS stays over the limit, but ebb holds little: Critical is left
        // on the budget alone and not re-entered until the budget grows.
        assert_eq!(
            run(&[
                (1100, 900),
                (1100, 700),
                (1100, 700),
                (1100, 860),
                (700, 100)
            ]),
            [Critical, Elevated, Elevated, Critical, Normal]
        );
    }

    #[test]
    fn a_budget_full_of_headroom_holds_critical_without_flapping() {
        // Little reserved, but headroom leaves under 5 % for ordinary
        // growth: Critical, and it stays while that lasts.
        let full = PressureSample {
            budget_available_bytes: 10 * MIB,
            ..sample(300, 100)
        };
        let (mut latch, mut level) = (false, Normal);
        for _ in 0..4 {
            level = decide(level, &full, &mut latch);
            assert_eq!(level, Critical);
        }
        assert_eq!(decide(level, &sample(300, 100), &mut latch), Normal);
    }

    #[test]
    fn fragmentation_stalls_and_the_cgroup_raise_elevated() {
        let (mut latch, base) = (false, sample(500, 400));
        let fragmented = PressureSample {
            arena_resident_bytes: 400 * MIB,
            arena_live_bytes: 100 * MIB,
            ..base
        };
        assert_eq!(decide(Normal, &fragmented, &mut latch), Elevated);
        let stalled = PressureSample {
            psi_some_avg10: Some(25.0),
            ..base
        };
        assert_eq!(decide(Normal, &stalled, &mut latch), Elevated);
        let cgroup = PressureSample {
            cgroup_limit_bytes: Some(520 * MIB),
            ..base
        };
        assert_eq!(decide(Normal, &cgroup, &mut latch), Critical);
        assert_eq!(decide(Normal, &base, &mut latch), Normal);
    }
}
