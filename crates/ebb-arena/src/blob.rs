//! [`BlobArena`]: variable-length byte records behind generational handles.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crossbeam_epoch::Guard;

use crate::error::{Error, Result};
use crate::handle::BlobHandle;
use crate::raw::{PREFIX, RawArena, RecordFormat};
use crate::scan::{ScanCursor, ScanReport, run_scan};
use ebb_slab::SlabConfig;
use tokio_util::sync::CancellationToken;

/// Byte records (KV values, payloads) in slabs, addressed by 8-byte
/// generational handles, compactable while readers read. Each record is a
/// 4-byte length and the bytes.
///
/// ```
/// use ebb_arena::{BlobArena, SlabConfig};
///
/// let arena = BlobArena::new(SlabConfig::default())?;
/// let h = arena.insert(b"hello")?;
/// assert_eq!(arena.get(h).as_deref(), Some(&b"hello"[..]));
/// arena.replace(h, b"world!")?;
/// assert_eq!(arena.get_vec(h), Some(b"world!".to_vec()));
/// # Ok::<(), ebb_arena::Error>(())
/// ```
pub struct BlobArena {
    raw: RawArena,
}

/// A reference to a blob's bytes, valid while held; holds the arena's epoch
/// pin (not `Send`; do not hold across an `.await`).
pub struct BlobRef<'a> {
    _guard: Guard,
    ptr: NonNull<u8>,
    len: usize,
    _arena: PhantomData<&'a [u8]>,
}

impl std::ops::Deref for BlobRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the record was current when loaded under the pin; by the
        // arena's invariants 1 and 2 its bytes are neither written nor
        // freed while the pin lasts; they were initialized by `insert`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for BlobRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobRef({} bytes)", self.len)
    }
}

/// The longest blob a record can hold.
pub const MAX_BLOB_BYTES: usize = u32::MAX as usize - PREFIX;

fn writer(bytes: &[u8]) -> impl FnOnce(*mut u8) + '_ {
    move |p| {
        // SAFETY: the record is PREFIX + bytes.len() bytes aligned to 4 (the
        // caller's contract with RawArena), fresh and unshared.
        unsafe {
            p.cast::<u32>().write(bytes.len() as u32);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(PREFIX), bytes.len());
        }
    }
}

fn check_len(bytes: &[u8]) -> Result<usize> {
    if bytes.len() > MAX_BLOB_BYTES {
        return Err(Error::BlobTooLarge {
            len: bytes.len(),
            max: MAX_BLOB_BYTES,
        });
    }
    Ok(PREFIX + bytes.len())
}

impl BlobArena {
    /// An empty arena over a new `SlabArena` made from `config`.
    ///
    /// # Errors
    ///
    /// If the slab configuration is invalid.
    pub fn new(config: SlabConfig) -> Result<Self> {
        Ok(BlobArena {
            raw: RawArena::new(config, RecordFormat::Prefixed)?,
        })
    }

    /// Stores a copy of `bytes` (which may be empty).
    ///
    /// # Errors
    ///
    /// [`Error::BlobTooLarge`], over budget, mmap failure, full handle
    /// table; nothing is stored.
    #[inline]
    pub fn insert(&self, bytes: &[u8]) -> Result<BlobHandle> {
        let len = check_len(bytes)?;
        // SAFETY: `writer` writes the prefix and the bytes, exactly `len`.
        let bits = unsafe { self.raw.insert(RecordFormat::Prefixed, len, writer(bytes)) }?;
        Ok(BlobHandle::from_bits(bits))
    }

