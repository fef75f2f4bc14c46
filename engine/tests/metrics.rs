//! The engine's scrape: values agree with the stats they read, datasets
//! past the label cap are summed under `other` (their budget consumers
//! too), every documented engine family is there, and promtool reports
//! nothing on the 0.0.4 text.

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric};
use ebb_metrics::{Scrape, Value, text};

fn config() -> EngineConfig {
    EngineConfig {
        memory_limit_bytes: 4 << 30,
        metrics_dataset_labels: 4,
        ..EngineConfig::default()
    }
}

/// The value of the series `name` whose labels include every pair of
/// `labels`, summed over matches.
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let f = s.families().iter().find(|f| f.name == name)?;
    let mut found = None;
    for sample in &f.samples {
        let all = labels
            .iter()
            .all(|(k, v)| sample.labels.iter().any(|(a, b)| a == k && b == v));
        if all && let Value::Number(n) = sample.value {
            *found.get_or_insert(0.0) += n;
        }
    }
    found
}

#[test]
fn scraped_values_are_the_stats_they_read() {
    let engine = Engine::open(config()).unwrap();
    engine
        .create_dataset("a", DatasetConfig::new(4, Metric::L2))
        .unwrap();
    for i in 0..1000u32 {
        engine
            .put("a", format!("key{i}").as_bytes(), &[7u8; 200])
            .unwrap();
    }
    for i in 0..50u64 {
        engine
            .upsert_vector("a", i, &[i as f32, 1.0, 2.0, 3.0], Some(b"p"))
            .unwrap();
    }
    let stats = engine.dataset_stats("a").unwrap();
    let s = engine.scrape();
    let a = [("dataset", "a"), ("arena", "kv")];
    assert_eq!(
        value(&s, "ebb_arena_live_bytes", &a),
        Some(stats.kv_live_bytes as f64)
    );
    assert!(stats.kv_live_bytes >= 1000 * 200);
    assert_eq!(value(&s, "ebb_arena_records", &a), Some(1000.0));
    assert_eq!(
        value(&s, "ebb_dataset_records", &[("dataset", "a")]),
        Some(1000.0)
    );
    assert_eq!(
        value(&s, "ebb_dataset_vectors", &[("dataset", "a")]),
        Some(50.0)
    );
    assert_eq!(
        value(
            &s,
            "ebb_index_points",
            &[("dataset", "a"), ("index", "index"), ("state", "live")]
        )
        .map(|v| v as u64),
        Some(50)
    );
    assert_eq!(
        value(
            &s,
            "ebb_budget_consumer_reserved_bytes",
            &[("consumer", "a/kv")]
        ),
        Some(
            engine
                .budget()
                .stats()
                .consumers
                .iter()
                .find(|c| c.name == "a/kv")
                .unwrap()
                .reserved_bytes as f64
        )
    );
    assert_eq!(value(&s, "ebb_pressure_level", &[]), Some(0.0));
    assert_eq!(value(&s, "ebb_datasets", &[]), Some(1.0));
    for family in [
        "ebb_compaction_events_total",
        "ebb_compaction_duration_seconds",
        "ebb_compaction_released_bytes_total",
        "ebb_workers",
        "ebb_close_duration_seconds",
        "ebb_leak_checks_total",
        "ebb_leak_tracked_resources",
        "ebb_mempool_gets_total",
        "ebb_process_resident_memory_bytes",
        "ebb_budget_limit_bytes",
    ] {
        assert!(
            s.families().iter().any(|f| f.name == family),
            "{family} missing"
        );
    }
    ebb_testkit::promtool::assert_promtool_accepts(
        "scraped_values_are_the_stats_they_read",
        &text::encode(&s),
    );
    engine.close_blocking().unwrap();
    let closed = engine.scrape();
    assert!(value(&closed, "ebb_close_duration_seconds", &[]).is_some());
}

#[test]
fn datasets_past_the_cap_are_summed_under_other() {
    let engine = Engine::open(config()).unwrap();
    // The capped bucket's label is not a dataset name.
    assert!(matches!(
        engine.create_dataset("other", DatasetConfig::new(2, Metric::L2)),
        Err(ebb_engine::Error::BadName { .. })
    ));
    for d in 0..7 {
        let name = format!("d{d}");
        engine
            .create_dataset(&name, DatasetConfig::new(2, Metric::L2))
            .unwrap();
        for i in 0..=d {
            engine.put(&name, format!("k{i}").as_bytes(), b"v").unwrap();
        }
    }
    let s = engine.scrape();
    // Name order: d0..d3 keep their label, d4..d6 (5 + 6 + 7 records)
    // are `other`.
    for d in 0..4 {
        let name = format!("d{d}");
        assert_eq!(
            value(&s, "ebb_dataset_records", &[("dataset", &name)]),
            Some(d as f64 + 1.0)
        );
    }
    assert_eq!(
        value(&s, "ebb_dataset_records", &[("dataset", "other")]),
        Some(18.0)
    );
    assert_eq!(value(&s, "ebb_dataset_records", &[("dataset", "d5")]), None);
    let consumers: Vec<String> = s
        .families()
        .iter()
        .find(|f| f.name == "ebb_budget_consumer_reserved_bytes")
        .unwrap()
        .samples
        .iter()
        .map(|x| x.labels[0].1.clone())
        .collect();
    assert!(consumers.iter().any(|c| c == "other/kv"), "{consumers:?}");
    assert!(
        !consumers.iter().any(|c| c.starts_with("d5/")),
        "{consumers:?}"
    );
    // Ratios are not summed across datasets.
    let frag = s
        .families()
        .iter()
        .find(|f| f.name == "ebb_arena_fragmentation_ratio")
        .unwrap();
    assert!(
        frag.samples
            .iter()
            .all(|x| x.labels.iter().all(|(_, v)| v != "other"))
    );
    engine.close_blocking().unwrap();
}
