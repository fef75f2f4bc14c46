//! `ebb soak`: an embedded engine under sustained load for a set time,
//! sampled every second, judged at the end (see [`verdict`]), written to a
//! directory: `samples.csv`, `rss.svg`, `rss.png` and `summary.json`.
//!
//! The order: the RSS baseline is read after the engine opens and before
//! any data; the load ([`workload`]) runs for the duration while the
//! sampler records one [`sample::Sample`] a second and reports progress;
//! then the load stops, every dataset is dropped and `release_memory()`
//! runs (the end figures), and the engine closes with its deadline.
//!
//! `plant` (tests only, `--plant`) makes one criterion fail on purpose, to
//! show the verdict can fail: `leak` keeps a scan open past the end,
//! `bloat` holds 1.5 x the live target of untracked memory from the end of
//! the warm-up, `growth` adds 2 % of the live target per second, `hung`
//! starts a worker that ignores the close.

pub mod plot;
pub mod replay;
pub mod runbook;
pub mod sample;
pub mod verdict;
pub mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ebb_engine::{Engine, EngineConfig};
use serde_json::json;

use sample::Sample;
use verdict::{EndFigures, Verdict};
use workload::{Workload, WorkloadConfig};

/// A failure planted on purpose (tests of the verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {
    /// A scan kept open past the end.
    Leak,
    /// Untracked memory of 1.5 x the live target from the warm-up's end.
    Bloat,
    /// Untracked memory growing by 2 % of the live target a second.
    Growth,
    /// A worker that ignores close.
    Hung,
}

impl std::str::FromStr for Plant {
    type Err = String;
    fn from_str(s: &str) -> Result<Plant, String> {
        match s {
            "leak" => Ok(Plant::Leak),
            "bloat" => Ok(Plant::Bloat),
            "growth" => Ok(Plant::Growth),
            "hung" => Ok(Plant::Hung),
            other => Err(format!("{other:?} is not one of leak, bloat, growth, hung")),
        }
    }
}

/// What a soak runs with.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// How long the load runs.
    pub duration: Duration,
    /// Where the files go (created).
    pub out_dir: PathBuf,
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// The load.
    pub workload: WorkloadConfig,
    /// A planted failure.
    pub plant: Option<Plant>,
}

/// What a soak ended with.
#[derive(Debug)]
pub struct SoakReport {
    /// The verdict.
    pub verdict: Verdict,
    /// summary.json's path.
    pub summary: PathBuf,
    /// rss.png's path.
    pub plot: PathBuf,
    /// The runbook replay's mean recall@k, search steps run and passes
    /// completed (with `--workload`).
    pub recall: Option<(Option<f64>, usize, u64)>,
}

/// Parses `20m`, `90s`, `1h`, `1h30m` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (such as 20m, 90s, 1h30m)");
    if let Ok(secs) = s.trim().parse::<f64>() {
        return (secs.is_finite() && secs > 0.0)
            .then(|| Duration::from_secs_f64(secs))
            .ok_or_else(bad);
    }
    let mut total = 0f64;
    let mut num = String::new();
    for ch in s.trim().chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || total <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

