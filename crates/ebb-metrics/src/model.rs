//! What one scrape collects: metric families (name, help, type, samples),
//! built fresh from the crates' stats at scrape time and then encoded in
//! either text format. Nothing here is kept between scrapes.
//!
//! Invariants: a family's name is unique within a scrape and its samples
//! share its type (a series of another type under a taken name is
//! dropped, never a panic); no two series of a family have the same
//! labels (they are summed); a counter family is named with its `_total` suffix (as
//! its series are in the 0.0.4 text format); label names are static and
//! label sets are bounded by the caller (see [`crate::LabelCap`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A metric's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever rises (name ends in `_total`).
    Counter,
    /// Any value.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

/// A histogram's value: cumulative bucket counts by upper bound (the
/// `+Inf` bucket is the count and is not listed), the sum and the count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    /// (upper bound, observations <= it), bounds ascending.
    pub buckets: Vec<(f64, u64)>,
    /// The sum of every observation.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
}

/// One series' value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter's or gauge's number.
    Number(f64),
    /// A histogram's buckets, sum and count.
    Histogram(HistogramValue),
}

impl Value {
    /// Adds `other` into this value (numbers sum; histograms sum bucket by
    /// bucket when their bounds agree, else keep the sum and count).
    fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => {
                let same_bounds = a.buckets.len() == b.buckets.len()
                    && a.buckets.iter().zip(&b.buckets).all(|(x, y)| x.0 == y.0);
                if same_bounds {
                    for (x, y) in a.buckets.iter_mut().zip(&b.buckets) {
                        x.1 += y.1;
                    }
                } else {
                    a.buckets.clear();
                }
                a.sum += b.sum;
                a.count += b.count;
            }
            // A family has one type (checked where it is made).
            _ => {}
        }
    }
}

/// One series: its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// (name, value) pairs, in the order given.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: Value,
}

/// A metric family: every series of one name.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The name (`ebb_..._bytes`, counters `..._total`).
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its series.
    pub samples: Vec<Sample>,
}

/// The families of one scrape, in the order first seen.
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
    /// Family name -> its index in `families`.
    by_name: HashMap<&'static str, usize, BuildHasherDefault<Fnv>>,
    /// (family index, hash of the labels) -> the sample with those labels
    /// (a scrape of 64 datasets pushes ~5k series: a scan per push was
    /// quadratic).
    by_labels: HashMap<(usize, u64), usize, BuildHasherDefault<Fnv>>,
}

/// FNV-1a: the keys are short label strings of our own making (no
/// adversary picks them), so a fast hash beats SipHash's flood resistance.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn labels_hash(labels: &[(&'static str, &str)]) -> u64 {
    let mut h = Fnv::default();
    for (k, v) in labels {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

impl Scrape {
    /// An empty scrape.
    pub fn new() -> Scrape {
        Scrape::default()
    }

    /// Adds a gauge series.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.push(name, help, Kind::Gauge, labels, Value::Number(value));
    }

    /// Adds a counter series. Name counters `..._total` (Prometheus's
    /// convention: `promtool` reports one without it).
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: f64,
    ) {
        self.push(name, help, Kind::Counter, labels, Value::Number(value));
    }

    /// Adds a histogram series.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: HistogramValue,
    ) {
        self.push(name, help, Kind::Histogram, labels, Value::Histogram(value));
    }

    /// Declares a family with no series yet (so it is described even when
    /// empty: a counter nothing has raised, say).
    pub fn describe(&mut self, name: &'static str, help: &'static str, kind: Kind) {
        let _ = self.family(name, help, kind);
    }

    /// The family `name`, made on first use; `None` if it exists with
    /// another type (the series is then dropped: one name, one type).
    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> Option<usize> {
        let i = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name,
                    help,
                    kind,
                    samples: Vec::new(),
                });
                self.by_name.insert(name, self.families.len() - 1);
                self.families.len() - 1
            }
        };
        (self.families[i].kind == kind).then_some(i)
    }

    /// Adds a series; one whose labels equal an earlier one's (two
    /// datasets past a [`LabelCap`], both `other`) is added into it, so a
    /// scrape never repeats a series. A series whose name exists with
    /// another type is dropped.
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
        value: Value,
    ) {
        let Some(fi) = self.family(name, help, kind) else {
            return;
        };
        let same = |s: &Sample| {
            s.labels.len() == labels.len()
                && s.labels
                    .iter()
                    .zip(labels)
                    .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        };
        let hash = labels_hash(labels);
        let family = &mut self.families[fi];
        let existing = match self.by_labels.get(&(fi, hash)) {
            Some(&i) if same(&family.samples[i]) => Some(i),
            // A hash collision: look the slow way.
            Some(_) => family.samples.iter().position(same),
            None => None,
        };
        if let Some(i) = existing {
            family.samples[i].value.add(&value);
            return;
        }
        let labels = labels.iter().map(|&(k, v)| (k, v.to_string())).collect();
        family.samples.push(Sample { labels, value });
        self.by_labels
            .entry((fi, hash))
            .or_insert(family.samples.len() - 1);
    }

    /// The families collected.
    pub fn families(&self) -> &[Family] {
        &self.families
    }
}

/// Caps the distinct values one label takes: the first `cap` values seen
/// in a scrape keep their name, the rest are reported as `other` (so a
/// store with many datasets cannot blow up Prometheus's series count).
#[derive(Debug)]
pub struct LabelCap {
    cap: usize,
    seen: Vec<String>,
}

/// The value a capped label takes past its cap.
pub const OTHER: &str = "other";

impl LabelCap {
    /// At most `cap` distinct values.
    pub fn new(cap: usize) -> LabelCap {
        LabelCap {
            cap,
            seen: Vec::new(),
        }
    }

    /// The label value for `value`: itself while under the cap, else
    /// [`OTHER`].
    pub fn value<'a>(&mut self, value: &'a str) -> &'a str {
        if self.seen.iter().any(|s| s == value) {
            return value;
        }
        if self.seen.len() < self.cap {
            self.seen.push(value.to_string());
            return value;
        }
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_keeps_its_first_type() {
        let mut s = Scrape::new();
        s.gauge("x", "a gauge", &[], 1.0);
        s.counter("x", "not a gauge", &[], 5.0);
        assert_eq!(s.families().len(), 1);
        assert_eq!(s.families()[0].kind, Kind::Gauge);
        assert_eq!(s.families()[0].samples[0].value, Value::Number(1.0));
    }
}
