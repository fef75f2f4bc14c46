//! `peers lifecycle`: the engine's lifecycle figures, each scenario in a
//! child process of its own (`--child NAME`; they read RSS and time close),
//! on the engine's defaults unless a scenario says otherwise:
//!
//! - `close_compaction`: close while the compaction worker is compacting
//!   an arena of `--bytes` of 4000 B records with three in four deleted
//!   (goal: a cooperative close within 100 ms);
//! - `close_rebuild`: close while it rebuilds an index of `--points`
//!   128-d vectors with three in ten deleted (goal: within 100 ms);
//! - `close_hung`: close with an async and a blocking worker that ignore
//!   cancellation, the deadline at 1 s (goal: returns within the deadline
//!   + 50 ms);
//! - `burst`: a write burst crossing the soft limit; the time to Elevated
//!   (goal: one `pressure_interval_ms` + 50 ms) and from Elevated to the
//!   first byte given back by the compaction it woke (goal: 500 ms);
//! - `cgroup`: a 2 GiB write workload in a memory cgroup of 768 MiB
//!   (goal: the cgroup's peak at most the limit less 5 %, never
//!   OOM-killed); skipped with the reason where no cgroup can be made.
//!
//! Without `data_dir`: the close figures are the workers' (a closing
//! snapshot's time is the snapshot's, measured by `peers engine`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use arrow_array::RecordBatch;
use ebb_engine::{
    DatasetConfig, Engine, EngineConfig, Error, MaintenanceKind, Metric, Outcome, PressureLevel,
    WorkerState,
};
use ebb_testkit::cgroup::{CGROUP_ENV, MemoryCgroup};
use serde_json::{Value, json};

use crate::Rng;

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 5] = [
    "close_compaction",
    "close_rebuild",
    "close_hung",
    "burst",
    "cgroup",
];

/// The cgroup's hard limit.
pub const CGROUP_LIMIT: u64 = 768 << 20;
/// What the cgroup workload tries to write.
pub const CGROUP_WORKLOAD: u64 = 2 << 30;
const RECORD: usize = 4000;
const DIM: usize = 128;

/// The sizes a run uses.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Bytes of records in `close_compaction`.
    pub bytes: u64,
    /// Points in `close_rebuild`.
    pub points: usize,
    /// The seed of the vectors.
    pub seed: u64,
}

fn rss() -> u64 {
    ebb_core::os::rss_bytes().unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn record(i: u32) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; RECORD];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Waits until the `worker`'s step for `dataset` runs.
