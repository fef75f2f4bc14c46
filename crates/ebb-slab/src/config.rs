//! [`SlabConfig`] and the knobs it carries.

use ebb_core::MemoryBudget;

/// How an empty slab gives its memory back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReleaseMode {
    /// `madvise(MADV_DONTNEED)`: RSS falls inside the free that empties the
    /// slab. The default.
    #[default]
    DontNeed,
    /// `madvise(MADV_FREE)`: lazy. RSS does not fall until the kernel needs
    /// the pages, and a reused slab may hold old bytes or zeroes (nothing in
    /// ebb assumes either). Cheaper when slabs are refilled soon after.
    ///
    /// Until a lazily freed page is written, the kernel may swap its old
    /// bytes for zeroes at any moment, which would change bytes under a live
    /// `&[u8]` from [`SlabAlloc::as_slice`](crate::SlabAlloc::as_slice). So
    /// in this mode the arena writes one byte of each page of a reused slab
    /// as its bump cursor first enters the page, before any allocation there
    /// is handed out: a written page is no longer lazily freed, and its
    /// bytes stay as they are (one store per page, on the refill path).
    Free,
}

/// The transparent-huge-page hint given to each new slab.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// No hint: the system setting decides
    /// (`/sys/kernel/mm/transparent_hugepage/enabled`).
    #[default]
    System,
    /// `MADV_HUGEPAGE`: ask for huge pages (useful in THP `madvise` mode;
    /// slabs are aligned to their size, so a 2 MiB slab can be one page).
    Enable,
    /// `MADV_NOHUGEPAGE`: never use huge pages for slabs.
    Disable,
}

/// Configuration of a [`SlabArena`](crate::SlabArena); builder setters are
/// `with_*`.
///
/// ```
/// use ebb_slab::{SlabConfig, ReleaseMode};
/// let config = SlabConfig::default()
///     .with_slab_bytes(1 << 20)
///     .with_max_retained_slabs(4)
///     .with_release_mode(ReleaseMode::DontNeed);
/// assert_eq!(config.slab_bytes(), 1 << 20);
/// ```
#[derive(Debug)]
pub struct SlabConfig {
    pub(crate) slab_bytes: usize,
    pub(crate) max_retained_slabs: usize,
    pub(crate) max_warm_slabs: usize,
    pub(crate) release_mode: ReleaseMode,
    pub(crate) huge_pages: HugePages,
    pub(crate) shards: usize,
    pub(crate) budget: Option<(MemoryBudget, String)>,
    pub(crate) compaction_headroom_slabs: Option<usize>,
    pub(crate) name: String,
}

impl Default for SlabConfig {
    fn default() -> Self {
        SlabConfig {
            slab_bytes: SlabConfig::DEFAULT_SLAB_BYTES,
            max_retained_slabs: SlabConfig::DEFAULT_MAX_RETAINED_SLABS,
            max_warm_slabs: 0,
            release_mode: ReleaseMode::DontNeed,
            huge_pages: HugePages::System,
            shards: std::thread::available_parallelism().map_or(4, |n| n.get()),
            budget: None,
            compaction_headroom_slabs: None,
            name: SlabConfig::DEFAULT_NAME.to_owned(),
        }
    }
}

impl SlabConfig {
    /// 2 MiB: one transparent huge page on x86-64.
    pub const DEFAULT_SLAB_BYTES: usize = 2 << 20;
    /// Released slabs kept mapped for reuse (they hold no RSS).
    pub const DEFAULT_MAX_RETAINED_SLABS: usize = 16;
    /// Largest slab size accepted (offsets are 32-bit).
    pub const MAX_SLAB_BYTES: usize = 1 << 30;
    /// Most shards an arena will make.
    pub const MAX_SHARDS: usize = 64;
    /// The instance name an arena gets unless [`with_name`](Self::with_name)
    /// sets one.
    pub const DEFAULT_NAME: &'static str = "default";

