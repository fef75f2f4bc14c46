//! Idle threads pin no memory: eight threads each fill part of their own
//! slab and then sit parked on a barrier; a ninth removes their records
//! and reaches their slabs, which the kernel then no longer holds resident
//! (mincore), not only in the arena's stats. Without the takeover those
//! slabs stay active under their idle owners and nothing can release them.

use std::sync::{Barrier, mpsc};

use ebb_arena::{BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig};
use ebb_slab::HugePages;

const THREADS: usize = 8;
const RECORD: usize = 64 << 10;
const PER_THREAD: usize = 16; // 1 MiB of each thread's 2 MiB slab

fn arena() -> BlobArena {
    BlobArena::new(
        SlabConfig::default()
            .with_huge_pages(HugePages::Disable)
            .with_max_warm_slabs(0),
    )
    .expect("config")
}

/// Runs `reach` on the ninth thread while the eight sit idle, and returns
/// (resident before, resident after) as the kernel reports them, and what
/// `reach` returned. Nothing here panics while the threads are parked (a
/// panic then would leave them waiting forever): callers assert after.
fn with_idle_threads<R>(arena: &BlobArena, reach: impl FnOnce(&BlobArena) -> R) -> (u64, u64, R) {
    let parked = Barrier::new(THREADS + 1);
    let release = Barrier::new(THREADS + 1);
    let (tx, rx) = mpsc::channel::<Vec<BlobHandle>>();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let tx = tx.clone();
            let (parked, release) = (&parked, &release);
            s.spawn(move || {
                let handles = (0..PER_THREAD)
                    .map(|i| {
                        arena
                            .insert(&vec![(t * 31 + i) as u8; RECORD])
                            .expect("insert")
                    })
                    .collect();
                tx.send(handles).expect("send");
                parked.wait();
                release.wait();
                // Back from idling: the thread goes on (a fresh slab).
                let h = arena.insert(b"after the takeover").expect("insert");
                assert_eq!(
                    arena.get_vec(h).as_deref(),
                    Some(&b"after the takeover"[..])
                );
                assert!(arena.remove(h));
            });
        }
        drop(tx);
        parked.wait();
        for handles in rx.iter().take(THREADS) {
            for h in handles {
                assert!(arena.remove(h));
            }
        }
        arena.reclaim();
        let before = arena.kernel_resident_bytes().unwrap_or(0);
        let reached = reach(arena);
        let after = arena.kernel_resident_bytes().unwrap_or(u64::MAX);
        release.wait();
        (before, after, reached)
    })
}

fn assert_released(before: u64, after: u64) {
    let their_bytes = (THREADS * PER_THREAD * RECORD) as u64;
    assert!(
        before >= their_bytes,
        "the idle threads' slabs were resident: {before} < {their_bytes}"
    );
    assert!(
        before.saturating_sub(after) >= their_bytes,
        "resident {before} -> {after}: fell by less than the idle threads' {their_bytes} bytes"
    );
}

#[test]
fn reclaim_threads_releases_idle_threads_slabs() {
    if !ebb_core::os::process_barrier_available() {
        return ebb_testkit::skip(
            "reclaim_threads_releases_idle_threads_slabs",
            "no private expedited membarrier on this kernel",
        );
    }
    let arena = arena();
    let (before, after, report) = with_idle_threads(&arena, |a| a.reclaim_threads(true));
    assert!(report.available);
    assert!(report.taken >= THREADS as u64, "{report:?}");
    assert_released(before, after);
    assert_eq!(arena.len(), 0);
}

#[test]
fn compaction_reaches_threads_idle_through_a_pass() {
    if !ebb_core::os::process_barrier_available() {
        return ebb_testkit::skip(
            "compaction_reaches_threads_idle_through_a_pass",
            "no private expedited membarrier on this kernel",
        );
    }
    let arena = arena();
    let policy = CompactionPolicy::default().with_min_reclaim_bytes(0);
    let token = CancellationToken::new();
    let (before, after, passes) = with_idle_threads(&arena, |a| {
        // The first pass sees the threads' latest operations; the second
        // finds them idle since and takes their slabs over.
        [
            a.compact(&policy, &token).is_ok(),
            a.compact(&policy, &token).is_ok(),
        ]
    });
    assert_eq!(passes, [true, true]);
    assert_released(before, after);
}
