//! Anonymous mappings, `madvise`, and page residency.

use std::ptr::NonNull;

use crate::{Error, Result};

/// The system page size in bytes (4096 on x86-64 Linux).
pub fn page_size() -> usize {
    #[cfg(not(miri))]
    {
        rustix::param::page_size()
    }
    #[cfg(miri)]
    {
        4096
    }
}

/// What to tell the kernel about a range of a [`Mapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Advice {
    /// `MADV_DONTNEED`: drop the pages now. RSS falls inside the call; the
    /// next read of the range sees zeroes.
    DontNeed,
    /// `MADV_FREE`: the kernel may take the pages when it needs memory. RSS
    /// does not fall until then, and a later read may see the old bytes or
    /// zeroes: nothing may assume either.
    Free,
    /// `MADV_HUGEPAGE`: back the range with transparent huge pages when
    /// possible (THP in `madvise` mode).
    HugePage,
    /// `MADV_NOHUGEPAGE`: never back the range with huge pages.
    NoHugePage,
}

impl Advice {
    fn name(self) -> &'static str {
        match self {
            Advice::DontNeed => "madvise(MADV_DONTNEED)",
            Advice::Free => "madvise(MADV_FREE)",
            Advice::HugePage => "madvise(MADV_HUGEPAGE)",
            Advice::NoHugePage => "madvise(MADV_NOHUGEPAGE)",
        }
    }
}

/// An owned, private, anonymous, read-write mapping; unmapped on drop.
///
/// Invariants:
///
/// 1. `ptr` is aligned to the alignment asked of [`Mapping::new`] (at least a
///    page) and `ptr..ptr + len` is mapped read-write for the life of the
///    value; `len` is a non-zero multiple of the page size.
/// 2. The mapping is unmapped exactly once, by `Drop`.
/// 3. `span_start..span_start + span_len` is every byte `mmap` gave this
///    value and no trim took back: it contains `ptr..ptr + len`, nothing
///    else owns it, and `Drop` unmaps exactly it. It equals
///    `ptr..ptr + len` unless a trim failed.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Invariant 3.
    #[cfg(not(miri))]
    span_start: usize,
    /// Invariant 3.
    #[cfg(not(miri))]
    span_len: usize,
    #[cfg(miri)]
    align: usize,
}

