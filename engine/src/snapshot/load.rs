//! Loading the newest committed snapshot at [`Engine::open`]: the newest
//! manifest that parses and checks out, then each dataset on its own, so a
//! truncated or corrupt file leaves out only its dataset.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_ipc::reader::FileReader;

use super::files::{PooledReader, io_error, verify};
use super::manifest::{FileEntry, FileKind, Manifest};
use super::{entries, generation_dir_name};
use crate::Engine;
use crate::config::MAX_VALUE_BYTES_LIMIT;
use crate::error::{Error, Result};

/// What [`Engine::open`] loaded from `data_dir`.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// The generation loaded (none: no committed snapshot was found).
    pub generation: Option<u64>,
    /// Datasets loaded whole, by name.
    pub loaded: Vec<String>,
    /// What could not be loaded: each a typed error naming the file
    /// ([`Error::CorruptSnapshot`], [`Error::Io`], or the error the
    /// dataset's rebuild met). The datasets they name are left out.
    pub failures: Vec<Error>,
    /// Files moved to `data_dir/quarantine/` for the operator (the engine
    /// never deletes them).
    pub quarantined: Vec<PathBuf>,
    /// KV records loaded.
    pub records: u64,
    /// Vectors loaded (their indexes rebuilt).
    pub vectors: u64,
    /// Wall time, reading and rebuilding.
    pub duration_secs: f64,
}

/// Moves `path` into `data_dir/quarantine/`, named after its generation.
fn quarantine(data_dir: &Path, path: &Path, generation: u64, report: &mut LoadReport) {
    let dir = data_dir.join("quarantine");
    let Some(name) = path.file_name() else {
        return;
    };
    let to = dir.join(format!("{generation:020}-{}", name.to_string_lossy()));
    if fs::create_dir_all(&dir).is_ok() && fs::rename(path, &to).is_ok() {
        report.quarantined.push(to);
    }
}

/// Loads the newest committed snapshot in `data_dir` into `engine`.
pub(crate) fn load_latest(engine: &Engine, data_dir: &Path) -> Result<LoadReport> {
    let started = Instant::now();
    fs::create_dir_all(data_dir).map_err(io_error(data_dir, "create directory"))?;
    let mut report = LoadReport::default();
    let mut manifests: Vec<(u64, PathBuf)> = entries(data_dir)?
        .into_iter()
        .filter(|(_, tmp, path)| {
            !tmp && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("manifest-"))
        })
        .map(|(g, _, path)| (g, path))
        .collect();
    manifests.sort_by_key(|m| std::cmp::Reverse(m.0));
    let mut chosen = None;
    for (generation, path) in manifests {
        let parsed = fs::read(&path)
            .map_err(io_error(&path, "read"))
            .and_then(|bytes| Manifest::parse(&path, &bytes));
        match parsed {
            Ok(m) if m.generation == generation => {
                chosen = Some(m);
                break;
            }
            Ok(m) => {
                report.failures.push(Error::CorruptSnapshot {
                    file: path.clone(),
                    reason: format!("says generation {}, its name {generation}", m.generation),
                });
                quarantine(data_dir, &path, generation, &mut report);
            }
            Err(e) => {
                // An older manifest may still be whole: try it next.
                report.failures.push(e);
                quarantine(data_dir, &path, generation, &mut report);
            }
        }
    }
    let Some(manifest) = chosen else {
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    };
    report.generation = Some(manifest.generation);
    let dir = data_dir.join(generation_dir_name(manifest.generation));
    for (name, config) in &manifest.datasets {
        let files: Vec<&FileEntry> = manifest
            .files
            .iter()
            .filter(|f| f.dataset == *name)
            .collect();
        match load_dataset(engine, &dir, name, config.clone(), &files) {
            Ok((records, vectors)) => {
                report.loaded.push(name.clone());
                report.records += records;
                report.vectors += vectors;
            }
            Err((e, bad_file)) => {
                // Leave the dataset out whole, never half-loaded.
                let _ = engine.drop_dataset(name);
                report.failures.push(e);
                if let Some(path) = bad_file {
                    quarantine(data_dir, &path, manifest.generation, &mut report);
                }
            }
        }
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Loads one dataset; on failure, the error and the file to quarantine
/// (when a file, not the engine, was at fault).
fn load_dataset(
    engine: &Engine,
    dir: &Path,
    name: &str,
    config: crate::DatasetConfig,
    files: &[&FileEntry],
) -> std::result::Result<(u64, u64), (Error, Option<PathBuf>)> {
    engine.create_dataset(name, config).map_err(|e| (e, None))?;
    let d = engine.dataset(name).map_err(|e| (e, None))?;
    let (mut records, mut vectors) = (0, 0);
    for f in files {
        let path = dir.join(&f.name);
        let corrupt = |reason: String| Error::CorruptSnapshot {
            file: path.clone(),
            reason,
        };
        let file_fault = |e: Error| (e, Some(path.clone()));
        verify(&path, &d.pool, f.len, f.crc32c).map_err(|e| match e {
            // A missing file is the manifest's fault as much as the file's:
            // nothing to move aside.
            Error::Io { .. } => (e, None),
            e => (e, Some(path.clone())),
        })?;
        let reader = PooledReader::open(&path, &d.pool).map_err(|e| (e, None))?;
        let reader = FileReader::try_new(reader, None)
            .map_err(|e| file_fault(corrupt(format!("not an Arrow IPC file: {e}"))))?;
        let mut rows = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| file_fault(corrupt(format!("bad batch: {e}"))))?;
            let stored = match f.kind {
                FileKind::Vectors => engine.ingest_into(&d, &batch, MAX_VALUE_BYTES_LIMIT as usize),
                FileKind::Kv => engine.ingest_kv_into(&d, &batch, MAX_VALUE_BYTES_LIMIT as usize),
            };
            rows += stored.map_err(|e| match e {
                // The file's content broke a rule: the file is at fault.
                Error::Schema { .. }
                | Error::Null { .. }
                | Error::DimensionMismatch { .. }
                | Error::NonFinite { .. }
                | Error::EmptyKey
                | Error::KeyTooLarge { .. }
                | Error::ValueTooLarge { .. } => file_fault(corrupt(e.to_string())),
                e => (e, None),
            })? as u64;
        }
        if rows != f.rows {
            return Err(file_fault(corrupt(format!(
                "{rows} rows, the manifest says {}",
                f.rows
            ))));
        }
        match f.kind {
            FileKind::Vectors => vectors += rows,
            FileKind::Kv => records += rows,
        }
    }
    Ok((records, vectors))
}
