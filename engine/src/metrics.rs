//! The engine's metrics: one [`Scrape`] of everything it holds, read at
//! scrape time (stats structs and counters only: no lock a writer holds
//! for long, no work on the data path), as docs/metrics.md lists it.
//!
//! What a scrape reads: every dataset's arenas (`kv`, `payloads`), index
//! and pool through ebb-metrics' collectors with a `dataset` label, and the
//! dataset's own gauges; the budget (consumers `<dataset>/<part>`); the
//! compaction worker's events and duration histograms; the pressure
//! controller; the workers by state; the leak monitor and the engine's
//! tracker; the close duration once closed; the process.
//!
//! Bounded labels: datasets are labelled by name in name order up to
//! `metrics_dataset_labels` (64), the rest as `other` (their series summed,
//! their ratios left out); a capped dataset's budget consumers become
//! `other/<part>`; consumers outside any dataset (no `/` in the name, such
//! as the server's `http_bodies`) keep their name.

use std::sync::Arc;

use ebb_core::maintenance::MaintenanceKind;
use ebb_metrics::{Kind, LabelCap, OTHER, Scrape, collect};

use crate::Engine;
use crate::dataset::Dataset;
use crate::lifecycle::compaction::Outcome;
use crate::lifecycle::workers::WorkerState;

const KINDS: [MaintenanceKind; 3] = [
    MaintenanceKind::Arena,
    MaintenanceKind::Index,
    MaintenanceKind::Pool,
];
const OUTCOMES: [Outcome; 3] = [Outcome::Done, Outcome::Cancelled, Outcome::Failed];

impl Engine {
    /// Every metric of the engine now (see the [module docs](crate::metrics)).
    pub fn scrape(&self) -> Scrape {
        let mut s = Scrape::new();
        self.collect_metrics(&mut s);
        s
    }

    /// Adds the engine's metrics to `s` (a server adds its own around
    /// them).
    pub fn collect_metrics(&self, s: &mut Scrape) {
        let mut datasets: Vec<Arc<Dataset>> =
            self.inner.datasets.read().values().cloned().collect();
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        let mut cap = LabelCap::new(self.inner.config.metrics_dataset_labels as usize);
        s.gauge(
            "ebb_datasets",
            "Datasets the engine holds.",
            &[],
            datasets.len() as f64,
        );
        let mut labelled: Vec<(String, &str)> = Vec::with_capacity(datasets.len());
        for d in &datasets {
            let label = cap.value(&d.name);
            labelled.push((d.name.clone(), label));
            dataset(s, d, label);
        }
        let budget = self.inner.budget.stats();
        collect::budget_labelled(s, &budget, |consumer| {
            // A consumer of no dataset (a server's, say) keeps its name.
            let Some((ds, part)) = consumer.split_once('/') else {
                return consumer.to_string();
            };
            match labelled.iter().find(|(name, _)| name == ds) {
                Some((_, label)) if *label == OTHER => format!("{OTHER}/{part}"),
                Some(_) => consumer.to_string(),
                // A consumer of no dataset now (one being dropped).
                None => format!("{OTHER}/{part}"),
            }
        });
        self.collect_lifecycle(s);
        collect::leak_monitor(s, &self.leak_monitor_stats());
        let tracker = self.leak_tracker();
        collect::tracker(s, tracker.name(), &tracker.live_counts());
        collect::process(s);
    }

    fn collect_lifecycle(&self, s: &mut Scrape) {
        let lc = &self.inner.lifecycle;
        let stats = lc.compaction.stats();
        s.counter(
            "ebb_compaction_passes_total",
            "Compaction worker passes over every dataset.",
            &[],
            stats.passes_total as f64,
        );
        s.counter(
            "ebb_compaction_already_running_total",
            "Maintenance runs skipped because another run of the same consumer was going on.",
            &[],
            stats.already_running_total as f64,
        );
        for kind in KINDS {
            let k = [("kind", kind.as_str())];
            for outcome in OUTCOMES {
                s.counter(
                    "ebb_compaction_events_total",
                    "Maintenance runs by the workers, by kind and outcome.",
                    &[("kind", kind.as_str()), ("outcome", outcome.as_str())],
                    stats.events(kind, outcome) as f64,
                );
            }
            s.histogram(
                "ebb_compaction_duration_seconds",
                "Wall time of the workers' maintenance runs, by kind.",
                &k,
                lc.compaction.durations(kind),
            );
            let i = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
            s.counter(
                "ebb_compaction_released_bytes_total",
                "Resident bytes the workers' maintenance runs gave back, by kind.",
                &k,
                stats.bytes_released_total[i] as f64,
            );
        }
        let p = self.pressure_stats();
        let level = p.level.map_or(0.0, |l| l as u8 as f64);
        s.gauge(
            "ebb_pressure_level",
            "Memory pressure level: 0 normal, 1 elevated, 2 critical.",
            &[],
            level,
        );
        s.counter(
            "ebb_pressure_level_changes_total",
            "Pressure level changes since open.",
            &[],
            p.level_changes_total as f64,
        );
        s.counter(
            "ebb_pressure_writes_refused_total",
            "Writes refused at Critical.",
            &[],
            p.writes_refused_total as f64,
        );
        s.counter(
            "ebb_pressure_samples_total",
            "Memory samples the pressure controller took.",
            &[],
            p.samples_total as f64,
        );
        let workers = self.workers();
        for state in [
            WorkerState::Idle,
            WorkerState::Running,
            WorkerState::Stopped,
            WorkerState::Abandoned,
        ] {
            let n = workers.iter().filter(|w| w.state == state).count();
            s.gauge(
                "ebb_workers",
                "Background workers by state.",
                &[("state", state.as_str())],
                n as f64,
            );
        }
        s.describe(
            "ebb_close_duration_seconds",
            "Wall time of the engine's close (once it has closed).",
            Kind::Gauge,
        );
        if let Some(report) = lc.close_report.get() {
            s.gauge(
                "ebb_close_duration_seconds",
                "Wall time of the engine's close (once it has closed).",
                &[],
                report.duration_secs,
            );
        }
    }
}

/// One dataset's series, labelled `dataset=label`.
fn dataset(s: &mut Scrape, d: &Dataset, label: &str) {
    let l = [("dataset", label)];
    collect::arena(s, &d.kv.arena().stats(), &l);
    collect::arena(s, &d.vectors.payloads().stats(), &l);
    collect::index(s, &d.vectors.index().stats(), &l);
    collect::pool(s, &d.pool.stats(), &l);
    s.gauge(
        "ebb_dataset_records",
        "KV records of a dataset.",
        &l,
        d.kv.len() as f64,
    );
    s.gauge(
        "ebb_dataset_vectors",
        "Live vectors of a dataset.",
        &l,
        d.vectors.len() as f64,
    );
    s.gauge(
        "ebb_dataset_table_bytes",
        "Heap bytes of a dataset's lookup tables, by table.",
        &[("dataset", label), ("table", "kv_keys")],
        d.kv.table_bytes() as f64,
    );
    s.gauge(
        "ebb_dataset_table_bytes",
        "Heap bytes of a dataset's lookup tables, by table.",
        &[("dataset", label), ("table", "payload_map")],
        d.vectors.map_bytes() as f64,
    );
}
