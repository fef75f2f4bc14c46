//! Collectors: each crate's stats struct into its series, as
//! docs/metrics.md names them, called at scrape time with the stats read
//! just then. `labels` are the caller's (the engine's `dataset`, already
//! capped); each collector adds its instance label (`arena`, `pool`,
//! `index`, `tracker`).
//!
//! Derived ratios (fragmentation, hit ratio, deleted ratio) are left out
//! for a series labelled `other`: series past the label cap are summed,
//! and a sum of ratios is no ratio (Prometheus can divide the summed
//! fields).

use ebb_arena::ArenaStats;
use ebb_core::BudgetStats;
use ebb_hnsw::IndexStats;
use ebb_leak::MonitorStats;
use ebb_pool::PoolStats;

use crate::model::{LabelCap, OTHER, Scrape};

type Labels<'a> = [(&'static str, &'a str)];

fn with<'a>(
    labels: &Labels<'a>,
    extra: &[(&'static str, &'a str)],
) -> Vec<(&'static str, &'a str)> {
    labels.iter().chain(extra).copied().collect()
}

fn is_other(labels: &Labels<'_>) -> bool {
    labels.iter().any(|(_, v)| *v == OTHER)
}

/// An arena's series (`ebb_arena_*`), instance label `arena`.
pub fn arena(s: &mut Scrape, st: &ArenaStats, labels: &Labels<'_>) {
    let l = with(labels, &[("arena", &st.name)]);
    s.gauge("ebb_arena_records", "Live records.", &l, st.records as f64);
    s.gauge(
        "ebb_arena_live_bytes",
        "Bytes of live records (a blob's 4-byte length prefix included).",
        &l,
        st.live_bytes as f64,
    );
    s.gauge(
        "ebb_arena_resident_bytes",
        "Bytes handed out by the slabs and not released, page-rounded per slab.",
        &l,
        st.resident_bytes as f64,
    );
    s.gauge(
        "ebb_arena_reserved_bytes",
        "Mapped address space (slabs, released ones included, and large mappings).",
        &l,
        st.reserved_bytes as f64,
    );
    for (state, n) in [
        ("active", st.slabs_active),
        ("sealed", st.slabs_sealed),
        ("warm", st.slabs_warm),
        ("released", st.slabs_released),
    ] {
        let ls = with(&l, &[("state", state)]);
        s.gauge("ebb_arena_slabs", "Slabs by state.", &ls, n as f64);
    }
    s.gauge(
        "ebb_arena_large_mappings",
        "Dedicated mappings of records over half a slab.",
        &l,
        st.large_mappings as f64,
    );
    s.counter(
        "ebb_arena_releases_total",
        "Slabs and large mappings given back to the OS.",
        &l,
        st.releases_total as f64,
    );
    s.counter(
        "ebb_arena_release_failures_total",
        "Releases whose madvise failed (unmapped instead).",
        &l,
        st.release_failures_total as f64,
    );
    s.gauge(
        "ebb_arena_pending_frees",
        "Retired places whose readers are gone, not yet freed.",
        &l,
        st.pending_frees as f64,
    );
    s.gauge(
        "ebb_arena_slot_table_bytes",
        "The handle table: 16 bytes per handle ever issued.",
        &l,
        st.slot_table_bytes as f64,
    );
    s.counter(
        "ebb_arena_compactions_total",
        "Compactions run to completion or stopped.",
        &l,
        st.compactions_total as f64,
    );
    s.counter(
        "ebb_arena_moved_bytes_total",
        "Bytes moved by compactions.",
        &l,
        st.moved_bytes_total as f64,
    );
    s.counter(
        "ebb_arena_slabs_compacted_total",
        "Slabs emptied by compactions.",
        &l,
        st.slabs_compacted_total as f64,
    );
    if !is_other(&l) {
        let frag = if st.resident_bytes == 0 {
            0.0
        } else {
            1.0 - st.live_bytes as f64 / st.resident_bytes as f64
        };
        s.gauge(
            "ebb_arena_fragmentation_ratio",
            "1 - live / resident (0 when nothing is resident).",
            &l,
            frag,
        );
    }
}

