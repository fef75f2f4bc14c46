//! Streaming runbooks in the format of the big-ann-benchmarks NeurIPS'23
//! streaming track, parsed and checked whole before a soak starts.
//!
//! A runbook is YAML whose top keys are dataset names. Under one: an
//! optional `max_pts` (the largest id plus one; when absent, the largest
//! `end` of any step), an ignored `gt_url`, and numbered steps, each with
//! an `operation`:
//!
//! - `insert` / `delete` with `start` and `end`: the half-open range of
//!   ids (an insert's tags are its ids);
//! - `search`: every query against the live points;
//! - `replace` with `tags_start`/`tags_end` and `ids_start`/`ids_end`:
//!   tag `tags_start + k` now holds the vector of id `ids_start + k`.
//!
//! Steps run in the order of their numbers. An unknown key, an unknown
//! operation, a missing or reversed range, a range past `max_pts` or a
//! replace whose two ranges differ in length is an error naming the step.
//!
//! The vectors are generated, not read: [`vector_of`] gives id `i` a
//! seeded point near one of 64 cluster centres, the same for the same
//! seed, dimension and id whatever order ids come in, so a replay needs no
//! data files and its ground truth ([`ground_truth`]) is exact brute force
//! over the live points.

use std::collections::BinaryHeap;
use std::fmt;

use serde_yaml_ng::Value;

/// Cluster centres the generated vectors gather around.
const CENTERS: u64 = 64;

/// A runbook's operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Store ids `start..end` under tags equal to them.
    Insert {
        /// First id.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// Delete tags `start..end`.
    Delete {
        /// First tag.
        start: u64,
        /// One past the last.
        end: u64,
    },
    /// Search every query.
    Search,
    /// Tag `tags_start + k` takes the vector of id `ids_start + k`.
    Replace {
        /// First tag.
        tags_start: u64,
        /// One past the last tag.
        tags_end: u64,
        /// First id.
        ids_start: u64,
        /// One past the last id.
        ids_end: u64,
    },
}

/// One numbered step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Its number in the file.
    pub number: u64,
    /// What it does.
    pub operation: Operation,
}

/// A parsed, checked runbook for one dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Runbook {
    /// The dataset name (the top key).
    pub name: String,
    /// Ids and tags are below this.
    pub max_pts: u64,
    /// Vector dimension (from the name where known, else the default).
    pub dim: usize,
    /// The steps in order.
    pub steps: Vec<Step>,
}

/// Why a runbook was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunbookError {
    /// The step it is about (`None` for the file as a whole).
    pub step: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RunbookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "runbook step {step}: {}", self.message),
            None => write!(f, "runbook: {}", self.message),
        }
    }
}

impl std::error::Error for RunbookError {}

fn file_error(message: impl Into<String>) -> RunbookError {
    RunbookError {
        step: None,
        message: message.into(),
    }
}

/// The dimension the big-ann data set `name` has, where known:
/// `random-xs*` 20, `msturing*` 100, `wikipedia*` 768.
pub fn known_dim(name: &str) -> Option<usize> {
    [("random-xs", 20), ("msturing", 100), ("wikipedia", 768)]
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|&(_, dim)| dim)
}

/// The largest `max_pts` a replay takes: its tag map holds 4 bytes per
/// id (400 MB here, outside the engine's budget and counted in the soak's
/// RSS), and its ground truth is brute force over the live points.
pub const MAX_POINTS: u64 = 100_000_000;

