//! The replay of a [`Runbook`] during a soak: one thread runs its steps
//! against a dataset of its own (`runbook-<name>`), pass after pass (the
//! dataset dropped and created again between passes) until the soak
//! stops, and measures recall@k at every search step against brute force
//! over the points live at that step.
//!
//! Writes refused for memory back off and retry, so every pass applies
//! every step; a step cut by the soak's end leaves its pass incomplete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, Metric};
use parking_lot::Mutex;
use serde_json::json;

use super::runbook::{self, Operation, Runbook};
use super::workload::{LoadCounters, nap, refused};

/// Rows per ingested batch.
const BATCH: u64 = 1024;

/// A tag not holding any id.
const VACANT: u32 = u32::MAX;
// Every id fits the tag map's u32 below VACANT.
const _: () = assert!(runbook::MAX_POINTS < VACANT as u64);

/// What the replay runs.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The runbook.
    pub runbook: Runbook,
    /// Where it came from (for the summary).
    pub file: String,
    /// Queries per search step.
    pub queries: usize,
    /// Neighbours per query (recall@k).
    pub k: usize,
    /// The vectors' and queries' seed.
    pub seed: u64,
}

/// One search step of one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchRecord {
    /// Its step number.
    pub step: u64,
    /// The pass (from 0).
    pub pass: u64,
    /// Live points when it ran.
    pub live_points: u64,
    /// Mean recall@k over the queries (`None` with no live point).
    pub recall: Option<f64>,
    /// Seconds the engine took for all queries.
    pub search_secs: f64,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    /// Passes that ran every step.
    pub passes_completed: u64,
    /// Every search step run.
    pub searches: Vec<SearchRecord>,
    /// Vectors inserted or replaced.
    pub written: u64,
    /// Tags deleted.
    pub deleted: u64,
    /// An error that stopped the replay, if one did.
    pub failed: Option<String>,
}

impl ReplayReport {
    /// Mean recall over every search step with live points.
    pub fn mean_recall(&self) -> Option<f64> {
        let r: Vec<f64> = self.searches.iter().filter_map(|s| s.recall).collect();
        (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64)
    }

