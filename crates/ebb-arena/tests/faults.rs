//! Fault injection on every public path of [`BlobArena`] and
//! [`TypedArena`] that reaches `mmap` (issue 12), through the per-thread
//! schedules of `ebb_core::os::fault`. ebb-arena calls the OS only through
//! its `SlabArena` (the handle table is heap memory), so a path reaches
//! `mmap` when it needs a new slab or a dedicated mapping, and `madvise`
//! only through slab releases (counted by the slab layer, never an error:
//! see ebb-slab's `tests/faults.rs`).
//!
//! Covered:
//!
//! - `BlobArena::insert`, a record that needs a new slab and one that
//!   needs a dedicated mapping (over half a slab): `Error::Slab(Os)`;
//! - `BlobArena::replace`, the same two: `Error::Slab(Os)`, the old value
//!   still there;
//! - `TypedArena::insert` and `TypedArena::replace` when a new slab is
//!   needed: `Error::Slab(Os)`;
//! - `compact` (both arenas share `RawArena::compact`; tested through
//!   `BlobArena`) when its first target slab cannot be mapped, and when a
//!   later one cannot: `CompactionError::Os` with its report, every record
//!   readable, the stats exact;
//! - `release_warm_slabs` with `madvise` failing: counted in
//!   `release_failures_total`, nothing lost.
//!
//! Not covered, and why: `new` maps nothing (its errors are configuration
//! errors); `kernel_resident_bytes` calls `mincore`, which the fault
//! module does not schedule; `run_maintenance` compacts through the same
//! `compact`.

#![cfg(not(miri))]

use ebb_arena::{
    BlobArena, BlobHandle, CancellationToken, CompactionError, CompactionPolicy, Error, SlabConfig,
    TypedArena,
};
use ebb_core::os::fault;

const SLAB: usize = 64 << 10;
/// Bytes a blob record holds besides the blob (its length).
const PREFIX: u64 = 4;

/// One shard, no retained or warm slabs: every slab the arena needs is a
/// fresh `mmap`.
fn config() -> SlabConfig {
    SlabConfig::default()
        .with_slab_bytes(SLAB)
        .with_shards(1)
        .with_max_retained_slabs(0)
}

fn blob(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i.wrapping_mul(31) + j) as u8).collect()
}

fn is_mmap_failure(e: &ebb_slab::Error) -> bool {
    matches!(e, ebb_slab::Error::Os(ebb_core::Error::Os { op: "mmap", source })
        if source.kind() == std::io::ErrorKind::OutOfMemory)
}

fn is_insert_mmap_failure(e: &Error) -> bool {
    matches!(e, Error::Slab(s) if is_mmap_failure(s))
}

/// Every kept record reads back, the arena holds exactly them, and the live
/// bytes are exactly theirs (after the deferred frees are drained).
fn check_all(arena: &BlobArena, kept: &[(usize, usize, BlobHandle)]) {
    for &(i, len, h) in kept {
        assert_eq!(arena.get_vec(h), Some(blob(i, len)), "record {i}");
    }
    arena.reclaim();
    let s = arena.stats();
    assert_eq!(arena.len(), kept.len());
    assert_eq!(s.records, kept.len() as u64);
    let live: u64 = kept.iter().map(|&(_, len, _)| len as u64 + PREFIX).sum();
    assert_eq!(s.live_bytes, live);
    assert_eq!(s.pending_frees, 0);
}

/// Inserts 1000-byte blobs until one fails with `fail_maps` scheduled at
/// the next mapping; returns the accepted ones (all in slabs).
fn insert_until_a_new_slab_fails(
    arena: &BlobArena,
    kept: &mut Vec<(usize, usize, BlobHandle)>,
) -> (usize, Error) {
    fault::fail_maps(0, 1);
    for _ in 0..SLAB {
        let i = kept.len();
        match arena.insert(&blob(i, 1000)) {
            Ok(h) => kept.push((i, 1000, h)),
            Err(e) => {
                fault::reset();
                return (i, e);
            }
        }
    }
    fault::reset();
    panic!("a slab's worth of inserts never needed a new slab");
}

#[test]
fn blob_insert_that_needs_a_new_slab_fails_with_os_and_keeps_every_record() {
    let arena = BlobArena::new(config()).unwrap();
    let mut kept: Vec<_> = (0..10)
        .map(|i| (i, 1000, arena.insert(&blob(i, 1000)).unwrap()))
        .collect();
    let (i, e) = insert_until_a_new_slab_fails(&arena, &mut kept);
    assert!(is_insert_mmap_failure(&e), "{e:?}");
    let before = arena.stats();
    check_all(&arena, &kept);
    assert_eq!(arena.stats().reserved_bytes, before.reserved_bytes);
    // Same call, no schedule: a new slab.
    let h = arena.insert(&blob(i, 1000)).unwrap();
    kept.push((i, 1000, h));
    check_all(&arena, &kept);
    assert_eq!(
        arena.stats().reserved_bytes,
        before.reserved_bytes + SLAB as u64
    );
}