/// Parses `text`, picks dataset `pick` (or the only one) and checks every
/// step. `default_dim` is the dimension of a name [`known_dim`] does not
/// know.
///
/// # Errors
///
/// [`RunbookError`] naming the step (or the file) and what is wrong.
pub fn parse(text: &str, pick: Option<&str>, default_dim: usize) -> Result<Runbook, RunbookError> {
    let top: Value =
        serde_yaml_ng::from_str(text).map_err(|e| file_error(format!("not YAML: {e}")))?;
    let Value::Mapping(top) = top else {
        return Err(file_error(
            "the top level is not a mapping of dataset names",
        ));
    };
    let mut names = Vec::new();
    for k in top.keys() {
        names.push(
            k.as_str()
                .ok_or_else(|| file_error(format!("a top key {k:?} is not a dataset name")))?
                .to_string(),
        );
    }
    let name = match pick {
        Some(p) if names.iter().any(|n| n == p) => p.to_string(),
        Some(p) => return Err(file_error(format!("no dataset {p:?} (it has {names:?})"))),
        None if names.len() == 1 => names[0].clone(),
        None if names.is_empty() => return Err(file_error("no dataset in the file")),
        None => {
            return Err(file_error(format!(
                "several datasets ({names:?}): pick one with --workload-dataset"
            )));
        }
    };
    let Some(Value::Mapping(body)) = top.get(name.as_str()) else {
        return Err(file_error(format!("{name:?} is not a mapping of steps")));
    };
    let mut max_pts = None;
    let mut raw_steps = Vec::new();
    for (k, v) in body {
        match k {
            Value::String(s) if s == "max_pts" => {
                let n = v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                    file_error(format!("max_pts {v:?} is not a positive integer"))
                })?;
                max_pts = Some(n);
            }
            Value::String(s) if s == "gt_url" => {}
            Value::Number(n) => {
                let number = n
                    .as_u64()
                    .ok_or_else(|| file_error(format!("step number {n} is not a whole number")))?;
                raw_steps.push((number, v));
            }
            // Some runbooks quote step numbers.
            Value::String(s) if s.parse::<u64>().is_ok() => {
                raw_steps.push((s.parse().unwrap_or_default(), v));
            }
            other => return Err(file_error(format!("unknown key {other:?} under {name:?}"))),
        }
    }
    if raw_steps.is_empty() {
        return Err(file_error(format!("{name:?} has no steps")));
    }
    raw_steps.sort_by_key(|(n, _)| *n);
    if let Some(w) = raw_steps.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(file_error(format!("step {} appears twice", w[0].0)));
    }
    let mut steps = Vec::with_capacity(raw_steps.len());
    for (number, v) in &raw_steps {
        steps.push(Step {
            number: *number,
            operation: operation(*number, v)?,
        });
    }
    let max_end = steps
        .iter()
        .map(|s| s.operation.max_end())
        .max()
        .unwrap_or(0);
    let max_pts = max_pts.unwrap_or(max_end);
    if max_pts > MAX_POINTS {
        return Err(file_error(format!(
            "max_pts {max_pts} is past the {MAX_POINTS} a replay takes"
        )));
    }
    for s in &steps {
        if s.operation.max_end() > max_pts {
            return Err(RunbookError {
                step: Some(s.number.to_string()),
                message: format!("{:?} reaches past max_pts {max_pts}", s.operation),
            });
        }
    }
    let dim = known_dim(&name).unwrap_or(default_dim);
    Ok(Runbook {
        name,
        max_pts,
        dim,
        steps,
    })
}

impl Operation {
    /// One past the largest id or tag the step names (0 for a search).
    fn max_end(&self) -> u64 {
        match *self {
            Operation::Insert { end, .. } | Operation::Delete { end, .. } => end,
            Operation::Search => 0,
            Operation::Replace {
                tags_end, ids_end, ..
            } => tags_end.max(ids_end),
        }
    }
}

