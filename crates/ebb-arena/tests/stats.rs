//! `ArenaStats` is flat and named, and a known workload gives exact
//! `*_bytes` and `*_total` values.

use ebb_arena::{BlobArena, CancellationToken, CompactionPolicy, SlabConfig, TypedArena};
use ebb_slab::HugePages;

const SLAB: usize = 64 << 10;

fn config() -> SlabConfig {
    SlabConfig::default()
        .with_slab_bytes(SLAB)
        .with_shards(1)
        .with_huge_pages(HugePages::Disable)
}

#[test]
fn name_comes_from_the_config_or_with_name() {
    let a = BlobArena::new(config()).unwrap();
    assert_eq!(a.stats().name, "default");
    let b = BlobArena::new(config().with_name("values")).unwrap();
    assert_eq!((b.name(), b.stats().name.as_str()), ("values", "values"));
    let c = TypedArena::<u64>::new(config().with_name("cfg"))
        .unwrap()
        .with_name("rows");
    assert_eq!(c.stats().name, "rows");
}

#[test]
fn compaction_of_a_known_workload_counts_exact_bytes_and_totals() {
    let arena = TypedArena::<[u64; 8]>::new(config())
        .unwrap()
        .with_name("vectors");
    let per_slab = SLAB / 64;
    let handles: Vec<_> = (0..3 * per_slab as u64)
        .map(|i| arena.insert([i; 8]).unwrap())
        .collect();
    let s = arena.stats();
    assert_eq!(s.name, "vectors");
    assert_eq!(s.records, 3 * per_slab as u64);
    assert_eq!(s.live_bytes, 3 * SLAB as u64);
    assert_eq!(s.resident_bytes, 3 * SLAB as u64);
    assert_eq!(s.reserved_bytes, 3 * SLAB as u64);
    assert_eq!(s.slabs_active + s.slabs_sealed, 3);
    assert_eq!(
        (s.compactions_total, s.moved_bytes_total, s.releases_total),
        (0, 0, 0)
    );

    // Keep one record in 8 of the first two slabs: 2 × 128 records move.
    for (i, h) in handles.iter().enumerate().take(2 * per_slab) {
        if i % 8 != 0 {
            assert!(arena.remove(*h));
        }
    }
    arena.reclaim();
    let kept = (per_slab + 2 * per_slab / 8) as u64;
    let s = arena.stats();
    assert_eq!((s.records, s.live_bytes), (kept, kept * 64));
    assert_eq!(s.pending_frees, 0);

    let report = arena
        .compact(
            &CompactionPolicy::default()
                .with_max_live_ratio(0.5)
                .with_min_reclaim_bytes(0),
            &CancellationToken::new(),
        )
        .unwrap();
    let s = arena.stats();
    assert_eq!(report.bytes_moved, 2 * (per_slab as u64 / 8) * 64);
    assert_eq!(s.moved_bytes_total, report.bytes_moved);
    assert_eq!(s.compactions_total, 1);
    assert_eq!(s.slabs_compacted_total, 2);
    assert_eq!(s.releases_total, 2);
    assert_eq!(s.slabs_released, 2);
    assert_eq!((s.records, s.live_bytes), (kept, kept * 64));
    assert_eq!(s.slab_stats().live_bytes, s.live_bytes);
    for (i, h) in handles.iter().enumerate() {
        if i >= 2 * per_slab || i % 8 == 0 {
            assert_eq!(arena.get_copied(*h).map(|v| v[0]), Some(i as u64));
        }
    }
}

#[test]
fn the_handle_table_is_counted_and_charged_with_the_slabs() {
    let budget = ebb_core::MemoryBudget::unlimited();
    let arena = TypedArena::<u64>::new(config().with_budget(&budget, "t")).unwrap();
    let empty = arena.stats().slot_table_bytes;
    // More handles than one chunk of the table holds (65 536).
    let handles: Vec<_> = (0..70_000u64).map(|i| arena.insert(i).unwrap()).collect();
    let stats = arena.stats();
    assert!(stats.slot_table_bytes >= empty + 70_000 * 16, "{stats:?}");
    assert!(
        budget.reserved_bytes() >= stats.resident_bytes + stats.slot_table_bytes,
        "budget {} against slabs {} + table {}",
        budget.reserved_bytes(),
        stats.resident_bytes,
        stats.slot_table_bytes
    );
    for h in handles {
        assert!(arena.remove(h));
    }
    // Removing frees records, not slots: handles stay stable.
    assert_eq!(arena.stats().slot_table_bytes, stats.slot_table_bytes);
    drop(arena);
    assert_eq!(
        budget.reserved_bytes(),
        0,
        "the table's charge goes with the arena"
    );
}

#[test]
fn warm_slabs_are_kept_for_reuse_and_released_on_demand() {
    let arena = BlobArena::new(config().with_max_warm_slabs(4)).unwrap();
    // Several slabs of records, then every record removed: the emptied
    // slabs stay warm (up to 4), resident for the next inserts.
    let record = vec![3u8; 20 << 10];
    let handles: Vec<_> = (0..64).map(|_| arena.insert(&record).unwrap()).collect();
    for h in handles {
        assert!(arena.remove(h));
    }
    arena.reclaim_threads(true);
    let warm = arena.stats().slabs_warm;
    assert!(warm > 0, "{:?}", arena.stats());
    let released = arena.release_warm_slabs();
    assert!(released > 0);
    assert_eq!(arena.stats().slabs_warm, 0, "{:?}", arena.stats());
    assert_eq!(arena.release_warm_slabs(), 0, "nothing left to release");
}
