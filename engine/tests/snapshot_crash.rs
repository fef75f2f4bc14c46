//! Crash safety of snapshots: a child process dies at every step of a
//! snapshot (failpoints through the step observer, each step hit at least
//! once) and at random points (SIGKILL, 20 times); after each, the data
//! directory must open with a whole, consistent snapshot: the previous one,
//! or the new one once its manifest's rename has happened.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ebb_engine::{DatasetConfig, Engine, EngineConfig, Metric, SnapshotStep};
use tokio_util::sync::CancellationToken;

/// A failpoint's exit code (the child's `exit` skips every destructor, as
/// a crash would).
const CRASHED: i32 = 86;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ebb-crash-{tag}-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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

fn records(tag: u64) -> u64 {
    400 + 37 * (tag % 10)
}

fn points(tag: u64) -> u64 {
    60 + 7 * (tag % 5)
}

fn value(tag: u64, i: u64) -> Vec<u8> {
    let mut v = format!("{tag}:{i}:").into_bytes();
    v.resize(v.len() + (i % 300) as usize, tag as u8);
    v
}

fn vector(tag: u64, i: u64) -> [f32; 4] {
    [tag as f32, i as f32, 1.0, (i % 3) as f32]
}

/// Makes the engine hold exactly generation `tag`'s data.
fn write_tag(engine: &Engine, tag: u64) {
    if engine.list_datasets().is_empty() {
        engine
            .create_dataset("kv", DatasetConfig::new(1, Metric::L2))
            .unwrap();
        engine
            .create_dataset("vec", DatasetConfig::new(4, Metric::L2))
            .unwrap();
    }
    for i in 0..1000 {
        if i < records(tag) {
            engine.put("kv", &i.to_le_bytes(), &value(tag, i)).unwrap();
        } else {
            engine.delete("kv", &i.to_le_bytes()).unwrap();
        }
    }
    for i in 0..100 {
        if i < points(tag) {
            let payload = format!("{tag}:{i}");
            engine
                .upsert_vector("vec", i, &vector(tag, i), Some(payload.as_bytes()))
                .unwrap();
        } else {
            engine.delete_vector("vec", i).unwrap();
        }
    }
    engine
        .put("kv", b"tag", tag.to_string().as_bytes())
        .unwrap();
}

/// Opens `dir` and checks it holds one whole generation; returns its tag.
fn verify(dir: &Path) -> u64 {
    let engine = open(dir);
    let load = engine.load_report().unwrap();
    assert!(load.failures.is_empty(), "{:?}", load.failures);
    let Some(tag) = engine.get("kv", b"tag").unwrap() else {
        assert!(engine.list_datasets().is_empty(), "data without a tag");
        return 0;
    };
    let tag: u64 = std::str::from_utf8(&tag).unwrap().parse().unwrap();
    let stats = engine.dataset_stats("kv").unwrap();
    assert_eq!(stats.records, records(tag) + 1, "tag {tag}");
    for i in 0..records(tag) {
        let got = engine.get("kv", &i.to_le_bytes()).unwrap().unwrap();
        assert_eq!(&*got, &value(tag, i)[..], "tag {tag} key {i}");
    }
    assert_eq!(engine.dataset_stats("vec").unwrap().vectors, points(tag));
    for i in 0..points(tag) {
        assert_eq!(
            engine.get_vector("vec", i).unwrap().unwrap(),
            vector(tag, i),
            "tag {tag} point {i}"
        );
    }
    let hits = engine.search("vec", &vector(tag, 3), 1).unwrap();
    assert_eq!(hits[0].id, 3);
    assert_eq!(
        hits[0].payload.as_deref(),
        Some(format!("{tag}:3").as_bytes())
    );
    tag
}

