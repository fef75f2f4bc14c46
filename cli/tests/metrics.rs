//! `/metrics` of a running server: promtool reports nothing on the 0.0.4
//! text, OpenMetrics only when Accept asks for it, and the values agree
//! with the stats they read (arena live bytes after a known ingest).

mod common;

use reqwest::Client;
use serde_json::{Value, json};

/// The value of the first series `name{labels}` in a 0.0.4 text body.
fn series(body: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}");
    body.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_agree_with_the_stats() {
    let s = common::start(None, None).await;
    let c = Client::new();
    let r = c
        .post(s.url("/v1/datasets"))
        .json(&json!({"name": "m", "dim": 2, "metric": "l2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..500 {
        let r = c
            .put(s.url(&format!("/v1/datasets/m/kv/key{i:04}")))
            .body(vec![b'x'; 1000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // A 404 and a 400 so the status classes show.
    c.get(s.url("/v1/datasets/m/kv/none")).send().await.unwrap();
    c.get(s.url("/nowhere")).send().await.unwrap();

    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], ebb_metrics::text::CONTENT_TYPE);
    let body = r.text().await.unwrap();
    ebb_testkit::promtool::assert_promtool_accepts("metrics_pass_promtool", &body);

    let stats: Value = c
        .get(s.url("/v1/datasets/m"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = stats["stats"]["kv_live_bytes"].as_f64().unwrap();
    // 500 records of key (7 B), value (1000 B) and their length prefixes.
    assert!(live >= 500.0 * 1007.0, "{live}");
    assert_eq!(
        series(&body, "ebb_arena_live_bytes", "dataset=\"m\",arena=\"kv\""),
        Some(live)
    );
    assert_eq!(
        series(&body, "ebb_dataset_records", "dataset=\"m\""),
        Some(500.0)
    );
    assert_eq!(
        series(
            &body,
            "ebb_http_requests_total",
            "route=\"/v1/datasets/{name}/kv/{key}\",status=\"2xx\""
        ),
        Some(500.0)
    );
    assert_eq!(
        series(
            &body,
            "ebb_http_requests_total",
            "route=\"/v1/datasets/{name}/kv/{key}\",status=\"4xx\""
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &body,
            "ebb_http_requests_total",
            "route=\"unmatched\",status=\"4xx\""
        ),
        Some(1.0)
    );
    assert!(body.contains("ebb_http_request_duration_seconds_bucket{route=\"/v1/datasets/{name}/kv/{key}\",le=\"+Inf\"} 501\n"));
    for family in [
        "ebb_process_resident_memory_bytes",
        "ebb_budget_limit_bytes",
        "ebb_pressure_level",
        "ebb_compaction_events_total",
        "ebb_mempool_gets_total",
        "ebb_index_points",
    ] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert!(!body.contains("# EOF"));

    let om = c
        .get(s.url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        ebb_metrics::text::OPENMETRICS_CONTENT_TYPE
    );
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE ebb_http_requests counter\n"));
    s.stop().await;
}
