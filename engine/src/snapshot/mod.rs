//! Snapshots: with `data_dir` set, [`Engine::snapshot`] writes every
//! dataset as Arrow IPC files and commits them with a manifest;
//! [`Engine::open`] loads the newest committed snapshot and rebuilds the
//! indexes ([`LoadReport`] says what loaded and what did not).
//!
//! On disk, in `data_dir`:
//!
//! - `snapshot-<generation>/<dataset>.vectors.arrow` and `<dataset>.kv.arrow`
//!   (absent when the dataset holds none of that kind);
//! - `manifest-<generation>`: written last; a generation without one was
//!   never committed (see [`manifest`] for the format);
//! - `quarantine/`: manifests and data files that failed to load, moved
//!   aside for the operator and never deleted by the engine.
//!
//! Invariants (the crash-safety argument):
//!
//! 1. Nothing of a committed generation is written to again: a snapshot
//!    writes a new generation's directory, each file as `<name>.tmp`,
//!    fsynced, renamed, then the directory fsynced.
//! 2. The manifest is written last the same way (temp, fsync, rename,
//!    fsync of `data_dir`); its rename is the commit point. A crash before
//!    it leaves the previous manifest the newest; after it, the new one.
//! 3. Older generations are removed only after the new manifest is
//!    durable, so at every instant a complete snapshot is on disk.
//! 4. Every data file is checked against the manifest's length and crc32c
//!    before it is parsed; a mismatch is [`Error::CorruptSnapshot`] naming
//!    the file, and only that dataset is left out.
//!
//! A snapshot holds, per dataset, every record and vector that was live
//! for the whole snapshot, each with a value it held during it (a key or
//! vector written meanwhile may be in it with its old or its new value); a
//! KV shard is read under its read lock, so writers to it wait for the
//! copy of that shard (about 1/32 of the dataset) and no more.

mod files;
mod load;
pub(crate) mod manifest;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use tokio_util::sync::CancellationToken;

use crate::Engine;
use crate::arrow::{KvScan, VectorScan, kv_schema, vector_schema};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use files::{ChecksumWriter, io_error, sync_dir};
use manifest::{FileEntry, FileKind, Manifest};

pub use load::LoadReport;
pub(crate) use load::load_latest;

/// One step of a snapshot, as the observer of
/// [`Engine::snapshot_with`] sees it: each is reported right after it
/// happened (progress reporting, and the crash tests' failpoints).
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotStep<'a> {
    /// Bytes of a temp data file reached the file (`bytes` so far).
    Write {
        /// The temp file.
        file: &'a Path,
        /// Its length so far.
        bytes: u64,
    },
    /// A temp data file was fsynced.
    FileSync {
        /// The temp file.
        file: &'a Path,
    },
    /// A data file was renamed from its temp name.
    Rename {
        /// Its final name.
        file: &'a Path,
    },
    /// The generation's directory was fsynced (its renames are durable).
    DirSync {
        /// The directory.
        dir: &'a Path,
    },
    /// The temp manifest was written.
    ManifestWrite {
        /// The temp manifest.
        file: &'a Path,
    },
    /// The temp manifest was fsynced.
    ManifestSync {
        /// The temp manifest.
        file: &'a Path,
    },
    /// The manifest was renamed into place: the snapshot is committed.
    ManifestRename {
        /// The manifest.
        file: &'a Path,
    },
    /// `data_dir` was fsynced: the commit is durable.
    ManifestDirSync {
        /// `data_dir`.
        dir: &'a Path,
    },
    /// An older generation's file or directory was removed.
    Cleanup {
        /// What was removed.
        removed: &'a Path,
    },
}

impl SnapshotStep<'_> {
    /// The step's name (`write`, `file_sync`, `rename`, `dir_sync`,
    /// `manifest_write`, `manifest_sync`, `manifest_rename`,
    /// `manifest_dir_sync`, `cleanup`).
    pub fn name(&self) -> &'static str {
        match self {
            SnapshotStep::Write { .. } => "write",
            SnapshotStep::FileSync { .. } => "file_sync",
            SnapshotStep::Rename { .. } => "rename",
            SnapshotStep::DirSync { .. } => "dir_sync",
            SnapshotStep::ManifestWrite { .. } => "manifest_write",
            SnapshotStep::ManifestSync { .. } => "manifest_sync",
            SnapshotStep::ManifestRename { .. } => "manifest_rename",
            SnapshotStep::ManifestDirSync { .. } => "manifest_dir_sync",
            SnapshotStep::Cleanup { .. } => "cleanup",
        }
    }

    /// Every step name, in the order a snapshot first reaches them.
    pub const NAMES: &'static [&'static str] = &[
        "write",
        "file_sync",
        "rename",
        "dir_sync",
        "manifest_write",
        "manifest_sync",
        "manifest_rename",
        "manifest_dir_sync",
        "cleanup",
    ];
}

