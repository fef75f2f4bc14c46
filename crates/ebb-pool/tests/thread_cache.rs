//! Thread caches: what happens when guards, threads and pools end in every
//! order. Each test asserts on stats or on the budget, both of which count
//! what the pool really holds.

use std::sync::mpsc;

use ebb_core::budget::MemoryBudget;
use ebb_pool::{AdaptiveConfig, BufferPool, PoolConfig};
use proptest::prelude::*;

fn pool_with(budget: &MemoryBudget) -> BufferPool {
    BufferPool::new(
        PoolConfig::small_records()
            .with_zero_on_return(false)
            .with_budget(budget, "pool:test"),
    )
    .unwrap()
}

#[test]
fn a_thread_serves_itself_from_its_magazine() {
    let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
    drop(pool.get(100));
    for _ in 0..100 {
        drop(pool.get(100));
    }
    let t = pool.stats().tiers[1];
    assert_eq!(
        (t.gets_total, t.hits_total, t.puts_total, t.in_use),
        (101, 100, 101, 0)
    );
    assert_eq!(t.retained, 1);
}

#[test]
fn an_exiting_thread_hands_its_buffers_to_the_store() {
    let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
    let p = pool.clone();
    std::thread::spawn(move || {
        let held: Vec<_> = (0..4).map(|_| p.get(1000)).collect();
        drop(held);
    })
    .join()
    .unwrap();
    let t = pool.stats().tiers[2];
    assert_eq!(
        (t.gets_total, t.puts_total, t.in_use),
        (4, 4, 0),
        "counts survive the thread"
    );
    assert_eq!(t.retained, 4, "the buffers went to the store, not away");
    // And this thread reuses them.
    let again: Vec<_> = (0..4).map(|_| pool.get(1000)).collect();
    assert_eq!(pool.stats().tiers[2].hits_total, 4);
    drop(again);
}

#[test]
fn a_guard_outlives_the_thread_that_made_it() {
    let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
    let p = pool.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = p.get(10);
        buf.fill(3);
        tx.send(buf).unwrap();
    })
    .join()
    .unwrap();
    let buf = rx.recv().unwrap();
    assert_eq!(&buf[..], &[3; 10]);
    assert_eq!(pool.stats().in_use, 1);
    drop(buf); // frees the dead thread's cache: its last reference
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.retained), (0, 1));
}

#[test]
fn a_dropped_pool_gives_this_threads_cached_memory_back_at_once() {
    let budget = MemoryBudget::unlimited();
    let pool = pool_with(&budget);
    let held: Vec<_> = (0..8).map(|_| pool.get(4000)).collect();
    drop(held);
    assert!(budget.reserved_bytes() >= 8 * 4096);
    drop(pool);
    // The drop took this thread's cache over too (it was outside the pool):
    // nothing waits for the thread's next pool call.
    assert_eq!(
        budget.reserved_bytes(),
        0,
        "the closed pool's cache was swept"
    );
    // A later call on this thread finds nothing left to sweep.
    let other = BufferPool::new(PoolConfig::small_records()).unwrap();
    drop(other.get(1));
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn a_dropped_pool_outlived_by_its_guards_frees_everything_when_they_drop() {
    let budget = MemoryBudget::unlimited();
    let pool = pool_with(&budget);
    let guard = pool.get(4000);
    let arrow = pool.get(8).into_arrow_buffer();
    drop(pool);
    drop(guard);
    drop(arrow);
    let other = BufferPool::new(PoolConfig::small_records()).unwrap();
    drop(other.get(1));
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn trim_frees_an_idle_threads_cache_at_once_and_the_thread_goes_on() {
    // Under Miri the presence handshake uses a SeqCst fence instead of
    // membarrier (ebb_core::presence), so the takeover runs there too.
    if !cfg!(miri) && !ebb_core::os::process_barrier_available() {
        return ebb_testkit::skip(
            "trim_frees_an_idle_threads_cache_at_once_and_the_thread_goes_on",
            "no private expedited membarrier on this kernel",
        );
    }
    let budget = MemoryBudget::unlimited();
    let pool = pool_with(&budget);
    let (go, wait) = mpsc::channel::<()>();
    let (done, finished) = mpsc::channel::<()>();
    let p = pool.clone();
    let worker = std::thread::spawn(move || {
        let held: Vec<_> = (0..4).map(|_| p.get(1000)).collect();
        drop(held);
        done.send(()).unwrap();
        wait.recv().unwrap();
        // The next call: the magazine was taken over, the thread refills it.
        for _ in 0..3 {
            drop(p.get(1000));
        }
        done.send(()).unwrap();
        wait.recv().unwrap();
    });
    finished.recv().unwrap();
    assert_eq!(pool.stats().tiers[2].retained, 4);
    assert_eq!(pool.trim(), 4 * 1024, "the idle worker's cache, freed now");
    let s = pool.stats();
    assert_eq!((s.tiers[2].retained, s.thread_cached_bytes), (0, 0));
    assert_eq!(budget.reserved_bytes(), 0);
    go.send(()).unwrap();
    finished.recv().unwrap();
    let t = pool.stats().tiers[2];
    assert_eq!((t.gets_total, t.puts_total, t.retained), (7, 7, 1));
    assert_eq!(budget.reserved_bytes(), 1024);
    go.send(()).unwrap();
    worker.join().unwrap();
}

#[test]
fn magazines_stay_within_the_tier_cap() {
    let pool = BufferPool::new(
        PoolConfig::small_records()
            .with_max_retained(12)
            .with_adaptive(AdaptiveConfig::disabled()),
    )
    .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let held: Vec<_> = (0..10).map(|_| pool.get(64)).collect();
                drop(held);
                let t = pool.stats().tiers[0];
                assert!(t.retained <= 12, "retained {} over the cap", t.retained);
            });
        }
    });
    let t = pool.stats().tiers[0];
    assert!(t.retained <= 12);
    assert_eq!(t.in_use, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    Drop(usize),
    Trim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..5000).prop_map(Op::Get),
        4 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::Trim),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 128 }))]

    /// With thread caches on, the counters still balance: gets = hits +
    /// misses, in_use = guards out, and retention stays within its bounds.
    #[test]
    fn counters_balance_with_thread_caches(ops in prop::collection::vec(op(), 1..150)) {
        let pool = BufferPool::new(
            PoolConfig::small_records()
                .with_max_retained(6)
                .with_max_total_retained_bytes(16 << 10),
        )
        .unwrap();
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Get(len) => {
                    let buf = pool.get(len);
                    prop_assert!(buf.iter().all(|&b| b == 0));
                    out.push(buf);
                }
                Op::Drop(i) if !out.is_empty() => {
                    let mut buf = out.swap_remove(i % out.len());
                    buf.fill(0xee);
                }
                Op::Trim => {
                    pool.trim();
                }
                _ => {}
            }
            let s = pool.stats();
            prop_assert_eq!(s.gets_total, s.hits_total + s.misses_total);
            prop_assert_eq!(s.in_use + s.oversized_in_use, out.len() as u64);
            prop_assert!(s.retained_bytes <= 16 << 10);
            for t in &s.tiers {
                prop_assert!(t.retained <= t.cap.max(6));
            }
        }
    }
}
