//! Scheduled failures of [`Mapping::new`](super::Mapping::new) and
//! [`Mapping::advise`](super::Mapping::advise), for tests of every error path
//! above the OS layer. Compiled only with the `fault-injection` feature.
//!
//! Schedules are per thread, so tests running in parallel threads of one
//! process do not disturb each other.

use std::cell::Cell;

thread_local! {
    static MAP_FAILURES: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    static ADVISE_FAILURES: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// After `skip` more successful mappings on this thread, fail the next
/// `count` calls to [`Mapping::new`](super::Mapping::new) with `ENOMEM`.
pub fn fail_maps(skip: u32, count: u32) {
    MAP_FAILURES.with(|c| c.set((skip, count)));
}

/// After `skip` more successful calls on this thread, fail the next `count`
/// calls to [`Mapping::advise`](super::Mapping::advise) with `EAGAIN`.
pub fn fail_advises(skip: u32, count: u32) {
    ADVISE_FAILURES.with(|c| c.set((skip, count)));
}

/// Clears both schedules of this thread.
pub fn reset() {
    fail_maps(0, 0);
    fail_advises(0, 0);
}

fn take(cell: &'static std::thread::LocalKey<Cell<(u32, u32)>>) -> bool {
    cell.with(|c| {
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
}

pub(crate) fn map_should_fail() -> bool {
    take(&MAP_FAILURES)
}

pub(crate) fn advise_should_fail() -> bool {
    take(&ADVISE_FAILURES)
}