/// A pool's series (`ebb_mempool_*`), instance label `pool`; per-tier
/// series add `tier` (the buffer size in bytes, 0 for an object pool).
///
/// A tier that has never been used (no get, nothing retained) has no
/// series until it is: an engine has one pool per dataset with nine tiers,
/// of which a workload uses two or three, and idle tiers would be two
/// thirds of a 64-dataset scrape.
pub fn pool(s: &mut Scrape, st: &PoolStats, labels: &Labels<'_>) {
    let l = with(labels, &[("pool", &st.name)]);
    let other = is_other(&l);
    for t in &st.tiers {
        if t.gets_total == 0 && t.retained == 0 && t.in_use == 0 && t.puts_total == 0 {
            continue;
        }
        let size = t.size_bytes.to_string();
        let lt = with(&l, &[("tier", &size)]);
        s.gauge(
            "ebb_mempool_cap",
            "Most items the tier retains now.",
            &lt,
            t.cap as f64,
        );
        s.counter(
            "ebb_mempool_gets_total",
            "Items handed out.",
            &lt,
            t.gets_total as f64,
        );
        s.counter(
            "ebb_mempool_hits_total",
            "Gets served from retained items.",
            &lt,
            t.hits_total as f64,
        );
        s.counter(
            "ebb_mempool_misses_total",
            "Gets that made a fresh item.",
            &lt,
            t.misses_total as f64,
        );
        s.counter(
            "ebb_mempool_allocations_total",
            "Fresh items made.",
            &lt,
            t.allocations_total as f64,
        );
        s.counter(
            "ebb_mempool_puts_total",
            "Items given back.",
            &lt,
            t.puts_total as f64,
        );
        s.gauge(
            "ebb_mempool_in_use",
            "Items handed out and not given back.",
            &lt,
            t.in_use as f64,
        );
        s.counter(
            "ebb_mempool_discarded_total",
            "Items freed at a put instead of retained, or evicted.",
            &lt,
            t.discarded_total as f64,
        );
        s.gauge(
            "ebb_mempool_retained",
            "Items retained now.",
            &lt,
            t.retained as f64,
        );
        s.gauge(
            "ebb_mempool_retained_bytes",
            "Bytes retained now.",
            &lt,
            t.retained_bytes as f64,
        );
        if !other {
            s.gauge(
                "ebb_mempool_hit_ratio",
                "hits / gets (1 before any get).",
                &lt,
                t.hit_ratio(),
            );
        }
    }
    s.gauge(
        "ebb_mempool_thread_cached_bytes",
        "Retained bytes in thread caches.",
        &l,
        st.thread_cached_bytes as f64,
    );
    s.counter(
        "ebb_mempool_oversized_total",
        "Requests larger than the largest tier, allocated plainly.",
        &l,
        st.oversized_total as f64,
    );
    s.gauge(
        "ebb_mempool_oversized_in_use",
        "Oversized buffers not yet dropped.",
        &l,
        st.oversized_in_use as f64,
    );
    s.gauge(
        "ebb_mempool_charged_bytes",
        "Bytes charged to the budget.",
        &l,
        st.charged_bytes as f64,
    );
    s.counter(
        "ebb_mempool_budget_refusals_total",
        "Fresh allocations refused because the budget was full.",
        &l,
        st.budget_refusals_total as f64,
    );
    s.counter(
        "ebb_mempool_budget_overruns_total",
        "Fresh allocations the infallible calls made past the limit.",
        &l,
        st.budget_overruns_total as f64,
    );
    s.counter(
        "ebb_mempool_maintenance_runs_total",
        "Maintenance runs finished.",
        &l,
        st.maintenance_runs_total as f64,
    );
    s.counter(
        "ebb_mempool_maintenance_released_bytes_total",
        "Bytes maintenance runs and trims freed.",
        &l,
        st.maintenance_released_bytes_total as f64,
    );
    s.counter(
        "ebb_mempool_thread_takeovers_total",
        "Thread caches maintenance took over.",
        &l,
        st.thread_takeovers_total as f64,
    );
    if !other {
        s.gauge(
            "ebb_mempool_last_maintenance_seconds",
            "Wall time of the last maintenance run.",
            &l,
            st.last_maintenance_seconds,
        );
    }
}

