//! The budget sees every byte a pool holds: each buffer or object it made
//! and has not freed, lent out or retained, oversized ones and growth
//! included. Only misses and frees touch it; `try_` calls are refused at
//! the limit, the infallible ones charge past it and count the overrun.

use ebb_core::budget::MemoryBudget;
use ebb_pool::{BufferPool, ObjectPool, ObjectPoolConfig, PoolConfig, Recycle};

const MIB: u64 = 1 << 20;

fn pool(budget: &MemoryBudget) -> BufferPool {
    BufferPool::new(
        PoolConfig::default()
            .with_stripes(1)
            .with_budget(budget, "pool:test"),
    )
    .unwrap()
}

#[test]
fn buffers_lent_out_oversized_and_grown_are_charged_until_freed() {
    let budget = MemoryBudget::unlimited();
    let pool = pool(&budget);
    let held: Vec<_> = (0..5).map(|_| pool.get(1 << 20)).collect();
    assert_eq!(budget.reserved_bytes(), 5 * MIB, "lent out, still charged");
    let big = pool.get(40 << 20); // past the 16 MiB tier: oversized
    assert!(big.is_oversized());
    assert_eq!(budget.reserved_bytes(), 45 * MIB);
    let mut grown = pool.get(100); // 512 B
    grown.reserve(1 << 20); // moves to the 4 MiB tier; the 512 B one is retained
    assert_eq!(grown.capacity(), 4 << 20);
    assert_eq!(budget.reserved_bytes(), 49 * MIB + 512);
    assert_eq!(pool.stats().charged_bytes, budget.reserved_bytes());

    drop(big); // oversized buffers are freed on drop
    assert_eq!(budget.reserved_bytes(), 9 * MIB + 512);
    drop(held);
    drop(grown);
    assert_eq!(
        budget.reserved_bytes(),
        9 * MIB + 512,
        "retained buffers stay charged"
    );
    assert_eq!(pool.stats().retained_bytes, 9 * MIB + 512);
    assert_eq!(pool.trim() as u64, 9 * MIB + 512);
    assert_eq!(budget.reserved_bytes(), 0, "trimmed buffers are uncharged");
}

#[test]
fn try_get_is_refused_at_the_limit_and_get_charges_past_it() {
    let budget = MemoryBudget::new(3 * MIB);
    let pool = pool(&budget);
    let mut held: Vec<_> = (0..3).map(|_| pool.try_get(1 << 20).unwrap()).collect();
    let before = pool.stats();
    let e = pool
        .try_get(1 << 20)
        .expect_err("a fourth MiB passes the budget");
    let refusal = e.budget_exceeded().expect("a budget refusal");
    assert_eq!(refusal.requested_bytes, MIB);
    assert_eq!(refusal.limit_bytes, 3 * MIB);
    assert_eq!(refusal.consumer, "pool:test");
    let after = pool.stats();
    assert_eq!(
        after.gets_total, before.gets_total,
        "a refused get is not counted"
    );
    assert_eq!(after.budget_refusals_total, 1);
    assert!(
        pool.try_get(40 << 20)
            .unwrap_err()
            .budget_exceeded()
            .is_some()
    );

    // The infallible get charges past the limit, so the budget sees it.
    held.push(pool.get(1 << 20));
    assert_eq!(budget.reserved_bytes(), 4 * MIB);
    assert_eq!(pool.stats().budget_overruns_total, 1);

    // Hits never touch the budget: at the limit, retained buffers are
    // still handed out by `try_get`.
    drop(held);
    for _ in 0..10 {
        let again: Vec<_> = (0..4).map(|_| pool.try_get(1 << 20).unwrap()).collect();
        drop(again);
    }
    assert_eq!(budget.reserved_bytes(), 4 * MIB);
    assert_eq!(pool.stats().budget_refusals_total, 2);
    pool.trim();
    assert_eq!(budget.reserved_bytes(), 0);
    drop(pool);
    assert_eq!(budget.reserved_bytes(), 0);
}

#[test]
fn a_dropped_pool_uncharges_everything() {
    let budget = MemoryBudget::unlimited();
    let pool = pool(&budget);
    let held: Vec<_> = (0..3).map(|_| pool.get(4000)).collect();
    drop(held);
    // Another thread's cache holds some too, and that thread stays alive
    // (parked) past the drop.
    let cached = std::sync::Arc::new(std::sync::Barrier::new(2));
    let release = std::sync::Arc::new(std::sync::Barrier::new(2));
    let parked = {
        let (pool, cached, release) = (pool.clone(), cached.clone(), release.clone());
        std::thread::spawn(move || {
            drop(pool.get(2000));
            drop(pool);
            cached.wait();
            release.wait();
        })
    };
    cached.wait();
    assert!(budget.reserved_bytes() >= 3 * 4000 + 2000);
    drop(pool);
    // At once: not at each thread's next call or exit.
    assert_eq!(budget.reserved_bytes(), 0, "{:?}", budget.stats());
    release.wait();
    parked.join().unwrap();
}

#[derive(Debug)]
struct Blob(Vec<u8>);

impl Recycle for Blob {
    fn recycle(&mut self) {
        self.0.clear();
    }
    fn retained_bytes(&self) -> usize {
        self.0.capacity()
    }
}

#[test]
fn objects_are_charged_from_the_factory_until_freed_and_follow_their_size() {
    let budget = MemoryBudget::new(1 << 20);
    let pool = ObjectPool::new(
        ObjectPoolConfig::default()
            .with_stripes(1)
            .with_budget(&budget, "pool:blobs"),
        || Blob(Vec::with_capacity(600 << 10)),
    )
    .unwrap();
    let a = pool.try_get().unwrap();
    assert_eq!(budget.reserved_bytes(), 600 << 10, "out, still charged");
    let e = pool.try_get().expect_err("a second 600 KiB passes 1 MiB");
    assert_eq!(e.budget_exceeded().unwrap().requested_bytes, 600 << 10);
    let mut b = pool.get(); // charged past the limit
    assert_eq!(budget.reserved_bytes(), 1200 << 10);
    let s = pool.stats();
    assert_eq!((s.budget_refusals_total, s.budget_overruns_total), (1, 1));

    // Shrunk while out: the put gives the difference back.
    b.0.shrink_to(100 << 10);
    let b_bytes = b.0.capacity() as u64;
    drop(b);
    assert_eq!(budget.reserved_bytes(), (600 << 10) + b_bytes);
    drop(a);
    assert_eq!(pool.stats().retained_bytes, budget.reserved_bytes());

    // Grown past what the budget allows while out: freed at the put.
    let mut c = pool.get();
    c.0.reserve(2 << 20);
    drop(c);
    assert_eq!(pool.stats().retained_bytes, budget.reserved_bytes());
    pool.trim();
    assert_eq!(budget.reserved_bytes(), 0);
}
