//! [`BufferPool`]: byte buffers in size tiers, handed out as [`PooledBuf`]
//! guards that go back to their pool on drop.
//!
//! Invariants:
//! 1. A `PooledBuf`'s bytes `0..capacity` are always initialized (fresh
//!    buffers are zeroed; everything written since is initialized), so any
//!    length up to the capacity may be exposed.
//! 2. `len <= dirty <= capacity`, where `dirty` is the highest length the
//!    buffer reached while out: zeroing `0..dirty` on return wipes every
//!    byte its user could have written.
//! 3. A buffer of tier `t` has capacity `tiers[t]`; an oversized buffer
//!    (tier [`OVERSIZED`]) is never retained.

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use ebb_core::sync::{AtomicU64, Ordering};

use crate::config::{PoolConfig, stripe_count};
use crate::error::{Error, Result};
use crate::raw::{RawBuf, layout};
use crate::retain::{RetainStore, TierBound};
use crate::stats::{PoolStats, TierStats};

/// Tier number of buffers larger than the largest tier (invariant 3).
const OVERSIZED: u32 = u32::MAX;

/// A pool of byte buffers in size tiers.
///
/// `get(len)` hands out a buffer from the smallest tier that fits (a
/// retained one when there is one, else a fresh zeroed allocation); the
/// [`PooledBuf`] guard gives it back on drop, wiped first when
/// `zero_on_return` is on. Each tier retains a bounded number of buffers
/// and bytes, the pool a bounded total; the rest are dropped and counted.
///
/// Cloning a pool is cheap and shares it. Threads spread over stripes
/// (twice the cores by default), each a cache line of its own behind a
/// test-and-set lock, so two threads do not meet on one lock; a get or a
/// drop costs one uncontended lock and a handful of plain stores.
///
/// ```
/// use ebb_pool::{BufferPool, PoolConfig};
///
/// let pool = BufferPool::new(PoolConfig::default()).unwrap();
/// let mut buf = pool.get(3000);
/// assert_eq!(buf.len(), 3000);
/// assert_eq!(buf.capacity(), 4096);
/// buf[..5].copy_from_slice(b"hello");
/// drop(buf); // wiped and retained
///
/// let again = pool.get(100);
/// assert!(again.iter().all(|&b| b == 0));
/// let stats = pool.stats();
/// assert_eq!((stats.total.gets, stats.total.hits), (2, 0)); // 100 B fits 512 B, another tier
/// ```
#[derive(Clone)]
pub struct BufferPool {
    shared: Arc<BufferShared>,
    /// One per stripe: a guard clones the anchor of the stripe it was
    /// counted in, so threads on different stripes never write the same
    /// reference count.
    anchors: Arc<[Arc<CachePadded<Anchor>>]>,
}

/// Keeps a pool alive for the guards counted in one stripe.
struct Anchor {
    shared: Arc<BufferShared>,
}

struct BufferShared {
    store: RetainStore<RawBuf>,
    tiers: Box<[usize]>,
    /// `first_tier[k]`: the first tier that can hold a length whose
    /// rounded-up log2 is `k` (every smaller tier is shorter than it).
    first_tier: [u8; 65],
    zero_on_return: bool,
    oversized: AtomicU64,
    oversized_in_use: AtomicU64,
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("tiers", &self.shared.tiers)
            .field("zero_on_return", &self.shared.zero_on_return)
            .field("stripes", &self.shared.store.stripe_count())
            .finish()
    }
}

