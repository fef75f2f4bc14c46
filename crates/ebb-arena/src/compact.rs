//! [`CompactionPolicy`] and [`CompactionReport`].

use std::time::Duration;

/// When and how much to compact.
///
/// ```
/// use ebb_arena::CompactionPolicy;
/// let policy = CompactionPolicy::default().with_max_live_ratio(0.3);
/// assert_eq!(policy.max_live_ratio, 0.3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CompactionPolicy {
    /// Sealed slabs whose live bytes are under this share of the slab are
    /// emptied (default 0.5).
    pub max_live_ratio: f64,
    /// Do nothing unless at least this many bytes would be reclaimed
    /// (default 4 MiB): a compaction that frees little is not worth its copy.
    pub min_reclaim_bytes: u64,
    /// Empty at most this many slabs per call (default: no limit).
    pub max_slabs: Option<usize>,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            max_live_ratio: 0.5,
            min_reclaim_bytes: 4 << 20,
            max_slabs: None,
        }
    }
}

impl CompactionPolicy {
    /// Sets [`max_live_ratio`](Self::max_live_ratio).
    pub fn with_max_live_ratio(mut self, ratio: f64) -> Self {
        self.max_live_ratio = ratio;
        self
    }

    /// Sets [`min_reclaim_bytes`](Self::min_reclaim_bytes).
    pub fn with_min_reclaim_bytes(mut self, bytes: u64) -> Self {
        self.min_reclaim_bytes = bytes;
        self
    }

    /// Sets [`max_slabs`](Self::max_slabs).
    pub fn with_max_slabs(mut self, slabs: usize) -> Self {
        self.max_slabs = Some(slabs);
        self
    }
}

/// What a compaction did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CompactionReport {
    /// Sparse slabs whose live records were all moved out.
    pub slabs_compacted: usize,
    /// Bytes copied.
    pub bytes_moved: u64,
    /// Resident bytes given back to the OS (resident before minus after).
    pub bytes_released: u64,
    /// Records moved.
    pub records_moved: u64,
    /// Wall time.
    pub duration: Duration,
}
