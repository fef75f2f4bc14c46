//! Scheduled failures of [`Mapping::new`](super::Mapping::new), of the
//! trims that align it, and of [`Mapping::advise`](super::Mapping::advise),
//! for tests of every error path above the OS layer. Compiled only with the
//! `fault-injection` feature (and in ebb-core's own unit tests); production
//! builds have no trace of it.
//!
//! Schedules are per thread, so tests running in parallel threads of one
//! process do not disturb each other. A schedule set on a thread whose
//! thread-locals are gone is ignored (nothing fails).

use std::cell::Cell;

thread_local! {
    static MAP_FAILURES: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    static TRIM_FAILURES: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    static ADVISE_FAILURES: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// After `skip` more successful mappings on this thread, fail the next
/// `count` calls to [`Mapping::new`](super::Mapping::new) with `ENOMEM`.
pub fn fail_maps(skip: u32, count: u32) {
    let _ = MAP_FAILURES.try_with(|c| c.set((skip, count)));
}

/// After `skip` more successful trims on this thread, fail the next `count`
/// `munmap` calls with which [`Mapping::new`](super::Mapping::new) trims
/// the head and tail of an over-mapped span for alignment, with `ENOMEM`
/// (what the kernel answers when the split would pass `vm.max_map_count`).
pub fn fail_trims(skip: u32, count: u32) {
    let _ = TRIM_FAILURES.try_with(|c| c.set((skip, count)));
}

/// After `skip` more successful calls on this thread, fail the next `count`
/// calls to [`Mapping::advise`](super::Mapping::advise) with `EAGAIN`.
pub fn fail_advises(skip: u32, count: u32) {
    let _ = ADVISE_FAILURES.try_with(|c| c.set((skip, count)));
}

/// Clears every schedule of this thread.
pub fn reset() {
    fail_maps(0, 0);
    fail_trims(0, 0);
    fail_advises(0, 0);
}

fn take(cell: &'static std::thread::LocalKey<Cell<(u32, u32)>>) -> bool {
    cell.try_with(|c| {
        let (skip, count) = c.get();
        if skip > 0 {
            c.set((skip - 1, count));
            false
        } else if count > 0 {
            c.set((0, count - 1));
            true
        } else {
            false
        }
    })
    .unwrap_or(false)
}

pub(crate) fn map_should_fail() -> bool {
    take(&MAP_FAILURES)
}

#[cfg_attr(
    miri,
    expect(dead_code, reason = "Miri's mappings are heap memory, never trimmed")
)]
pub(crate) fn trim_should_fail() -> bool {
    take(&TRIM_FAILURES)
}

pub(crate) fn advise_should_fail() -> bool {
    take(&ADVISE_FAILURES)
}