    /// Bytes per slab: a power of two, at least a page, at most 1 GiB.
    /// Checked by [`SlabArena::new`](crate::SlabArena::new).
    pub fn with_slab_bytes(mut self, bytes: usize) -> Self {
        self.slab_bytes = bytes;
        self
    }

    /// Empty slabs kept mapped (released: no RSS, not charged to the
    /// budget) for reuse; past this they are unmapped.
    pub fn with_max_retained_slabs(mut self, slabs: usize) -> Self {
        self.max_retained_slabs = slabs;
        self
    }

    /// Empty slabs kept *resident* for immediate reuse, before any is
    /// released (default 0: every empty slab is released at once). A small
    /// warm reserve spares a churning workload (fill, free all, refill) the
    /// page faults and zeroing of refaulting released slabs, at the price of
    /// up to `slabs × slab_bytes` of RSS that is not live;
    /// [`SlabArena::release_warm_slabs`](crate::SlabArena::release_warm_slabs)
    /// gives it back on demand.
    pub fn with_max_warm_slabs(mut self, slabs: usize) -> Self {
        self.max_warm_slabs = slabs;
        self
    }

    /// How empty slabs give memory back.
    pub fn with_release_mode(mut self, mode: ReleaseMode) -> Self {
        self.release_mode = mode;
        self
    }

    /// The huge-page hint for new slabs.
    pub fn with_huge_pages(mut self, hint: HugePages) -> Self {
        self.huge_pages = hint;
        self
    }

    /// Number of allocation shards (default: the number of CPUs, at most
    /// [`MAX_SHARDS`](Self::MAX_SHARDS), rounded up to a power of two). Each
    /// shard has one active slab, so
    /// up to `shards × slab_bytes` can sit in half-used active slabs.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Charges the arena's slabs to `budget` under the consumer name
    /// `consumer` (a metric label: keep names few and stable). What is
    /// charged: every slab whose pages may be resident, from the moment it
    /// is taken for filling until its pages are released (active, sealed,
    /// warm slabs and dedicated large mappings; not released slabs kept
    /// mapped). Without a budget the arena is unlimited.
    pub fn with_budget(mut self, budget: &MemoryBudget, consumer: impl Into<String>) -> Self {
        self.budget = Some((budget.clone(), consumer.into()));
        self
    }

    /// The budget and consumer name given to [`with_budget`](Self::with_budget),
    /// for layers above that charge their own memory to the same consumer.
    pub fn budget(&self) -> Option<(&MemoryBudget, &str)> {
        self.budget.as_ref().map(|(b, c)| (b, c.as_str()))
    }

    /// The arena's instance name (default `"default"`): the `arena` label
    /// of its metrics (docs/metrics.md), so keep names few and stable. An
    /// ebb-arena arena built on this config takes the same name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The instance name (see [`with_name`](Self::with_name)).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Slabs of budget headroom kept for this arena's compactions: writes
    /// (anyone's) cannot take them, a compaction's target slabs can, so a
    /// compaction still runs at the limit. Default: 0 for a bare
    /// `SlabArena`, 2 for the arenas of ebb-arena, which compact.
    pub fn with_compaction_headroom_slabs(mut self, slabs: usize) -> Self {
        self.compaction_headroom_slabs = Some(slabs);
        self
    }

    /// The compaction headroom, if set (see
    /// [`with_compaction_headroom_slabs`](Self::with_compaction_headroom_slabs)).
    pub fn compaction_headroom_slabs(&self) -> Option<usize> {
        self.compaction_headroom_slabs
    }

    /// Bytes per slab.
    pub fn slab_bytes(&self) -> usize {
        self.slab_bytes
    }

    /// Retained slab limit.
    pub fn max_retained_slabs(&self) -> usize {
        self.max_retained_slabs
    }

    /// Release mode.
    pub fn release_mode(&self) -> ReleaseMode {
        self.release_mode
    }
}