impl BufferPool {
    /// A pool with `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for no tiers, tiers not strictly
    /// increasing, a zero or impossible tier size, or adaptive settings out
    /// of range.
    pub fn new(config: PoolConfig) -> Result<BufferPool> {
        config.validate()?;
        let tiers: Box<[usize]> = config.tiers.clone().into();
        let mut first_tier = [0u8; 65];
        for (k, slot) in first_tier.iter_mut().enumerate() {
            // The smallest length whose rounded-up log2 is k.
            let lowest = if k == 0 { 0 } else { (1u128 << (k - 1)) + 1 };
            *slot = tiers.iter().take_while(|&&s| (s as u128) < lowest).count() as u8;
        }
        let reservation = config
            .budget
            .as_ref()
            .map(|b| b.budget.reservation(b.consumer.clone()));
        let bounds: Vec<TierBound> = tiers
            .iter()
            .map(|&size| {
                let fits = config.max_retained_bytes / size;
                TierBound {
                    max_items: fits,
                    ceiling: fits,
                }
            })
            .collect();
        let store = RetainStore::new(
            &bounds,
            stripe_count(config.stripes),
            config.max_retained,
            config.max_total_retained_bytes,
            config.adaptive,
            reservation,
        );
        let shared = Arc::new(BufferShared {
            store,
            tiers,
            first_tier,
            zero_on_return: config.zero_on_return,
            oversized: AtomicU64::new(0),
            oversized_in_use: AtomicU64::new(0),
        });
        let anchors = (0..shared.store.stripe_count())
            .map(|_| {
                Arc::new(CachePadded::new(Anchor {
                    shared: Arc::clone(&shared),
                }))
            })
            .collect();
        tracing::debug!(
            tiers = ?shared.tiers,
            max_retained = config.max_retained,
            max_retained_bytes = config.max_retained_bytes,
            max_total_retained_bytes = config.max_total_retained_bytes,
            zero_on_return = config.zero_on_return,
            stripes = shared.store.stripe_count(),
            "buffer pool created"
        );
        Ok(BufferPool { shared, anchors })
    }

    /// A buffer of `len` bytes from the smallest tier that fits, reused or
    /// new. A reused buffer holds zeros when `zero_on_return` is on, and
    /// its last user's bytes when it is off; a new one holds zeros.
    /// Requests above the largest tier are allocated plainly and counted
    /// as oversized.
    ///
    /// # Panics
    ///
    /// When `len` is larger than any allocation can be or the allocator
    /// refuses, as `Vec::with_capacity` does; [`try_get`](Self::try_get)
    /// returns an error instead.
    #[inline]
    pub fn get(&self, len: usize) -> PooledBuf {
        match self.try_get(len) {
            Ok(buf) => buf,
            Err(e) => panic!("BufferPool::get({len}): {e}"),
        }
    }

    /// [`get`](Self::get) without the panic.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when `len` exceeds what an allocation can be,
    /// [`Error::OutOfMemory`] when the allocator refuses. The pool is
    /// unchanged either way.
    #[inline]
    pub fn try_get(&self, len: usize) -> Result<PooledBuf> {
        let (buf, tier, stripe) = self.shared.acquire(len)?;
        Ok(PooledBuf {
            buf: ManuallyDrop::new(buf),
            len,
            dirty: len,
            tier,
            anchor: Arc::clone(&self.anchors[stripe]),
        })
    }

    /// Drops every retained buffer; returns the bytes freed. The pressure
    /// controller calls this; buffers in use are not affected.
    pub fn trim(&self) -> usize {
        let (buffers, bytes) = self.shared.store.trim();
        tracing::debug!(buffers, bytes_freed = bytes, "buffer pool trimmed");
        bytes
    }

    /// Runs the adaptive step now for every tier that saw gets since its
    /// last step, instead of waiting for the interval.
    pub fn adjust_now(&self) {
        self.shared.store.adjust_now();
    }

    /// Tier sizes, smallest first.
    pub fn tiers(&self) -> &[usize] {
        &self.shared.tiers
    }

    /// A snapshot of the counters (plain atomics, no lock taken).
    pub fn stats(&self) -> PoolStats {
        let store = &self.shared.store;
        let tiers: Vec<TierStats> = (0..self.shared.tiers.len())
            .map(|t| store.tier_stats(t, self.shared.tiers[t]))
            .collect();
        let mut total = TierStats::default();
        for t in &tiers {
            total.add(t);
        }
        PoolStats {
            tiers,
            total,
            oversized: self.shared.oversized.load(Ordering::Relaxed),
            oversized_in_use: self.shared.oversized_in_use.load(Ordering::Relaxed),
            budget_refusals: store.budget_refusals(),
            charged_bytes: store.charged_bytes(),
        }
    }
}

