//! What the engine reports: per-dataset stats and listings, and what a
//! [`release_memory`](crate::Engine::release_memory) gave back.

use crate::dataset::DatasetConfig;

/// What [`Engine::release_memory`] gave back, by source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReleaseReport {
    /// Resident bytes the arenas' compactions released.
    pub arena_bytes: u64,
    /// Bytes index rebuilds released (their retired graphs, freed).
    pub index_bytes: u64,
    /// Bytes pool trims released.
    pub pool_bytes: u64,
    /// Bytes the key tables and payload maps gave back by shrinking.
    pub table_bytes: u64,
    /// Whether the global allocator said it gave memory back.
    pub allocator_trimmed: bool,
    /// Maintenance runs that failed (each is logged in the report, the
    /// rest went on).
    pub failures: Vec<String>,
    /// True if the token stopped the release early.
    pub cancelled: bool,
    /// Wall time.
    pub duration_secs: f64,
}

impl ReleaseReport {
    /// Every source's bytes together.
    pub fn total_bytes(&self) -> u64 {
        self.arena_bytes + self.index_bytes + self.pool_bytes + self.table_bytes
    }
}

/// What one dataset holds, for stats and metrics (flat; bytes in
/// `*_bytes`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetStats {
    /// KV records.
    pub records: u64,
    /// Live bytes of KV records (keys, values, their length prefixes).
    pub kv_live_bytes: u64,
    /// Resident bytes of the KV arena.
    pub kv_resident_bytes: u64,
    /// Bytes of the key tables.
    pub kv_table_bytes: u64,
    /// Live vectors.
    pub vectors: u64,
    /// Deleted points the index still holds.
    pub index_deleted_points: u64,
    /// Bytes the index's serving generation holds (graph, vectors, maps).
    pub index_bytes: u64,
    /// Bytes the index holds beside its serving generation: the one a
    /// running rebuild builds (its reservation) and retired ones not yet
    /// freed.
    pub index_rebuild_bytes: u64,
    /// Live bytes of payloads.
    pub payload_live_bytes: u64,
    /// Resident bytes of the payload arena.
    pub payload_resident_bytes: u64,
    /// Bytes of the id -> payload map.
    pub payload_map_bytes: u64,
    /// Bytes charged to the dataset's consumers.
    pub reserved_bytes: u64,
}

/// One dataset as [`Engine::list_datasets`] shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetInfo {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: DatasetConfig,
    /// KV records.
    pub records: usize,
    /// Live vectors.
    pub vectors: usize,
    /// Bytes charged to its consumers.
    pub reserved_bytes: u64,
}
