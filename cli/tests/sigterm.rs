//! SIGTERM during load: the server closes the engine with its deadline
//! and exits 0 within it; every write it acknowledged is in the closing
//! snapshot (a restart on the same data_dir reads each back); writes
//! during the close are refused with 503, never a 500.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

const DEADLINE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_closes_within_the_deadline() {
    let dir = std::env::temp_dir().join(format!("ebb-sigterm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_arg = dir.display().to_string();
    let deadline = DEADLINE_SECS.to_string();
    let args = [
        "--data-dir",
        dir_arg.as_str(),
        "--shutdown-deadline-secs",
        deadline.as_str(),
        "--memory-limit-bytes",
        "1073741824",
    ];
    let mut ebb = common::spawn_ebb(&args);
    let c = reqwest::Client::new();
    let r = c
        .post(ebb.url("/v1/datasets"))
        .json(&json!({"name": "load", "dim": 4, "metric": "l2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, acked, bad, stop) = (c.clone(), acked.clone(), bad.clone(), stop.clone());
        let base = ebb.base.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i}");
                i += 1;
                let r = c
                    .put(format!("{base}/v1/datasets/load/kv/{key}"))
                    .body(vec![b'v'; 512])
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 204 => acked.lock().push(key),
                    Ok(r) if r.status() == 503 => {}
                    Ok(r) => bad.lock().push(format!("{key}: {}", r.status())),
                    // The listener is gone: the server is shutting down.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!acked.lock().is_empty());
    let sent = Instant::now();
    ebb.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let s = ebb.wait_for(Duration::from_secs(DEADLINE_SECS + 5));
        (s, ebb)
    })
    .await
    .unwrap();
    let (status, ebb) = status;
    let took = sent.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let status = status.expect("ebb serve exited");
    assert!(
        status.success(),
        "exit {status:?}; output {:?}",
        ebb.lines()
    );
    assert!(
        took < Duration::from_secs(DEADLINE_SECS),
        "exited {took:?} after SIGTERM"
    );
    assert!(bad.lock().is_empty(), "{:?}", bad.lock());
    let lines = ebb.lines();
    let report = lines
        .iter()
        .find_map(|l| l.strip_prefix("ebb serve: close report "))
        .expect("the close report is printed");
    let report: Value = serde_json::from_str(report).unwrap();
    assert_eq!(report["deadline_missed"], false, "{report}");
    assert_eq!(report["writes_unfinished"], 0, "{report}");
    assert!(report["snapshot"]["records"].as_u64().unwrap() >= acked.lock().len() as u64);
    drop(ebb);

    // Every acknowledged write came back.
    let again = common::spawn_ebb(&args);
    let acked = acked.lock().clone();
    for key in &acked {
        let r = c
            .get(again.url(&format!("/v1/datasets/load/kv/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged {key} is gone");
    }
    eprintln!(
        "{} acknowledged writes survived; closed {took:?} after SIGTERM",
        acked.len()
    );
    again.terminate();
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}
