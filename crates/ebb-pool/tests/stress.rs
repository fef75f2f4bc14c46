//! Two threads get, fill, check and drop buffers, and hand some to each
//! other through a channel; every buffer carries a checksum of its owner's
//! pattern. Zero wrong reads; at the end nothing is in use and the
//! counters balance.
//!
//! Scale: EBB_POOL_STRESS_OPS (default 50 000 per thread).

use std::sync::mpsc;

use ebb_pool::{BufferPool, PoolConfig, PooledBuf};
use ebb_testkit::Rng;

fn ops() -> u64 {
    std::env::var("EBB_POOL_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(miri) { 200 } else { 50_000 })
}

fn stamp(buf: &mut PooledBuf, seed: u64) {
    let mut x = seed;
    for b in buf.iter_mut() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (x >> 56) as u8;
    }
}

fn verify(buf: &PooledBuf, seed: u64) -> bool {
    let mut x = seed;
    buf.iter().all(|&b| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        b == (x >> 56) as u8
    })
}

fn run(zero: bool) {
    let pool = BufferPool::new(
        PoolConfig::default()
            .with_tiers([64, 512, 4096, 32 << 10])
            .with_zero_on_return(zero),
    )
    .unwrap();
    let n = ops();
    let (tx0, rx1) = mpsc::channel::<(PooledBuf, u64)>();
    let (tx1, rx0) = mpsc::channel::<(PooledBuf, u64)>();
    let bad: u64 = std::thread::scope(|s| {
        let worker =
            |id: u64, tx: mpsc::Sender<(PooledBuf, u64)>, rx: mpsc::Receiver<(PooledBuf, u64)>| {
                let pool = pool.clone();
                move || {
                    let mut rng = Rng::new(id + 1);
                    let mut held: Vec<(PooledBuf, u64)> = Vec::new();
                    let mut bad = 0u64;
                    for i in 0..n {
                        let len = rng.below(if cfg!(miri) { 5_000 } else { 40_000 }) as usize;
                        let mut buf = pool.get(len);
                        if zero && !buf.iter().all(|&b| b == 0) {
                            bad += 1;
                        }
                        let seed = (id << 48) ^ i;
                        stamp(&mut buf, seed);
                        held.push((buf, seed));
                        if rng.below(8) == 0 {
                            let k = rng.below(held.len() as u64) as usize;
                            let _ = tx.send(held.swap_remove(k));
                        }
                        while let Ok(got) = rx.try_recv() {
                            held.push(got);
                        }
                        while held.len() > 6 {
                            let k = rng.below(held.len() as u64) as usize;
                            let (buf, seed) = held.swap_remove(k);
                            if !verify(&buf, seed) {
                                bad += 1;
                            }
                        }
                    }
                    drop(tx);
                    // Drain what the other side sends until it hangs up.
                    for (buf, seed) in rx.iter().chain(held) {
                        if !verify(&buf, seed) {
                            bad += 1;
                        }
                    }
                    bad
                }
            };
        let a = s.spawn(worker(0, tx0, rx0));
        let b = s.spawn(worker(1, tx1, rx1));
        a.join().unwrap() + b.join().unwrap()
    });
    assert_eq!(bad, 0, "wrong reads");
    let stats = pool.stats();
    assert_eq!(stats.in_use, 0);
    assert_eq!(stats.oversized_in_use, 0);
    assert_eq!(stats.gets_total, stats.puts_total);
    assert_eq!(stats.gets_total + stats.oversized_total, 2 * n);
    assert!(stats.hits_total > 0);
}

#[test]
fn two_threads_with_zeroing_never_read_a_wrong_byte() {
    run(true);
}

#[test]
fn two_threads_without_zeroing_never_read_a_wrong_byte() {
    run(false);
}