impl BufferShared {
    /// The tier for `len`, or `None` above the largest.
    #[inline]
    fn tier_for(&self, len: usize) -> Option<usize> {
        let k = if len <= 1 {
            0
        } else {
            (usize::BITS - (len - 1).leading_zeros()) as usize
        };
        let mut t = usize::from(self.first_tier[k]);
        while t < self.tiers.len() {
            if self.tiers[t] >= len {
                return Some(t);
            }
            t += 1;
        }
        None
    }

    /// A buffer of at least `len` bytes, its tier, and the stripe it was
    /// counted in.
    #[inline]
    fn acquire(&self, len: usize) -> Result<(RawBuf, u32, usize)> {
        let Some(t) = self.tier_for(len) else {
            return self.acquire_oversized(len);
        };
        let taken = self.store.take(t);
        let buf = match taken.item {
            Some(buf) => buf,
            None => match RawBuf::try_alloc_zeroed(self.tiers[t]) {
                Some(buf) => buf,
                None => {
                    self.store.uncount_get(taken.stripe, t);
                    return Err(Error::OutOfMemory {
                        requested_bytes: self.tiers[t],
                    });
                }
            },
        };
        Ok((buf, t as u32, taken.stripe))
    }

    #[cold]
    fn acquire_oversized(&self, len: usize) -> Result<(RawBuf, u32, usize)> {
        let cap = len.checked_next_multiple_of(crate::BUFFER_ALIGN);
        let cap = cap
            .filter(|&c| layout(c).is_some())
            .ok_or(Error::TooLarge {
                requested_bytes: len,
            })?;
        let buf = RawBuf::try_alloc_zeroed(cap).ok_or(Error::OutOfMemory {
            requested_bytes: cap,
        })?;
        self.oversized.fetch_add(1, Ordering::Relaxed);
        self.oversized_in_use.fetch_add(1, Ordering::Relaxed);
        Ok((buf, OVERSIZED, 0))
    }

    /// Takes back a buffer whose user may have written `0..dirty`.
    #[inline]
    fn release(&self, buf: RawBuf, tier: u32, dirty: usize) {
        if tier == OVERSIZED {
            self.oversized_in_use.fetch_sub(1, Ordering::Relaxed);
            drop(buf);
            return;
        }
        if self.zero_on_return && dirty > 0 {
            // SAFETY:
            // - `buf` owns `cap >= dirty` bytes at `ptr` (invariant 2 and
            //   the RawBuf invariant), and no guard points at them anymore;
            // - writing zeros keeps them initialized (invariant 1).
            unsafe { buf.ptr().as_ptr().write_bytes(0, dirty) };
        }
        self.store.give(tier as usize, buf);
    }
}

/// A buffer out of a [`BufferPool`]: derefs to `[u8]` of its length,
/// grows like a `Vec`, and goes back to its pool on drop (wiped first when
/// `zero_on_return` is on).
///
/// It holds a reference to its pool, so it may outlive the pool handle it
/// came from (an Arrow buffer or `Bytes` made from it does).
///
/// ```
/// use std::io::Write;
/// use ebb_pool::{BufferPool, PoolConfig};
///
/// let pool = BufferPool::new(PoolConfig::small_records()).unwrap();
/// let mut buf = pool.get(0);
/// buf.extend_from_slice(&7u32.to_le_bytes());
/// write!(buf, "key={}", 42).unwrap();
/// assert_eq!(&buf[4..], b"key=42");
/// buf.resize(300, b'x'); // past 64 B: moves to the 1 KiB tier
/// assert_eq!(buf.capacity(), 1024);
/// assert_eq!(&buf[4..10], b"key=42");
/// ```
pub struct PooledBuf {
    /// Taken exactly once, in `Drop`.
    buf: ManuallyDrop<RawBuf>,
    len: usize,
    /// Invariant 2.
    dirty: usize,
    tier: u32,
    anchor: Arc<CachePadded<Anchor>>,
}

