//! Test helpers shared by ebb's test suites (dev-dependency only).
//!
//! - [`Rng`]: a tiny seeded generator, identical on every machine, so a
//!   failing seed reproduces.
//! - [`in_child`]: runs one test in a process of its own, for tests that
//!   read RSS (`cargo test` runs tests as threads of one process, and their
//!   memory would mix).
//! - [`cgroup::MemoryCgroup`]: a memory cgroup with a hard limit, for
//!   tests of a real memory limit (skipped, with the reason printed, where
//!   none can be made); [`skip`] prints such a reason past the test
//!   harness's capture, so CI logs show it.

pub mod cgroup;
pub mod promtool;

use std::io::Write;
use std::process::Command;

const SKIP_PREFIX: &str = "ebb-test skipped:";

/// Prints why a test is skipped, on stderr directly (not through the test
/// harness's capture, so `cargo test` shows it without `--nocapture`).
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "{SKIP_PREFIX} {test}: {why}");
}

/// xorshift64*: deterministic, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (0 is remapped, xorshift cannot start at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// `n` clustered vectors of `dim` floats, row after row, shaped like real
/// embeddings: `clusters` centers drawn uniformly in [-1, 1]^dim, and each
/// point its center plus `spread` times a random 8-dimensional latent
/// vector projected into `dim` dimensions (one projection per cluster),
/// plus a little isotropic noise. The low intrinsic dimension matters:
/// uniform noise in 128 dimensions makes every neighbour nearly equidistant,
/// which no embedding model produces and no graph index can rank.
/// Deterministic for a seed.
pub fn clustered_vectors(
    rng: &mut Rng,
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
) -> Vec<f32> {
    const LATENT: usize = 8;
    let unit = |rng: &mut Rng| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    let clusters = clusters.max(1);
    let centers: Vec<f32> = (0..clusters * dim).map(|_| unit(rng)).collect();
    let projections: Vec<f32> = (0..clusters * dim * LATENT).map(|_| unit(rng)).collect();
    let scale = spread / (LATENT as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    let mut z = [0f32; LATENT];
    for _ in 0..n {
        let c = rng.below(clusters as u64) as usize;
        for x in &mut z {
            *x = unit(rng);
        }
        let p = &projections[c * dim * LATENT..(c + 1) * dim * LATENT];
        for d in 0..dim {
            let row = &p[d * LATENT..(d + 1) * LATENT];
            let latent: f32 = row.iter().zip(&z).map(|(a, b)| a * b).sum();
            out.push(centers[c * dim + d] + latent * scale + unit(rng) * spread * 0.02);
        }
    }
    out
}

/// Runs the test `name` alone in a child process.
///
/// In the parent (no `EBB_CHILD_TEST` set to `name`): re-executes this test
/// binary with `name --exact`, asserts the child passed exactly one test,
/// and returns false, so the caller returns. In the child: returns true and
/// the caller runs the body.
///
/// # Panics
///
/// In the parent, if the child fails or runs no test (this is a test
/// helper: the panic is the test failure).
pub fn in_child(name: &str) -> bool {
    in_child_with_env(name, &[])
}

/// As [`in_child`], with `env` set in the child (a cgroup path, say).
///
/// # Panics
///
/// As [`in_child`].
pub fn in_child_with_env(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> bool {
    if std::env::var("EBB_CHILD_TEST").as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("EBB_CHILD_TEST", name)
        .envs(env.iter().copied())
        .output()
        .expect("spawn the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {name} failed:\n{text}");
    // A child that skipped says so on a line of its own: pass it on.
    for line in text.lines().filter(|l| l.starts_with(SKIP_PREFIX)) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    assert!(
        text.contains("1 passed"),
        "child {name} ran nothing:\n{text}"
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_shuffle_permutes() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut v: Vec<u32> = (0..50).collect();
        a.shuffle(&mut v);
        assert_ne!(v, (0..50).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
    }
}
