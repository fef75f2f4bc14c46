//! Shared pieces of ebb's benchmarks: a seeded generator, record sizes,
//! shuffles, and small helpers for the `peers` scenario runner.
//!
//! Everything here is deterministic for a given seed, so two runs (or two
//! allocators in one run) see the same records in the same order.

pub mod args;
pub mod churn;
pub mod engine;
pub mod engine_vectors;
pub mod fragmentation;
pub mod leak;
pub mod lifecycle;
pub mod pool;
pub mod purge;
pub mod scenario;
pub mod serve;

/// The seeded generator every bench and test shares.
pub use ebb_testkit::Rng;

/// Record sizes drawn uniformly from `lo..=hi` until they add up to at
/// least `total_bytes`.
pub fn sizes_totalling(rng: &mut Rng, total_bytes: usize, lo: usize, hi: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(total_bytes / ((lo + hi) / 2) + 1);
    let mut sum = 0;
    while sum < total_bytes {
        let s = rng.range(lo, hi);
        sum += s;
        out.push(s);
    }
    out
}

/// A permutation of `0..n`.
pub fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let x = a.range(64, 4096);
            assert_eq!(x, b.range(64, 4096));
            assert!((64..=4096).contains(&x));
        }
        let sizes = sizes_totalling(&mut a, 1 << 20, 64, 4096);
        let sum: usize = sizes.iter().sum();
        assert!(((1 << 20)..(1 << 20) + 4096).contains(&sum));
        let mut p = permutation(&mut a, 100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
