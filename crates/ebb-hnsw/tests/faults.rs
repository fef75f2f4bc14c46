//! Fault injection on every public path of ebb-hnsw that reaches `mmap` or
//! `madvise` (issue 12), through the per-thread schedules of
//! `ebb_core::os::fault`. Only [`NativeGraph`] maps memory (its vectors and
//! layer-0 links are two flat `Mapping`s; hnsw_rs uses the heap), so these
//! tests run on it.
//!
//! Public fallible paths, and which reach the OS:
//!
//! | path | reaches | outcome when it fails | covered by |
//! |---|---|---|---|
//! | `NativeGraph::new` (`GraphBackend::new`) | `mmap` x2 | `Error::AllocationFailed` | `native_graph_new_and_growth_fail_with_allocation_failed` |
//! | `NativeGraph::insert_batch` growing its arrays | `mmap` x2 | `Error::AllocationFailed`, graph unchanged | the same |
//! | `VectorIndex::with_backend::<NativeGraph>` (`VectorIndex::new` is hnsw_rs: heap only, shown not to map) | `mmap` (the empty graph) | `Error::AllocationFailed`, nothing charged | `index_construction_fails_with_allocation_failed_and_charges_nothing` |
//! | `VectorIndex::flush_delta` growing the graph | `mmap` | `Error::AllocationFailed`, every point kept in the delta | `flush_that_cannot_grow_the_graph_keeps_every_point` |
//! | `VectorIndex::insert`, `upsert`, `insert_batch` (their flush when the delta is full) | `mmap` | `Ok`: the write is accepted and stays in the delta (the flush is the index's business, retried at the next write) | `writes_whose_flush_cannot_grow_the_graph_are_kept_in_the_delta` |
//! | `VectorIndex::rebuild` (`run_maintenance` rebuilds through it) | `mmap` (the new graph) | `RebuildError::Graph(Error::AllocationFailed)`, index unchanged | `rebuild_whose_new_graph_cannot_be_mapped_changes_nothing` |
//! | releasing a retired generation (`RebuildReport::retired`) | `madvise(MADV_DONTNEED)` | not an error: the drop unmaps what madvise could not release; the accounting is exact | `retired_generation_released_with_madvise_failing_is_fully_accounted` |
//!
//! Not reaching the OS: `search`, `search_with_ef` (read only),
//! `set_rebuild_policy`, `IndexConfig::validate`, `GraphParams::validate`.
//! The graph-level cases are also in `tests/bad_input.rs`; here each is
//! followed by the same call succeeding once the schedule is reset.

#![cfg(not(miri))]

use ebb_core::MemoryBudget;
use ebb_core::os::fault;
use ebb_hnsw::{
    Error, GraphBackend, GraphParams, IndexConfig, IndexStats, MAX_EF, Metric, NativeGraph,
    RebuildError, Tombstones, VectorIndex,
};
use tokio_util::sync::CancellationToken;

const DIM: usize = 8;

/// A pseudo-random vector per id (components in 0..100; splitmix64).
fn vector(id: u64) -> Vec<f32> {
    (0..DIM as u64)
        .map(|j| {
            let mut x = (id << 8 | j).wrapping_add(0x9E37_79B9_7F4A_7C15);
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^= x >> 31;
            (x >> 40) as f32 / (1u64 << 24) as f32 * 100.0
        })
        .collect()
}

fn params() -> GraphParams {
    GraphParams {
        ef_construction: 32,
        ..GraphParams::new(DIM, Metric::L2)
    }
}

fn batch(ids: &[u32]) -> Vec<(u32, Vec<f32>)> {
    ids.iter().map(|&id| (id, vector(id.into()))).collect()
}

fn insert(g: &mut NativeGraph, points: &[(u32, Vec<f32>)]) -> ebb_hnsw::Result<()> {
    let b: Vec<(u32, &[f32])> = points.iter().map(|(id, v)| (*id, v.as_slice())).collect();
    g.insert_batch(&b)
}

