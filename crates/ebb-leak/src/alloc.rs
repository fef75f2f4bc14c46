//! [`TrackingAllocator`]: a global allocator wrapper that counts
//! allocations, frees, current and peak heap bytes, cheaply enough to leave
//! installed.
//!
//! One atomic add per allocation would cost 2-7x on two threads (the
//! counter's cache line bounces); instead each thread counts in plain
//! thread-local cells and adds its deltas to the global atomics every
//! [`FLUSH_EVERY_OPS`] operations or [`FLUSH_EVERY_BYTES`] bytes, and when
//! it exits.
//!
//! Invariants:
//! 1. Every allocation and free through the wrapper is counted exactly
//!    once, in its thread's cells or (after a flush) in the globals; a
//!    reading from another thread lags by at most one flush threshold per
//!    live thread. [`TrackingAllocator::flush_thread`] makes the calling
//!    thread's part exact.
//! 2. Counting cannot panic and cannot recurse. The cells are `const`
//!    thread-locals without destructors (on Linux's native TLS, touching
//!    them never allocates and they stay usable to the thread's last
//!    allocation); every thread-local is reached with `try_with`; sums on
//!    sizes wrap instead of overflowing. The one step that may allocate,
//!    registering the exit flush's destructor, runs with `exit == 1`, and
//!    in that state a nested call only counts, so registration is never
//!    re-entered.
//! 3. The counters are process-wide statics: the wrapper is meant to be the
//!    one `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

// std's atomics, not ebb_core::sync's: these are process-wide statics of a
// global allocator (loom's atomics are not const), not a loom-modelled
// algorithm.
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// A thread adds its deltas to the globals after this many operations.
pub const FLUSH_EVERY_OPS: u32 = 64;
/// ...or once its byte delta moves this far.
pub const FLUSH_EVERY_BYTES: i64 = 64 << 10;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static FREES: AtomicU64 = AtomicU64::new(0);
static CURRENT: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct Deltas {
    /// Allocations in the low 32 bits, frees in the high 32: one add per
    /// operation, and their sum is the operation count (flushed long
    /// before either half could overflow).
    ops: Cell<u64>,
    bytes: Cell<i64>,
    /// 0: exit flush not registered; 1: registering (re-entrant calls only
    /// count); 2: registered; 3: the thread is being torn down (flush
    /// every operation).
    exit: Cell<u8>,
}

const FREE_ONE: u64 = 1 << 32;
const LOW: u64 = FREE_ONE - 1;

thread_local! {
    static DELTAS: Deltas = const {
        Deltas {
            ops: Cell::new(0),
            bytes: Cell::new(0),
            exit: Cell::new(0),
        }
    };
    static EXIT_FLUSH: ExitFlush = const { ExitFlush };
}

/// Flushes the thread's deltas when the thread exits.
struct ExitFlush;

impl Drop for ExitFlush {
    fn drop(&mut self) {
        let _ = DELTAS.try_with(|d| {
            d.exit.set(3);
            flush(d);
        });
    }
}