/// An index's series (`ebb_index_*`), instance label `index`.
pub fn index(s: &mut Scrape, st: &IndexStats, labels: &Labels<'_>) {
    let l = with(labels, &[("index", &st.name)]);
    let other = is_other(&l);
    for (state, n) in [
        ("live", st.live_points),
        ("deleted", st.deleted_points),
        ("delta", st.delta_points),
    ] {
        s.gauge(
            "ebb_index_points",
            "Points by state.",
            &with(&l, &[("state", state)]),
            n as f64,
        );
    }
    s.gauge(
        "ebb_index_memory_bytes",
        "Bytes the serving generation holds.",
        &l,
        st.memory_bytes as f64,
    );
    for (component, n) in [("graph", st.graph_bytes), ("points", st.points_bytes)] {
        s.gauge(
            "ebb_index_component_bytes",
            "Bytes of the serving generation by component.",
            &with(&l, &[("component", component)]),
            n as f64,
        );
    }
    s.gauge(
        "ebb_index_pending_graph_bytes",
        "Reserved ahead for the delta points' graph share.",
        &l,
        st.pending_graph_bytes as f64,
    );
    s.gauge(
        "ebb_index_retired_bytes",
        "Bytes of retired generations not yet freed.",
        &l,
        st.retired_bytes as f64,
    );
    s.gauge(
        "ebb_index_queued_release_bytes",
        "Retired bytes in the index's own reclaim queue.",
        &l,
        st.queued_release_bytes as f64,
    );
    s.gauge(
        "ebb_index_reserved_bytes",
        "Bytes the budget reservation holds.",
        &l,
        st.reserved_bytes as f64,
    );
    s.gauge(
        "ebb_index_rebuild_reserved_bytes",
        "Bytes reserved for a running rebuild's generation.",
        &l,
        st.rebuild_reserved_bytes as f64,
    );
    s.counter(
        "ebb_index_released_bytes_total",
        "Bytes of retired generations freed.",
        &l,
        st.released_bytes_total as f64,
    );
    s.counter(
        "ebb_index_rebuilds_total",
        "Rebuilds completed.",
        &l,
        st.rebuilds_total as f64,
    );
    s.counter(
        "ebb_index_rebuilds_cancelled_total",
        "Rebuilds stopped by their token.",
        &l,
        st.rebuilds_cancelled_total as f64,
    );
    s.counter(
        "ebb_index_rebuild_failures_total",
        "Rebuilds refused by the budget or the allocator.",
        &l,
        st.rebuild_failures_total as f64,
    );
    s.counter(
        "ebb_index_rebuild_duration_seconds_total",
        "Seconds spent in completed rebuilds.",
        &l,
        st.rebuild_duration_seconds_total,
    );
    if !other {
        s.gauge(
            "ebb_index_deleted_ratio",
            "deleted / (live + deleted).",
            &l,
            st.deleted_ratio,
        );
        s.gauge(
            "ebb_index_generation",
            "The serving generation (rebuilds completed).",
            &l,
            st.generation as f64,
        );
        s.gauge(
            "ebb_index_last_rebuild_duration_seconds",
            "Seconds the last completed rebuild took.",
            &l,
            st.last_rebuild_duration_seconds,
        );
        let lr = with(&l, &[("reason", st.last_rebuild_reason)]);
        s.gauge(
            "ebb_index_last_rebuild_info",
            "Why the last rebuild ran (the reason label; value 1).",
            &lr,
            1.0,
        );
    }
}

