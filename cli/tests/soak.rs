//! `ebb soak` end to end, each run in a process of its own (the binary):
//! a short soak writes its CSV, plots and summary and keeps the criteria
//! a short run can judge; each planted failure fails its own criterion
//! (leak, bloat, growth, hung), so the verdict can fail.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn soak(name: &str, extra: &[&str]) -> (bool, Value, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ebb-soak-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args([
            "soak",
            "--duration",
            "12s",
            "--live-bytes",
            "33554432",
            "--cycle-secs",
            "4",
        ])
        .args([
            "--write-bytes-per-sec",
            "4194304",
            "--memory-limit-bytes",
            "2147483648",
        ])
        .arg("--out")
        .arg(&dir)
        .args(extra)
        .env("EBB_LOG", "error")
        .output()
        .expect("ebb soak runs");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("summary.json")).expect("summary.json is written"),
    )
    .expect("summary.json is JSON");
    assert_eq!(
        out.status.success(),
        summary["passed"].as_bool().unwrap(),
        "the exit code is the verdict: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), summary, dir)
}

fn passed(summary: &Value, name: &str) -> bool {
    summary["verdict"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no criterion {name}"))["passed"]
        .as_bool()
        .unwrap()
}

fn files(dir: &Path) {
    let csv = std::fs::read_to_string(dir.join("samples.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("t_secs,rss_bytes,heap_bytes")
    );
    assert!(lines.count() >= 10, "a sample a second");
    let png = std::fs::read(dir.join("rss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(dir.join("rss.svg")).unwrap();
    assert!(svg.contains("<svg"));
}

#[test]
fn a_short_soak_writes_its_files_and_keeps_what_it_can_judge() {
    let (_, s, dir) = soak("plain", &[]);
    files(&dir);
    for c in ["released", "threads_fds", "leaks", "close"] {
        assert!(passed(&s, c), "{c}: {s:#}");
    }
    assert!(s["load"]["vectors"].as_u64().unwrap() > 0);
    assert!(s["load"]["searches"].as_u64().unwrap() > 0);
    assert!(s["load"]["cycles"].as_u64().unwrap() >= 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn each_planted_failure_fails_its_criterion() {
    for (plant, criterion, extra) in [
        ("leak", "leaks", vec![]),
        ("bloat", "bounded", vec![]),
        ("growth", "steady", vec![]),
        ("hung", "close", vec!["--shutdown-deadline-secs", "1"]),
    ] {
        let mut args = vec!["--plant", plant];
        args.extend(extra);
        let (ok, s, dir) = soak(plant, &args);
        assert!(!ok, "{plant}: the verdict passed");
        assert!(!passed(&s, criterion), "{plant}: {criterion} passed: {s:#}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_runbook_is_replayed_with_recall_per_search_step() {
    let runbook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/runbooks/random-xs-churn.yaml"
    );
    let (_, s, dir) = soak("runbook", &["--workload", runbook, "--queries", "50"]);
    let r = &s["runbook"];
    assert_eq!(r["dataset"], "random-xs-churn", "{s:#}");
    assert_eq!(r["dim"], 20);
    assert!(r["failed"].is_null(), "{r:#}");
    let steps = r["search_steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "no search step ran in 12 s: {r:#}");
    for step in steps {
        let recall = step["recall_at_k_mean"].as_f64().unwrap();
        assert!(recall > 0.9, "recall@10 {recall} at {step}");
    }
    assert!(r["recall_at_k_mean"].as_f64().unwrap() > 0.9);
    assert!(passed(&s, "leaks") && passed(&s, "released"), "{s:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_runbook_is_refused_before_the_soak_naming_the_step() {
    let dir = std::env::temp_dir().join(format!("ebb-soak-badbook-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    for (text, says) in [
        (
            "random-xs:\n  max_pts: 100\n  1:\n    operation: insert\n    start: 0\n    end: 101\n",
            "step 1",
        ),
        (
            "random-xs:\n  1: {operation: insert, start: 0, end: 10}\n  2: {operation: upsert}\n",
            "step 2: unknown operation",
        ),
        ("random-xs: [1, 2\n", "not YAML"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["soak", "--duration", "5s", "--workload"])
            .arg(&file)
            .arg("--out")
            .arg(dir.join("out"))
            .output()
            .expect("ebb soak runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(err.contains(says), "{says:?} not in {err}");
        assert!(
            !dir.join("out").join("summary.json").exists(),
            "the soak ran"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