fn flush(d: &Deltas) {
    let ops = d.ops.replace(0);
    let bytes = d.bytes.replace(0);
    let (allocations, frees) = (ops & LOW, ops >> 32);
    if allocations != 0 {
        ALLOCATIONS.fetch_add(allocations, Ordering::Relaxed);
    }
    if frees != 0 {
        FREES.fetch_add(frees, Ordering::Relaxed);
    }
    if bytes != 0 {
        // Wrapping like the atomic add itself (invariant 2).
        let now = CURRENT
            .fetch_add(bytes, Ordering::Relaxed)
            .wrapping_add(bytes);
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

/// Counts an allocation of `size` bytes in the thread's cells.
///
/// Wrapping sums (invariant 2): a size is at most `isize::MAX`, but a
/// pending delta plus one can pass `i64::MAX`, and a panic here would
/// unwind out of the allocator.
#[inline]
fn count_alloc(size: usize) {
    let _ = DELTAS.try_with(|d| {
        let ops = d.ops.get().wrapping_add(1);
        d.ops.set(ops);
        let bytes = d.bytes.get().wrapping_add(size as i64);
        d.bytes.set(bytes);
        after_count(d, ops, bytes);
    });
}

/// Counts a free of `size` bytes in the thread's cells (wrapping, as
/// [`count_alloc`]).
#[inline]
fn count_free(size: usize) {
    let _ = DELTAS.try_with(|d| {
        let ops = d.ops.get().wrapping_add(FREE_ONE);
        d.ops.set(ops);
        let bytes = d.bytes.get().wrapping_sub(size as i64);
        d.bytes.set(bytes);
        after_count(d, ops, bytes);
    });
}

#[inline]
fn after_count(d: &Deltas, ops: u64, bytes: i64) {
    let count = (ops & LOW) + (ops >> 32);
    if count >= u64::from(FLUSH_EVERY_OPS)
        || bytes.unsigned_abs() > FLUSH_EVERY_BYTES as u64
        || d.exit.get() != 2
    {
        slow_count(d);
    }
}

#[cold]
fn slow_count(d: &Deltas) {
    match d.exit.get() {
        // First operation on this thread: arrange the exit flush.
        0 => register_exit_flush(d),
        // Registering: this is a nested allocation; it only counts.
        1 => return,
        _ => {}
    }
    flush(d);
}

#[cold]
fn register_exit_flush(d: &Deltas) {
    INSTALLED.store(true, Ordering::Relaxed);
    // Invariant 2: allocations made while registering only count.
    d.exit.set(1);
    let registered = EXIT_FLUSH.try_with(|_| ()).is_ok();
    d.exit.set(if registered { 2 } else { 3 });
}

/// Counts of the heap as the wrapper has seen it, flat plain data for
/// metrics (docs/metrics.md maps each field to its Prometheus metric).
///
/// Process-wide (there is one global allocator), so it carries no instance
/// name. The byte fields are `i64`, not `u64`: they are sums of per-thread
/// deltas flushed at different times (invariant 1), and a thread that frees
/// what another allocated may flush first, so the sum can dip below zero
/// for a moment; the exporter clamps them at 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Allocations, reallocations included (was `allocations`).
    pub allocations_total: u64,
    /// Frees; a reallocation counts as an allocation and a free (was
    /// `frees`).
    pub frees_total: u64,
    /// Bytes allocated and not freed (a gauge).
    pub current_bytes: i64,
    /// The highest `current_bytes` seen at a flush.
    pub peak_bytes: i64,
}

/// A global allocator that counts what passes through it into `A`.
///
/// ```ignore
/// #[global_allocator]
/// static ALLOC: ebb_leak::TrackingAllocator<std::alloc::System> =
///     ebb_leak::TrackingAllocator::new(std::alloc::System);
///
/// let heap = ebb_leak::alloc::stats();
/// println!("{} bytes live in {} allocations", heap.current_bytes, heap.allocations_total - heap.frees_total);
/// ```
pub struct TrackingAllocator<A> {
    inner: A,
}

impl<A> TrackingAllocator<A> {
    /// Wraps `inner`.
    pub const fn new(inner: A) -> Self {
        TrackingAllocator { inner }
    }
}

/// The counters, with the calling thread's part flushed (invariant 1).
/// All zero unless a [`TrackingAllocator`] is installed.
pub fn stats() -> AllocStats {
    flush_thread();
    AllocStats {
        allocations_total: ALLOCATIONS.load(Ordering::Relaxed),
        frees_total: FREES.load(Ordering::Relaxed),
        current_bytes: CURRENT.load(Ordering::Relaxed),
        peak_bytes: PEAK.load(Ordering::Relaxed),
    }
}

/// Adds the calling thread's pending deltas to the globals.
pub fn flush_thread() {
    let _ = DELTAS.try_with(flush);
}

/// Whether a [`TrackingAllocator`] has served an allocation in this
/// process (so [`stats`] means something).
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Restarts the peak from the current bytes.
pub fn reset_peak() {
    flush_thread();
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
}

// SAFETY: what `GlobalAlloc` asks of an implementation, and why each holds.
// (Not "it never allocates": allocating inside an allocator is allowed; what
// must not happen is a panic, or a re-entry into something not re-entrant.)
// - The memory contract (a block that fits `layout`, valid until freed,
//   freed once): every method forwards to `inner` with the caller's
//   arguments unchanged and returns its answer unchanged, so `A`'s
//   guarantees are ours. The counting never touches the block, and counts
//   only calls `inner` reported as successful.
// - No unwinding out of an allocator method: the counting cannot panic
//   (invariant 2). It reaches thread-locals only by `try_with`, so during
//   or after thread teardown an access fails into "not counted here"
//   instead of a panic; its sums wrap; the rest is `Cell` gets and sets
//   and relaxed atomics.
// - No unbounded or re-entrant recursion: the only step that may allocate
//   is the first touch of `EXIT_FLUSH`, when std registers its destructor
//   (through libc, or a list that may allocate through this allocator).
//   It runs with `exit == 1`, where a nested call counts into `DELTAS`
//   (const-initialized, no destructor: touching it registers and allocates
//   nothing) and returns; registration is never entered twice, so std's
//   destructor list is never borrowed twice (std aborts if it is).
// - Thread teardown: `DELTAS` stays usable to the thread's last
//   allocation; once `EXIT_FLUSH` is destroyed, or cannot be registered,
//   `exit == 3` and every operation flushes at once (invariant 1).
unsafe impl<A: GlobalAlloc> GlobalAlloc for TrackingAllocator<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { self.inner.dealloc(ptr, layout) };
        count_free(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count_free(layout.size());
            count_alloc(new_size);
        }
        p
    }
}