// SAFETY: a `Mapping` is a region of plain memory owned by this value; it has
// no thread affinity, and it hands out only raw pointers, so moving it to or
// sharing it with another thread cannot create a data race by itself (users
// of the pointers synchronise their accesses, as with any raw allocation).
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; `&Mapping` exposes only the pointer, the length, and
// `advise`, whose caller guarantees there are no live references to the
// range it changes.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (rounded up to a page) of zeroed anonymous memory
    /// whose start is aligned to `align` (rounded up to a page).
    ///
    /// Alignment above a page is obtained by over-mapping and unmapping the
    /// excess head and tail, so a 2 MiB-aligned 2 MiB mapping can be backed
    /// by one transparent huge page.
    ///
    /// If unmapping the head or the tail fails (`ENOMEM` when splitting the
    /// span would pass `vm.max_map_count`), the mapping is still returned:
    /// it keeps the untrimmed part as its own (invariant 3), never touches
    /// it, and unmaps it with the rest on drop. The cost is address space
    /// only (the excess is `NORESERVE` and never faulted in); an error here
    /// would fail a caller for memory it has, and unmapping the whole span
    /// to report one can fail the same way and leak it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `len` is zero, `align` is not a power of
    /// two, or the sizes overflow; [`Error::Os`] if `mmap` fails.
    pub fn new(len: usize, align: usize) -> Result<Mapping> {
        let page = page_size();
        if len == 0 {
            return Err(Error::InvalidArgument("mapping of zero bytes".into()));
        }
        if !align.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "mapping alignment {align} is not a power of two"
            )));
        }
        let align = align.max(page);
        let len = len
            .checked_next_multiple_of(page)
            .filter(|l| l.checked_add(align).is_some() && *l <= isize::MAX as usize / 2)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("mapping of {len} bytes is too large"))
            })?;
        #[cfg(any(test, feature = "fault-injection"))]
        if super::fault::map_should_fail() {
            return Err(Error::os(
                "mmap",
                std::io::Error::from_raw_os_error(libc::ENOMEM),
            ));
        }
        Self::map(len, align)
    }

    #[cfg(not(miri))]
    #[expect(clippy::disallowed_methods, reason = "ebb_core::os owns raw OS calls")]
    fn map(len: usize, align: usize) -> Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags, mmap_anonymous, munmap};
        let page = page_size();
        let span = if align > page {
            len + align - page
        } else {
            len
        };
        // SAFETY:
        // - a null hint lets the kernel choose the address, so no existing
        //   mapping is replaced;
        // - `span` is non-zero and fits in isize (checked in `new`).
        let raw = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                span,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| Error::os("mmap", e))?;
        let start = raw as usize;
        let aligned = start.next_multiple_of(align);
        let head = aligned - start;
        let tail = span - head - len;
        let Some(ptr) = NonNull::new(aligned as *mut u8) else {
            // Unreachable (without MAP_FIXED, mmap never maps page 0), but
            // the span is given back rather than leaked.
            // SAFETY: `raw..raw + span` is the mapping just made, which
            // nothing references.
            let _ = unsafe { munmap(raw, span) };
            return Err(Error::InvalidArgument("mmap returned null".into()));
        };
        // From here on `span_start..span_start + span_len` is ours and is
        // in the value returned whatever the trims do (invariant 3): there
        // is no early return to leak it.
        let (mut span_start, mut span_len) = (start, span);
        // SAFETY: `start..start + head` is the page-aligned head of the
        // mapping just made, which nothing else references.
        if head > 0 && unsafe { trim(start, head) } {
            span_start = aligned;
            span_len -= head;
        }
        // SAFETY: `aligned + len..start + span` is the page-aligned tail of
        // the mapping just made, which nothing else references.
        if tail > 0 && unsafe { trim(aligned + len, tail) } {
            span_len -= tail;
        }
        Ok(Mapping {
            ptr,
            len,
            span_start,
            span_len,
        })
    }

    #[cfg(miri)]
    fn map(len: usize, align: usize) -> Result<Mapping> {
        let layout = std::alloc::Layout::from_size_align(len, align)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        // SAFETY: `layout` has a non-zero size (checked in `new`).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::os("alloc", std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        Ok(Mapping { ptr, len, align })
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The length in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page (invariant 1).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Applies `advice` to `offset..offset + len` of the mapping.
    ///
    /// # Safety
    ///
    /// For [`Advice::DontNeed`] and [`Advice::Free`], which change the bytes
    /// of the range as far as the program can tell:
    /// - no reference (`&[u8]`, `&mut [u8]`, `&T`) into the range may be
    ///   live during the call, and
    /// - no other thread may read or write the range concurrently.
    ///
    /// The huge-page hints change no bytes and carry no requirement.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the range is not page-aligned or not
    /// inside the mapping; [`Error::Os`] if `madvise` fails.
    pub unsafe fn advise(&self, offset: usize, len: usize, advice: Advice) -> Result<()> {
        let page = page_size();
        if !offset.is_multiple_of(page) || offset.checked_add(len).is_none_or(|end| end > self.len)
        {
            return Err(Error::InvalidArgument(format!(
                "advise range {offset}+{len} outside a mapping of {} bytes or not page-aligned",
                self.len
            )));
        }
        if len == 0 {
            return Ok(());
        }
        #[cfg(any(test, feature = "fault-injection"))]
        if super::fault::advise_should_fail() {
            return Err(Error::os(
                advice.name(),
                std::io::Error::from_raw_os_error(libc::EAGAIN),
            ));
        }
        // SAFETY: the range is inside the mapping (checked above) and the
        // caller guarantees no reference to it is live and no thread touches
        // it during the call.
        unsafe { self.advise_unchecked(offset, len, advice) }
    }

    #[cfg(not(miri))]
    #[expect(clippy::disallowed_methods, reason = "ebb_core::os owns raw OS calls")]
    unsafe fn advise_unchecked(&self, offset: usize, len: usize, advice: Advice) -> Result<()> {
        use rustix::mm::{Advice as A, madvise};
        let raw = match advice {
            Advice::DontNeed => A::LinuxDontNeed,
            Advice::Free => A::LinuxFree,
            Advice::HugePage => A::LinuxHugepage,
            Advice::NoHugePage => A::LinuxNoHugepage,
        };
        // SAFETY:
        // - `offset..offset + len` lies inside this mapping (checked by the
        //   caller, `advise`), so no memory of anyone else is affected;
        // - for the discarding advices the caller of `advise` guarantees no
        //   live references or concurrent accesses to the range.
        unsafe { madvise(self.ptr.as_ptr().add(offset).cast(), len, raw) }
            .map_err(|e| Error::os(advice.name(), e))
    }

    #[cfg(miri)]
    unsafe fn advise_unchecked(&self, offset: usize, len: usize, advice: Advice) -> Result<()> {
        if advice == Advice::DontNeed {
            // SAFETY: the range is inside the allocation and unaliased (the
            // caller's guarantee), so it may be overwritten; DONTNEED on
            // private anonymous memory reads back as zeroes.
            unsafe { self.ptr.as_ptr().add(offset).write_bytes(0, len) };
        }
        Ok(())
    }

    /// Bytes of this mapping currently resident in RAM, by `mincore`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] if `mincore` fails.
    pub fn resident_bytes(&self) -> Result<usize> {
        resident_bytes(self.ptr.as_ptr(), self.len)
    }
}

