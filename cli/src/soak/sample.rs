//! One second of a soak: what the sampler reads from the process and the
//! engine ([`Sample::take`]), and the CSV it is written as (one row per
//! second, a header naming every column with its unit).

use std::io::Write;

use ebb_engine::Engine;

/// Every figure of one sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_secs: f64,
    /// Process RSS.
    pub rss_bytes: u64,
    /// Heap bytes the TrackingAllocator counts (0 without one installed).
    pub heap_bytes: u64,
    /// Live bytes in every dataset's arenas (KV records and payloads).
    pub arena_live_bytes: u64,
    /// Resident bytes of those arenas.
    pub arena_resident_bytes: u64,
    /// What the indexes' serving generations hold (graph, vectors, maps).
    pub index_bytes: u64,
    /// What they hold beside: a generation a rebuild builds, retired ones
    /// not yet freed.
    pub index_rebuild_bytes: u64,
    /// Bytes the datasets' pools retain.
    pub pool_retained_bytes: u64,
    /// Heap bytes of the key tables and payload maps.
    pub table_bytes: u64,
    /// Bytes reserved from the budget.
    pub reserved_bytes: u64,
    /// `1 - arena live / arena resident`.
    pub fragmentation: f64,
    /// Threads of the process.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Tracked resources alive (the engine tracker: scans, snapshot files).
    pub tracked: u64,
    /// The largest deleted share of any index.
    pub index_deleted_ratio: f64,
    /// 0 normal, 1 elevated, 2 critical.
    pub pressure_level: u8,
    /// Maintenance runs of the workers so far.
    pub compaction_events: u64,
    /// Pressure level changes so far.
    pub level_changes: u64,
    /// Live KV records and vectors.
    pub records: u64,
    /// Live vectors.
    pub vectors: u64,
}

impl Sample {
    /// Reads the process and `engine` now, `t_secs` into the soak.
    pub fn take(engine: &Engine, t_secs: f64) -> Sample {
        let mut s = Sample {
            t_secs,
            rss_bytes: ebb_core::os::rss_bytes().unwrap_or(0),
            heap_bytes: ebb_leak::alloc::stats().current_bytes.max(0) as u64,
            threads: ebb_core::os::thread_count().unwrap_or(0) as u64,
            fds: ebb_core::os::open_fd_count().unwrap_or(0) as u64,
            reserved_bytes: engine.budget().reserved_bytes(),
            ..Sample::default()
        };
        for d in engine.list_datasets() {
            let Ok(st) = engine.dataset_stats(&d.name) else {
                continue;
            };
            s.arena_live_bytes += st.kv_live_bytes + st.payload_live_bytes;
            s.arena_resident_bytes += st.kv_resident_bytes + st.payload_resident_bytes;
            s.index_bytes += st.index_bytes;
            s.index_rebuild_bytes += st.index_rebuild_bytes;
            s.table_bytes += st.kv_table_bytes + st.payload_map_bytes;
            s.records += st.records;
            s.vectors += st.vectors;
            let points = st.vectors + st.index_deleted_points;
            if points > 0 {
                let ratio = st.index_deleted_points as f64 / points as f64;
                s.index_deleted_ratio = s.index_deleted_ratio.max(ratio);
            }
            if let Ok(p) = engine.pool_stats(&d.name) {
                s.pool_retained_bytes += p.retained_bytes;
            }
        }
        s.fragmentation = if s.arena_resident_bytes > 0 {
            1.0 - s.arena_live_bytes as f64 / s.arena_resident_bytes as f64
        } else {
            0.0
        };
        s.tracked = engine
            .leak_tracker()
            .live_counts()
            .values()
            .map(|n| (*n).max(0) as u64)
            .sum();
        let p = engine.pressure_stats();
        s.pressure_level = p.level.map_or(0, |l| l as u8);
        s.level_changes = p.level_changes_total;
        let c = engine.compaction_stats();
        s.compaction_events = c.events_total.iter().flatten().sum();
        s
    }

    /// What the verdict bounds RSS by: arena live bytes, index bytes (every
    /// generation the index holds: the serving one and, during a rebuild,
    /// the one it builds) and pool retained bytes. Not the arenas' waste,
    /// the key tables, or the allocator's own slack: those must fit in the
    /// bound's 30 %.
    pub fn accounted_live_bytes(&self) -> u64 {
        self.arena_live_bytes
            + self.index_bytes
            + self.index_rebuild_bytes
            + self.pool_retained_bytes
    }
}

/// The CSV header (units in the names).
pub const CSV_HEADER: &str = "t_secs,rss_bytes,heap_bytes,arena_live_bytes,arena_resident_bytes,index_bytes,index_rebuild_bytes,pool_retained_bytes,table_bytes,reserved_bytes,fragmentation,threads,fds,tracked,index_deleted_ratio,pressure_level,compaction_events,level_changes,records,vectors";

/// Writes `samples` as CSV.
pub fn write_csv(out: &mut impl Write, samples: &[Sample]) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for s in samples {
        writeln!(
            out,
            "{:.3},{},{},{},{},{},{},{},{},{},{:.4},{},{},{},{:.4},{},{},{},{},{}",
            s.t_secs,
            s.rss_bytes,
            s.heap_bytes,
            s.arena_live_bytes,
            s.arena_resident_bytes,
            s.index_bytes,
            s.index_rebuild_bytes,
            s.pool_retained_bytes,
            s.table_bytes,
            s.reserved_bytes,
            s.fragmentation,
            s.threads,
            s.fds,
            s.tracked,
            s.index_deleted_ratio,
            s.pressure_level,
            s.compaction_events,
            s.level_changes,
            s.records,
            s.vectors
        )?;
    }
    Ok(())
}
