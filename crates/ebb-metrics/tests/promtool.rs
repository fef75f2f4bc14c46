//! `promtool check metrics` on what the encoder writes: nothing reported.
//! Skips, saying why, where promtool is not installed (CI installs
//! Debian's `prometheus` package, which has it).

use std::io::Write;
use std::process::{Command, Stdio};

use ebb_metrics::{HistogramValue, Kind, LabelCap, Scrape, text};

#[test]
fn promtool_finds_nothing_to_report() {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("ebb-test skipped: promtool_finds_nothing_to_report: promtool is not installed");
        return;
    };
    let mut s = Scrape::new();
    let mut cap = LabelCap::new(64);
    for d in ["a", "b\"quoted\"", "c"] {
        let d = cap.value(d);
        s.gauge(
            "ebb_arena_live_bytes",
            "Bytes of live records.",
            &[("dataset", d), ("arena", "kv")],
            4096.0,
        );
        s.counter(
            "ebb_arena_releases_total",
            "Slabs and large mappings given back to the OS.",
            &[("dataset", d), ("arena", "kv")],
            2.0,
        );
    }
    s.describe(
        "ebb_leak_checks_total",
        "Leak monitor ticks run.",
        Kind::Counter,
    );
    s.histogram(
        "ebb_compaction_duration_seconds",
        "Wall time of maintenance runs.",
        &[("kind", "arena")],
        HistogramValue {
            buckets: vec![(0.001, 0), (0.01, 2), (0.1, 5), (1.0, 5)],
            sum: 0.31,
            count: 6,
        },
    );
    s.gauge(
        "ebb_process_resident_memory_bytes",
        "Resident set size of the process.",
        &[],
        1.5e9,
    );
    let body = text::encode(&s);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\non:\n{body}"
    );
}
