//! The engine's reports as JSON, field by field with the engine's names
//! (the answers' shapes are part of the API: clients and checks read
//! them).

use base64::Engine as _;
use ebb_engine::{
    CloseReport, DatasetInfo, DatasetStats, Hit, IndexKind, Metric, PressureStats, ReleaseReport,
    SnapshotReport, WorkerInfo,
};
use ebb_metrics::{Scrape, Value as MetricValue};
use serde_json::{Map, Value, json};

/// A metric's name in requests and answers.
pub fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "l2",
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
    }
}

/// `GET /v1/datasets` entries.
pub fn dataset_info(d: &DatasetInfo) -> Value {
    json!({
        "name": d.name,
        "dim": d.config.dim,
        "metric": metric_name(d.config.metric),
        "index": match d.config.index {
            IndexKind::Native => "native",
            IndexKind::HnswRs => "hnsw_rs",
        },
        "records": d.records,
        "vectors": d.vectors,
        "reserved_bytes": d.reserved_bytes,
    })
}

/// A dataset's stats.
pub fn dataset_stats(s: &DatasetStats) -> Value {
    json!({
        "records": s.records,
        "kv_live_bytes": s.kv_live_bytes,
        "kv_resident_bytes": s.kv_resident_bytes,
        "kv_table_bytes": s.kv_table_bytes,
        "vectors": s.vectors,
        "index_deleted_points": s.index_deleted_points,
        "index_bytes": s.index_bytes,
        "payload_live_bytes": s.payload_live_bytes,
        "payload_resident_bytes": s.payload_resident_bytes,
        "payload_map_bytes": s.payload_map_bytes,
        "reserved_bytes": s.reserved_bytes,
    })
}

/// A search hit as JSON: the payload as `payload` when it is UTF-8, else
/// `payload: null` and the bytes as `payload_b64`. Serialized straight
/// from the hit (no `Value` tree per hit: search is the hot route).
#[derive(serde::Serialize)]
pub struct HitJson<'a> {
    id: u64,
    distance: f32,
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

impl<'a> HitJson<'a> {
    /// The JSON form of `h`.
    pub fn new(h: &'a Hit) -> HitJson<'a> {
        let (payload, payload_b64) = match &h.payload {
            None => (None, None),
            Some(p) => match std::str::from_utf8(p) {
                Ok(text) => (Some(text), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&p[..])),
                ),
            },
        };
        HitJson {
            id: h.id,
            distance: h.distance,
            payload,
            payload_b64,
        }
    }
}

/// `{"hits": [...]}`.
#[derive(serde::Serialize)]
pub struct SearchJson<'a> {
    /// The hits, closest first.
    pub hits: Vec<HitJson<'a>>,
}

/// What a release or compaction gave back.
pub fn release(r: &ReleaseReport) -> Value {
    json!({
        "arena_bytes": r.arena_bytes,
        "index_bytes": r.index_bytes,
        "pool_bytes": r.pool_bytes,
        "table_bytes": r.table_bytes,
        "total_bytes": r.total_bytes(),
        "allocator_trimmed": r.allocator_trimmed,
        "failures": r.failures,
        "cancelled": r.cancelled,
        "duration_secs": r.duration_secs,
    })
}

/// A committed snapshot.
pub fn snapshot(r: &SnapshotReport) -> Value {
    json!({
        "generation": r.generation,
        "manifest": r.manifest.display().to_string(),
        "datasets": r.datasets,
        "files": r.files,
        "bytes": r.bytes,
        "records": r.records,
        "vectors": r.vectors,
        "removed": r.removed,
        "duration_secs": r.duration_secs,
    })
}

/// What close did.
pub fn close(r: &CloseReport) -> Value {
    json!({
        "duration_secs": r.duration_secs,
        "deadline_secs": r.deadline_secs,
        "deadline_missed": r.deadline_missed,
        "missed": r.missed.iter().map(|m| json!({
            "name": m.name, "blocking": m.blocking, "running_secs": m.running_secs,
        })).collect::<Vec<_>>(),
        "snapshot": r.snapshot.as_ref().map(snapshot),
        "snapshot_error": r.snapshot_error,
        "snapshot_secs": r.snapshot_secs,
        "writes_unfinished": r.writes_unfinished,
    })
}

/// One worker of the audit.
pub fn worker(w: &WorkerInfo) -> Value {
    json!({
        "name": w.name,
        "owner": w.owner,
        "purpose": w.purpose,
        "interval_secs": w.interval_secs,
        "stop_condition": w.stop_condition,
        "state": w.state.as_str(),
        "age_secs": w.age_secs,
        "running_secs": w.running_secs,
    })
}

/// The pressure controller's state and last sample.
pub fn pressure(p: &PressureStats) -> Value {
    let s = &p.last;
    json!({
        "level": p.level.map(|l| l.as_str()),
        "level_changes_total": p.level_changes_total,
        "writes_refused_total": p.writes_refused_total,
        "samples_total": p.samples_total,
        "budget_exit": p.budget_exit,
        "last": {
            "rss_bytes": s.rss_bytes,
            "limit_bytes": s.limit_bytes,
            "soft_limit_ratio": s.soft_limit_ratio,
            "reserved_bytes": s.reserved_bytes,
            "budget_available_bytes": s.budget_available_bytes,
            "arena_live_bytes": s.arena_live_bytes,
            "arena_resident_bytes": s.arena_resident_bytes,
            "cgroup_limit_bytes": s.cgroup_limit_bytes,
            "psi_some_avg10": s.psi_some_avg10,
        },
    })
}

/// Every series of a scrape as `{"name{label=value,...}": value}`, grouped
/// by the `dataset` label (`""` for series without one): the whole of
/// every arena's, pool's, index's and consumer's stats, under the metric
/// names docs/metrics.md explains.
pub fn scrape_by_dataset(s: &Scrape) -> Map<String, Value> {
    let mut out = Map::new();
    for f in s.families() {
        for sample in &f.samples {
            let dataset = sample
                .labels
                .iter()
                .find(|(k, _)| *k == "dataset")
                .map_or("", |(_, v)| v.as_str());
            let rest: Vec<String> = sample
                .labels
                .iter()
                .filter(|(k, _)| *k != "dataset")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let key = if rest.is_empty() {
                f.name.to_string()
            } else {
                format!("{}{{{}}}", f.name, rest.join(","))
            };
            let value = match &sample.value {
                MetricValue::Number(n) => json_number(*n),
                MetricValue::Histogram(h) => json!({"count": h.count, "sum": json_number(h.sum)}),
            };
            let group = out
                .entry(dataset.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = group {
                m.insert(key, value);
            }
        }
    }
    out
}

/// A number JSON can hold (NaN and infinities become null).
fn json_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}
