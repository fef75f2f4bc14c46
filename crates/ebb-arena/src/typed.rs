//! [`TypedArena<T>`]: fixed-size plain records behind generational handles.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crossbeam_epoch::Guard;

use crate::error::Result;
use crate::handle::Handle;
use crate::raw::{RawArena, RecordFormat};
use crate::scan::{ScanCursor, ScanReport, run_scan};
use ebb_slab::SlabConfig;
use tokio_util::sync::CancellationToken;

/// Plain records of type `T` in slabs, addressed by 8-byte generational
/// handles, compactable while readers read.
///
/// `T: Copy` because a move is a byte copy and no destructor may run while a
/// reader can still see the value; updates go through
/// [`replace`](Self::replace), never through interior mutability (a write
/// into the old place during a move would be lost).
///
/// ```
/// use ebb_arena::{TypedArena, SlabConfig};
///
/// let arena: TypedArena<[u64; 4]> = TypedArena::new(SlabConfig::default())?;
/// let h = arena.insert([1, 2, 3, 4])?;
/// assert_eq!(arena.get(h).map(|r| r[2]), Some(3));
/// assert!(arena.replace(h, [5; 4])?);
/// assert_eq!(arena.get_copied(h), Some([5; 4]));
/// assert!(arena.remove(h));
/// assert!(arena.get(h).is_none());
/// # Ok::<(), ebb_arena::Error>(())
/// ```
pub struct TypedArena<T> {
    raw: RawArena,
    _type: PhantomData<fn(T) -> T>,
}

/// A reference to a record, valid while held. Holds the arena's epoch pin:
/// it is not `Send` and must not be held across an `.await` (use
/// [`TypedArena::with`] or [`TypedArena::get_copied`] there). While any `Ref`
/// is alive, places retired meanwhile are not freed, so hold it briefly.
pub struct Ref<'a, T> {
    _guard: Guard,
    ptr: NonNull<T>,
    _arena: PhantomData<&'a T>,
}

impl<T> std::ops::Deref for Ref<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the place was the record of a current handle when loaded
        // under `_guard`'s pin; by the arena's invariants 1 and 2 it is
        // neither written nor freed while the pin lasts, and it holds an
        // initialized `T`, aligned (allocated with `T`'s layout).
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Ref<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Copy + Send + Sync> TypedArena<T> {
    const RECORD: usize = if std::mem::size_of::<T>() == 0 {
        1
    } else {
        std::mem::size_of::<T>()
    };
    const FORMAT: RecordFormat = RecordFormat::Fixed {
        len: Self::RECORD,
        align: std::mem::align_of::<T>(),
    };

    /// An empty arena over a new `SlabArena` made from `config` (its budget
    /// reservation, release mode and slab size pass through).
    ///
    /// # Errors
    ///
    /// If the slab configuration is invalid.
    pub fn new(config: SlabConfig) -> Result<Self> {
        Ok(TypedArena {
            raw: RawArena::new(config, Self::FORMAT)?,
            _type: PhantomData,
        })
    }

    /// Stores `value`.
    ///
    /// # Errors
    ///
    /// Over budget, mmap failure, or a full handle table; nothing is stored.
    #[inline]
    pub fn insert(&self, value: T) -> Result<Handle<T>> {
        // SAFETY: writes one `T` at the start of a record of size_of::<T>()
        // bytes (or 1 for a zero-sized T) aligned to align_of::<T>().
        let bits = unsafe {
            self.raw
                .insert(Self::FORMAT, Self::RECORD, |p| p.cast::<T>().write(value))
        }?;
        Ok(Handle::from_bits(bits))
    }

    /// A reference to the record, or `None` if the handle was removed.
    #[inline]
    pub fn get(&self, handle: Handle<T>) -> Option<Ref<'_, T>> {
        let (guard, ptr) = self.raw.read(handle.to_bits())?;
        Some(Ref {
            _guard: guard,
            ptr: ptr.cast(),
            _arena: PhantomData,
        })
    }

    /// A copy of the record.
    #[inline]
    pub fn get_copied(&self, handle: Handle<T>) -> Option<T> {
        self.get(handle).map(|r| *r)
    }

    /// Runs `f` on the record (the pin ends before this returns).
    #[inline]
    pub fn with<R>(&self, handle: Handle<T>, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.get(handle).map(|r| f(&r))
    }

    /// Removes the record; false if the handle was not current.
    #[inline]
    pub fn remove(&self, handle: Handle<T>) -> bool {
        self.raw.remove(Self::FORMAT, handle.to_bits())
    }

    /// Replaces the record with `value` (a new place; the handle stays
    /// valid). `Ok(false)` if the handle was not current (nothing stored).
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert); the old value stays.
    pub fn replace(&self, handle: Handle<T>, value: T) -> Result<bool> {
        // SAFETY: as in `insert`.
        unsafe {
            self.raw
                .replace(Self::FORMAT, handle.to_bits(), Self::RECORD, |p| {
                    p.cast::<T>().write(value)
                })
        }
    }

    /// Calls `f` on up to `max_records` live records from `cursor` on,
    /// under one epoch pin, and advances the cursor; returns how many it
    /// visited (see [`BlobArena::scan_chunk`](crate::BlobArena::scan_chunk)).
    pub fn scan_chunk(
        &self,
        cursor: &mut ScanCursor,
        max_records: usize,
        mut f: impl FnMut(Handle<T>, &T),
    ) -> usize {
        self.raw
            .scan_chunk(&mut cursor.0, max_records, |bits, ptr| {
                // SAFETY: `ptr` is a published record's place holding an
                // initialized, aligned `T`, pinned by `scan_chunk` for this call
                // and unchanged while pinned (invariants 1 and 2).
                let value = unsafe { ptr.cast::<T>().as_ref() };
                f(Handle::from_bits(bits), value);
            })
    }

    /// True once `cursor` has passed every record of the arena.
    pub fn scan_done(&self, cursor: ScanCursor) -> bool {
        self.raw.scan_done(cursor.0)
    }

    /// Calls `f` on every live record in chunks, cancellable between them
    /// (see [`BlobArena::scan`](crate::BlobArena::scan)).
    pub fn scan(
        &self,
        token: &CancellationToken,
        chunk_records: usize,
        mut f: impl FnMut(Handle<T>, &T),
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

crate::raw::impl_maintenance!(TypedArena<T>, T: Copy + Send + Sync);