    /// The summary's `runbook` object.
    pub fn to_json(&self, c: &ReplayConfig) -> serde_json::Value {
        let mut per_step: Vec<(u64, Vec<f64>, u64)> = Vec::new();
        for s in &self.searches {
            let Some(r) = s.recall else { continue };
            match per_step.iter_mut().find(|p| p.0 == s.step) {
                Some(p) => p.1.push(r),
                None => per_step.push((s.step, vec![r], s.live_points)),
            }
        }
        json!({
            "file": c.file,
            "dataset": c.runbook.name,
            "dim": c.runbook.dim,
            "max_pts": c.runbook.max_pts,
            "steps": c.runbook.steps.len(),
            "queries": c.queries,
            "k": c.k,
            "passes_completed": self.passes_completed,
            "written": self.written,
            "deleted": self.deleted,
            "failed": self.failed,
            "recall_at_k_mean": self.mean_recall(),
            "search_steps": per_step.iter().map(|(step, r, live)| json!({
                "step": step,
                "live_points_first_pass": live,
                "passes": r.len(),
                "recall_at_k_mean": r.iter().sum::<f64>() / r.len() as f64,
                "recall_at_k_min": r.iter().copied().fold(f64::INFINITY, f64::min),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The dataset a runbook replays into: `runbook-` and its name, cut to
/// the engine's name rules.
pub fn dataset_name(runbook: &Runbook) -> String {
    let clean: String = runbook
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(ebb_engine::MAX_NAME_BYTES - 8)
        .collect();
    format!("runbook-{clean}")
}

/// Runs passes until `stop`, recording into `report`.
pub fn run(
    engine: &Engine,
    stop: &AtomicBool,
    n: &LoadCounters,
    c: &ReplayConfig,
    report: &Mutex<ReplayReport>,
) {
    let queries = runbook::queries(c.seed, c.runbook.dim, c.queries);
    let name = dataset_name(&c.runbook);
    let r = Replay {
        engine,
        stop,
        n,
        c,
        name: &name,
        report,
    };
    let mut pass = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let _ = engine.drop_dataset(&name);
        match engine.create_dataset(&name, DatasetConfig::new(c.runbook.dim, Metric::L2)) {
            Ok(()) => {}
            Err(e) if refused(&e) => {
                n.refused.fetch_add(1, Ordering::Relaxed);
                nap(stop, Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                report.lock().failed = Some(format!("create {name}: {e}"));
                return;
            }
        }
        match r.pass(&queries, pass) {
            Ok(true) => report.lock().passes_completed += 1,
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "soak: the runbook replay stopped");
                n.errors.fetch_add(1, Ordering::Relaxed);
                report.lock().failed = Some(e);
                return;
            }
        }
        pass += 1;
    }
}

/// What every step of a replay uses.
struct Replay<'a> {
    engine: &'a Engine,
    stop: &'a AtomicBool,
    n: &'a LoadCounters,
    c: &'a ReplayConfig,
    name: &'a str,
    report: &'a Mutex<ReplayReport>,
}

impl Replay<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// One pass over every step; `Ok(false)` when the soak stopped it.
    fn pass(&self, queries: &[f32], pass: u64) -> Result<bool, String> {
        let points = self.c.runbook.max_pts as usize;
        let mut tags = Vec::new();
        tags.try_reserve_exact(points)
            .map_err(|_| format!("no memory for the tag map of {points} points"))?;
        tags.resize(points, VACANT);
        for step in &self.c.runbook.steps {
            if self.stopped() {
                return Ok(false);
            }
            let at = |e: String| format!("step {}: {e}", step.number);
            let done = match step.operation {
                Operation::Insert { start, end } => {
                    self.write(start, start, end, &mut tags).map_err(at)?
                }
                Operation::Replace {
                    tags_start,
                    tags_end,
                    ids_start,
                    ..
                } => self
                    .write(tags_start, ids_start, tags_end, &mut tags)
                    .map_err(at)?,
                Operation::Delete { start, end } => {
                    let mut deleted = 0;
                    for tag in start..end {
                        tags[tag as usize] = VACANT;
                        let gone = self
                            .engine
                            .delete_vector(self.name, tag)
                            .map_err(|e| at(e.to_string()))?;
                        deleted += u64::from(gone);
                    }
                    self.n.deletes.fetch_add(deleted, Ordering::Relaxed);
                    self.report.lock().deleted += deleted;
                    true
                }
                Operation::Search => {
                    let record = self.search(queries, &tags, step.number, pass).map_err(at)?;
                    let nq = queries.len() / self.c.runbook.dim;
                    self.n.searches.fetch_add(nq as u64, Ordering::Relaxed);
                    self.report.lock().searches.push(record);
                    true
                }
            };
            if !done {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores tags `tags_from..tags_end` with the vectors of ids from
    /// `ids_from`, in batches, retrying what memory refuses; `Ok(false)`
    /// when the soak stopped it.
    fn write(
        &self,
        tags_from: u64,
        ids_from: u64,
        tags_end: u64,
        tags: &mut [u32],
    ) -> Result<bool, String> {
        let dim = self.c.runbook.dim;
        let mut tag = tags_from;
        while tag < tags_end {
            let rows = BATCH.min(tags_end - tag);
            let first_id = ids_from + (tag - tags_from);
            let batch_tags: Vec<u64> = (tag..tag + rows).collect();
            let mut values = vec![0f32; rows as usize * dim];
            for (k, chunk) in values.chunks_mut(dim).enumerate() {
                runbook::vector_of(self.c.seed, first_id + k as u64, chunk);
            }
            let payloads = batch_tags.iter().map(|t| Some(t.to_le_bytes())).collect();
            let batch = ebb_engine::vector_batch(dim, batch_tags, values, payloads)
                .map_err(|e| e.to_string())?;
            loop {
                match self.engine.ingest(self.name, &batch) {
                    Ok(k) => {
                        self.n.vectors.fetch_add(k as u64, Ordering::Relaxed);
                        self.report.lock().written += k as u64;
                        break;
                    }
                    Err(e) if refused(&e) => {
                        self.n.refused.fetch_add(1, Ordering::Relaxed);
                        nap(self.stop, Duration::from_millis(50));
                        if self.stopped() {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            for k in 0..rows {
                // Ids are below max_pts <= MAX_POINTS < u32::MAX (parse).
                tags[(tag + k) as usize] = (first_id + k) as u32;
            }
            tag += rows;
        }
        Ok(true)
    }

    /// Runs every query and scores it against brute force.
    fn search(
        &self,
        queries: &[f32],
        tags: &[u32],
        step: u64,
        pass: u64,
    ) -> Result<SearchRecord, String> {
        let (dim, k) = (self.c.runbook.dim, self.c.k);
        let live = || {
            tags.iter()
                .enumerate()
                .filter(|(_, id)| **id != VACANT)
                .map(|(t, id)| (t as u64, u64::from(*id)))
        };
        let live_points = live().count() as u64;
        let truth = runbook::ground_truth(self.c.seed, dim, queries, k, live());
        let started = Instant::now();
        let mut found = Vec::with_capacity(truth.len());
        for q in queries.chunks(dim) {
            let hits = self
                .engine
                .search(self.name, q, k)
                .map_err(|e| e.to_string())?;
            found.push(hits.into_iter().map(|h| h.id).collect::<Vec<u64>>());
        }
        let search_secs = started.elapsed().as_secs_f64();
        let want = (k as u64).min(live_points) as f64;
        let recall = (live_points > 0).then(|| {
            let hit: usize = truth
                .iter()
                .zip(&found)
                .map(|(t, f)| f.iter().filter(|id| t.contains(id)).count())
                .sum();
            hit as f64 / (want * truth.len() as f64)
        });
        Ok(SearchRecord {
            step,
            pass,
            live_points,
            recall,
            search_secs,
        })
    }
}
