//! A real Prometheus (Debian's `prometheus`, started here on a free
//! loopback port with a 1 s scrape interval and a temporary storage
//! directory, stopped at the end) scrapes a running `ebb serve`; the
//! test reads `ebb_arena_live_bytes` back through Prometheus's query API
//! and checks the target is healthy (Prometheus asks for OpenMetrics, so
//! this also checks that encoding against the real parser). Skips, saying
//! why, where Prometheus is not installed; CI installs it.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_ebb_serve() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("ebb-test skipped: prometheus_scrapes_ebb_serve: prometheus is not installed");
        return;
    }
    let ebb = common::spawn_ebb(&["--memory-limit-bytes", "1073741824"]);
    let c = reqwest::Client::new();
    let r = c
        .post(ebb.url("/v1/datasets"))
        .json(&json!({"name": "scraped", "dim": 2, "metric": "l2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..200 {
        c.put(ebb.url(&format!("/v1/datasets/scraped/kv/k{i:03}")))
            .body(vec![7u8; 2000])
            .send()
            .await
            .unwrap();
    }
    let stats: Value = c
        .get(ebb.url("/v1/datasets/scraped"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live = stats["stats"]["kv_live_bytes"].as_u64().unwrap();

    let dir = std::env::temp_dir().join(format!("ebb-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let target = ebb.base.trim_start_matches("http://").to_string();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: ebb\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = common::free_port();
    let prom = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = "ebb_arena_live_bytes{dataset=\"scraped\",arena=\"kv\"}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    let value = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series; last answer {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = c
            .get(format!("{api}/query?query={}", encode(query)))
            .send()
            .await
        else {
            continue;
        };
        let Ok(body) = r.json::<Value>().await else {
            continue;
        };
        if let Some(v) = body["data"]["result"][0]["value"][1].as_str() {
            break v.parse::<f64>().unwrap();
        }
        last = body;
    };
    assert_eq!(value, live as f64);
    let targets: Value = c
        .get(format!("{api}/targets"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}");
    assert_eq!(t["lastError"], "", "{t}");
    drop(prom);
    ebb.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}
