//! The Prometheus text exposition format 0.0.4
//! (`text/plain; version=0.0.4`), what `/metrics` serves unless the client
//! asks for OpenMetrics: `# HELP` and `# TYPE` per family, one line per
//! series, histograms as `_bucket{le=...}`, `_sum` and `_count`.

use std::fmt::Write;

use crate::model::{Family, Kind, Scrape, Value};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The scrape in the 0.0.4 text format.
pub fn encode(scrape: &Scrape) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in scrape.families() {
        family(&mut out, f);
    }
    out
}

fn family(out: &mut String, f: &Family) {
    let kind = match f.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
    let _ = writeln!(out, "# TYPE {} {kind}", f.name);
    for s in &f.samples {
        match &s.value {
            Value::Number(v) => series(out, f.name, "", &s.labels, None, *v),
            Value::Histogram(h) => {
                // Ascending bounds, and `+Inf` once (it is the count).
                let mut buckets: Vec<(f64, u64)> = h
                    .buckets
                    .iter()
                    .copied()
                    .filter(|(le, _)| le.is_finite())
                    .collect();
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (le, n) in buckets {
                    series(
                        out,
                        f.name,
                        "_bucket",
                        &s.labels,
                        Some(&number(le)),
                        n as f64,
                    );
                }
                series(
                    out,
                    f.name,
                    "_bucket",
                    &s.labels,
                    Some("+Inf"),
                    h.count as f64,
                );
                series(out, f.name, "_sum", &s.labels, None, h.sum);
                series(out, f.name, "_count", &s.labels, None, h.count as f64);
            }
        }
    }
}

fn series(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&'static str, String)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        let all = labels
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(le.map(|le| ("le", le)));
        for (k, v) in all {
            if !first {
                out.push(',');
            }
            first = false;
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
    out.push('\n');
}

/// A sample value as Prometheus parses it (`+Inf`, `-Inf`, `NaN`).
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        // Exponent form where plain digits would run long.
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HistogramValue, LabelCap};

    #[test]
    fn families_series_and_histograms_in_the_0_0_4_format() {
        let mut s = Scrape::new();
        s.gauge(
            "ebb_arena_live_bytes",
            "Bytes of live records.",
            &[("dataset", "a"), ("arena", "kv")],
            1024.0,
        );
        s.counter("ebb_arena_releases_total", "Slabs given back.", &[], 3.0);
        s.describe("ebb_leak_checks_total", "Ticks run.", Kind::Counter);
        s.histogram(
            "ebb_compaction_duration_seconds",
            "Duration of maintenance runs.",
            &[("kind", "arena")],
            HistogramValue {
                buckets: vec![(0.01, 1), (0.1, 3)],
                sum: 0.25,
                count: 4,
            },
        );
        assert_eq!(
            encode(&s),
            "# HELP ebb_arena_live_bytes Bytes of live records.\n\
             # TYPE ebb_arena_live_bytes gauge\n\
             ebb_arena_live_bytes{dataset=\"a\",arena=\"kv\"} 1024\n\
             # HELP ebb_arena_releases_total Slabs given back.\n\
             # TYPE ebb_arena_releases_total counter\n\
             ebb_arena_releases_total 3\n\
             # HELP ebb_leak_checks_total Ticks run.\n\
             # TYPE ebb_leak_checks_total counter\n\
             # HELP ebb_compaction_duration_seconds Duration of maintenance runs.\n\
             # TYPE ebb_compaction_duration_seconds histogram\n\
             ebb_compaction_duration_seconds_bucket{kind=\"arena\",le=\"0.01\"} 1\n\
             ebb_compaction_duration_seconds_bucket{kind=\"arena\",le=\"0.1\"} 3\n\
             ebb_compaction_duration_seconds_bucket{kind=\"arena\",le=\"+Inf\"} 4\n\
             ebb_compaction_duration_seconds_sum{kind=\"arena\"} 0.25\n\
             ebb_compaction_duration_seconds_count{kind=\"arena\"} 4\n"
        );
    }

    #[test]
    fn histogram_buckets_are_sorted_and_inf_is_written_once() {
        let mut s = Scrape::new();
        s.histogram(
            "h",
            "",
            &[],
            HistogramValue {
                buckets: vec![(1.0, 3), (f64::INFINITY, 9), (0.5, 1)],
                sum: 2.0,
                count: 4,
            },
        );
        let text = encode(&s);
        let buckets: Vec<&str> = text.lines().filter(|l| l.starts_with("h_bucket")).collect();
        assert_eq!(
            buckets,
            [
                "h_bucket{le=\"0.5\"} 1",
                "h_bucket{le=\"1\"} 3",
                "h_bucket{le=\"+Inf\"} 4"
            ]
        );
    }

    #[test]
    fn label_values_and_help_are_escaped_and_odd_numbers_spelled() {
        let mut s = Scrape::new();
        s.gauge("g", "two\nlines \\ here", &[("l", "a\"b\\c\nd")], f64::NAN);
        s.gauge("g", "", &[("l", "x")], f64::INFINITY);
        s.gauge("g", "", &[("l", "big")], 1.5e300);
        let text = encode(&s);
        assert!(text.contains("# HELP g two\\nlines \\\\ here\n"), "{text}");
        assert!(text.contains("g{l=\"a\\\"b\\\\c\\nd\"} NaN\n"), "{text}");
        assert!(text.contains("g{l=\"x\"} +Inf\n"), "{text}");
        assert!(text.contains("g{l=\"big\"} 1.5e300\n"), "{text}");
    }

    #[test]
    fn datasets_past_the_cap_are_one_other_series_summed() {
        let mut cap = LabelCap::new(2);
        let mut s = Scrape::new();
        for (d, v) in [("a", 1.0), ("b", 2.0), ("c", 4.0), ("d", 8.0), ("a", 16.0)] {
            let d = cap.value(d);
            s.gauge("ebb_dataset_records", "Records.", &[("dataset", d)], v);
        }
        assert_eq!(
            encode(&s),
            "# HELP ebb_dataset_records Records.\n\
             # TYPE ebb_dataset_records gauge\n\
             ebb_dataset_records{dataset=\"a\"} 17\n\
             ebb_dataset_records{dataset=\"b\"} 2\n\
             ebb_dataset_records{dataset=\"other\"} 12\n"
        );
    }
}