fn operation(number: u64, v: &Value) -> Result<Operation, RunbookError> {
    let err = |message: String| RunbookError {
        step: Some(number.to_string()),
        message,
    };
    let Value::Mapping(m) = v else {
        return Err(err(format!("{v:?} is not a mapping")));
    };
    let op = m
        .get("operation")
        .ok_or_else(|| err("no operation".into()))?
        .as_str()
        .ok_or_else(|| err("the operation is not a string".into()))?;
    let allowed: &[&str] = match op {
        "insert" | "delete" => &["operation", "start", "end"],
        "search" => &["operation"],
        "replace" => &[
            "operation",
            "tags_start",
            "tags_end",
            "ids_start",
            "ids_end",
        ],
        other => {
            return Err(err(format!(
                "unknown operation {other:?} (insert, delete, search or replace)"
            )));
        }
    };
    for k in m.keys() {
        if !k.as_str().is_some_and(|k| allowed.contains(&k)) {
            return Err(err(format!(
                "unknown key {k:?} for {op} (it takes {allowed:?})"
            )));
        }
    }
    let field = |key: &str| -> Result<u64, RunbookError> {
        m.get(key)
            .ok_or_else(|| err(format!("{op} has no {key}")))?
            .as_u64()
            .ok_or_else(|| err(format!("{key} is not a non-negative integer")))
    };
    let range = |start_key: &str, end_key: &str| -> Result<(u64, u64), RunbookError> {
        let (start, end) = (field(start_key)?, field(end_key)?);
        if start >= end {
            return Err(err(format!(
                "{start_key} {start} is not below {end_key} {end} (ranges are half-open)"
            )));
        }
        Ok((start, end))
    };
    Ok(match op {
        "insert" => {
            let (start, end) = range("start", "end")?;
            Operation::Insert { start, end }
        }
        "delete" => {
            let (start, end) = range("start", "end")?;
            Operation::Delete { start, end }
        }
        "search" => Operation::Search,
        _ => {
            let (tags_start, tags_end) = range("tags_start", "tags_end")?;
            let (ids_start, ids_end) = range("ids_start", "ids_end")?;
            if tags_end - tags_start != ids_end - ids_start {
                return Err(err(format!(
                    "{} tags for {} ids",
                    tags_end - tags_start,
                    ids_end - ids_start
                )));
            }
            Operation::Replace {
                tags_start,
                tags_end,
                ids_start,
                ids_end,
            }
        }
    })
}

