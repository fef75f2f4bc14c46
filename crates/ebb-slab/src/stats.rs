//! [`SlabStats`], the plain snapshot a scrape reads.

/// A snapshot of a [`SlabArena`](crate::SlabArena), from atomics: flat
/// plain data for metrics (docs/metrics.md maps each field to its
/// Prometheus metric). It stays `Copy`, so the instance name is not in it:
/// [`SlabArena::name`](crate::SlabArena::name) gives it.
///
/// Exact when no allocation or free is in flight; while threads work, each
/// field is exact up to the operations in flight.
///
/// - `reserved_bytes`: mapped address space (slabs, including released but
///   retained ones, and dedicated mappings).
/// - `resident_bytes`: bytes handed out and not released, page-rounded per
///   slab: what `mincore` sees once callers have written what they
///   allocated (with the default release mode).
/// - `live_bytes`: bytes of live allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStats {
    /// Slabs being filled (one per shard at most, plus compaction targets).
    pub slabs_active: u64,
    /// Full slabs with live allocations.
    pub slabs_sealed: u64,
    /// Empty slabs released to the OS and kept mapped for reuse.
    pub slabs_released: u64,
    /// Empty slabs kept resident for immediate reuse (`max_warm_slabs`).
    pub slabs_warm: u64,
    /// Dedicated mappings of allocations over half a slab.
    pub large_mappings: u64,
    /// Mapped bytes.
    pub reserved_bytes: u64,
    /// Touched and not released bytes.
    pub resident_bytes: u64,
    /// Bytes of live allocations.
    pub live_bytes: u64,
    /// Slabs released to the OS since the arena was made, and dedicated
    /// mappings unmapped.
    pub releases_total: u64,
    /// Releases whose `madvise` failed (the slab was unmapped instead).
    pub release_failures_total: u64,
}

impl SlabStats {
    /// `1 - live / resident`: the share of resident memory not holding live
    /// data; 0 when nothing is resident.
    pub fn fragmentation(&self) -> f64 {
        if self.resident_bytes == 0 {
            0.0
        } else {
            1.0 - (self.live_bytes.min(self.resident_bytes) as f64 / self.resident_bytes as f64)
        }
    }
}