    /// The bytes, or `None` if the handle was removed.
    #[inline]
    pub fn get(&self, handle: BlobHandle) -> Option<BlobRef<'_>> {
        let (guard, ptr) = self.raw.read(handle.to_bits())?;
        // SAFETY: a prefixed record starts with its length (aligned u32),
        // readable under the pin.
        let len = unsafe { ptr.as_ptr().cast::<u32>().read() } as usize;
        Some(BlobRef {
            _guard: guard,
            // SAFETY: the bytes follow the 4-byte prefix inside the record.
            ptr: unsafe { ptr.add(PREFIX) },
            len,
            _arena: PhantomData,
        })
    }

    /// A copy of the bytes.
    #[inline]
    pub fn get_vec(&self, handle: BlobHandle) -> Option<Vec<u8>> {
        self.get(handle).map(|b| b.to_vec())
    }

    /// Runs `f` on the bytes (the pin ends before this returns).
    #[inline]
    pub fn with<R>(&self, handle: BlobHandle, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.get(handle).map(|b| f(&b))
    }

    /// Removes the record; false if the handle was not current.
    #[inline]
    pub fn remove(&self, handle: BlobHandle) -> bool {
        self.raw.remove(RecordFormat::Prefixed, handle.to_bits())
    }

    /// Replaces the bytes (the handle stays valid). `Ok(false)` if the handle
    /// was not current (nothing stored).
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert); the old bytes stay.
    pub fn replace(&self, handle: BlobHandle, bytes: &[u8]) -> Result<bool> {
        let len = check_len(bytes)?;
        // SAFETY: as in `insert`.
        unsafe {
            self.raw
                .replace(RecordFormat::Prefixed, handle.to_bits(), len, writer(bytes))
        }
    }

    /// Calls `f` on up to `max_records` live records from `cursor` on,
    /// under one epoch pin, and advances the cursor; returns how many it
    /// visited. See the `scan` module docs for what a pass sees.
    /// [`ScanCursor::default`] starts a pass; [`scan_done`](Self::scan_done)
    /// tells when it has ended.
    pub fn scan_chunk(
        &self,
        cursor: &mut ScanCursor,
        max_records: usize,
        mut f: impl FnMut(BlobHandle, &[u8]),
    ) -> usize {
        self.raw
            .scan_chunk(&mut cursor.0, max_records, |bits, ptr| {
                // SAFETY: `ptr` is a published record's place, pinned by
                // `scan_chunk` for this call: its 4-byte length then its bytes,
                // unchanged while pinned (invariants 1 and 2).
                let bytes = unsafe {
                    let len = ptr.as_ptr().cast::<u32>().read() as usize;
                    std::slice::from_raw_parts(ptr.as_ptr().add(PREFIX), len)
                };
                f(BlobHandle::from_bits(bits), bytes);
            })
    }

    /// True once `cursor` has passed every record of the arena.
    pub fn scan_done(&self, cursor: ScanCursor) -> bool {
        self.raw.scan_done(cursor.0)
    }

    /// Calls `f` on every live record, `chunk_records` at a time (0: the
    /// default, 1024) under one pin each, checking `token` between chunks.
    ///
    /// ```
    /// use ebb_arena::{BlobArena, CancellationToken, SlabConfig};
    ///
    /// let arena = BlobArena::new(SlabConfig::default())?;
    /// for i in 0..100u32 {
    ///     arena.insert(&i.to_le_bytes())?;
    /// }
    /// let mut sum = 0u64;
    /// let report = arena.scan(&CancellationToken::new(), 0, |_, bytes| {
    ///     sum += u64::from(u32::from_le_bytes(bytes.try_into().unwrap()));
    /// });
    /// assert_eq!((report.records, sum), (100, 4950));
    /// # Ok::<(), ebb_arena::Error>(())
    /// ```
    pub fn scan(
        &self,
        token: &CancellationToken,
        chunk_records: usize,
        mut f: impl FnMut(BlobHandle, &[u8]),
    ) -> ScanReport {
        run_scan(
            token,
            chunk_records,
            |cursor, n| self.scan_chunk(cursor, n, &mut f),
            |cursor| self.scan_done(cursor),
        )
    }

    crate::raw::arena_maintenance!();
}

crate::raw::impl_maintenance!(BlobArena);
