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