/// How progress is shown: a bar on a terminal, a line every 10 s
/// otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    fn new(total: Duration) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total.as_secs().max(1));
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {eta} left  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines {
                last: Instant::now(),
            }
        }
    }

    fn update(&mut self, s: &Sample, total: Duration) {
        let msg = format!(
            "RSS {:.0} MiB  live {:.0} MiB  frag {:.2}  pressure {}",
            s.rss_bytes as f64 / 1048576.0,
            s.accounted_live_bytes() as f64 / 1048576.0,
            s.fragmentation,
            ["normal", "elevated", "critical"][usize::from(s.pressure_level.min(2))]
        );
        match self {
            Progress::Bar(bar) => {
                bar.set_position(s.t_secs as u64);
                bar.set_message(msg);
            }
            Progress::Lines { last } => {
                if last.elapsed() >= Duration::from_secs(10) {
                    *last = Instant::now();
                    eprintln!("soak: {:.0}/{:.0} s  {msg}", s.t_secs, total.as_secs_f64());
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Runs a soak (see the [module docs](self)).
///
/// # Errors
///
/// When the engine does not open or a file cannot be written; a failed
/// verdict is not an error (it is in the report).
pub fn run(c: &SoakConfig) -> Result<SoakReport, String> {
    std::fs::create_dir_all(&c.out_dir)
        .map_err(|e| format!("cannot create {}: {e}", c.out_dir.display()))?;
    let engine = Engine::open(c.engine.clone()).map_err(|e| e.to_string())?;
    let baseline = ebb_core::os::rss_bytes().unwrap_or(0);
    let load = Workload::start(&engine, &c.workload).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let warmup = verdict::warmup_secs(c.duration.as_secs_f64());
    let mut progress = Progress::new(c.duration);
    let mut samples: Vec<Sample> = Vec::new();
    let mut planted: Vec<Vec<u8>> = Vec::new();
    let mut leaked_scan = None;
    if c.plant == Some(Plant::Leak) {
        leaked_scan = engine.scan(workload::DATASET).ok();
    }
    let mut next = Duration::from_secs(1);
    while started.elapsed() < c.duration {
        let now = started.elapsed();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(200)));
            continue;
        }
        next += Duration::from_secs(1);
        let t = started.elapsed().as_secs_f64();
        plant_memory(c, t, warmup, &mut planted);
        let s = Sample::take(&engine, t);
        progress.update(&s, c.duration);
        samples.push(s);
    }
    progress.finish();
    let counters = load.counters.clone();
    let replay = load.replay.clone();
    load.stop();

    // The end: everything dropped and released.
    for d in engine.list_datasets() {
        let _ = engine.drop_dataset(&d.name);
    }
    // A worker mid-run (a rebuild takes seconds) holds its dataset until
    // it finishes: wait for every worker to be idle (at most 30 s) so the
    // drop has freed what it will.
    let idle_by = Instant::now() + Duration::from_secs(30);
    while Instant::now() < idle_by
        && engine
            .workers()
            .iter()
            .any(|w| w.state == ebb_engine::WorkerState::Running)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = engine.release_memory();
    std::thread::sleep(Duration::from_millis(500));
    let _ = engine.release_memory();
    let report = engine.leak_report();
    let tracked_live: u64 = engine
        .leak_tracker()
        .live_counts()
        .values()
        .map(|n| (*n).max(0) as u64)
        .sum();
    let mut end = EndFigures {
        rss_after_release: ebb_core::os::rss_bytes().unwrap_or(0),
        threads: ebb_core::os::thread_count().unwrap_or(0) as u64,
        fds: ebb_core::os::open_fd_count().unwrap_or(0) as u64,
        leak_groups: report.held.len(),
        tracked_live,
        ..EndFigures::default()
    };
    let engine_reserved_after = engine.budget().reserved_bytes();
    let smaps_after = ebb_core::os::memory_breakdown().ok().map(|m| {
        json!({"rss": m.rss_bytes, "anonymous": m.anonymous_bytes, "anon_huge": m.anon_huge_bytes, "lazy_free": m.lazy_free_bytes})
    });
    drop(leaked_scan);
    drop(planted);
    if c.plant == Some(Plant::Hung) {
        engine.spawn_stubborn_worker(
            true,
            Duration::from_secs(c.engine.shutdown_deadline_secs + 2),
        );
    }
    let close = engine.close_blocking().map_err(|e| e.to_string())?;
    end.close_secs = close.duration_secs;
    end.close_deadline_secs = close.deadline_secs;
    end.close_missed = close.deadline_missed;

    let verdict = verdict::judge(&samples, c.duration.as_secs_f64(), baseline, &end);
    let csv = c.out_dir.join("samples.csv");
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(&csv).map_err(|e| format!("{}: {e}", csv.display()))?,
    );
    sample::write_csv(&mut f, &samples).map_err(|e| format!("{}: {e}", csv.display()))?;
    drop(f);
    plot::draw(&c.out_dir, &samples, baseline, &verdict)?;
    let summary = c.out_dir.join("summary.json");
    let n = &counters;
    let body = json!({
        "passed": verdict.passed,
        "verdict": verdict.to_json(),
        "duration_secs": c.duration.as_secs_f64(),
        "samples": samples.len(),
        "baseline_rss_bytes": baseline,
        "end": {
            "rss_after_release_bytes": end.rss_after_release,
            "heap_after_release_bytes": ebb_leak::alloc::stats().current_bytes,
            "reserved_after_release_bytes": engine_reserved_after,
            "smaps_after_release": smaps_after,
            "threads": end.threads,
            "fds": end.fds,
            "leak_groups": end.leak_groups,
            "tracked_live": end.tracked_live,
            "close_secs": end.close_secs,
            "close_deadline_secs": end.close_deadline_secs,
            "close_missed": end.close_missed,
        },
        "load": {
            "vectors": n.vectors.load(Ordering::Relaxed),
            "records": n.records.load(Ordering::Relaxed),
            "deletes": n.deletes.load(Ordering::Relaxed),
            "searches": n.searches.load(Ordering::Relaxed),
            "refused": n.refused.load(Ordering::Relaxed),
            "cycles": n.cycles.load(Ordering::Relaxed),
            "snapshots": n.snapshots.load(Ordering::Relaxed),
            "errors": n.errors.load(Ordering::Relaxed),
        },
        "config": {
            "dim": c.workload.dim,
            "writers": c.workload.writers,
            "live_bytes": c.workload.live_bytes,
            "write_bytes_per_sec": c.workload.write_bytes_per_sec,
            "memory_limit_bytes": c.engine.memory_limit_bytes,
            "arena_max_live_ratio": c.engine.arena_max_live_ratio,
            "seed": c.workload.seed,
            "plant": c.plant.map(|p| format!("{p:?}").to_lowercase()),
        },
        "runbook": c.workload.replay.as_ref().map(|rc| replay.lock().to_json(rc)),
        "files": {"csv": csv, "png": c.out_dir.join("rss.png"), "svg": c.out_dir.join("rss.svg")},
    });
    std::fs::write(
        &summary,
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", summary.display()))?;
    let recall = c.workload.replay.as_ref().map(|_| {
        let r = replay.lock();
        (r.mean_recall(), r.searches.len(), r.passes_completed)
    });
    Ok(SoakReport {
        verdict,
        summary,
        plot: c.out_dir.join("rss.png"),
        recall,
    })
}

/// The planted bloat and growth (untracked memory, touched so it is
/// resident).
fn plant_memory(c: &SoakConfig, t: f64, warmup: f64, planted: &mut Vec<Vec<u8>>) {
    let live = c.workload.live_bytes as usize;
    match c.plant {
        Some(Plant::Bloat) if t >= warmup && planted.is_empty() => {
            planted.push(vec![1u8; live * 3 / 2]);
        }
        Some(Plant::Growth) => planted.push(vec![1u8; live / 50]),
        _ => {}
    }
}
