//! `promtool check metrics` on what the encoder writes: nothing reported.
//! Skips, saying why, where promtool is not installed (CI installs
//! Debian's `prometheus` package, which has it).

use ebb_metrics::{HistogramValue, Kind, LabelCap, Scrape, text};

#[test]
fn promtool_finds_nothing_to_report() {
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
    ebb_testkit::promtool::assert_promtool_accepts("promtool_finds_nothing_to_report", &body);
}
