//! Scans: every live record of an arena, in chunks, each chunk under one
//! epoch pin, cancellable between chunks.
//!
//! A scan walks the handle table in index order with a [`ScanCursor`]. A
//! record's index never changes (compaction moves its bytes, not its
//! handle), so every record live from the start of a scan until the cursor
//! reaches it is seen exactly once; a record inserted or removed meanwhile
//! may or may not be, and a record replaced meanwhile shows one of its
//! values. For a point-in-time view, the caller holds off writers (the
//! engine's snapshot does).
//!
//! Records reach the callback as references valid for the call. They
//! cannot be handed to async code without a copy: a zero-copy owner would
//! have to hold the epoch pin (not `Send`, and it holds back every free of
//! the arena while it lives) or count references per record (an atomic
//! read-modify-write per read). Copy what must outlive the call
//! (`to_vec`, or into a pooled buffer).

use tokio_util::sync::CancellationToken;

/// Where a scan stands: the next slot index to look at. Start from
/// `ScanCursor::default()`; resumable across calls (and threads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanCursor(pub(crate) u32);

/// What a [`scan`](crate::BlobArena::scan) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Records visited.
    pub records: u64,
    /// Chunks (pins) it took.
    pub chunks: u64,
    /// True if the token was cancelled before the end: the records visited
    /// so far were visited once each, and nothing was changed.
    pub cancelled: bool,
}

/// Records per chunk (one pin each) when a caller gives 0.
pub const DEFAULT_SCAN_CHUNK: usize = 1024;

/// Runs chunks of `chunk` records until the table's end or a cancel.
pub(crate) fn run_scan(
    token: &CancellationToken,
    chunk: usize,
    mut next_chunk: impl FnMut(&mut ScanCursor, usize) -> usize,
    mut done: impl FnMut(ScanCursor) -> bool,
) -> ScanReport {
    let chunk = if chunk == 0 {
        DEFAULT_SCAN_CHUNK
    } else {
        chunk
    };
    let mut cursor = ScanCursor::default();
    let mut report = ScanReport::default();
    while !done(cursor) {
        if token.is_cancelled() {
            report.cancelled = true;
            break;
        }
        report.records += next_chunk(&mut cursor, chunk) as u64;
        report.chunks += 1;
    }
    report
}
