//! Snapshots: round trips, what a reopen loads, truncated and corrupt
//! files (only their dataset is left out), cancellation, and the
//! generations kept on disk.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Error, IndexKind, Metric};
use tokio_util::sync::CancellationToken;

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ebb-snapshot-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path) -> Engine {
    Engine::open(EngineConfig {
        memory_limit_bytes: 1 << 30,
        data_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    })
    .unwrap()
}

type Kv = BTreeMap<Vec<u8>, Vec<u8>>;
type Vectors = BTreeMap<u64, (Vec<f32>, Option<Vec<u8>>)>;

/// Everything a dataset holds, read through the scans.
fn contents(engine: &Engine, name: &str) -> (Kv, Vectors) {
    use arrow_array::{Array, BinaryArray, FixedSizeListArray, Float32Array, UInt64Array};
    let mut kv = Kv::new();
    for batch in engine.scan_kv(name).unwrap() {
        let batch = batch.unwrap();
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        for i in 0..keys.len() {
            let fresh = kv.insert(keys.value(i).to_vec(), values.value(i).to_vec());
            assert!(fresh.is_none(), "a key scanned twice");
        }
    }
    let mut vectors = Vectors::new();
    for batch in engine.scan(name).unwrap() {
        let batch = batch.unwrap();
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        let lists = batch
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let payloads = batch
            .column(2)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        for i in 0..ids.len() {
            let v = lists.value(i);
            let v = v.as_any().downcast_ref::<Float32Array>().unwrap();
            let payload = payloads.is_valid(i).then(|| payloads.value(i).to_vec());
            vectors.insert(ids.value(i), (v.values().to_vec(), payload));
        }
    }
    (kv, vectors)
}

/// Three datasets of different shapes, and what each holds.
fn fill(engine: &Engine) -> HashMap<String, (Kv, Vectors)> {
    engine
        .create_dataset("docs", DatasetConfig::new(8, Metric::L2))
        .unwrap();
    engine
        .create_dataset(
            "ref",
            DatasetConfig::new(3, Metric::Cosine).with_index(IndexKind::HnswRs),
        )
        .unwrap();
    engine
        .create_dataset("empty", DatasetConfig::new(2, Metric::Dot))
        .unwrap();
    for i in 0u32..3000 {
        let value = vec![(i % 251) as u8; (i % 300) as usize];
        engine.put("docs", &i.to_le_bytes(), &value).unwrap();
    }
    for i in 0u64..700 {
        let v: Vec<f32> = (0..8)
            .map(|j| i as f32 + ((i + j) % 7) as f32 / 10.0)
            .collect();
        let payload = (i % 3 != 0).then(|| format!("payload {i}").into_bytes());
        engine
            .upsert_vector("docs", i, &v, payload.as_deref())
            .unwrap();
    }
    for i in 0u64..50 {
        engine
            .upsert_vector("ref", i, &[1.0, i as f32, 0.5], None)
            .unwrap();
    }
    engine.put("ref", b"only-key", b"").unwrap();
    ["docs", "ref", "empty"]
        .into_iter()
        .map(|n| (n.to_string(), contents(engine, n)))
        .collect()
}

#[test]
fn a_snapshot_round_trips_every_dataset() {
    let dir = TempDir::new("round-trip");
    let (before, report) = {
        let engine = open(&dir.0);
        assert_eq!(engine.load_report().unwrap().generation, None);
        let before = fill(&engine);
        let report = engine.snapshot().unwrap();
        (before, report)
    };
    assert_eq!(report.generation, 1);
    assert_eq!((report.datasets, report.files), (3, 4), "{report:?}");
    assert_eq!((report.records, report.vectors), (3001, 750));
    let engine = open(&dir.0);
    let load = engine.load_report().unwrap();
    assert!(load.failures.is_empty(), "{:?}", load.failures);
    assert_eq!(load.generation, Some(1));
    assert_eq!((load.records, load.vectors), (3001, 750));
    let mut names: Vec<String> = engine.list_datasets().into_iter().map(|d| d.name).collect();
    names.sort();
    assert_eq!(names, ["docs", "empty", "ref"]);
    for (name, want) in &before {
        assert_eq!(&contents(&engine, name), want, "{name}");
    }
    let info = engine
        .list_datasets()
        .into_iter()
        .find(|d| d.name == "ref")
        .unwrap();
    assert_eq!(info.config.index, IndexKind::HnswRs);
    assert_eq!(info.config.metric, Metric::Cosine);
    // The indexes were rebuilt: search finds a stored vector.
    let hits = engine
        .search("docs", &contents(&engine, "docs").1[&5].0, 1)
        .unwrap();
    assert_eq!(hits[0].id, 5);
    assert_eq!(hits[0].payload.as_deref(), Some(&b"payload 5"[..]));
}