fn is_allocation_failure(e: &Error, array: &str) -> bool {
    matches!(e, Error::AllocationFailed { what, reason, .. }
        if *what == array && reason.contains("mmap"))
}

#[test]
fn native_graph_new_and_growth_fail_with_allocation_failed() {
    for (skip, array) in [(0, "vectors"), (1, "layer-0 links")] {
        fault::fail_maps(skip, 1);
        let r = NativeGraph::new(params());
        fault::reset();
        assert!(
            matches!(&r, Err(e) if is_allocation_failure(e, array)),
            "{array}: {:?}",
            r.err()
        );
    }
    let mut g = NativeGraph::new(params()).unwrap();
    let first: Vec<u32> = (0..50).collect();
    insert(&mut g, &batch(&first)).unwrap();
    let none = Tombstones::default();
    let answers = |g: &NativeGraph| {
        (0..50u64)
            .map(|id| g.search(&vector(id), 1, 64, &none).unwrap())
            .collect::<Vec<_>>()
    };
    let before = (g.len(), g.memory_bytes(), answers(&g));
    // Id 5000 is past the first arrays (1024 nodes): the batch must grow
    // them, and either new array can fail.
    let grow = batch(&[50, 5000]);
    for (skip, array) in [(0, "vectors"), (1, "layer-0 links")] {
        fault::fail_maps(skip, 1);
        let r = insert(&mut g, &grow);
        fault::reset();
        assert!(
            matches!(&r, Err(e) if is_allocation_failure(e, array)),
            "{r:?}"
        );
        assert_eq!((g.len(), g.memory_bytes(), answers(&g)), before, "{array}");
    }
    insert(&mut g, &grow).unwrap();
    assert_eq!(g.len(), 52);
    assert_eq!(
        g.search(&vector(5000), 1, 64, &none).unwrap(),
        vec![(5000, 0.0)]
    );
    assert_eq!(answers(&g), before.2);
}

#[test]
fn index_construction_fails_with_allocation_failed_and_charges_nothing() {
    let budget = MemoryBudget::unlimited();
    let config = || IndexConfig::new(DIM, Metric::L2).with_budget(&budget, "hnsw");
    for (skip, array) in [(0, "vectors"), (1, "layer-0 links")] {
        fault::fail_maps(skip, 1);
        let r = VectorIndex::<NativeGraph>::with_backend(config());
        fault::reset();
        assert!(
            matches!(&r, Err(e) if is_allocation_failure(e, array)),
            "{array}: {:?}",
            r.err()
        );
        assert_eq!(budget.reserved_bytes(), 0, "{array}");
    }
    // Same call, no schedule.
    let index = VectorIndex::<NativeGraph>::with_backend(config()).unwrap();
    index.insert(1, &vector(1)).unwrap();
    assert_eq!(index.search(&vector(1), 1).unwrap(), vec![(1, 0.0)]);
    assert_eq!(budget.reserved_bytes(), index.stats().reserved_bytes);
    // `VectorIndex::new` is the hnsw_rs backend, on the heap: it maps
    // nothing, and the armed schedule is still there afterwards.
    fault::fail_maps(0, 1);
    let hnsw_rs = VectorIndex::new(config());
    let native = VectorIndex::<NativeGraph>::with_backend(config());
    fault::reset();
    assert!(hnsw_rs.is_ok());
    assert!(matches!(&native, Err(e) if is_allocation_failure(e, "vectors")));
}

/// An index whose graph holds nothing yet and whose delta holds 1099
/// points (ids 0..1300, 200 of them deleted), capacity 1000 live: the next
/// flush hands the graph internal ids past its first 1024-node arrays, so
/// it must grow them. With the delta capacity at 1100, the next write
/// flushes.
fn index_at_the_edge(budget: &MemoryBudget) -> (VectorIndex<NativeGraph>, Vec<u64>) {
    let index = VectorIndex::<NativeGraph>::with_backend(
        IndexConfig::new(DIM, Metric::L2)
            .with_capacity(1000)
            .with_delta_capacity(1100)
            .with_ef_construction(32)
            .with_budget(budget, "hnsw"),
    )
    .unwrap();
    let mut live = Vec::new();
    for id in 0..1000 {
        index.insert(id, &vector(id)).unwrap();
        live.push(id);
    }
    for id in (0..1000).step_by(5) {
        assert!(index.delete(id));
    }
    live.retain(|id| id % 5 != 0);
    for id in 1000..1099 {
        index.insert(id, &vector(id)).unwrap();
        live.push(id);
    }
    assert_eq!(index.stats().delta_points, 1099);
    (index, live)
}

