//! The fragmentation scenario: allocate `total_bytes` of seeded 64..=4096 B
//! records, free a random `100 - keep_percent` %, ask the allocator to give
//! memory back, and measure RSS per live byte. Each allocator runs in a
//! child process of its own so their heaps never mix.
//!
//! - glibc: `System` alloc/dealloc, then `malloc_trim(0)`.
//! - jemalloc: `Jemalloc` alloc/dealloc, then `arena.<all>.purge`.
//! - mimalloc: `MiMalloc` alloc/dealloc, then `mi_collect(true)`.
//! - ebb: `BlobArena` insert/remove, then `compact`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ebb_arena::{BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig};
use ebb_core::os;

use crate::{Rng, sizes_totalling};

/// The allocators compared, in output order.
pub const ALLOCATORS: [&str; 4] = ["glibc", "jemalloc", "mimalloc", "ebb"];

/// One allocator's figures.
#[derive(Clone, Debug, Default)]
pub struct FragReport {
    /// Which allocator.
    pub allocator: String,
    /// Bytes allocated in all.
    pub total_bytes: u64,
    /// Sum of the kept records' sizes.
    pub live_bytes: u64,
    /// RSS before the first allocation.
    pub rss_base: u64,
    /// RSS with everything allocated.
    pub rss_full: u64,
    /// RSS after the frees.
    pub rss_after_free: u64,
    /// RSS after the allocator's reclaim call.
    pub rss_after_reclaim: u64,
    /// Time of the reclaim call (trim, purge, collect, compact).
    pub reclaim_secs: f64,
    /// Bytes copied by the reclaim (ebb's compaction; 0 for the others).
    pub bytes_moved: u64,
    /// Single-thread copy speed between two pre-faulted 256 MiB buffers.
    pub memcpy_gbps: f64,
    /// ebb only: p99 of the time of a batch of 1000 `get`s, reader alone.
    pub get_p99_us_idle: Option<f64>,
    /// ebb only: the same while the compaction runs on another thread.
    pub get_p99_us_compacting: Option<f64>,
    /// ebb only: time from `cancel()` to the compaction returning.
    pub cancel_ms: Option<f64>,
}

impl FragReport {
    /// `(rss_after_reclaim - rss_base) / live_bytes`.
    pub fn ratio(&self) -> f64 {
        self.rss_after_reclaim.saturating_sub(self.rss_base) as f64 / self.live_bytes as f64
    }

    /// The JSON line of the scenario.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "allocator": self.allocator,
            "total_bytes": self.total_bytes,
            "live_bytes": self.live_bytes,
            "rss_base": self.rss_base,
            "rss_full": self.rss_full,
            "rss_after_free": self.rss_after_free,
            "rss_after_reclaim": self.rss_after_reclaim,
            "reclaim_secs": (self.reclaim_secs * 1e6).round() / 1e6,
            "bytes_moved": self.bytes_moved,
            "memcpy_gbps": (self.memcpy_gbps * 1000.0).round() / 1000.0,
            "get_p99_us_idle": self.get_p99_us_idle,
            "get_p99_us_compacting": self.get_p99_us_compacting,
            "cancel_ms": self.cancel_ms,
        })
    }

    /// Parses a JSON line printed by a child.
    ///
    /// # Errors
    ///
    /// If a field is missing.
    pub fn from_json(v: &serde_json::Value) -> Result<FragReport> {
        let u = |k: &str| v[k].as_u64().with_context(|| format!("field {k}"));
        let f = |k: &str| v[k].as_f64().with_context(|| format!("field {k}"));
        Ok(FragReport {
            allocator: v["allocator"].as_str().context("allocator")?.to_owned(),
            total_bytes: u("total_bytes")?,
            live_bytes: u("live_bytes")?,
            rss_base: u("rss_base")?,
            rss_full: u("rss_full")?,
            rss_after_free: u("rss_after_free")?,
            rss_after_reclaim: u("rss_after_reclaim")?,
            reclaim_secs: f("reclaim_secs")?,
            bytes_moved: u("bytes_moved")?,
            memcpy_gbps: f("memcpy_gbps")?,
            get_p99_us_idle: v["get_p99_us_idle"].as_f64(),
            get_p99_us_compacting: v["get_p99_us_compacting"].as_f64(),
            cancel_ms: v["cancel_ms"].as_f64(),
        })
    }
}

/// The records of a run: sizes, and which are kept.
struct Plan {
    sizes: Vec<usize>,
    keep: Vec<bool>,
}

fn plan(total_bytes: usize, keep_percent: u64, seed: u64) -> Plan {
    let mut rng = Rng::new(seed);
    let sizes = sizes_totalling(&mut rng, total_bytes, 64, 4096);
    let keep = sizes
        .iter()
        .map(|_| rng.next_u64() % 100 < keep_percent)
        .collect();
    Plan { sizes, keep }
}