// SAFETY: a PooledBuf uniquely owns its buffer (like `Vec<u8>`); the pool
// reference is an `Arc` of `Sync` state, and dropping on another thread
// just returns the buffer through that thread's stripe.
unsafe impl Send for PooledBuf {}
// SAFETY: `&PooledBuf` gives only shared access to initialized bytes.
unsafe impl Sync for PooledBuf {}

impl PooledBuf {
    /// Bytes in use.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no bytes are in use.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it holds without moving: its tier's size (or, oversized, the
    /// request rounded up to 64).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.buf.cap()
    }

    /// Whether it came from above the largest tier (it will be freed, not
    /// retained).
    pub fn is_oversized(&self) -> bool {
        self.tier == OVERSIZED
    }

    /// Makes room for `additional` more bytes. Within the capacity this is
    /// free; past it the bytes move to a buffer of a larger tier (the old
    /// one goes back to the pool), or to an oversized allocation past the
    /// largest tier.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] or [`Error::OutOfMemory`]; the buffer is
    /// unchanged.
    pub fn try_reserve(&mut self, additional: usize) -> Result<()> {
        let needed = self.len.checked_add(additional).ok_or(Error::TooLarge {
            requested_bytes: usize::MAX,
        })?;
        if needed <= self.capacity() {
            return Ok(());
        }
        self.move_to_larger(needed)
    }

    /// [`try_reserve`](Self::try_reserve) that panics on failure, as `Vec`
    /// does.
    ///
    /// # Panics
    ///
    /// When the new size is larger than any allocation can be or the
    /// allocator refuses.
    pub fn reserve(&mut self, additional: usize) {
        if let Err(e) = self.try_reserve(additional) {
            panic!("PooledBuf::reserve({additional}): {e}");
        }
    }

    #[cold]
    fn move_to_larger(&mut self, needed: usize) -> Result<()> {
        // Grow geometrically past the tiers, as Vec does, so a long append
        // loop of oversized data stays linear.
        let want = needed.max(self.capacity().saturating_mul(2));
        let shared = &self.anchor.shared;
        let (new, tier, _) = match shared.acquire(want) {
            Ok(got) => got,
            Err(_) => shared.acquire(needed)?,
        };
        // SAFETY:
        // - the source holds `len` initialized bytes (invariant 1);
        // - `new` owns at least `needed > len` bytes;
        // - two distinct allocations never overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.buf.ptr().as_ptr(), new.ptr().as_ptr(), self.len);
        }
        let old = std::mem::replace(&mut *self.buf, new);
        let old_tier = std::mem::replace(&mut self.tier, tier);
        let old_dirty = std::mem::replace(&mut self.dirty, self.len);
        shared.release(old, old_tier, old_dirty);
        Ok(())
    }

    /// Sets the length to `new_len`, filling new bytes with `value`
    /// (growing as [`reserve`](Self::reserve) does).
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn resize(&mut self, new_len: usize, value: u8) {
        if new_len > self.len {
            self.reserve(new_len - self.len);
            let len = self.len;
            self.set_len_within_capacity(new_len);
            self[len..].fill(value);
        } else {
            self.len = new_len;
        }
    }

    /// Appends `bytes` (growing as [`reserve`](Self::reserve) does).
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        let len = self.len;
        self.set_len_within_capacity(len + bytes.len());
        self[len..].copy_from_slice(bytes);
    }

    /// Appends one byte.
    ///
    /// # Panics
    ///
    /// As [`reserve`](Self::reserve).
    pub fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    /// Shortens to `len` bytes (no effect when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Length 0; the capacity stays.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Exposes bytes up to `new_len` without writing them: they hold what
    /// the buffer held (zeros, or a previous user's bytes when
    /// `zero_on_return` is off), all initialized (invariant 1). For reading
    /// into the buffer from a socket or file.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] past the capacity; the length is unchanged.
    pub fn try_set_len(&mut self, new_len: usize) -> Result<()> {
        if new_len > self.capacity() {
            return Err(Error::TooLarge {
                requested_bytes: new_len,
            });
        }
        self.set_len_within_capacity(new_len);
        Ok(())
    }

    #[inline]
    fn set_len_within_capacity(&mut self, new_len: usize) {
        debug_assert!(new_len <= self.capacity());
        self.len = new_len;
        self.dirty = self.dirty.max(new_len);
    }

    /// Hands the bytes to Arrow without copying. The buffer goes back to
    /// the pool when the last clone of the Arrow buffer drops.
    ///
    /// ```
    /// use ebb_pool::{BufferPool, PoolConfig};
    /// let pool = BufferPool::new(PoolConfig::default()).unwrap();
    /// let mut buf = pool.get(8);
    /// buf.copy_from_slice(&42u64.to_le_bytes());
    /// let arrow = buf.into_arrow_buffer();
    /// assert_eq!(arrow.typed_data::<u64>(), &[42]);
    /// assert_eq!(pool.stats().total.in_use, 1);
    /// drop(arrow);
    /// assert_eq!(pool.stats().total.in_use, 0);
    /// ```
    pub fn into_arrow_buffer(self) -> arrow_buffer::Buffer {
        let ptr = self.buf.ptr();
        let len = self.len;
        let owner: Arc<dyn arrow_buffer::alloc::Allocation> = Arc::new(ArrowOwner(self));
        // SAFETY:
        // - `ptr` points at `len` initialized bytes (invariant 1), 64-byte
        //   aligned as Arrow requires;
        // - `owner` owns the PooledBuf, whose heap bytes do not move when
        //   the guard does, and frees them only when Arrow drops the last
        //   reference to `owner`;
        // - nothing else writes them while Arrow holds them: the guard is
        //   inside `owner` and no `&mut` to it is reachable.
        unsafe { arrow_buffer::Buffer::from_custom_allocation(ptr, len, owner) }
    }

    /// Hands the bytes to a `bytes::Bytes` without copying; the buffer goes
    /// back to the pool when the last clone drops.
    ///
    /// ```
    /// use ebb_pool::{BufferPool, PoolConfig};
    /// let pool = BufferPool::new(PoolConfig::default()).unwrap();
    /// let mut buf = pool.get(0);
    /// buf.extend_from_slice(b"value");
    /// let bytes = buf.into_bytes();
    /// assert_eq!(&bytes[..], b"value");
    /// drop(bytes);
    /// assert_eq!(pool.stats().total.puts, 1);
    /// ```
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