fn wait_for_step(engine: &Engine, worker: &str, dataset: &str, within: Duration) -> Result<()> {
    let name = format!("{worker}/{dataset}");
    let deadline = Instant::now() + within;
    let running = || {
        engine
            .workers()
            .iter()
            .any(|w| w.name == name && w.state == WorkerState::Running)
    };
    // Or over already (a small scale's step can be quicker than a poll).
    let done = || {
        engine
            .compaction_events()
            .iter()
            .any(|e| e.dataset == dataset)
    };
    while !running() && !done() {
        ensure!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Only woken, never on its own schedule: the scenario says when.
fn woken_only() -> EngineConfig {
    EngineConfig {
        compaction_interval_secs: 3600,
        compact_when_due: false,
        ..EngineConfig::default()
    }
}

/// The engine's closing figures and the compaction event it cut short.
fn close_figures(engine: &Engine, kind: MaintenanceKind) -> Result<Value> {
    let started = Instant::now();
    let report = engine.close_blocking()?;
    let close = started.elapsed();
    ensure!(report.missed.is_empty(), "missed workers: {report:?}");
    // None if close cancelled the step before its part began.
    let event = engine
        .compaction_events()
        .into_iter()
        .find(|e| e.kind == kind);
    Ok(json!({
        "close_ms": ms(close),
        "deadline_missed": report.deadline_missed,
        "step_outcome": event.as_ref().map_or("not begun", |e| e.outcome.as_str()),
        "step_ran_ms": event.map_or(0.0, |e| (e.duration_secs * 1e6).round() / 1e3),
    }))
}

fn close_compaction(scale: Scale) -> Result<Value> {
    let engine = Engine::open(woken_only())?;
    engine.create_dataset("kv", DatasetConfig::new(2, Metric::L2))?;
    let records = (scale.bytes / RECORD as u64) as u32;
    for i in 0..records {
        engine.put("kv", &i.to_le_bytes(), &record(i))?;
    }
    for i in (0..records).filter(|i| i % 4 != 0) {
        engine.delete("kv", &i.to_le_bytes())?;
    }
    engine.wake_compaction();
    wait_for_step(&engine, "compaction", "kv", Duration::from_secs(10))?;
    // Into the moving, past the step's start.
    std::thread::sleep(Duration::from_millis(10));
    let mut v = close_figures(&engine, MaintenanceKind::Arena)?;
    v["bytes"] = json!(u64::from(records) * RECORD as u64);
    Ok(v)
}

fn close_rebuild(scale: Scale) -> Result<Value> {
    let mut rng = Rng::new(scale.seed);
    let vectors = ebb_testkit::clustered_vectors(&mut rng, scale.points, DIM, 100, 0.3);
    let ids: Vec<u64> = (0..scale.points as u64).collect();
    let batches: Vec<RecordBatch> = ids
        .chunks(1024)
        .zip(vectors.chunks(1024 * DIM))
        .map(|(i, v)| crate::engine_vectors::batch(i, v, DIM))
        .collect();
    let engine = Engine::open(woken_only())?;
    engine.create_dataset("v", DatasetConfig::new(DIM, Metric::L2))?;
    for b in &batches {
        engine.ingest("v", b)?;
    }
    engine.flush("v")?;
    for id in ids.iter().filter(|&&id| id % 10 < 3) {
        engine.delete_vector("v", *id)?;
    }
    engine.wake_compaction();
    wait_for_step(&engine, "rebuild", "v", Duration::from_secs(10))?;
    // Well into the rebuild (it takes seconds at 100k points).
    std::thread::sleep(Duration::from_millis(200));
    let mut v = close_figures(&engine, MaintenanceKind::Index)?;
    v["points"] = json!(scale.points);
    Ok(v)
}

fn close_hung() -> Result<Value> {
    let engine = Engine::open(EngineConfig {
        shutdown_deadline_secs: 1,
        ..EngineConfig::default()
    })?;
    engine.spawn_stubborn_worker(false, Duration::from_secs(30));
    engine.spawn_stubborn_worker(true, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let report = engine.close_blocking()?;
    let close = started.elapsed();
    ensure!(
        report.deadline_missed && report.missed.len() == 2,
        "{report:?}"
    );
    Ok(json!({
        "deadline_ms": 1000.0,
        "close_ms": ms(close),
        "over_deadline_ms": ms(close) - 1000.0,
        "missed": report.missed.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
    }))
}

/// A base dataset with 60 % live (not due at the default 0.5, due at the
/// tightened 0.8), then a burst into another crossing the soft limit.
fn burst() -> Result<Value> {
    let config = woken_only();
    let interval = config.pressure_interval_ms;
    let ratio = config.soft_limit_ratio;
    let engine = Engine::open(config)?;
    engine.create_dataset("base", DatasetConfig::new(2, Metric::L2))?;
    let base = (128u32 << 20) / RECORD as u32;
    for i in 0..base {
        engine.put("base", &i.to_le_bytes(), &record(i))?;
    }
    for i in (0..base).filter(|i| i % 5 < 2) {
        engine.delete("base", &i.to_le_bytes())?;
    }
    engine.create_dataset("burst", DatasetConfig::new(2, Metric::L2))?;
    let soft = rss() + (48 << 20);
    engine
        .budget()
        .set_limit(Some((soft as f64 / ratio) as u64));
    std::thread::sleep(Duration::from_millis(interval * 3));
    ensure!(
        engine.pressure_level() == PressureLevel::Normal,
        "not Normal before the burst: {:?}",
        engine.pressure_stats()
    );
    let value = record(7);
    let mut i = 0u32;
    while rss() <= soft {
        engine.put("burst", &i.to_le_bytes(), &value)?;
        i += 1;
        ensure!(i < 1 << 20, "the burst never crossed the soft limit");
    }
    let crossed = Instant::now();
    let deadline = crossed + Duration::from_secs(10);
    let mut elevated = None;
    let mut released = None;
    while released.is_none() && Instant::now() < deadline {
        if elevated.is_none() && engine.pressure_level() >= PressureLevel::Elevated {
            elevated = Some(crossed.elapsed());
        }
        if engine
            .compaction_events()
            .iter()
            .any(|e| e.kind == MaintenanceKind::Arena && e.bytes_released > 0)
        {
            released = Some(crossed.elapsed());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let (elevated, released) = (
        elevated.context("never Elevated")?,
        released.context("nothing released")?,
    );
    let first = engine
        .compaction_events()
        .into_iter()
        .find(|e| e.kind == MaintenanceKind::Arena && e.outcome == Outcome::Done);
    engine.close_blocking()?;
    Ok(json!({
        "interval_ms": interval,
        "burst_records": i,
        "to_elevated_ms": ms(elevated),
        "elevated_over_interval_ms": ms(elevated) - interval as f64,
        "to_released_ms": ms(released),
        "elevated_to_released_ms": ms(released) - ms(elevated),
        "released_bytes": first.map_or(0, |e| e.bytes_released),
    }))
}

/// The child inside the cgroup: writes until [`CGROUP_WORKLOAD`] was
/// tried, then reads back every record it was told was accepted.
fn cgroup_child() -> Result<Value> {
    let path = std::env::var_os(CGROUP_ENV).context("no cgroup given")?;
    MemoryCgroup::join(path.as_ref())?;
    let engine = Engine::open(EngineConfig::default())?;
    let limit = engine.config().memory_limit_bytes;
    engine.create_dataset("w", DatasetConfig::new(2, Metric::L2))?;
    let (mut accepted, mut pressure, mut over_budget) = (Vec::new(), 0u64, 0u64);
    let started = Instant::now();
    for i in 0..(CGROUP_WORKLOAD / RECORD as u64) as u32 {
        match engine.put("w", &i.to_le_bytes(), &record(i)) {
            Ok(()) => accepted.push(i),
            Err(Error::MemoryPressure { .. }) => pressure += 1,
            Err(Error::OverBudget(_)) => over_budget += 1,
            Err(e) => bail!("put {i}: {e}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for &i in &accepted {
        let got = engine
            .get("w", &i.to_le_bytes())?
            .context("an accepted record")?;
        ensure!(*got == record(i)[..], "record {i} changed");
    }
    engine.close_blocking()?;
    Ok(json!({
        "memory_limit_bytes": limit,
        "accepted": accepted.len(),
        "memory_pressure_refusals": pressure,
        "over_budget_refusals": over_budget,
        "workload_secs": secs,
    }))
}

/// Runs the child `name` of `exe` (with `env`), its JSON line parsed.
fn run(
    exe: &std::path::Path,
    name: &str,
    scale: Scale,
    env: &[(&str, &std::ffi::OsStr)],
) -> Result<Value> {
    let output = std::process::Command::new(exe)
        .args(["lifecycle", "--child", name])
        .args(["--bytes", &scale.bytes.to_string()])
        .args(["--points", &scale.points.to_string()])
        .args(["--seed", &scale.seed.to_string()])
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("spawning the {name} child"))?;
    if !output.status.success() {
        bail!(
            "{name} child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8(output.stdout)?;
    let mut v: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("{name} child printed {line:?}"))?;
    v["scenario"] = json!(name);
    Ok(v)
}

/// Runs one scenario in this process (the child side).
///
/// # Errors
///
/// On an unknown scenario or a failed step.
pub fn run_child(name: &str, scale: Scale) -> Result<Value> {
    match name {
        "close_compaction" => close_compaction(scale),
        "close_rebuild" => close_rebuild(scale),
        "close_hung" => close_hung(),
        "burst" => burst(),
        "cgroup" => cgroup_child(),
        other => bail!("unknown scenario {other:?} ({})", SCENARIOS.join(", ")),
    }
}

/// Runs each of `scenarios` in a child of `exe`; the cgroup scenario makes
/// its cgroup here and reads its peak, or reports why it was skipped.
///
/// # Errors
///
/// If a child fails.
pub fn run_all(exe: &std::path::Path, scenarios: &[&str], scale: Scale) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for &s in scenarios {
        if s != "cgroup" {
            out.push(run(exe, s, scale, &[])?);
            continue;
        }
        let cgroup = match MemoryCgroup::create("peers-lifecycle", CGROUP_LIMIT) {
            Ok(cg) => cg,
            Err(why) => {
                out.push(json!({ "scenario": s, "skipped": why }));
                continue;
            }
        };
        let mut v = run(exe, s, scale, &[(CGROUP_ENV, cgroup.path().as_os_str())])?;
        let peak = cgroup.peak_bytes().context("the cgroup's peak")?;
        v["cgroup_version"] = json!(format!("{:?}", cgroup.version()));
        v["cgroup_limit_bytes"] = json!(CGROUP_LIMIT);
        v["peak_bytes"] = json!(peak);
        v["peak_over_limit"] = json!((peak as f64 / CGROUP_LIMIT as f64 * 1e4).round() / 1e4);
        v["oom_killed"] = json!(cgroup.oom_killed());
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_close_scenarios_run_at_small_scale() {
        let scale = Scale {
            bytes: 64 << 20,
            points: 2000,
            seed: 7,
        };
        let v = run_child("close_hung", scale).unwrap();
        assert!(v["over_deadline_ms"].as_f64().unwrap() < 1000.0, "{v}");
        let v = run_child("close_compaction", scale).unwrap();
        assert!(v["close_ms"].as_f64().unwrap() < 5000.0, "{v}");
        assert!(run_child("faiss", scale).is_err());
    }
}
