//! close() while the compaction worker is mid-run: during an arena
//! compaction of 256 MiB of records and during a 20k-point index rebuild,
//! with a writer still writing. Close must return well within its deadline
//! with no worker missed, and nothing is lost: reopened from the closing
//! snapshot, every record and vector the writer was told were accepted
//! (and every one from before) is there, every deleted one is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_engine::{
    CompactionEvent, DatasetConfig, Engine, EngineConfig, Error, MaintenanceKind, Metric, Outcome,
    WorkerState,
};

const DIM: usize = 16;

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        memory_limit_bytes: 4 << 30,
        // The worker runs only when woken here.
        compaction_interval_secs: 3600,
        compact_when_due: false,
        data_dir: Some(dir.to_path_buf()),
        ..EngineConfig::default()
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ebb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn vector(id: u64) -> Vec<f32> {
    (0..DIM)
        .map(|d| ((id * 7 + d as u64 * 13) % 101) as f32 + id as f32 * 1e-4)
        .collect()
}

/// Waits until the `worker`'s step for `dataset` is running.
fn wait_for_step(engine: &Engine, worker: &str, dataset: &str) {
    let name = format!("{worker}/{dataset}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !engine
        .workers()
        .iter()
        .any(|w| w.name == name && w.state == WorkerState::Running)
    {
        assert!(Instant::now() < deadline, "{name} never started");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A writer that puts (and, on a vector dataset, upserts) fresh keys until
/// the engine says Closing, recording what it was told was accepted.
struct Writer {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<u32>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(engine: &Engine, dataset: &'static str, vectors: bool) -> Writer {
        let (stop, accepted) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (e, s, a) = (engine.clone(), Arc::clone(&stop), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            for i in 10_000_000u32.. {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let r = if vectors {
                    e.upsert_vector(
                        dataset,
                        u64::from(i),
                        &vector(u64::from(i)),
                        Some(&i.to_le_bytes()),
                    )
                } else {
                    e.put(dataset, &i.to_le_bytes(), &i.to_be_bytes())
                };
                match r {
                    Ok(()) => a.lock().unwrap().push(i),
                    Err(Error::Closing) => return,
                    Err(e) => panic!("write {i}: {e}"),
                }
            }
        });
        Writer {
            stop,
            accepted,
            thread,
        }
    }

    fn finish(self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        Arc::try_unwrap(self.accepted)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// Closes `engine` while its `writer` writes: close keeps its deadline
/// with no worker missed and no write unfinished, and snapshots. Returns
/// the compaction events and what the writer was told was accepted.
fn close_and_check(engine: &Engine, writer: Writer) -> (Vec<CompactionEvent>, Vec<u32>) {
    let started = Instant::now();
    let report = engine.close_blocking().unwrap();
    let took = started.elapsed();
    let written = writer.finish();
    let events = engine.compaction_events();
    eprintln!(
        "close took {took:?} ({report:?}); events {events:?}; {} written meanwhile",
        written.len()
    );
    assert!(
        !report.deadline_missed && report.missed.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.writes_unfinished, 0);
    assert!(report.snapshot.is_some(), "{report:?}");
    (events, written)
}

#[test]
fn close_during_a_256_mib_compaction_returns_and_loses_nothing() {
    let dir = temp_dir("close-compaction");
    let engine = Engine::open(config(&dir)).unwrap();
    engine
        .create_dataset("kv", DatasetConfig::new(DIM, Metric::L2))
        .unwrap();
    let value = |i: u32| -> Vec<u8> {
        let mut v = vec![(i % 251) as u8; 4000];
        v[..4].copy_from_slice(&i.to_le_bytes());
        v
    };
    // 256 MiB of records, three in four deleted: a compaction is due.
    let records = (256u32 << 20) / 4000;
    for i in 0..records {
        engine.put("kv", &i.to_le_bytes(), &value(i)).unwrap();
    }
    for i in (0..records).filter(|i| i % 4 != 0) {
        assert!(engine.delete("kv", &i.to_le_bytes()).unwrap());
    }
    let writer = Writer::start(&engine, "kv", false);
    engine.wake_compaction();
    // At once: the closing snapshot then runs beside the compaction.
    wait_for_step(&engine, "compaction", "kv");
    let (events, written) = close_and_check(&engine, writer);
    assert!(
        events
            .iter()
            .any(|e| e.kind == MaintenanceKind::Arena && e.outcome != Outcome::Failed),
        "the compaction ran: {events:?}"
    );
    drop(engine);

    let engine = Engine::open(config(&dir)).unwrap();
    for i in 0..records {
        let got = engine.get("kv", &i.to_le_bytes()).unwrap();
        if i % 4 == 0 {
            assert_eq!(got.as_deref(), Some(&value(i)[..]), "record {i}");
        } else {
            assert!(got.is_none(), "deleted record {i} came back");
        }
    }
    for i in &written {
        assert_eq!(
            engine.get("kv", &i.to_le_bytes()).unwrap().as_deref(),
            Some(&i.to_be_bytes()[..]),
            "record {i} written during the close"
        );
    }
    assert_eq!(
        engine.dataset_stats("kv").unwrap().records as usize,
        records as usize / 4 + written.len()
    );
    engine.close_blocking().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn close_during_a_20k_point_rebuild_returns_and_loses_nothing() {
    let dir = temp_dir("close-rebuild");
    let engine = Engine::open(config(&dir)).unwrap();
    engine
        .create_dataset("v", DatasetConfig::new(DIM, Metric::L2))
        .unwrap();
    let points = 20_000u64;
    for id in 0..points {
        engine
            .upsert_vector("v", id, &vector(id), Some(&id.to_le_bytes()))
            .unwrap();
    }
    engine.flush("v").unwrap();
    // Three in ten deleted: over the 0.2 deleted ratio, a rebuild is due.
    let deleted = |id: u64| id % 10 < 3;
    for id in (0..points).filter(|&id| deleted(id)) {
        assert!(engine.delete_vector("v", id).unwrap());
    }
    let writer = Writer::start(&engine, "v", true);
    engine.wake_compaction();
    wait_for_step(&engine, "rebuild", "v");
    std::thread::sleep(Duration::from_millis(50));
    let (events, written) = close_and_check(&engine, writer);
    assert!(
        events.iter().any(|e| e.kind == MaintenanceKind::Index),
        "the rebuild ran: {events:?}"
    );
    drop(engine);

    let engine = Engine::open(config(&dir)).unwrap();
    for id in 0..points {
        let got = engine.get_vector("v", id).unwrap();
        if deleted(id) {
            assert!(got.is_none(), "deleted vector {id} came back");
        } else {
            assert_eq!(got, Some(vector(id)), "vector {id}");
        }
    }
    for &i in &written {
        assert_eq!(
            engine.get_vector("v", u64::from(i)).unwrap(),
            Some(vector(u64::from(i))),
            "vector {i}"
        );
    }
    let hits = engine.search("v", &vector(5), 1).unwrap();
    assert_eq!(hits[0].id, 5);
    assert_eq!(hits[0].payload.as_deref(), Some(&5u64.to_le_bytes()[..]));
    engine.close_blocking().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
