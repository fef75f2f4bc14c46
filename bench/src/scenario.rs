//! The scenarios of the `peers` binary, as library functions so tests can
//! run them at small scale.

use std::alloc::Layout;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ebb_core::os::{self, Advice, Mapping};
use ebb_slab::{HugePages, RawSlabAlloc, SlabArena, SlabConfig};

use crate::{Rng, permutation, sizes_totalling};

/// The system's transparent-huge-page mode (`always`, `madvise`, `never`),
/// the bracketed word of `/sys/kernel/mm/transparent_hugepage/enabled`.
pub fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .ok()
        .and_then(|t| {
            let start = t.find('[')? + 1;
            let end = t[start..].find(']')? + start;
            Some(t[start..end].to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// What the `release` scenario measured.
#[derive(Clone, Debug)]
pub struct ReleaseReport {
    /// Bytes of records allocated (sum of sizes).
    pub bytes: u64,
    /// THP mode and the hint both sides used, e.g. `madvise/none`.
    pub thp: String,
    /// RSS before the fill.
    pub rss_base: u64,
    /// RSS with every record allocated and written.
    pub rss_full: u64,
    /// RSS right after the last free (no sleep).
    pub rss_after_free: u64,
    /// Time spent in the frees that released a slab.
    pub release_ms: f64,
    /// Time spent in all frees.
    pub free_all_ms: f64,
    /// madvise(DONTNEED) over a separately touched mapping of the same
    /// size, in slab-sized calls.
    pub raw_madvise_ms: f64,
    /// Records allocated and freed.
    pub records: usize,
    /// Slabs released by the frees.
    pub slabs_released: u64,
}

/// Fills `total_bytes` of slabs with seeded records of 64..=4096 bytes,
/// writes them, frees them in shuffled order timing the frees that released
/// slabs, then times raw `madvise(DONTNEED)` over a separately touched
/// mapping of the same size in slab-sized calls.
///
/// # Errors
///
/// If the arena or the raw mapping cannot get memory, or /proc is unreadable.
pub fn release(total_bytes: usize, seed: u64, huge: bool) -> Result<ReleaseReport> {
    let hint = if huge {
        HugePages::Enable
    } else {
        HugePages::System
    };
    let arena = SlabArena::new(SlabConfig::default().with_huge_pages(hint))?;
    let slab_bytes = arena.slab_bytes();
    let mut rng = Rng::new(seed);
    let sizes = sizes_totalling(&mut rng, total_bytes, 64, 4096);
    let order = permutation(&mut rng, sizes.len());
    // Touched now so the bookkeeping is part of the base, not of the fill.
    let mut slots: Vec<Option<RawSlabAlloc>> = vec![None; sizes.len()];
    let rss_base = os::rss_bytes()?;

    for (slot, &size) in slots.iter_mut().zip(&sizes) {
        let mut a = arena.alloc(Layout::from_size_align(size, 8)?)?;
        a.as_mut_slice().fill(0xA5);
        *slot = Some(a.into_raw());
    }
    let rss_full = os::rss_bytes()?;

    let mut release = Duration::ZERO;
    let mut all = Duration::ZERO;
    let releases_before = arena.releases_total();
    let mut releases = releases_before;
    for &i in &order {
        let raw = slots[i].take().context("record freed twice")?;
        let t0 = Instant::now();
        // SAFETY: `raw` came from `into_raw` of this arena and is taken out
        // of its slot, so it is rebuilt exactly once.
        arena.free(unsafe { arena.from_raw(raw) })?;
        let dt = t0.elapsed();
        all += dt;
        let now = arena.releases_total();
        if now != releases {
            release += dt;
            releases = now;
        }
    }
    let rss_after_free = os::rss_bytes()?;

    let raw_madvise = raw_madvise(total_bytes.next_multiple_of(slab_bytes), slab_bytes, huge)?;
    Ok(ReleaseReport {
        bytes: sizes.iter().sum::<usize>() as u64,
        thp: format!(
            "{}/{}",
            thp_mode(),
            if huge { "madv_hugepage" } else { "none" }
        ),
        rss_base,
        rss_full,
        rss_after_free,
        release_ms: release.as_secs_f64() * 1e3,
        free_all_ms: all.as_secs_f64() * 1e3,
        raw_madvise_ms: raw_madvise.as_secs_f64() * 1e3,
        records: sizes.len(),
        slabs_released: releases - releases_before,
    })
}

/// Touches `len` bytes of a fresh mapping, then times `madvise(DONTNEED)`
/// over it in `chunk`-sized calls.
fn raw_madvise(len: usize, chunk: usize, huge: bool) -> Result<Duration> {
    let m = Mapping::new(len, chunk)?;
    if huge {
        // SAFETY: the mapping was just made; nothing references its bytes.
        unsafe { m.advise(0, len, Advice::HugePage)? };
    }
    let page = os::page_size();
    for off in (0..len).step_by(page) {
        // SAFETY: `off < len`, inside the mapping; no reference to it exists.
        unsafe { m.as_ptr().add(off).write_volatile(0xA5) };
    }
    let t0 = Instant::now();
    for off in (0..len).step_by(chunk) {
        // SAFETY: no reference into the mapping is live, and this thread is
        // the only one that knows of it.
        unsafe { m.advise(off, chunk.min(len - off), Advice::DontNeed)? };
    }
    Ok(t0.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_scenario_runs_at_small_scale() {
        let r = release(16 << 20, 7, false).unwrap();
        assert!(r.bytes >= 16 << 20);
        assert!(r.slabs_released >= 6, "{r:?}");
        assert!(r.release_ms <= r.free_all_ms);
        assert!(r.raw_madvise_ms > 0.0);
    }
}
