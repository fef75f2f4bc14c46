//! The copy kernels of compaction: prefetching the records ahead, and a
//! copy whose whole target lines go out as streaming stores where the CPU
//! has AVX-512F (no read-for-ownership of a target line nobody reads soon).

/// How many records ahead compaction prefetches.
pub(crate) const PREFETCH_AHEAD: usize = 2;
/// Cache lines of each such record prefetched.
pub(crate) const PREFETCH_LINES: usize = 16;

/// Hints the CPU to load the cache line at `p` (no effect on other targets).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Records at least this long are copied with streaming stores.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const STREAM_MIN: usize = 256;

/// True if this CPU has AVX-512F (checked once): the streaming copy writes
/// each 64-byte line with one store.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn can_stream_lines() -> bool {
    static CACHED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CACHED.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// Copies `len` bytes for compaction. The target slab fills sequentially and
/// is not read again soon, so on a CPU with AVX-512 the whole 64-byte lines
/// of a record are written with one non-temporal store each: no
/// read-for-ownership of the target line. The partial lines at either end
/// (shared with the neighbouring records) use ordinary stores. The caller
/// must [`store_fence`] before publishing the copy.
///
/// # Safety
///
/// As `ptr::copy_nonoverlapping`: `src` readable and `dst` writable for
/// `len` bytes, not overlapping.
#[inline]
pub(crate) unsafe fn copy_streaming(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if len >= STREAM_MIN && can_stream_lines() {
        // SAFETY: the caller's contract; AVX-512F is present (checked).
        unsafe { copy_lines_avx512(dst, src, len) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

/// # Safety
///
/// As [`copy_streaming`], and the CPU has AVX-512F.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[target_feature(enable = "avx512f")]
unsafe fn copy_lines_avx512(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_stream_si512};
    let head = dst.align_offset(64).min(len);
    // SAFETY: every access is inside `0..len` of both ranges (the caller's
    // contract): the head, the whole lines from `head` while 64 bytes
    // remain, and the tail. `dst + i` is 64-byte aligned in the loop, as
    // `_mm512_stream_si512` requires; the loads are unaligned loads.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        let mut i = head;
        while i + 64 <= len {
            let v = _mm512_loadu_si512(src.add(i).cast::<__m512i>());
            _mm512_stream_si512(dst.add(i).cast::<__m512i>(), v);
            i += 64;
        }
        std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i);
    }
}

/// Orders earlier streaming stores before later stores (`sfence`).
#[inline]
pub(crate) fn store_fence() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `sfence` only orders stores; it has no other effect.
    unsafe {
        std::arch::x86_64::_mm_sfence();
    }
}