/// Every live id is there with its vector, and the index holds exactly
/// them; searches for them find them: every one while all are in the delta
/// (searched exactly), nearly every one once they are in the graph (HNSW
/// does not promise every node reachable).
fn check_points(index: &VectorIndex<NativeGraph>, live: &[(u64, u64)]) {
    assert_eq!(index.len(), live.len());
    for &(id, v) in live {
        assert!(index.contains(id), "{id}");
        assert_eq!(index.get_vector(id), Some(vector(v)), "{id}");
    }
    let s = index.stats();
    let exact = s.delta_points == s.live_points + s.deleted_points;
    let probes: Vec<_> = live.iter().step_by(7).collect();
    let found = probes
        .iter()
        .filter(|&&&(id, v)| index.search_with_ef(&vector(v), 1, MAX_EF).unwrap()[0] == (id, 0.0))
        .count();
    if exact {
        assert_eq!(found, probes.len(), "a point in the delta was not found");
    } else {
        assert!(
            found * 10 >= probes.len() * 9,
            "{found} of {}",
            probes.len()
        );
    }
}

fn same_vectors(ids: &[u64]) -> Vec<(u64, u64)> {
    ids.iter().map(|&id| (id, id)).collect()
}

/// The stats a refused flush must not change.
fn kept(s: &IndexStats) -> (u64, u64, u64, u64, u64, u64) {
    (
        s.live_points,
        s.deleted_points,
        s.delta_points,
        s.graph_bytes,
        s.points_bytes,
        s.reserved_bytes,
    )
}

#[test]
fn flush_that_cannot_grow_the_graph_keeps_every_point() {
    let budget = MemoryBudget::unlimited();
    let (index, live) = index_at_the_edge(&budget);
    let live = same_vectors(&live);
    let before = index.stats();
    for skip in [0, 1] {
        fault::fail_maps(skip, 1);
        let r = index.flush_delta();
        fault::reset();
        let array = ["vectors", "layer-0 links"][skip as usize];
        assert!(
            matches!(&r, Err(e) if is_allocation_failure(e, array)),
            "{r:?}"
        );
        assert_eq!(kept(&index.stats()), kept(&before));
        assert_eq!(budget.reserved_bytes(), before.reserved_bytes);
        check_points(&index, &live);
    }
    index.flush_delta().unwrap();
    let s = index.stats();
    assert_eq!((s.delta_points, s.live_points), (0, before.live_points));
    assert!(s.graph_bytes > before.graph_bytes);
    check_points(&index, &live);
}

#[test]
fn writes_whose_flush_cannot_grow_the_graph_are_kept_in_the_delta() {
    let token = CancellationToken::new();
    type Write = fn(&VectorIndex<NativeGraph>, u64, &CancellationToken);
    let writes: [(&str, Write); 3] = [
        ("insert", |index, id, _| {
            index.insert(id, &vector(id)).unwrap();
        }),
        ("upsert", |index, id, _| {
            index.upsert(id, &vector(id)).unwrap();
        }),
        ("insert_batch", |index, id, token| {
            let v = vector(id);
            assert_eq!(index.insert_batch(&[(id, &v)], token).unwrap(), 1);
        }),
    ];
    for (name, write) in writes {
        let budget = MemoryBudget::unlimited();
        let (index, mut live) = index_at_the_edge(&budget);
        let graph_bytes = index.stats().graph_bytes;
        // The 1100th point fills the delta: its write flushes, and the
        // flush cannot grow the graph. The write is still accepted.
        fault::fail_maps(0, 1);
        write(&index, 5000, &token);
        fault::reset();
        live.push(5000);
        let s = index.stats();
        assert_eq!(s.delta_points, 1100, "{name}");
        assert_eq!(
            s.graph_bytes, graph_bytes,
            "{name}: nothing reached the graph"
        );
        assert_eq!(budget.reserved_bytes(), s.reserved_bytes, "{name}");
        check_points(&index, &same_vectors(&live));
        // Same call, no schedule: this write's flush succeeds.
        write(&index, 5001, &token);
        live.push(5001);
        let s = index.stats();
        assert_eq!(s.delta_points, 0, "{name}");
        assert!(s.graph_bytes > graph_bytes, "{name}");
        check_points(&index, &same_vectors(&live));
    }
}