impl Drop for Mapping {
    #[cfg(not(miri))]
    #[expect(clippy::disallowed_methods, reason = "ebb_core::os owns raw OS calls")]
    fn drop(&mut self) {
        // SAFETY: by invariant 3 `span_start..span_start + span_len` is
        // this value's own mapping (it contains `ptr..ptr + len`), and by
        // invariant 2 it is unmapped only here; `&mut self` proves no borrow
        // of the value (and so of the bytes) is live.
        if let Err(e) = unsafe { rustix::mm::munmap(self.span_start as *mut _, self.span_len) } {
            tracing::warn!(error = %e, len = self.span_len, "munmap failed; mapping leaked");
        }
    }

    #[cfg(miri)]
    fn drop(&mut self) {
        // SAFETY: the pointer came from `alloc_zeroed` with exactly this
        // layout (invariant 1) and is freed only here (invariant 2).
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                std::alloc::Layout::from_size_align_unchecked(self.len, self.align),
            )
        };
    }
}

/// Unmaps `addr..addr + len`, the excess head or tail of a span being
/// aligned; true when it is gone, false when the kernel refused (the caller
/// then keeps it, `Mapping` invariant 3).
///
/// # Safety
///
/// `addr..addr + len` is page-aligned, part of a mapping the caller just
/// made, and referenced by nothing.
#[cfg(not(miri))]
#[expect(clippy::disallowed_methods, reason = "ebb_core::os owns raw OS calls")]
unsafe fn trim(addr: usize, len: usize) -> bool {
    #[cfg(any(test, feature = "fault-injection"))]
    if super::fault::trim_should_fail() {
        tracing::debug!(
            len,
            "munmap of an alignment trim failed (injected); the mapping keeps it"
        );
        return false;
    }
    // SAFETY: the caller's guarantee: the range is unreferenced, page-aligned
    // and ours, so unmapping it affects no one else.
    match unsafe { rustix::mm::munmap(addr as *mut _, len) } {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(
                error = %e,
                len,
                "munmap of an alignment trim failed (vm.max_map_count?); the mapping keeps it"
            );
            false
        }
    }
}

/// Bytes resident in RAM among the pages of `addr..addr + len`, by
/// `mincore(2)`. `addr` is rounded down to a page.
///
/// Safe for any range: the kernel checks it and answers `ENOMEM` for
/// unmapped addresses. Under Miri every page counts as resident.
///
/// # Errors
///
/// [`Error::Os`] if `mincore` fails (for example on an unmapped range).
pub fn resident_bytes(addr: *const u8, len: usize) -> Result<usize> {
    let page = page_size();
    let start = (addr as usize) & !(page - 1);
    let end = (addr as usize)
        .checked_add(len)
        .ok_or_else(|| Error::InvalidArgument("range overflows".into()))?;
    let pages = (end - start).div_ceil(page);
    if pages == 0 {
        return Ok(0);
    }
    #[cfg(miri)]
    {
        Ok(pages * page)
    }
    #[cfg(not(miri))]
    {
        mincore_pages(start, pages).map(|n| n * page)
    }
}