#[test]
fn blob_insert_of_a_large_record_fails_with_os_and_keeps_every_record() {
    let arena = BlobArena::new(config()).unwrap();
    let mut kept: Vec<_> = (0..10)
        .map(|i| (i, 1000, arena.insert(&blob(i, 1000)).unwrap()))
        .collect();
    let before = arena.stats();
    let big = 3 * SLAB;
    fault::fail_maps(0, 1);
    let r = arena.insert(&blob(10, big));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_insert_mmap_failure(e)), "{r:?}");
    check_all(&arena, &kept);
    let s = arena.stats();
    assert_eq!(
        (s.large_mappings, s.reserved_bytes),
        (0, before.reserved_bytes)
    );
    let h = arena.insert(&blob(10, big)).unwrap();
    kept.push((10, big, h));
    check_all(&arena, &kept);
    assert_eq!(arena.stats().large_mappings, 1);
}

#[test]
fn blob_replace_that_cannot_map_keeps_the_old_value() {
    let arena = BlobArena::new(config()).unwrap();
    let mut kept: Vec<_> = (0..10)
        .map(|i| (i, 1000, arena.insert(&blob(i, 1000)).unwrap()))
        .collect();
    let target = kept[3].2;
    // A large replacement (a dedicated mapping), then one into a full slab.
    fault::fail_maps(0, 1);
    let r = arena.replace(target, &blob(100, 3 * SLAB));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_insert_mmap_failure(e)), "{r:?}");
    check_all(&arena, &kept);
    let (_, e) = insert_until_a_new_slab_fails(&arena, &mut kept);
    assert!(is_insert_mmap_failure(&e), "{e:?}");
    fault::fail_maps(0, 1);
    let r = arena.replace(target, &blob(101, 1000));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_insert_mmap_failure(e)), "{r:?}");
    check_all(&arena, &kept);
    // Same calls, no schedule.
    assert!(arena.replace(target, &blob(101, 1000)).unwrap());
    kept[3] = (101, 1000, target);
    check_all(&arena, &kept);
    assert!(arena.replace(target, &blob(100, 3 * SLAB)).unwrap());
    kept[3] = (100, 3 * SLAB, target);
    check_all(&arena, &kept);
}

#[test]
fn typed_insert_and_replace_that_cannot_map_change_nothing() {
    type Rec = [u64; 32];
    let rec = |i: u64| -> Rec { std::array::from_fn(|j| i * 1000 + j as u64) };
    let arena: TypedArena<Rec> = TypedArena::new(config()).unwrap();
    let mut kept = vec![(0, arena.insert(rec(0)).unwrap())];
    // Fill until the next insert needs a new slab and cannot have it.
    fault::fail_maps(0, 1);
    let err = loop {
        let i = kept.len() as u64;
        match arena.insert(rec(i)) {
            Ok(h) => kept.push((i, h)),
            Err(e) => break e,
        }
        assert!(kept.len() < SLAB, "never needed a new slab");
    };
    fault::reset();
    assert!(is_insert_mmap_failure(&err), "{err:?}");
    let check = |kept: &[(u64, ebb_arena::Handle<Rec>)]| {
        for &(i, h) in kept {
            assert_eq!(arena.get_copied(h), Some(rec(i)), "record {i}");
        }
        arena.reclaim();
        let s = arena.stats();
        assert_eq!(s.records, kept.len() as u64);
        assert_eq!(s.live_bytes, (kept.len() * size_of::<Rec>()) as u64);
    };
    check(&kept);
    let reserved = arena.stats().reserved_bytes;
    // A replace needs room too: the slab is still full.
    fault::fail_maps(0, 1);
    let r = arena.replace(kept[0].1, rec(999));
    fault::reset();
    assert!(matches!(&r, Err(e) if is_insert_mmap_failure(e)), "{r:?}");
    check(&kept);
    assert_eq!(arena.stats().reserved_bytes, reserved);
    // Same calls, no schedule.
    assert!(arena.replace(kept[0].1, rec(999)).unwrap());
    kept[0].0 = 999;
    let i = kept.len() as u64;
    kept.push((i, arena.insert(rec(i)).unwrap()));
    check(&kept);
}

