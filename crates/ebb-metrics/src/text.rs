//! The two text exposition formats, from the same [`Scrape`]:
//!
//! - Prometheus text 0.0.4 (`text/plain; version=0.0.4`, [`encode`]), what
//!   `/metrics` serves unless the client asks for OpenMetrics: `# HELP` and
//!   `# TYPE` per family, one line per series, histograms as
//!   `_bucket{le=...}`, `_sum` and `_count`. `promtool check metrics`
//!   reports nothing on it.
//! - OpenMetrics 1.0.0 ([`encode_openmetrics`]): the same lines, except that
//!   a counter family is declared without its `_total` suffix (its samples
//!   keep it), `"` is escaped in help text, and the exposition ends with
//!   `# EOF`.
//!
//! [`Format::from_accept`] picks one from a request's `Accept` header.

use std::fmt::Write;

use crate::model::{Family, Kind, Scrape, Value};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of [`encode_openmetrics`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format a scrape is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format a request's `Accept` header asks for: OpenMetrics only
    /// when `application/openmetrics-text` is listed with a quality above
    /// that of `text/plain` (a wildcard such as `*/*` asks for nothing in
    /// particular; ties go to 0.0.4); 0.0.4 otherwise, and when there is
    /// no header. Several `Accept` headers are one list joined by commas.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut openmetrics = 0.0f64;
        let mut text = 0.0f64;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = 1.0f64;
            for p in parts {
                let p = p.trim();
                if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            if !(q.is_finite() && q > 0.0) {
                continue;
            }
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of the format's output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The scrape in this format.
    pub fn encode(self, scrape: &Scrape) -> String {
        match self {
            Format::Text => encode(scrape),
            Format::OpenMetrics => encode_openmetrics(scrape),
        }
    }
}

/// The scrape in the 0.0.4 text format.
pub fn encode(scrape: &Scrape) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in scrape.families() {
        family(&mut out, f, Format::Text);
    }
    out
}

/// The scrape in OpenMetrics 1.0.0 (ends with `# EOF`).
pub fn encode_openmetrics(scrape: &Scrape) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in scrape.families() {
        family(&mut out, f, Format::OpenMetrics);
    }
    out.push_str("# EOF\n");
    out
}

fn family(out: &mut String, f: &Family, format: Format) {
    let kind = match f.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    // OpenMetrics names a counter family without `_total`; its samples
    // keep the suffix.
    let declared = match (format, f.kind) {
        (Format::OpenMetrics, Kind::Counter) => f.name.strip_suffix("_total").unwrap_or(f.name),
        _ => f.name,
    };
    let help = match format {
        Format::Text => escape_help(f.help),
        Format::OpenMetrics => escape_label(f.help).into_owned(),
    };
    let _ = writeln!(out, "# HELP {declared} {help}");
    let _ = writeln!(out, "# TYPE {declared} {kind}");
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
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(&escape_label(v));
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    push_number(out, value);
    out.push('\n');
}

/// [`number`] written into `out` (no allocation for the common cases).
fn push_number(out: &mut String, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        out.push_str(&number(v));
    }
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

fn escape_label(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n"),
    )
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
    fn openmetrics_declares_counters_without_total_and_ends_with_eof() {
        let mut s = Scrape::new();
        s.counter(
            "ebb_arena_releases_total",
            "Slabs \"given\" back.",
            &[],
            3.0,
        );
        s.gauge("ebb_arena_live_bytes", "Live.", &[("arena", "kv")], 8.0);
        assert_eq!(
            encode_openmetrics(&s),
            "# HELP ebb_arena_releases Slabs \\\"given\\\" back.\n\
             # TYPE ebb_arena_releases counter\n\
             ebb_arena_releases_total 3\n\
             # HELP ebb_arena_live_bytes Live.\n\
             # TYPE ebb_arena_live_bytes gauge\n\
             ebb_arena_live_bytes{arena=\"kv\"} 8\n\
             # EOF\n"
        );
    }

    #[test]
    fn accept_picks_openmetrics_only_when_it_is_preferred() {
        use Format::*;
        assert_eq!(Format::from_accept(None), Text);
        assert_eq!(Format::from_accept(Some("*/*")), Text);
        assert_eq!(Format::from_accept(Some("text/plain; version=0.0.4")), Text);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; version=1.0.0")),
            OpenMetrics
        );
        // What Prometheus 2.x sends.
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            OpenMetrics
        );
        assert_eq!(
            Format::from_accept(Some(
                "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5"
            )),
            Text
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0")),
            Text
        );
        assert_eq!(Format::from_accept(Some("garbage;;q=x,,")), Text);
        // A specific type beats a wildcard at the same quality.
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text, */*")),
            OpenMetrics
        );
        assert_eq!(
            Format::from_accept(Some("text/plain;Q=0.2,application/openmetrics-text;Q=0.9")),
            OpenMetrics
        );
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