/// An index of 400 points in its graph, a quarter of them deleted.
fn index_to_rebuild(budget: &MemoryBudget) -> (VectorIndex<NativeGraph>, Vec<(u64, u64)>) {
    let index = VectorIndex::<NativeGraph>::with_backend(
        IndexConfig::new(DIM, Metric::L2)
            .with_delta_capacity(64)
            .with_ef_construction(32)
            .with_budget(budget, "hnsw"),
    )
    .unwrap();
    for id in 0..400 {
        index.insert(id, &vector(id)).unwrap();
    }
    index.flush_delta().unwrap();
    for id in (0..400).step_by(4) {
        assert!(index.delete(id));
    }
    let live = (0..400).filter(|id| id % 4 != 0).collect::<Vec<_>>();
    (index, same_vectors(&live))
}

#[test]
fn rebuild_whose_new_graph_cannot_be_mapped_changes_nothing() {
    let budget = MemoryBudget::unlimited();
    let (index, live) = index_to_rebuild(&budget);
    let token = CancellationToken::new();
    let before = index.stats();
    for (skip, array) in [(0, "vectors"), (1, "layer-0 links")] {
        fault::fail_maps(skip, 1);
        let r = index.rebuild(&token);
        fault::reset();
        match &r {
            Err(RebuildError::Graph(e)) if is_allocation_failure(e, array) => {}
            other => panic!("{array}: expected RebuildError::Graph, got {other:?}"),
        }
        let mut after = index.stats();
        assert_eq!(
            after.rebuild_failures_total,
            before.rebuild_failures_total + u64::from(skip) + 1
        );
        after.rebuild_failures_total = before.rebuild_failures_total;
        assert_eq!(after, before, "{array}");
        assert_eq!(budget.reserved_bytes(), before.reserved_bytes);
        check_points(&index, &live);
    }
    let report = index.rebuild(&token).unwrap();
    assert_eq!(report.points_built, live.len());
    assert_eq!(report.deleted_dropped, 100);
    report.retired.release();
    let s = index.stats();
    assert_eq!((s.generation, s.deleted_points), (before.generation + 1, 0));
    assert_eq!(s.retired_bytes, 0);
    check_points(&index, &live);
}

#[test]
fn retired_generation_released_with_madvise_failing_is_fully_accounted() {
    let budget = MemoryBudget::unlimited();
    let (index, live) = index_to_rebuild(&budget);
    let token = CancellationToken::new();
    for attempt in ["failing", "not failing"] {
        let released_before = index.stats().released_bytes_total;
        let report = index.rebuild(&token).unwrap();
        let retired = index.stats().retired_bytes;
        assert!(retired > 0);
        if attempt == "failing" {
            // Every madvise of the retired graph's arrays fails.
            fault::fail_advises(0, u32::MAX);
        }
        report.retired.release();
        fault::reset();
        let s = index.stats();
        assert_eq!(s.retired_bytes, 0, "{attempt}");
        assert_eq!(
            s.released_bytes_total,
            released_before + retired,
            "{attempt}"
        );
        assert_eq!(budget.reserved_bytes(), s.reserved_bytes, "{attempt}");
        check_points(&index, &live);
    }
}