/// What a snapshot wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotReport {
    /// The committed generation.
    pub generation: u64,
    /// Its manifest.
    pub manifest: PathBuf,
    /// Datasets in it.
    pub datasets: usize,
    /// Data files written.
    pub files: usize,
    /// Bytes of data files written.
    pub bytes: u64,
    /// KV records written.
    pub records: u64,
    /// Vectors written.
    pub vectors: u64,
    /// Older generations' files and directories removed after the commit.
    pub removed: usize,
    /// Wall time.
    pub duration_secs: f64,
}

pub(crate) fn manifest_name(generation: u64) -> String {
    format!("manifest-{generation:020}")
}

pub(crate) fn generation_dir_name(generation: u64) -> String {
    format!("snapshot-{generation:020}")
}

/// The generation a `data_dir` entry belongs to, if it is a snapshot's
/// (`manifest-N`, `snapshot-N`, either with `.tmp`).
pub(crate) fn generation_of(name: &str) -> Option<(u64, bool)> {
    let (rest, tmp) = match name.strip_suffix(".tmp") {
        Some(r) => (r, true),
        None => (name, false),
    };
    let digits = rest
        .strip_prefix("manifest-")
        .or_else(|| rest.strip_prefix("snapshot-"))?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
        .map(|g| (g, tmp))
}

/// Every snapshot entry in `dir`: (generation, is temp, path).
fn entries(dir: &Path) -> Result<Vec<(u64, bool, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir, "list"))? {
        let entry = entry.map_err(io_error(dir, "list"))?;
        if let Some((g, tmp)) = entry.file_name().to_str().and_then(generation_of) {
            out.push((g, tmp, entry.path()));
        }
    }
    Ok(out)
}

impl Engine {
    /// Writes a snapshot of every dataset to `data_dir` and commits it
    /// (see the [module docs](crate::snapshot) for the layout and the
    /// crash-safety argument). Under the engine's token.
    pub fn snapshot(&self) -> Result<SnapshotReport> {
        self.snapshot_with(&CancellationToken::new(), &mut |_| {})
    }