/// An arena of `slabs` full slabs of 1000-byte blobs with 3 of every 4
/// removed: sparse slabs, no free slab anywhere (no warm, no retained).
fn fragmented(slabs: usize) -> (BlobArena, Vec<(usize, usize, BlobHandle)>) {
    let arena = BlobArena::new(config()).unwrap();
    let per_slab = SLAB / 1004;
    let mut kept = Vec::new();
    for i in 0..slabs * per_slab {
        let h = arena.insert(&blob(i, 1000)).unwrap();
        if i % 4 == 0 {
            kept.push((i, 1000, h));
        } else {
            assert!(arena.remove(h));
        }
    }
    arena.reclaim();
    check_all(&arena, &kept);
    (arena, kept)
}

fn policy() -> CompactionPolicy {
    CompactionPolicy::default()
        .with_max_live_ratio(0.5)
        .with_min_reclaim_bytes(0)
}

#[test]
fn compaction_whose_first_target_cannot_be_mapped_is_os_and_loses_nothing() {
    let (arena, kept) = fragmented(8);
    let before = arena.stats();
    let token = CancellationToken::new();
    fault::fail_maps(0, 1);
    let r = arena.compact(&policy(), &token);
    fault::reset();
    match &r {
        Err(CompactionError::Os { source, report }) => {
            assert!(is_mmap_failure(source), "{source:?}");
            assert_eq!((report.slabs_compacted, report.records_moved), (0, 0));
        }
        other => panic!("expected CompactionError::Os, got {other:?}"),
    }
    check_all(&arena, &kept);
    let after = arena.stats();
    assert_eq!(after.slabs_compacted_total, 0);
    assert_eq!(after.reserved_bytes, before.reserved_bytes);
    // Same call, no schedule: the sparse slabs are emptied.
    let report = arena.compact(&policy(), &token).unwrap();
    assert!(report.slabs_compacted >= 6, "{report:?}");
    check_all(&arena, &kept);
    assert!(arena.stats().reserved_bytes < before.reserved_bytes);
}

#[test]
fn compaction_whose_later_target_cannot_be_mapped_is_os_and_loses_nothing() {
    let (arena, kept) = fragmented(16);
    let token = CancellationToken::new();
    // A reader held through the pass keeps the moved records' old places
    // (so the slabs the pass empties) from being freed until it ends: no
    // emptied slab can be reused as a target, each target is a new mapping,
    // and the second one fails.
    let reader = arena.get(kept[0].2).unwrap();
    fault::fail_maps(1, 1);
    let r = arena.compact(&policy(), &token);
    fault::reset();
    assert_eq!(&*reader, blob(0, 1000).as_slice());
    drop(reader);
    let report = match &r {
        Err(CompactionError::Os { source, report }) => {
            assert!(is_mmap_failure(source), "{source:?}");
            *report
        }
        other => panic!("expected CompactionError::Os, got {other:?}"),
    };
    // The first target was filled before the second was needed.
    assert!(report.slabs_compacted >= 1, "{report:?}");
    assert!(report.records_moved > 0);
    check_all(&arena, &kept);
    let s = arena.stats();
    assert_eq!(s.slabs_compacted_total, report.slabs_compacted as u64);
    assert_eq!(s.moved_bytes_total, report.bytes_moved);
    assert!(arena.needs_compaction(&policy()));
    // Same call, no schedule: the rest is compacted.
    let rest = arena.compact(&policy(), &token).unwrap();
    assert!(rest.slabs_compacted > 0, "{rest:?}");
    check_all(&arena, &kept);
}

#[test]
fn failed_release_of_warm_slabs_is_counted_and_loses_nothing() {
    let arena = BlobArena::new(config().with_max_warm_slabs(4)).unwrap();
    let per_slab = SLAB / 1004;
    let mut kept = Vec::new();
    let mut gone = Vec::new();
    for i in 0..4 * per_slab {
        let h = arena.insert(&blob(i, 1000)).unwrap();
        // The first two slabs are emptied, the rest kept.
        if i < 2 * per_slab {
            gone.push(h);
        } else {
            kept.push((i, 1000, h));
        }
    }
    for h in gone {
        assert!(arena.remove(h));
    }
    check_all(&arena, &kept);
    let warm = arena.stats().slabs_warm;
    assert!(warm >= 1, "{:?}", arena.stats());
    fault::fail_advises(0, 1);
    let bytes = arena.release_warm_slabs();
    fault::reset();
    assert!(bytes > 0);
    let s = arena.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (0, 1));
    check_all(&arena, &kept);
    // Same call, no schedule (a slab emptied again first).
    let h: Vec<_> = (0..per_slab + 1)
        .map(|i| arena.insert(&blob(i, 1000)).unwrap())
        .collect();
    for h in h {
        assert!(arena.remove(h));
    }
    arena.reclaim();
    let _ = arena.release_warm_slabs();
    let s = arena.stats();
    assert_eq!((s.slabs_warm, s.release_failures_total), (0, 1));
    check_all(&arena, &kept);
}