/// The child's body: `EBB_CRASH_DIR` holds the directory; with
/// `EBB_CRASH_AT=step:n` it commits tag 1, then dies at the `n`-th `step`
/// of the tag-2 snapshot; without, it commits tag after tag (reporting
/// each step on stderr) until killed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("EBB_CRASH_DIR") else {
        return; // run only as a child
    };
    let engine = open(Path::new(&dir));
    if let Ok(at) = std::env::var("EBB_CRASH_AT") {
        let (step, n) = at.split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        write_tag(&engine, 1);
        engine.snapshot().unwrap();
        write_tag(&engine, 2);
        let mut seen = 0;
        engine
            .snapshot_with(&CancellationToken::new(), &mut |s: &SnapshotStep<'_>| {
                if s.name() == step {
                    seen += 1;
                    if seen == n {
                        eprintln!("failpoint {step}:{n} hit");
                        std::process::exit(CRASHED);
                    }
                }
            })
            .unwrap();
        println!("failpoint {step}:{n} not hit");
        return;
    }
    let first = match engine.get("kv", b"tag") {
        Ok(Some(t)) => std::str::from_utf8(&t).unwrap().parse::<u64>().unwrap(),
        _ => 0,
    };
    for tag in first + 1.. {
        write_tag(&engine, tag);
        engine
            .snapshot_with(&CancellationToken::new(), &mut |s| {
                eprintln!("step {}", s.name())
            })
            .unwrap();
        println!("committed {tag}");
    }
}

fn child(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("EBB_CRASH_DIR", dir);
    cmd
}

#[test]
fn a_crash_at_every_step_leaves_a_whole_snapshot() {
    let commit = SnapshotStep::NAMES
        .iter()
        .position(|s| *s == "manifest_rename")
        .unwrap();
    for (at, step) in SnapshotStep::NAMES.iter().enumerate() {
        for n in 1..=3 {
            let dir = TempDir::new(step);
            let out = child(&dir.0)
                .env("EBB_CRASH_AT", format!("{step}:{n}"))
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if text.contains("not hit") {
                assert!(n > 1, "step {step} never reached:\n{text}");
                break;
            }
            assert_eq!(out.status.code(), Some(CRASHED), "{step}:{n}:\n{text}");
            assert!(
                text.contains(&format!("failpoint {step}:{n} hit")),
                "{text}"
            );
            let tag = verify(&dir.0);
            let want = if at < commit { 1 } else { 2 };
            assert_eq!(tag, want, "crash at {step}:{n}");
            // The next snapshot after the crash commits and cleans up.
            let engine = open(&dir.0);
            write_tag(&engine, 3);
            engine.snapshot().unwrap();
            drop(engine);
            assert_eq!(verify(&dir.0), 3, "after {step}:{n}");
            assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 2);
        }
    }
}

#[test]
fn twenty_kills_at_random_points_leave_a_whole_snapshot() {
    let dir = TempDir::new("kill");
    let mut rng = ebb_testkit::Rng::new(0x5eed);
    let mut last_committed = 0;
    let mut died_in = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..20 {
        let mut proc = child(&dir.0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(proc.stdout.take().unwrap());
        let stderr = proc.stderr.take().unwrap();
        let last_step = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(|l| l.ok())
                .filter_map(|l| l.strip_prefix("step ").map(str::to_string))
                .last()
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in stdout.lines().map_while(|l| l.ok()) {
                if let Some(tag) = line.strip_prefix("committed ") {
                    let _ = tx.send(tag.parse::<u64>().unwrap());
                }
            }
        });
        // Let it commit once, then kill it at a random point.
        let first = rx.recv_timeout(Duration::from_secs(60)).expect("a commit");
        let deadline = Instant::now() + Duration::from_micros(rng.below(40_000));
        let mut committed = first;
        while Instant::now() < deadline {
            if let Ok(t) = rx.try_recv() {
                committed = t;
            }
        }
        proc.kill().unwrap();
        proc.wait().unwrap();
        reader.join().unwrap();
        while let Ok(t) = rx.try_recv() {
            committed = t;
        }
        let step = last_step.join().unwrap().unwrap_or_default();
        *died_in.entry(step).or_default() += 1;
        let tag = verify(&dir.0);
        assert!(
            tag == committed || tag == committed + 1,
            "round {round}: loaded {tag}, last commit seen {committed}"
        );
        assert!(tag > last_committed, "round {round}: progress");
        last_committed = tag;
        // Leftovers of one crash at most, beside one or two generations.
        let entries = std::fs::read_dir(&dir.0).unwrap().count();
        assert!(entries <= 6, "round {round}: {entries} entries");
    }
    eprintln!("last step before each kill: {died_in:?}");
}