#[cfg(not(miri))]
#[expect(clippy::disallowed_methods, reason = "ebb_core::os owns raw OS calls")]
fn mincore_pages(start: usize, pages: usize) -> Result<usize> {
    // One status byte per page; 4 KiB of status covers 16 MiB of range.
    const CHUNK_PAGES: usize = 4096;
    let page = page_size();
    let mut status = vec![0u8; pages.min(CHUNK_PAGES)];
    let mut resident = 0;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(CHUNK_PAGES);
        // SAFETY:
        // - `status` holds at least `n` bytes, one per page asked about;
        // - `mincore` only reads the page tables of the range; the kernel
        //   validates the range and fails with ENOMEM if it is unmapped.
        let rc = unsafe {
            libc::mincore(
                (start + done * page) as *mut libc::c_void,
                n * page,
                status.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Error::os("mincore", std::io::Error::last_os_error()));
        }
        resident += status[..n].iter().filter(|s| **s & 1 == 1).count();
        done += n;
    }
    Ok(resident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_aligned_zeroed_and_writable() {
        let align = 2 << 20;
        let m = Mapping::new(3 * 4096, align).unwrap();
        assert_eq!(m.as_ptr() as usize % align, 0);
        assert_eq!(m.len(), 3 * 4096);
        // SAFETY: the mapping is ours, 3 pages long, and unaliased.
        let bytes = unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) };
        assert!(bytes.iter().all(|b| *b == 0));
        bytes.fill(7);
        assert!(bytes.iter().all(|b| *b == 7));
    }

    #[test]
    fn dont_need_zeroes_the_range_and_keeps_the_rest() {
        let page = page_size();
        let m = Mapping::new(4 * page, page).unwrap();
        // SAFETY: unaliased, inside the mapping.
        unsafe { m.as_ptr().write_bytes(9, 4 * page) };
        // SAFETY: no reference into the mapping is live.
        unsafe { m.advise(page, 2 * page, Advice::DontNeed) }.unwrap();
        // SAFETY: as above; reading after the advise is defined (zeroes).
        let bytes = unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) };
        assert!(bytes[..page].iter().all(|b| *b == 9));
        assert!(bytes[page..3 * page].iter().all(|b| *b == 0));
        assert!(bytes[3 * page..].iter().all(|b| *b == 9));
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(matches!(
            Mapping::new(0, 4096),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Mapping::new(4096, 3000),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            Mapping::new(usize::MAX, 4096),
            Err(Error::InvalidArgument(_))
        ));
        let m = Mapping::new(4096, 4096).unwrap();
        // SAFETY: no references into the mapping exist.
        let r = unsafe { m.advise(0, 8192, Advice::DontNeed) };
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
        // SAFETY: as above.
        let r = unsafe { m.advise(1, 4095, Advice::DontNeed) };
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
    }

    /// Both alignment trims fail (as at `vm.max_map_count`): the mapping is
    /// still aligned and usable, owns the whole over-mapped span, and its
    /// drop unmaps all of it. Before the fix `new` returned an error and
    /// the span stayed mapped with no owner.
    #[test]
    #[cfg(not(miri))]
    fn failed_trims_keep_the_span_owned_and_drop_unmaps_it() {
        let page = page_size();
        let align = 2 << 20;
        crate::os::fault::fail_trims(0, 2);
        let m = Mapping::new(page, align);
        crate::os::fault::reset();
        let m = m.expect("a failed trim still yields a correct mapping");
        let ptr = m.as_ptr() as usize;
        assert_eq!(ptr % align, 0);
        assert_eq!(m.len(), page);
        assert_eq!(m.span_len, page + align - page, "nothing was trimmed");
        assert!(m.span_start <= ptr && ptr + page <= m.span_start + m.span_len);
        // mincore fails with ENOMEM on any unmapped page: all of it is mapped.
        resident_bytes(m.span_start as *const u8, m.span_len).expect("the span is mapped");
        // SAFETY: inside the mapping, unaliased.
        unsafe { m.as_ptr().write_bytes(7, page) };
        let (start, len) = (m.span_start, m.span_len);
        drop(m);
        assert!(
            resident_bytes(start as *const u8, len).is_err(),
            "drop unmapped the whole span"
        );
    }

    /// Only the first trim fails: the mapping keeps that part and gives
    /// back the other; what it keeps is contiguous and holds its bytes.
    #[test]
    #[cfg(not(miri))]
    fn one_failed_trim_keeps_only_that_part() {
        let page = page_size();
        let align = 2 << 20;
        crate::os::fault::fail_trims(0, 1);
        let m = Mapping::new(4 * page, align);
        crate::os::fault::reset();
        let m = m.expect("a failed trim still yields a correct mapping");
        let ptr = m.as_ptr() as usize;
        assert_eq!(ptr % align, 0);
        assert!(m.span_start <= ptr && ptr + m.len() <= m.span_start + m.span_len);
        assert!(m.span_len > m.len(), "the failed part is kept");
        assert!(
            m.span_len < 4 * page + align - page,
            "the other part is trimmed"
        );
        resident_bytes(m.span_start as *const u8, m.span_len).expect("the span is mapped");
    }

    #[test]
    #[cfg_attr(miri, ignore = "mincore is not available under Miri")]
    fn mincore_sees_touch_and_release() {
        let page = page_size();
        let m = Mapping::new(64 * page, page).unwrap();
        // SAFETY: no references into the mapping exist.
        unsafe { m.advise(0, 64 * page, Advice::NoHugePage) }.unwrap();
        assert_eq!(m.resident_bytes().unwrap(), 0);
        for i in 0..10 {
            // SAFETY: inside the mapping, unaliased.
            unsafe { m.as_ptr().add(i * page).write(1) };
        }
        assert_eq!(m.resident_bytes().unwrap(), 10 * page);
        // SAFETY: no references into the mapping exist.
        unsafe { m.advise(0, 64 * page, Advice::DontNeed) }.unwrap();
        assert_eq!(m.resident_bytes().unwrap(), 0);
    }
}