/// splitmix64: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A float in [-1, 1) from the `j`-th draw of stream `stream`.
fn unit(stream: u64, j: u64) -> f32 {
    (mix(stream ^ mix(j)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

/// Writes id `id`'s vector (seeded, clustered) into `out` (`dim` floats).
pub fn vector_of(seed: u64, id: u64, out: &mut [f32]) {
    let center = mix(seed ^ mix(id)) % CENTERS;
    let center_stream = mix(seed.wrapping_add(0xC0FF_EE00) ^ center);
    let noise_stream = mix(seed.wrapping_add(0x5EED) ^ mix(id.wrapping_add(1)));
    for (j, x) in out.iter_mut().enumerate() {
        *x = unit(center_stream, j as u64) + 0.25 * unit(noise_stream, j as u64);
    }
}

/// `n` query vectors (seeded apart from the data ids).
pub fn queries(seed: u64, dim: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * dim];
    for (q, chunk) in out.chunks_mut(dim).enumerate() {
        vector_of(seed ^ 0x0051_E77E, u64::MAX - q as u64, chunk);
    }
    out
}

/// Squared L2 distance.
fn l2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A (distance, tag) pair ordered by distance, for the top-k heaps.
#[derive(PartialEq)]
struct Near(f32, u64);
impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, o: &Near) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Near {
    fn cmp(&self, o: &Near) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

/// The `k` nearest live tags of each query by brute force: `live` yields
/// (tag, id) pairs, each id's vector generated once for all queries.
pub fn ground_truth(
    seed: u64,
    dim: usize,
    queries: &[f32],
    k: usize,
    live: impl Iterator<Item = (u64, u64)>,
) -> Vec<Vec<u64>> {
    let nq = queries.len() / dim.max(1);
    let mut heaps: Vec<BinaryHeap<Near>> =
        (0..nq).map(|_| BinaryHeap::with_capacity(k + 1)).collect();
    let mut v = vec![0f32; dim];
    for (tag, id) in live {
        vector_of(seed, id, &mut v);
        for (q, heap) in queries.chunks(dim).zip(heaps.iter_mut()) {
            let d = l2(q, &v);
            if heap.len() < k {
                heap.push(Near(d, tag));
            } else if heap.peek().is_some_and(|top| d < top.0) {
                heap.pop();
                heap.push(Near(d, tag));
            }
        }
    }
    heaps
        .into_iter()
        .map(|h| h.into_sorted_vec().into_iter().map(|n| n.1).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &str = r#"
random-xs:
  max_pts: 10000
  1:
    operation: "insert"
    start: 0
    end: 7500
  2:
    operation: "search"
  3:
    operation: "replace"
    tags_start: 0
    tags_end: 2500
    ids_start: 7500
    ids_end: 10000
  4:
    operation: "delete"
    start: 2500
    end: 5000
  5:
    operation: "search"
  gt_url: "https://example.invalid/gt"
"#;

    #[test]
    fn a_runbook_parses_in_step_order_with_its_dimension() {
        let r = parse(SIMPLE, None, 64).unwrap();
        assert_eq!(
            (r.name.as_str(), r.max_pts, r.dim),
            ("random-xs", 10000, 20)
        );
        let numbers: Vec<u64> = r.steps.iter().map(|s| s.number).collect();
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        assert_eq!(
            r.steps[2].operation,
            Operation::Replace {
                tags_start: 0,
                tags_end: 2500,
                ids_start: 7500,
                ids_end: 10000
            }
        );
        let other = SIMPLE.replace("random-xs", "mine");
        assert_eq!(parse(&other, None, 64).unwrap().dim, 64);
    }

    #[test]
    fn max_pts_defaults_to_the_largest_end() {
        let r = parse(
            "d:\n  1:\n    operation: insert\n    start: 1\n    end: 50\n",
            None,
            8,
        )
        .unwrap();
        assert_eq!(r.max_pts, 50);
    }

    fn refused(text: &str) -> RunbookError {
        parse(text, None, 8).unwrap_err()
    }

    #[test]
    fn bad_runbooks_are_refused_naming_the_step() {
        let e = refused(&SIMPLE.replace("\"delete\"", "\"upsert\""));
        assert_eq!(e.step.as_deref(), Some("4"), "{e}");
        assert!(e.message.contains("unknown operation \"upsert\""), "{e}");

        let e = refused(&SIMPLE.replace("end: 7500", "end: 10001"));
        assert_eq!(e.step.as_deref(), Some("1"), "{e}");
        assert!(e.message.contains("max_pts 10000"), "{e}");

        let e = refused(&SIMPLE.replace("start: 2500", "start: 5000"));
        assert_eq!(e.step.as_deref(), Some("4"), "{e}");

        let e = refused(&SIMPLE.replace("ids_end: 10000", "ids_end: 9999"));
        assert_eq!(e.step.as_deref(), Some("3"), "{e}");

        let e = refused(&SIMPLE.replace("    start: 0\n", ""));
        assert_eq!(e.step.as_deref(), Some("1"), "{e}");
        assert!(e.message.contains("no start"), "{e}");

        let e = refused(&SIMPLE.replace("    end: 7500\n", "    end: 7500\n    k: 10\n"));
        assert!(e.message.contains("unknown key"), "{e}");

        let e = refused(&SIMPLE.replace("max_pts: 10000", "max_pts: 200000000"));
        assert!(e.message.contains("past the 100000000"), "{e}");

        let e = refused("d: [1, 2\n");
        assert_eq!(e.step, None);
        assert!(e.to_string().starts_with("runbook: not YAML"), "{e}");

        let e = refused("a:\n  1: {operation: search}\nb:\n  1: {operation: search}\n");
        assert!(e.message.contains("several datasets"), "{e}");
        let two = "a:\n  1: {operation: search}\nb:\n  1: {operation: search}\n";
        assert_eq!(parse(two, Some("b"), 8).unwrap().name, "b");
        assert!(parse(two, Some("c"), 8).is_err());
    }

    #[test]
    fn vectors_depend_on_the_id_only() {
        let (mut a, mut b, mut c) = (vec![0f32; 20], vec![0f32; 20], vec![0f32; 20]);
        vector_of(7, 42, &mut a);
        vector_of(7, 43, &mut c);
        vector_of(7, 42, &mut b);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|x| x.is_finite() && x.abs() <= 1.25));
    }

    #[test]
    fn ground_truth_is_the_brute_force_top_k() {
        let dim = 8;
        let q = queries(3, dim, 4);
        let live: Vec<(u64, u64)> = (0..500).map(|t| (t, t * 7 % 1000)).collect();
        let gt = ground_truth(3, dim, &q, 10, live.iter().copied());
        let mut v = vec![0f32; dim];
        for (qi, query) in q.chunks(dim).enumerate() {
            let mut all: Vec<(f32, u64)> = live
                .iter()
                .map(|&(t, id)| {
                    vector_of(3, id, &mut v);
                    (l2(query, &v), t)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            let want: Vec<u64> = all[..10].iter().map(|p| p.1).collect();
            assert_eq!(gt[qi], want);
        }
    }
}
