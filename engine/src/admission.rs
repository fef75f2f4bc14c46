//! Which calls the engine admits: every call while open, none once close
//! has begun (`Error::Closing`), and a count of the writes in flight that
//! close waits for before its snapshot, so every write that returned `Ok`
//! is in it.
//!
//! Invariant: a write either sees `closing` and is refused, or is counted
//! before close reads the count (both sides SeqCst: Dekker's pattern).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// The engine's admission state.
#[derive(Default)]
pub(crate) struct Admission {
    closing: AtomicBool,
    writes: WriteCounter,
}

/// The count of writes in flight, on a cache line of its own (every write
/// touches it).
#[derive(Default)]
#[repr(align(128))]
struct WriteCounter(AtomicUsize);

/// One admitted write; dropping it ends the write.
pub(crate) struct WriteGuard<'a>(&'a WriteCounter);

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    /// `Error::Closing` once close has begun.
    pub fn check_open(&self) -> Result<()> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closing);
        }
        Ok(())
    }

    /// True once close has begun.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Admits one write, or `Error::Closing`.
    pub fn begin_write(&self) -> Result<WriteGuard<'_>> {
        // SeqCst pairs with `close`'s store and `writes_in_flight`'s load:
        // either this write sees `closing`, or close sees it counted.
        self.writes.0.fetch_add(1, Ordering::SeqCst);
        let guard = WriteGuard(&self.writes);
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::Closing);
        }
        Ok(guard)
    }

    /// Begins close: every call from now on is refused.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Writes admitted and not yet ended.
    pub fn writes_in_flight(&self) -> usize {
        self.writes.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_refuses_new_writes_and_counts_the_ones_in_flight() {
        let a = Admission::default();
        let w = a.begin_write().unwrap();
        a.close();
        assert_eq!(a.writes_in_flight(), 1);
        assert!(matches!(a.begin_write(), Err(Error::Closing)));
        assert!(matches!(a.check_open(), Err(Error::Closing)));
        assert_eq!(a.writes_in_flight(), 1, "a refused write is not counted");
        drop(w);
        assert_eq!(a.writes_in_flight(), 0);
    }
}
