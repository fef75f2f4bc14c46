//! `ReleaseMode::Free` and live references: the kernel may replace a
//! lazily freed page's old bytes with zeroes at any moment until the page is
//! written, so a reused slab's allocation read through `as_slice` could
//! change under the reference. The arena writes one byte of each page as
//! its cursor enters it; this test shows the bytes stay put through real
//! reclaim.
//!
//! The reclaim is real: the test runs in a child process inside a memory
//! cgroup with a 64 MiB limit and then touches enough memory that the
//! kernel must take lazily freed pages. A control mapping, lazily freed the
//! same way but never written, must come back as zeroes, proving reclaim
//! happened; if it does not (or no cgroup can be made), the test prints why
//! and skips.

use std::alloc::Layout;

use ebb_core::os::{Advice, Mapping};
use ebb_slab::{HugePages, ReleaseMode, SlabArena, SlabConfig};
use ebb_testkit::cgroup::{CGROUP_ENV, MemoryCgroup};

const LIMIT: u64 = 64 << 20;
const SLAB: usize = 1 << 20;
const SLABS: usize = 6;
const PATTERN: u8 = 0xAB;
const TEST: &str = "reused_slab_bytes_stay_put_through_reclaim";

#[test]
fn reused_slab_bytes_stay_put_through_reclaim() {
    if std::env::var_os(CGROUP_ENV).is_none() {
        let cgroup = match MemoryCgroup::create("madv-free", LIMIT) {
            Ok(cg) => cg,
            Err(why) => return ebb_testkit::skip(TEST, &why),
        };
        ebb_testkit::in_child_with_env(TEST, &[(CGROUP_ENV, cgroup.path().as_os_str())]);
        assert!(!cgroup.oom_killed(), "the child was OOM-killed");
        return;
    }
    let path = std::env::var_os(CGROUP_ENV).expect("checked above");
    MemoryCgroup::join(std::path::Path::new(&path)).expect("join the cgroup");

    let arena = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(SLAB)
            .with_release_mode(ReleaseMode::Free)
            .with_huge_pages(HugePages::Disable)
            .with_max_retained_slabs(SLABS * 2)
            .with_shards(1),
    )
    .expect("config");
    let page = 4096;
    let layout = Layout::from_size_align(page, page).expect("layout");
    let per_slab = SLAB / page;

    // Fill the slabs with a pattern, free everything: each slab is sealed
    // and lazily freed (MADV_FREE), and kept for reuse.
    let mut first = Vec::new();
    for _ in 0..SLABS * per_slab {
        let mut a = arena.alloc(layout).expect("alloc");
        a.as_mut_slice().fill(PATTERN);
        first.push(a);
    }
    for a in first {
        arena.free(a).expect("free");
    }
    arena.seal_active_slabs();
    assert!(arena.stats().slabs_released >= SLABS as u64 - 1);

    // Reuse them, reading without writing: what a caller of `as_slice`
    // sees must not change while the allocation is live.
    let reused: Vec<_> = (0..(SLABS - 1) * per_slab)
        .map(|_| arena.alloc(layout).expect("alloc"))
        .collect();
    let before: Vec<u64> = reused.iter().map(|a| digest(a.as_slice())).collect();
    let old_bytes: usize = reused
        .iter()
        .map(|a| a.as_slice().iter().filter(|&&b| b == PATTERN).count())
        .sum();

    // A control: lazily freed, never written again.
    let control = Mapping::new(16 << 20, page).expect("map control");
    // SAFETY: the mapping is ours alone and no reference to its bytes
    // exists; it is written whole, then advised.
    unsafe {
        std::ptr::write_bytes(control.as_ptr(), PATTERN, control.len());
        control
            .advise(0, control.len(), Advice::Free)
            .expect("madvise");
    }
    let control_zeroed = || {
        // SAFETY: the mapping is live and only read here.
        let bytes = unsafe { std::slice::from_raw_parts(control.as_ptr(), control.len()) };
        bytes.chunks(page).filter(|p| p[0] == 0).count()
    };

    // Pressure: touch memory a MiB at a time until the cgroup has had to
    // take a quarter of the control (no swap: lazily freed pages are the
    // only anonymous pages it can reclaim, oldest first, so the arena's
    // went before the control's), stopping well short of the limit.
    let mut pressure: Vec<Vec<u8>> = Vec::new();
    while control_zeroed() < control.len() / page / 4 && pressure.len() < 50 {
        pressure.push(vec![1u8; 1 << 20]);
    }
    let reclaimed = control_zeroed();
    drop(pressure);
    if reclaimed == 0 {
        return ebb_testkit::skip(
            TEST,
            "the kernel reclaimed no lazily freed page under the limit",
        );
    }

    let changed = reused
        .iter()
        .zip(&before)
        .filter(|(a, d)| digest(a.as_slice()) != **d)
        .count();
    assert_eq!(
        changed,
        0,
        "{changed} of {} live allocations changed under their references \
         ({reclaimed} control pages were reclaimed; {old_bytes} old bytes were visible)",
        reused.len()
    );
    eprintln!("{reclaimed} control pages reclaimed; no live allocation changed");
    for a in reused {
        arena.free(a).expect("free");
    }
}

/// FNV-1a of `bytes`.
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