/// Owns a PooledBuf for Arrow.
struct ArrowOwner(#[allow(dead_code)] PooledBuf);

// Arrow requires `RefUnwindSafe` of an allocation owner. The owner is never
// used after construction except to be dropped, and a drop that unwinds
// halfway can only leave a buffer out of the pool (counted as in use), never
// a broken pool: the stripe locks release on unwind like any guard.
impl std::panic::RefUnwindSafe for ArrowOwner {}

impl Deref for PooledBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= capacity` bytes at `ptr` are owned by this guard
        // and initialized (invariant 1); `&self` keeps them from mutation.
        unsafe { std::slice::from_raw_parts(self.buf.ptr().as_ptr(), self.len) }
    }
}

impl DerefMut for PooledBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique;
        // every byte written lies below `len <= dirty` (invariant 2).
        unsafe { std::slice::from_raw_parts_mut(self.buf.ptr().as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl AsMut<[u8]> for PooledBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self
    }
}

impl io::Write for PooledBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.try_reserve(data.len())
            .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
        self.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("oversized", &self.is_oversized())
            .finish()
    }
}

impl Drop for PooledBuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: `buf` is taken only here, and drop runs once.
        let buf = unsafe { ManuallyDrop::take(&mut self.buf) };
        self.anchor.shared.release(buf, self.tier, self.dirty);
    }
}