#[test]
fn a_new_snapshot_replaces_the_old_one_only_once_committed() {
    let dir = TempDir::new("generations");
    let engine = open(&dir.0);
    fill(&engine);
    engine.snapshot().unwrap();
    engine.put("docs", b"later", b"yes").unwrap();
    // Leftovers of a crashed snapshot: an uncommitted generation.
    fs::create_dir(dir.0.join(format!("snapshot-{:020}", 2))).unwrap();
    fs::write(dir.0.join(format!("manifest-{:020}.tmp", 2)), b"torn").unwrap();
    let mut steps = Vec::new();
    let report = engine
        .snapshot_with(&CancellationToken::new(), &mut |s| steps.push(s.name()))
        .unwrap();
    assert_eq!(report.generation, 3, "after every generation on disk");
    assert_eq!(report.removed, 4, "generation 1 and the leftovers");
    for name in ebb_engine::SnapshotStep::NAMES {
        assert!(steps.contains(name), "{name} not reported: {steps:?}");
    }
    let pos = |n: &str| steps.iter().position(|s| *s == n).unwrap();
    assert!(pos("manifest_rename") > steps.iter().rposition(|s| *s == "rename").unwrap());
    assert!(pos("cleanup") > pos("manifest_dir_sync"));
    let mut left: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [format!("manifest-{:020}", 3), format!("snapshot-{:020}", 3)]
    );
    drop(engine);
    let engine = open(&dir.0);
    assert_eq!(&*engine.get("docs", b"later").unwrap().unwrap(), b"yes");
}

fn data_file(dir: &Path, name: &str) -> PathBuf {
    let generation = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snapshot-")
        })
        .unwrap();
    generation.join(name)
}

fn damaged_file_leaves_out_only_its_dataset(damage: impl Fn(&Path), expect: &str) {
    let dir = TempDir::new("damaged");
    let before = {
        let engine = open(&dir.0);
        let before = fill(&engine);
        engine.snapshot().unwrap();
        before
    };
    let bad = data_file(&dir.0, "docs.kv.arrow");
    damage(&bad);
    let engine = open(&dir.0);
    let load = engine.load_report().unwrap();
    assert_eq!(load.failures.len(), 1, "{:?}", load.failures);
    match &load.failures[0] {
        Error::CorruptSnapshot { file, reason } => {
            assert_eq!(file, &bad);
            assert!(reason.contains(expect), "{reason}");
        }
        e => panic!("expected CorruptSnapshot, got {e}"),
    }
    let mut loaded = load.loaded.clone();
    loaded.sort();
    assert_eq!(loaded, ["empty", "ref"]);
    assert!(matches!(
        engine.get("docs", b"x"),
        Err(Error::UnknownDataset { .. })
    ));
    assert_eq!(contents(&engine, "ref"), before["ref"]);
    // Moved aside for the operator, not deleted.
    assert_eq!(load.quarantined.len(), 1);
    assert!(load.quarantined[0].exists());
    assert!(!bad.exists());
    // Nothing of a left-out dataset is charged.
    assert_eq!(engine.dataset_reserved_bytes("docs"), 0);
}

#[test]
fn a_truncated_file_is_a_typed_error_naming_it() {
    damaged_file_leaves_out_only_its_dataset(
        |f| {
            let len = fs::metadata(f).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(f)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        },
        "truncated",
    );
}

#[test]
fn a_corrupt_file_is_a_typed_error_naming_it() {
    damaged_file_leaves_out_only_its_dataset(
        |f| {
            let mut bytes = fs::read(f).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x40;
            fs::write(f, bytes).unwrap();
        },
        "crc32c",
    );
}

#[test]
fn a_corrupt_manifest_falls_back_to_nothing_and_says_so() {
    let dir = TempDir::new("manifest");
    {
        let engine = open(&dir.0);
        fill(&engine);
        engine.snapshot().unwrap();
    }
    let manifest = dir.0.join(format!("manifest-{:020}", 1));
    let mut bytes = fs::read(&manifest).unwrap();
    bytes[20] ^= 1;
    fs::write(&manifest, bytes).unwrap();
    let engine = open(&dir.0);
    let load = engine.load_report().unwrap();
    assert_eq!(load.generation, None);
    assert!(
        matches!(&load.failures[..], [Error::CorruptSnapshot { file, .. }] if *file == manifest),
        "{:?}",
        load.failures
    );
    assert!(engine.list_datasets().is_empty());
}

#[test]
fn a_cancelled_snapshot_leaves_the_previous_one_newest() {
    let dir = TempDir::new("cancel");
    let engine = open(&dir.0);
    let before = fill(&engine);
    engine.snapshot().unwrap();
    engine.put("docs", b"after-first", b"!").unwrap();
    let token = CancellationToken::new();
    let mut writes = 0;
    let e = engine
        .snapshot_with(&token, &mut |s| {
            if s.name() == "write" {
                writes += 1;
                token.cancel();
            }
        })
        .unwrap_err();
    assert!(writes >= 1);
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    let names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the partial generation is removed: {names:?}"
    );
    drop(engine);
    let engine = open(&dir.0);
    assert_eq!(engine.load_report().unwrap().generation, Some(1));
    assert_eq!(contents(&engine, "docs"), before["docs"]);
}

#[test]
fn without_a_data_dir_a_snapshot_is_refused() {
    let engine = Engine::open(EngineConfig {
        memory_limit_bytes: 1 << 28,
        ..EngineConfig::default()
    })
    .unwrap();
    assert!(matches!(engine.snapshot(), Err(Error::NoDataDir)));
    assert!(engine.load_report().is_none());
}