/// Copy speed in GB/s between two pre-faulted 256 MiB buffers.
pub fn memcpy_gbps() -> f64 {
    const LEN: usize = 256 << 20;
    let src = vec![0x5Au8; LEN];
    let mut dst = vec![0u8; LEN];
    dst.copy_from_slice(&src); // fault both in
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    LEN as f64 / best / 1e9
}

fn run_global<A: GlobalAlloc>(alloc: &A, p: &Plan, reclaim: impl FnOnce()) -> Result<FragReport> {
    let mut ptrs: Vec<*mut u8> = vec![std::ptr::null_mut(); p.sizes.len()];
    let mut r = FragReport {
        rss_base: os::rss_bytes()?,
        ..FragReport::default()
    };
    for (slot, &size) in ptrs.iter_mut().zip(&p.sizes) {
        let layout = Layout::from_size_align(size, 8)?;
        // SAFETY: non-zero size, valid alignment.
        let ptr = unsafe { alloc.alloc(layout) };
        if ptr.is_null() {
            bail!("allocation of {size} bytes failed");
        }
        // SAFETY: `ptr` holds `size` writable bytes.
        unsafe { ptr.write_bytes(0xA5, size) };
        *slot = ptr;
    }
    r.rss_full = os::rss_bytes()?;
    for ((ptr, &size), &keep) in ptrs.iter_mut().zip(&p.sizes).zip(&p.keep) {
        if !keep {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { alloc.dealloc(*ptr, Layout::from_size_align_unchecked(size, 8)) };
            *ptr = std::ptr::null_mut();
        }
    }
    r.rss_after_free = os::rss_bytes()?;
    let t0 = Instant::now();
    reclaim();
    r.reclaim_secs = t0.elapsed().as_secs_f64();
    r.rss_after_reclaim = os::rss_bytes()?;
    for (ptr, &size) in ptrs.iter().zip(&p.sizes) {
        if !ptr.is_null() {
            // SAFETY: still allocated, freed once.
            unsafe { alloc.dealloc(*ptr, Layout::from_size_align_unchecked(size, 8)) };
        }
    }
    Ok(r)
}

fn run_ebb(p: &Plan) -> Result<FragReport> {
    let mut handles: Vec<Option<BlobHandle>> = vec![None; p.sizes.len()];
    let record = vec![0xA5u8; 4096];
    let mut r = FragReport {
        rss_base: os::rss_bytes()?,
        ..FragReport::default()
    };
    let arena = BlobArena::new(SlabConfig::default().with_huge_pages(ebb_slab::HugePages::Enable))?;
    for (slot, &size) in handles.iter_mut().zip(&p.sizes) {
        *slot = Some(arena.insert(&record[..size])?);
    }
    r.rss_full = os::rss_bytes()?;
    for (slot, &keep) in handles.iter_mut().zip(&p.keep) {
        if !keep {
            arena.remove(slot.take().context("removed once")?);
        }
    }
    arena.reclaim();
    r.rss_after_free = os::rss_bytes()?;
    let kept: Vec<BlobHandle> = handles.iter().flatten().copied().collect();

    // The compaction alone: throughput and the RSS it gives back.
    let t0 = Instant::now();
    let report = arena.compact(&CompactionPolicy::default(), &CancellationToken::new())?;
    r.reclaim_secs = t0.elapsed().as_secs_f64();
    r.bytes_moved = report.bytes_moved;
    r.rss_after_reclaim = os::rss_bytes()?;
    // Everything kept is still there.
    for (slot, &size) in handles.iter().zip(&p.sizes) {
        if let Some(h) = slot
            && arena.with(*h, |b| b.len()) != Some(size)
        {
            bail!("record lost by compaction");
        }
    }

    // Readers: batches of 1000 gets, first alone, then beside a second
    // compaction (half of the kept records removed, so slabs are sparse
    // again).
    let kept: Vec<BlobHandle> = kept.iter().skip(1).step_by(2).copied().collect();
    for h in handles.iter().flatten().step_by(2) {
        arena.remove(*h);
    }
    arena.reclaim();
    let idle = get_batches(&arena, &kept, &AtomicBool::new(false), Some(2000));
    let stop = AtomicBool::new(false);
    let (second, busy) = std::thread::scope(|s| {
        let reader = s.spawn(|| get_batches(&arena, &kept, &stop, None));
        // Let the reader start first.
        std::thread::sleep(Duration::from_millis(5));
        let second = arena.compact(&CompactionPolicy::default(), &CancellationToken::new());
        stop.store(true, Ordering::Relaxed);
        (second, reader.join())
    });
    second?;
    let busy = busy.map_err(|_| anyhow::anyhow!("reader panicked"))?;
    r.get_p99_us_idle = Some(p99_us(idle));
    r.get_p99_us_compacting = Some(p99_us(busy));

    // Cancellation: make the slabs sparse again, cancel mid-way, time it.
    for h in kept.iter().step_by(2) {
        arena.remove(*h);
    }
    arena.reclaim();
    let token = CancellationToken::new();
    let cancelled = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let r = arena.compact(&CompactionPolicy::default(), &token);
            (r, Instant::now())
        });
        let started = arena.stats().slabs_compacted_total;
        while arena.stats().slabs_compacted_total < started + 2 && !worker.is_finished() {
            std::hint::spin_loop();
        }
        let at = Instant::now();
        token.cancel();
        let (result, returned) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("compactor panicked"))?;
        anyhow::Ok(match result {
            Ok(report) if report.cancelled => Some(returned.saturating_duration_since(at)),
            _ => None, // finished before the cancel landed
        })
    })?;
    r.cancel_ms = cancelled.map(|d| d.as_secs_f64() * 1e3);
    Ok(r)
}

