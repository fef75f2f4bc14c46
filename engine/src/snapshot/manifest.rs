//! The snapshot manifest: the one file whose presence commits a snapshot.
//! It lists every dataset's configuration and every data file's length and
//! crc32c, and ends with the crc32c of everything before it, so a torn or
//! altered manifest is told from a good one.
//!
//! Text, one item per line (names are `[A-Za-z0-9_-]`, so no quoting):
//!
//! ```text
//! ebb-snapshot 1
//! generation 7
//! dataset docs dim=128 metric=l2 index=native m=16 ef_construction=200 ef_search=64
//! file docs vectors docs.vectors.arrow 123456 0x1a2b3c4d 1000
//! end 0x5e6f7a8b
//! ```

use std::path::Path;

use ebb_hnsw::Metric;

use crate::dataset::{DatasetConfig, IndexKind, check_name};
use crate::error::{Error, Result};

const MAGIC: &str = "ebb-snapshot 1";

/// What a data file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A dataset's vectors and payloads (`vector_schema`).
    Vectors,
    /// A dataset's KV records (`kv_schema`).
    Kv,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Vectors => "vectors",
            FileKind::Kv => "kv",
        }
    }
}

/// One data file of a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FileEntry {
    pub dataset: String,
    pub kind: FileKind,
    /// The file's name inside the generation's directory.
    pub name: String,
    pub len: u64,
    pub crc32c: u32,
    pub rows: u64,
}

/// A committed snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Manifest {
    pub generation: u64,
    pub datasets: Vec<(String, DatasetConfig)>,
    pub files: Vec<FileEntry>,
}

fn metric_str(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "l2",
        Metric::Cosine => "cosine",
        Metric::Dot => "dot",
    }
}

fn index_str(i: IndexKind) -> &'static str {
    match i {
        IndexKind::Native => "native",
        IndexKind::HnswRs => "hnsw_rs",
    }
}

impl Manifest {
    /// The manifest's bytes, ending in its own checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{MAGIC}\ngeneration {}\n", self.generation);
        for (name, c) in &self.datasets {
            s += &format!(
                "dataset {name} dim={} metric={} index={} m={} ef_construction={} ef_search={}\n",
                c.dim,
                metric_str(c.metric),
                index_str(c.index),
                c.m,
                c.ef_construction,
                c.ef_search
            );
        }
        for f in &self.files {
            s += &format!(
                "file {} {} {} {} {:#010x} {}\n",
                f.dataset,
                f.kind.as_str(),
                f.name,
                f.len,
                f.crc32c,
                f.rows
            );
        }
        let crc = crc32c::crc32c(s.as_bytes());
        s += &format!("end {crc:#010x}\n");
        s.into_bytes()
    }

    /// Parses and checks a manifest read from `path` (named in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
        let bad = |reason: String| Error::CorruptSnapshot {
            file: path.to_path_buf(),
            reason,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let text = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end in a newline (truncated?)".into()))?;
        let body_end = text
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad("too short (truncated?)".into()))?;
        let (body, last) = text.split_at(body_end);
        let want = last
            .strip_prefix("end ")
            .and_then(parse_hex)
            .ok_or_else(|| bad("no `end` line (truncated?)".into()))?;
        let got = crc32c::crc32c(body.as_bytes());
        if got != want {
            return Err(bad(format!(
                "checksum {got:#010x}, its `end` line says {want:#010x}"
            )));
        }
        let mut lines = body.lines();
        if lines.next() != Some(MAGIC) {
            return Err(bad(format!("does not start with {MAGIC:?}")));
        }
        let mut m = Manifest::default();
        for (n, line) in lines.enumerate() {
            let at = |what: &str| bad(format!("line {}: {what}: {line:?}", n + 2));
            let mut words = line.split(' ');
            match words.next() {
                Some("generation") => {
                    m.generation = words
                        .next()
                        .and_then(|w| w.parse().ok())
                        .ok_or_else(|| at("bad generation"))?;
                }
                Some("dataset") => {
                    let name = words.next().ok_or_else(|| at("no name"))?;
                    check_name(name).map_err(|_| at("bad dataset name"))?;
                    let config = parse_config(words).ok_or_else(|| at("bad dataset config"))?;
                    m.datasets.push((name.to_string(), config));
                }
                Some("file") => {
                    let f = parse_file(words).ok_or_else(|| at("bad file entry"))?;
                    if !m.datasets.iter().any(|(n, _)| *n == f.dataset) {
                        return Err(at("file of an unlisted dataset"));
                    }
                    m.files.push(f);
                }
                _ => return Err(at("unknown line")),
            }
        }
        Ok(m)
    }
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn parse_config<'a>(words: impl Iterator<Item = &'a str>) -> Option<DatasetConfig> {
    let mut c = DatasetConfig::new(1, Metric::L2);
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "dim" => c.dim = value.parse().ok()?,
            "metric" => {
                c.metric = match value {
                    "l2" => Metric::L2,
                    "cosine" => Metric::Cosine,
                    "dot" => Metric::Dot,
                    _ => return None,
                }
            }
            "index" => {
                c.index = match value {
                    "native" => IndexKind::Native,
                    "hnsw_rs" => IndexKind::HnswRs,
                    _ => return None,
                }
            }
            "m" => c.m = value.parse().ok()?,
            "ef_construction" => c.ef_construction = value.parse().ok()?,
            "ef_search" => c.ef_search = value.parse().ok()?,
            _ => return None,
        }
    }
    Some(c)
}

fn parse_file<'a>(mut words: impl Iterator<Item = &'a str>) -> Option<FileEntry> {
    let dataset = words.next()?.to_string();
    let kind = match words.next()? {
        "vectors" => FileKind::Vectors,
        "kv" => FileKind::Kv,
        _ => return None,
    };
    let name = words.next()?.to_string();
    // A file name is a dataset name and a fixed suffix: never a path.
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let f = FileEntry {
        dataset,
        kind,
        name,
        len: words.next()?.parse().ok()?,
        crc32c: parse_hex(words.next()?)?,
        rows: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            generation: 7,
            datasets: vec![
                ("docs".into(), DatasetConfig::new(128, Metric::Cosine)),
                (
                    "kv-only".into(),
                    DatasetConfig::new(2, Metric::Dot).with_index(IndexKind::HnswRs),
                ),
            ],
            files: vec![FileEntry {
                dataset: "docs".into(),
                kind: FileKind::Vectors,
                name: "docs.vectors.arrow".into(),
                len: 123_456,
                crc32c: 0x1a2b_3c4d,
                rows: 1000,
            }],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::parse(Path::new("m"), &bytes).unwrap(), m);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let e = Manifest::parse(Path::new("m"), &bytes[..len]).unwrap_err();
            assert!(matches!(e, Error::CorruptSnapshot { .. }), "{len}: {e}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(Manifest::parse(Path::new("m"), &b).is_err(), "byte {i}");
        }
    }
}