/// The budget's series (`ebb_budget_*`); consumers past `cap` are `other`.
pub fn budget(s: &mut Scrape, st: &BudgetStats, cap: &mut LabelCap) {
    budget_labelled(s, st, |name| cap.value(name).to_string());
}

/// The budget's series with each consumer's label chosen by `label` (the
/// engine maps `<dataset>/<part>` through its dataset cap, so a capped
/// dataset's consumers become `other/<part>`); series that get the same
/// label are summed.
pub fn budget_labelled(s: &mut Scrape, st: &BudgetStats, mut label: impl FnMut(&str) -> String) {
    if let Some(limit) = st.limit_bytes {
        s.gauge(
            "ebb_budget_limit_bytes",
            "The memory budget's limit.",
            &[],
            limit as f64,
        );
    }
    s.gauge(
        "ebb_budget_headroom_bytes",
        "Headroom kept for reclaiming work (compaction).",
        &[],
        st.headroom_bytes as f64,
    );
    s.gauge(
        "ebb_budget_reserved_bytes",
        "Bytes reserved in total.",
        &[],
        st.reserved_bytes as f64,
    );
    s.describe(
        "ebb_budget_consumer_reserved_bytes",
        "Bytes reserved under a consumer name.",
        crate::Kind::Gauge,
    );
    for c in &st.consumers {
        let name = label(&c.name);
        s.gauge(
            "ebb_budget_consumer_reserved_bytes",
            "Bytes reserved under a consumer name.",
            &[("consumer", &name)],
            c.reserved_bytes as f64,
        );
    }
}

/// A leak monitor's series (`ebb_leak_*`), instance label `tracker`.
pub fn leak_monitor(s: &mut Scrape, st: &MonitorStats) {
    let l = [("tracker", st.name)];
    s.counter(
        "ebb_leak_checks_total",
        "Leak monitor ticks run.",
        &l,
        st.checks_total as f64,
    );
    s.counter(
        "ebb_leak_held_warnings_total",
        "Held-too-long warnings, one per (kind, site) group per tick.",
        &l,
        st.held_warnings_total as f64,
    );
    s.counter(
        "ebb_leak_growth_warnings_total",
        "Growth warnings, one per growing kind per tick.",
        &l,
        st.growth_warnings_total as f64,
    );
    s.gauge(
        "ebb_leak_held_resources",
        "Guards past the threshold at the last tick.",
        &l,
        st.held_now as f64,
    );
}

/// The process's series: resident memory, threads, open file
/// descriptors (each left out where the OS does not say).
pub fn process(s: &mut Scrape) {
    if let Ok(rss) = ebb_core::os::rss_bytes() {
        s.gauge(
            "ebb_process_resident_memory_bytes",
            "Resident set size of the process.",
            &[],
            rss as f64,
        );
    }
    if let Ok(n) = ebb_core::os::thread_count() {
        s.gauge(
            "ebb_process_threads",
            "Threads of the process.",
            &[],
            n as f64,
        );
    }
    if let Ok(n) = ebb_core::os::open_fd_count() {
        s.gauge(
            "ebb_process_open_fds",
            "Open file descriptors of the process.",
            &[],
            n as f64,
        );
    }
}

/// A resource tracker's live guards by kind (`ebb_leak_tracked_resources`),
/// instance label `tracker`; `kind` is bounded by the tracker
/// (`MAX_KINDS`).
pub fn tracker(s: &mut Scrape, name: &str, live_by_kind: &std::collections::BTreeMap<&str, i64>) {
    s.describe(
        "ebb_leak_tracked_resources",
        "Tracked resources alive now, by kind.",
        crate::Kind::Gauge,
    );
    for (kind, n) in live_by_kind {
        s.gauge(
            "ebb_leak_tracked_resources",
            "Tracked resources alive now, by kind.",
            &[("tracker", name), ("kind", kind)],
            *n as f64,
        );
    }
}