/// Times batches of 1000 `get`s of random kept records until `stop` (or
/// `count` batches).
fn get_batches(
    arena: &BlobArena,
    kept: &[BlobHandle],
    stop: &AtomicBool,
    count: Option<usize>,
) -> Vec<Duration> {
    let mut rng = Rng::new(99);
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) && count.is_none_or(|c| out.len() < c) {
        let t0 = Instant::now();
        let mut sum = 0usize;
        for _ in 0..1000 {
            let h = kept[(rng.next_u64() % kept.len() as u64) as usize];
            sum += arena.get(h).map_or(0, |b| b[0] as usize);
        }
        std::hint::black_box(sum);
        out.push(t0.elapsed());
    }
    out
}

fn p99_us(mut v: Vec<Duration>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)].as_secs_f64() * 1e6
}

/// Runs one allocator in this process (the child side).
///
/// # Errors
///
/// Unknown allocator, allocation failure, or unreadable /proc.
pub fn run_child(
    allocator: &str,
    total_bytes: usize,
    keep_percent: u64,
    seed: u64,
) -> Result<FragReport> {
    let p = plan(total_bytes, keep_percent, seed);
    let mut r = match allocator {
        "glibc" => run_global(&System, &p, || {
            crate::purge::glibc();
        })?,
        "jemalloc" => run_global(&tikv_jemallocator::Jemalloc, &p, || {
            crate::purge::jemalloc();
        })?,
        "mimalloc" => run_global(&mimalloc::MiMalloc, &p, || {
            crate::purge::mimalloc();
        })?,
        "ebb" => run_ebb(&p)?,
        other => bail!("unknown allocator {other:?} (one of {ALLOCATORS:?})"),
    };
    r.allocator = allocator.to_owned();
    r.total_bytes = p.sizes.iter().sum::<usize>() as u64;
    r.live_bytes = p
        .sizes
        .iter()
        .zip(&p.keep)
        .filter(|(_, k)| **k)
        .map(|(s, _)| *s as u64)
        .sum();
    r.memcpy_gbps = memcpy_gbps();
    Ok(r)
}

/// Runs every allocator in `allocators`, each in a child process of
/// `exe` (`exe fragmentation --child NAME ...`), and collects the reports.
///
/// # Errors
///
/// If a child fails or prints no report.
pub fn run_all(
    exe: &std::path::Path,
    allocators: &[&str],
    total_bytes: usize,
    keep_percent: u64,
    seed: u64,
) -> Result<Vec<FragReport>> {
    let mut out = Vec::new();
    for a in allocators {
        let output = std::process::Command::new(exe)
            .args(["fragmentation", "--child", a])
            .args(["--total-bytes", &total_bytes.to_string()])
            .args(["--keep-percent", &keep_percent.to_string()])
            .args(["--seed", &seed.to_string()])
            .output()
            .with_context(|| format!("spawning the {a} child"))?;
        if !output.status.success() {
            bail!(
                "{a} child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let line = String::from_utf8(output.stdout)?;
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("{a} child printed {line:?}"))?;
        out.push(FragReport::from_json(&v)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ebb_child_reclaims_at_small_scale() {
        let r = run_child("ebb", 32 << 20, 25, 7).unwrap();
        assert!(r.bytes_moved > 0, "{r:?}");
        assert!(r.rss_after_reclaim < r.rss_after_free, "{r:?}");
        assert!(r.live_bytes > 0 && r.live_bytes < r.total_bytes / 2);
    }

    #[test]
    fn unknown_allocator_is_an_error() {
        assert!(run_child("tcmalloc", 1 << 20, 25, 7).is_err());
    }
}
