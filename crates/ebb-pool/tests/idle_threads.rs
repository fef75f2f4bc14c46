//! Idle threads pin no pooled memory: eight threads each get and drop a
//! buffer once (filling their magazines) and then sit parked on a barrier;
//! a ninth runs maintenance, which takes their magazines over and frees
//! the buffers. The stats, the budget and the kernel (mincore on each
//! buffer's pages) all see them go. Without the takeover the buffers stay
//! in the parked threads' magazines until those threads call again.
//!
//! One test in this file, so no other test's allocations share the
//! process while it reads residency.

use std::sync::{Barrier, mpsc};

use ebb_core::budget::MemoryBudget;
use ebb_core::maintenance::Maintenance;
use ebb_pool::{BufferPool, CancellationToken, PoolConfig};

const THREADS: usize = 8;
/// The 4 MiB tier: a magazine of one buffer, allocated by mmap in glibc.
const LEN: usize = 4 << 20;

#[test]
fn maintenance_frees_the_magazines_of_parked_threads() {
    if !ebb_core::os::process_barrier_available() {
        return ebb_testkit::skip(
            "maintenance_frees_the_magazines_of_parked_threads",
            "no private expedited membarrier on this kernel",
        );
    }
    let budget = MemoryBudget::unlimited();
    let pool = BufferPool::new(
        PoolConfig::default()
            .with_name("idle")
            .with_zero_on_return(false)
            .with_budget(&budget, "pool:idle"),
    )
    .unwrap();
    let parked = Barrier::new(THREADS + 1);
    let release = Barrier::new(THREADS + 1);
    let (tx, rx) = mpsc::channel::<usize>();
    let (before, after, resident_before, resident_after, report) = std::thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, tx, parked, release) = (&pool, tx.clone(), &parked, &release);
            s.spawn(move || {
                let mut buf = pool.get(LEN);
                buf.fill(t as u8 + 1); // resident
                tx.send(buf.as_ptr() as usize).unwrap();
                drop(buf); // into this thread's magazine
                parked.wait();
                release.wait();
                // Back from idling: the thread goes on with a fresh buffer.
                let again = pool.get(LEN);
                assert_eq!(again.len(), LEN);
            });
        }
        drop(tx);
        parked.wait();
        let addrs: Vec<usize> = rx.iter().take(THREADS).collect();
        let resident = |addrs: &[usize]| -> usize {
            addrs
                .iter()
                .map(|&a| ebb_core::os::resident_bytes(a as *const u8, LEN).unwrap_or(0))
                .sum()
        };
        let before = (pool.stats(), budget.reserved_bytes());
        let resident_before = resident(&addrs);
        let report = pool.run_maintenance(&CancellationToken::new());
        let resident_after = resident(&addrs);
        let after = (pool.stats(), budget.reserved_bytes());
        release.wait();
        (before, after, resident_before, resident_after, report)
    });
    let their_bytes = (THREADS * LEN) as u64;
    let report = report.expect("run");
    assert!(report.bytes_released >= their_bytes, "{report:?}");
    let (stats_before, reserved_before) = before;
    let (stats_after, reserved_after) = after;
    assert_eq!(stats_before.thread_cached_bytes, their_bytes);
    assert_eq!(stats_after.thread_cached_bytes, 0, "{stats_after:?}");
    assert!(stats_after.thread_takeovers_total >= THREADS as u64);
    assert_eq!(stats_after.retained_bytes, 0);
    assert_eq!(reserved_before, their_bytes);
    assert_eq!(reserved_after, 0, "the budget saw them freed");
    assert!(
        resident_before >= THREADS * LEN,
        "the buffers were resident: {resident_before}"
    );
    assert_eq!(resident_after, 0, "the kernel no longer holds them");
    let s = pool.stats();
    assert_eq!(s.in_use, 0);
    assert_eq!(s.gets_total, 2 * THREADS as u64);
}
