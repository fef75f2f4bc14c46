//! The collectors over real stats: values agree with the stats they read
//! (an arena's live bytes after known inserts, a pool's gets, an index's
//! points, the budget's consumers), and `promtool check metrics` finds
//! nothing to report on the whole scrape (skipped, saying why, where
//! promtool is not installed).

use ebb_arena::{BlobArena, SlabConfig};
use ebb_core::MemoryBudget;
use ebb_hnsw::{IndexConfig, Metric, NativeGraph, VectorIndex};
use ebb_metrics::{LabelCap, Scrape, Value, collect, text};
use ebb_pool::{BufferPool, PoolConfig};

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let f = s
        .families()
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let sample = f
        .samples
        .iter()
        .find(|x| {
            labels
                .iter()
                .all(|(k, v)| x.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .unwrap_or_else(|| panic!("no {name}{labels:?}"));
    match sample.value {
        Value::Number(v) => v,
        Value::Histogram(_) => panic!("{name} is a histogram"),
    }
}

/// A scrape of one arena, pool, index, the budget and the process.
fn scrape() -> (Scrape, u64) {
    let budget = MemoryBudget::new(1 << 30);
    let arena = BlobArena::new(SlabConfig::default().with_name("kv")).unwrap();
    let mut live = 0;
    for i in 0..1000u32 {
        let v = vec![i as u8; 100 + (i % 50) as usize];
        live += v.len() as u64 + 4;
        arena.insert(&v).unwrap();
    }
    let pool = BufferPool::new(PoolConfig::default().with_name("docs/pool")).unwrap();
    for _ in 0..10 {
        drop(pool.get(1000));
    }
    let index: VectorIndex<NativeGraph> =
        VectorIndex::with_backend(IndexConfig::new(4, Metric::L2)).unwrap();
    for id in 0..50u64 {
        index.insert(id, &[id as f32, 1.0, 2.0, 3.0]).unwrap();
    }
    let _held = budget.reservation("docs/kv");
    let mut s = Scrape::new();
    let d = [("dataset", "docs")];
    collect::arena(&mut s, &arena.stats(), &d);
    collect::pool(&mut s, &pool.stats(), &d);
    collect::index(&mut s, &index.stats(), &d);
    collect::budget(&mut s, &budget.stats(), &mut LabelCap::new(64));
    collect::process(&mut s);
    (s, live)
}

#[test]
fn values_agree_with_the_stats_they_read() {
    let (s, live) = scrape();
    let kv = [("dataset", "docs"), ("arena", "kv")];
    assert_eq!(value(&s, "ebb_arena_live_bytes", &kv), live as f64);
    assert_eq!(value(&s, "ebb_arena_records", &kv), 1000.0);
    let points: f64 = ["live", "deleted"]
        .iter()
        .map(|st| value(&s, "ebb_index_points", &[("state", st)]))
        .sum();
    assert_eq!(points, 50.0);
    let gets: f64 = s
        .families()
        .iter()
        .find(|f| f.name == "ebb_mempool_gets_total")
        .unwrap()
        .samples
        .iter()
        .map(|x| match x.value {
            Value::Number(v) => v,
            Value::Histogram(_) => 0.0,
        })
        .sum();
    assert_eq!(gets, 10.0);
    assert_eq!(
        value(&s, "ebb_budget_limit_bytes", &[]),
        (1u64 << 30) as f64
    );
    assert!(value(&s, "ebb_process_resident_memory_bytes", &[]) > 0.0);
}

#[test]
fn promtool_finds_nothing_to_report_on_a_real_scrape() {
    let body = text::encode(&scrape().0);
    ebb_testkit::promtool::assert_promtool_accepts(
        "promtool_finds_nothing_to_report_on_a_real_scrape",
        &body,
    );
}
