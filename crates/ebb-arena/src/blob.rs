//! [`BlobArena`]: variable-length byte records behind generational handles.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crossbeam_epoch::Guard;

use crate::error::{Error, Result};
use crate::handle::BlobHandle;
use crate::raw::{PREFIX, RawArena, RecordFormat};
use ebb_slab::SlabConfig;

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

    crate::raw::arena_maintenance!();
}