    /// [`snapshot`](Self::snapshot), stopping between batches when `token`
    /// (or the engine's) is cancelled ([`Error::Cancelled`]; the partial
    /// generation is removed and the previous snapshot stays the newest),
    /// and calling `observe` after every step. One snapshot runs at a
    /// time; a second caller waits for the first.
    pub fn snapshot_with(
        &self,
        token: &CancellationToken,
        observe: &mut dyn FnMut(&SnapshotStep<'_>),
    ) -> Result<SnapshotReport> {
        self.open_for_work()?;
        self.snapshot_unchecked(token, observe)
    }

    /// [`snapshot_with`](Self::snapshot_with) without the closing check
    /// (the closing snapshot).
    pub(crate) fn snapshot_unchecked(
        &self,
        token: &CancellationToken,
        observe: &mut dyn FnMut(&SnapshotStep<'_>),
    ) -> Result<SnapshotReport> {
        let data_dir = self.inner.config.data_dir.clone().ok_or(Error::NoDataDir)?;
        let _one_at_a_time = self.inner.snapshot_lock.lock();
        let token = token.child_token();
        let started = Instant::now();
        let generation = entries(&data_dir)?
            .iter()
            .map(|(g, _, _)| *g)
            .max()
            .unwrap_or(0)
            + 1;
        let dir = data_dir.join(generation_dir_name(generation));
        let result = self.write_generation(&data_dir, &dir, generation, &token, observe);
        match result {
            Ok(mut report) => {
                report.removed = cleanup(&data_dir, generation, observe);
                report.duration_secs = started.elapsed().as_secs_f64();
                Ok(report)
            }
            Err(e) => {
                // Nothing of it was committed: remove what was written.
                let _ = fs::remove_dir_all(&dir);
                let _ =
                    fs::remove_file(data_dir.join(format!("{}.tmp", manifest_name(generation))));
                Err(e)
            }
        }
    }

    fn write_generation(
        &self,
        data_dir: &Path,
        dir: &Path,
        generation: u64,
        token: &CancellationToken,
        observe: &mut dyn FnMut(&SnapshotStep<'_>),
    ) -> Result<SnapshotReport> {
        fs::create_dir(dir).map_err(io_error(dir, "create directory"))?;
        let mut datasets: Vec<Arc<Dataset>> =
            self.inner.datasets.read().values().cloned().collect();
        datasets.sort_by(|a, b| a.name.cmp(&b.name));
        let mut manifest = Manifest {
            generation,
            ..Manifest::default()
        };
        let mut report = SnapshotReport {
            generation,
            manifest: data_dir.join(manifest_name(generation)),
            datasets: datasets.len(),
            files: 0,
            bytes: 0,
            records: 0,
            vectors: 0,
            removed: 0,
            duration_secs: 0.0,
        };
        let stop = || token.is_cancelled() || self.inner.token.is_cancelled();
        for d in &datasets {
            manifest.datasets.push((d.name.clone(), d.config.clone()));
            if d.vectors.len() > 0 {
                let scan = VectorScan::new(Arc::clone(d), token.clone());
                let entry = write_file(
                    dir,
                    d,
                    FileKind::Vectors,
                    vector_schema(d.config.dim),
                    scan,
                    &stop,
                    observe,
                )?;
                report.vectors += entry.rows;
                report.bytes += entry.len;
                manifest.files.push(entry);
            }
            if d.kv.len() > 0 {
                let scan = KvScan::new(Arc::clone(d), token.clone());
                let entry = write_file(dir, d, FileKind::Kv, kv_schema(), scan, &stop, observe)?;
                report.records += entry.rows;
                report.bytes += entry.len;
                manifest.files.push(entry);
            }
        }
        report.files = manifest.files.len();
        sync_dir(dir)?;
        observe(&SnapshotStep::DirSync { dir });
        // The commit (invariant 2).
        let tmp = data_dir.join(format!("{}.tmp", manifest_name(generation)));
        let mut file = fs::File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        std::io::Write::write_all(&mut file, &manifest.encode())
            .map_err(io_error(&tmp, "write"))?;
        observe(&SnapshotStep::ManifestWrite { file: &tmp });
        file.sync_all().map_err(io_error(&tmp, "fsync"))?;
        drop(file);
        observe(&SnapshotStep::ManifestSync { file: &tmp });
        fs::rename(&tmp, &report.manifest).map_err(io_error(&report.manifest, "rename"))?;
        observe(&SnapshotStep::ManifestRename {
            file: &report.manifest,
        });
        sync_dir(data_dir)?;
        observe(&SnapshotStep::ManifestDirSync { dir: data_dir });
        Ok(report)
    }
}

/// Writes one data file (temp, fsync, rename: invariant 1).
fn write_file(
    dir: &Path,
    d: &Dataset,
    kind: FileKind,
    schema: SchemaRef,
    batches: impl Iterator<Item = Result<RecordBatch>>,
    stop: &dyn Fn() -> bool,
    observe: &mut dyn FnMut(&SnapshotStep<'_>),
) -> Result<FileEntry> {
    let name = format!("{}.{}.arrow", d.name, kind.as_str());
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let arrow_error = |e: arrow_schema::ArrowError| Error::Io {
        path: tmp.clone(),
        op: "write",
        source: std::io::Error::other(e),
    };
    let mut rows = 0u64;
    let (len, crc32c) = {
        let mut on_write = |bytes| observe(&SnapshotStep::Write { file: &tmp, bytes });
        let out = ChecksumWriter::create(&tmp, &d.pool, &mut on_write)?;
        let mut writer = FileWriter::try_new(out, &schema).map_err(arrow_error)?;
        for batch in batches {
            if stop() {
                return Err(Error::Cancelled {
                    done: rows as usize,
                });
            }
            // A scan stopped by its token says `Closing`: this is a cancel.
            let batch = batch.map_err(|e| {
                if stop() {
                    Error::Cancelled {
                        done: rows as usize,
                    }
                } else {
                    e
                }
            })?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(arrow_error)?;
        }
        writer.finish().map_err(arrow_error)?;
        writer.into_inner().map_err(arrow_error)?.finish()?
    };
    observe(&SnapshotStep::FileSync { file: &tmp });
    fs::rename(&tmp, &path).map_err(io_error(&path, "rename"))?;
    observe(&SnapshotStep::Rename { file: &path });
    Ok(FileEntry {
        dataset: d.name.clone(),
        kind,
        name,
        len,
        crc32c,
        rows,
    })
}

/// Removes every generation older than `keep`, and leftovers of crashed
/// snapshots (invariant 3: called only once `keep` is durable). Returns
/// what it removed; a failure to remove is left for the next snapshot.
fn cleanup(data_dir: &Path, keep: u64, observe: &mut dyn FnMut(&SnapshotStep<'_>)) -> usize {
    let Ok(entries) = entries(data_dir) else {
        return 0;
    };
    let mut removed = 0;
    for (g, _, path) in entries {
        if g >= keep {
            continue;
        }
        let gone = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed += 1;
            observe(&SnapshotStep::Cleanup { removed: &path });
        }
    }
    removed
}
