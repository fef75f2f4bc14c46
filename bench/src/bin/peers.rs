//! `peers`: runs one scenario on ebb (and, where the scenario has them, on
//! its peers) and prints the figures.
//!
//! ```text
//! peers release [--json] [--bytes N] [--seed S] [--thp]
//! peers fragmentation [--json] [--total-bytes N] [--keep-percent P] [--seed S]
//!       [--allocators glibc,jemalloc,mimalloc,ebb] [--max-ebb-ratio R]
//! peers pool [--json] [--sizes 1024,65536,...] [--threads 1,2] [--millis MS]
//! peers leak-overhead [--json] [--millis MS] [--rounds N]
//! peers engine [--json] [--records N] [--seed S] [--stores ebb,rwlock_hashmap,dashmap]
//! peers engine-vectors [--json] [--vectors N] [--dim D] [--seed S] [--stores bare_index,ebb_ingest]
//! peers lifecycle [--json] [--bytes N] [--points N] [--seed S] [--scenarios close_compaction,...]
//! peers churn [--json] [--secs N] [--live-bytes N] [--allocators glibc,jemalloc,mimalloc]
//! peers hnsw [--json] [--n N] [--dim D] [--nq Q] [--seed S] [--data DIR] [--write-data DIR]
//! peers serve [--json] [--n N] [--dim D] [--nq Q] [--qps-secs S] [--mixed-secs S] [--connections C] [--scrape-datasets D]
//! ```

use anyhow::{Result, bail};
use ebb_bench::args::Args;
use ebb_bench::{engine, engine_vectors, fragmentation, leak, lifecycle, pool, scenario};

const USAGE: &str = "usage: peers release [--json] [--bytes N] [--seed S] [--thp]\n       \
peers fragmentation [--json] [--total-bytes N] [--keep-percent P] [--seed S] [--allocators A,B] [--max-ebb-ratio R]\n       \
peers pool [--json] [--sizes 1024,65536,1048576,16777216] [--threads 1,2] [--millis 150]\n       \
peers leak-overhead [--json] [--millis 200] [--rounds 5]\n       \
peers engine [--json] [--records 1000000] [--seed 7] [--stores ebb,rwlock_hashmap,dashmap]\n       \
peers engine-vectors [--json] [--vectors 100000] [--dim 128] [--seed 7] [--stores bare_index,ebb_ingest]\n       \
peers lifecycle [--json] [--bytes 1073741824] [--points 100000] [--seed 7] [--scenarios close_compaction,close_rebuild,close_hung,burst,cgroup]\n       \
peers churn [--json] [--secs 300] [--live-bytes 536870912] [--allocators glibc,jemalloc,mimalloc]\n       \
peers hnsw [--json] [--n 100000] [--dim 128] [--nq 200] [--seed 7] [--data DIR] [--write-data DIR]\n       \
peers serve [--json] [--n 100000] [--dim 128] [--nq 1000] [--qps-secs 5] [--mixed-secs 20] [--connections 64] [--scrape-datasets 64]";

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    match args.scenario.as_deref() {
        Some("release") => release(&args),
        Some("fragmentation") => fragmentation(&args),
        Some("pool") => pool_scenario(&args),
        Some("leak-overhead") => leak_overhead(&args),
        Some("engine") => engine_scenario(&args),
        Some("engine-vectors") => engine_vectors(&args),
        Some("lifecycle") => lifecycle_scenario(&args),
        Some("churn") => churn(&args),
        Some("hnsw") => sibling("hnsw_bench"),
        Some("serve") => sibling("serve_bench"),
        Some(other) => bail!("unknown scenario {other:?}\n{USAGE}"),
        None => bail!("{USAGE}"),
    }
}

fn release(args: &Args) -> Result<()> {
    let bytes: usize = args.value("bytes", 1 << 30)?;
    let seed: u64 = args.value("seed", 7)?;
    let r = scenario::release(bytes, seed, args.flag("thp"))?;
    if args.flag("json") {
        println!(
            "{}",
            serde_json::json!({
                "bytes": r.bytes,
                "thp": r.thp,
                "rss_base": r.rss_base,
                "rss_full": r.rss_full,
                "rss_after_free": r.rss_after_free,
                "release_ms": round3(r.release_ms),
                "raw_madvise_ms": round3(r.raw_madvise_ms),
                "free_all_ms": round3(r.free_all_ms),
                "records": r.records,
                "slabs_released": r.slabs_released,
            })
        );
    }
    let residue = r.rss_after_free.saturating_sub(r.rss_base) as f64 / r.bytes as f64;
    let ratio = r.release_ms / r.raw_madvise_ms;
    eprintln!(
        "release: {} records, {} bytes, THP {}",
        r.records, r.bytes, r.thp
    );
    eprintln!(
        "  RSS base {:>12}  full {:>12}  after free {:>12}  residue {:.2} % of bytes (goal <= 5 %)",
        r.rss_base,
        r.rss_full,
        r.rss_after_free,
        residue * 100.0
    );
    eprintln!(
        "  release {:.2} ms in {} slab-releasing frees; raw madvise {:.2} ms; ratio {:.3} (goal <= 1.2); all frees {:.2} ms",
        r.release_ms, r.slabs_released, r.raw_madvise_ms, ratio, r.free_all_ms
    );
    Ok(())
}

fn engine_scenario(args: &Args) -> Result<()> {
    let records: u64 = args.value("records", 1_000_000)?;
    let seed: u64 = args.value("seed", 7)?;
    let child: String = args.value("child", String::new())?;
    if !child.is_empty() {
        println!("{}", engine::run_child(&child, records, seed)?.to_json());
        return Ok(());
    }
    let list: String = args.value("stores", "ebb,rwlock_hashmap,dashmap".to_string())?;
    let stores: Vec<&str> = list.split(',').collect();
    let reports = engine::run_all(&std::env::current_exe()?, &stores, records, seed)?;
    if args.flag("json") {
        for r in &reports {
            println!("{}", r.to_json());
        }
        return Ok(());
    }
    eprintln!(
        "engine: {records} records of {} B keys and {} B values, seed {seed}, glibc malloc",
        engine::KEY_BYTES,
        engine::VALUE_BYTES
    );
    eprintln!(
        "  {:<15} {:>22} {:>26} {:>14} {:>14}",
        "store", "overhead B/record", "RSS/live after release", "get ns (2t)", "put ns (2t)"
    );
    for r in &reports {
        eprintln!(
            "  {:<15} {:>22.1} {:>26.3} {:>14.1} {:>14.1}",
            r.store,
            r.overhead_bytes_per_record,
            r.rss_over_live_after_release,
            r.get_ns_per_op_2t,
            r.put_ns_per_op_2t
        );
    }
    Ok(())
}

fn engine_vectors(args: &Args) -> Result<()> {
    let n: usize = args.value("vectors", 100_000)?;
    let dim: usize = args.value("dim", 128)?;
    let seed: u64 = args.value("seed", 7)?;
    let child: String = args.value("child", String::new())?;
    if !child.is_empty() {
        println!(
            "{}",
            engine_vectors::run_child(&child, n, dim, seed)?.to_json()
        );
        return Ok(());
    }
    let list: String = args.value("stores", "bare_index,ebb_ingest".to_string())?;
    let stores: Vec<&str> = list.split(',').collect();
    let reports = engine_vectors::run_all(&std::env::current_exe()?, &stores, n, dim, seed)?;
    if args.flag("json") {
        for r in &reports {
            println!("{}", r.to_json());
        }
        return Ok(());
    }
    eprintln!(
        "engine-vectors: {n} clustered vectors of {dim} floats, {} B payloads, seed {seed}",
        engine_vectors::PAYLOAD_BYTES
    );
    eprintln!(
        "  {:<12} {:>10} {:>14} {:>16}",
        "store", "load s", "vectors/s", "RSS B/vector"
    );
    for r in &reports {
        eprintln!(
            "  {:<12} {:>10.2} {:>14.0} {:>16.0}",
            r.store, r.load_secs, r.vectors_per_sec, r.rss_bytes_per_vector
        );
    }
    let find = |name: &str| reports.iter().find(|r| r.store == name);
    if let (Some(bare), Some(ebb)) = (find("bare_index"), find("ebb_ingest")) {
        eprintln!(
            "  ingest time / bare: {:.3} (goal <= 1.2); RSS per vector / (bare + payload): {:.3} (goal <= 1.2)",
            ebb.load_secs / bare.load_secs,
            ebb.rss_bytes_per_vector / (bare.rss_bytes_per_vector + ebb.payload_bytes as f64)
        );
    }
    Ok(())
}

fn lifecycle_scenario(args: &Args) -> Result<()> {
    let scale = lifecycle::Scale {
        bytes: args.value("bytes", 1 << 30)?,
        points: args.value("points", 100_000)?,
        seed: args.value("seed", 7)?,
    };
    let child: String = args.value("child", String::new())?;
    if !child.is_empty() {
        println!("{}", lifecycle::run_child(&child, scale)?);
        return Ok(());
    }
    let list: String = args.value("scenarios", lifecycle::SCENARIOS.join(","))?;
    let scenarios: Vec<&str> = list.split(',').collect();
    let reports = lifecycle::run_all(&std::env::current_exe()?, &scenarios, scale)?;
    if args.flag("json") {
        for r in &reports {
            println!("{r}");
        }
    }
    eprintln!(
        "lifecycle: {} B of records compacted, {} points rebuilt, engine defaults",
        scale.bytes, scale.points
    );
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in &reports {
        let line = match r["scenario"].as_str().unwrap_or("") {
            _ if r.get("skipped").is_some() => format!("skipped: {}", r["skipped"]),
            "close_compaction" | "close_rebuild" => format!(
                "close {:.1} ms (goal <= 100) with the step {} after {:.1} ms",
                f(r, "close_ms"),
                r["step_outcome"],
                f(r, "step_ran_ms")
            ),
            "close_hung" => format!(
                "close {:.1} ms with a 1 s deadline: {:+.1} ms over it (goal <= +50)",
                f(r, "close_ms"),
                f(r, "over_deadline_ms")
            ),
            "burst" => format!(
                "Elevated {:.1} ms after the crossing (goal <= {} + 50); first bytes back {:.1} ms after Elevated (goal <= 500), {:.1} ms after the crossing",
                f(r, "to_elevated_ms"),
                r["interval_ms"],
                f(r, "elevated_to_released_ms"),
                f(r, "to_released_ms")
            ),
            "cgroup" => format!(
                "peak {:.1} % of the {} MiB limit (goal <= 95 %), OOM-killed {}; {} accepted, {} MemoryPressure refusals",
                f(r, "peak_over_limit") * 100.0,
                CGROUP_MIB,
                r["oom_killed"],
                r["accepted"],
                r["memory_pressure_refusals"]
            ),
            _ => r.to_string(),
        };
        eprintln!("  {:<17} {line}", r["scenario"].as_str().unwrap_or("?"));
    }
    Ok(())
}

fn churn(args: &Args) -> Result<()> {
    let secs: u64 = args.value("secs", 300)?;
    let live: u64 = args.value("live-bytes", 512 << 20)?;
    let list: String = args.value("allocators", churn_allocators())?;
    let mut reports = Vec::new();
    for a in list.split(',') {
        let exe = std::env::current_exe()?.with_file_name(format!("churn_{a}"));
        anyhow::ensure!(
            exe.exists(),
            "churn_{a} is not built: run `cargo build --release -p ebb-bench --bins` first"
        );
        let out = std::process::Command::new(exe)
            .args([
                "--secs",
                &secs.to_string(),
                "--live-bytes",
                &live.to_string(),
            ])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "churn_{a} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        if args.flag("json") {
            println!("{v}");
        }
        reports.push(v);
    }
    eprintln!("churn: {secs} s per allocator, {live} B live target, engine defaults, 2 threads");
    eprintln!(
        "  {:<9} {:>12} {:>10} {:>11} {:>10} {:>10} {:>14}",
        "allocator", "records/s", "gets/s", "searches/s", "RSS/live", "max/live", "released/live"
    );
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    for r in &reports {
        eprintln!(
            "  {:<9} {:>12.0} {:>10.0} {:>11.0} {:>10.3} {:>10.3} {:>14.3}",
            r["allocator"].as_str().unwrap_or("?"),
            f(r, "records_per_sec"),
            f(r, "gets_per_sec"),
            f(r, "searches_per_sec"),
            f(r, "rss_mean_over_live"),
            f(r, "rss_max_over_live"),
            f(r, "rss_after_release_over_live")
        );
    }
    Ok(())
}

fn churn_allocators() -> String {
    ebb_bench::churn::ALLOCATORS.join(",")
}

const CGROUP_MIB: u64 = lifecycle::CGROUP_LIMIT >> 20;

fn fragmentation(args: &Args) -> Result<()> {
    let total: usize = args.value("total-bytes", 2 << 30)?;
    let keep: u64 = args.value("keep-percent", 25)?;
    let seed: u64 = args.value("seed", 7)?;
    let child: String = args.value("child", String::new())?;
    if !child.is_empty() {
        let r = fragmentation::run_child(&child, total, keep, seed)?;
        println!("{}", r.to_json());
        return Ok(());
    }
    let list: String = args.value("allocators", fragmentation::ALLOCATORS.join(","))?;
    let allocators: Vec<&str> = list.split(',').collect();
    let exe = std::env::current_exe()?;
    let reports = fragmentation::run_all(&exe, &allocators, total, keep, seed)?;
    eprintln!(
        "fragmentation: {} bytes of 64..=4096 B records, keep {keep} %, seed {seed}",
        reports.first().map_or(0, |r| r.total_bytes)
    );
    eprintln!(
        "  {:<9} {:>12} {:>13} {:>13} {:>17} {:>8} {:>10} {:>12} {:>9} {:>12}",
        "allocator",
        "live",
        "rss_full",
        "rss_freed",
        "rss_reclaimed",
        "ratio",
        "reclaim_s",
        "moved",
        "memcpy",
        "move/memcpy"
    );
    for r in &reports {
        if args.flag("json") {
            println!("{}", r.to_json());
        }
        let move_share = if r.bytes_moved > 0 {
            format!(
                "{:.0} %",
                100.0 * (r.bytes_moved as f64 / r.reclaim_secs / 1e9) / r.memcpy_gbps
            )
        } else {
            "-".into()
        };
        eprintln!(
            "  {:<9} {:>12} {:>13} {:>13} {:>17} {:>8.3} {:>10.3} {:>12} {:>7.2}GB {:>12}",
            r.allocator,
            r.live_bytes,
            r.rss_full - r.rss_base,
            r.rss_after_free.saturating_sub(r.rss_base),
            r.rss_after_reclaim.saturating_sub(r.rss_base),
            r.ratio(),
            r.reclaim_secs,
            r.bytes_moved,
            r.memcpy_gbps,
            move_share
        );
    }
    for r in &reports {
        if let (Some(idle), Some(busy)) = (r.get_p99_us_idle, r.get_p99_us_compacting) {
            eprintln!(
                "  {}: p99 of 1000-get batches {idle:.1} us idle, {busy:.1} us during compaction ({:.2}x, goal <= 2x); cancel -> return {}",
                r.allocator,
                busy / idle,
                r.cancel_ms
                    .map_or("n/a (finished first)".into(), |ms| format!(
                        "{ms:.3} ms (goal <= 10 ms)"
                    ))
            );
        }
    }
    let max: f64 = args.value("max-ebb-ratio", f64::INFINITY)?;
    if let Some(ebb) = reports.iter().find(|r| r.allocator == "ebb")
        && ebb.ratio() > max
    {
        bail!(
            "ebb kept {:.3}x its live bytes resident, over the {max} limit",
            ebb.ratio()
        );
    }
    Ok(())
}

fn list(args: &Args, name: &str, default: &str) -> Result<Vec<usize>> {
    let raw: String = args.value(name, default.to_string())?;
    raw.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("--{name} {v}: {e}"))
        })
        .collect()
}

fn pool_scenario(args: &Args) -> Result<()> {
    let sizes = list(args, "sizes", "1024,65536,1048576,16777216")?;
    let threads = list(args, "threads", "1,2")?;
    let millis: u64 = args.value("millis", 150)?;
    let cells = pool::run(&sizes, &threads, std::time::Duration::from_millis(millis));
    if args.flag("json") {
        for c in &cells {
            println!("{}", c.to_json());
        }
    }
    let find = |name: &str, zero: Option<bool>, size: usize, t: usize, fill: bool| {
        cells
            .iter()
            .find(|c| {
                c.implementation == name
                    && c.zero_on_return == zero
                    && c.size == size
                    && c.threads == t
                    && c.fill == fill
            })
            .map(|c| c.ns_per_op)
    };
    for fill in [false, true] {
        eprintln!(
            "pool: {} (ns per op per thread)",
            if fill {
                "get + write all bytes + drop"
            } else {
                "get + drop"
            }
        );
        eprintln!(
            "  {:>9} {:>3} {:>10} {:>10} {:>11} {:>12} {:>11} {:>11} {:>11}",
            "size",
            "thr",
            "ebb",
            "ebb_zero",
            "vec_zeroed",
            "vec_with_cap",
            "array_queue",
            "object-pool",
            "lockfree-op"
        );
        for &size in &sizes {
            for &t in &threads {
                let g = |name, zero| find(name, zero, size, t, fill).unwrap_or(f64::NAN);
                eprintln!(
                    "  {:>9} {:>3} {:>10.1} {:>10.1} {:>11.1} {:>12.1} {:>11.1} {:>11.1} {:>11.1}",
                    size,
                    t,
                    g("ebb", Some(false)),
                    g("ebb", Some(true)),
                    g("vec_zeroed", None),
                    g("vec_with_capacity", None),
                    g("array_queue", None),
                    g("object-pool", None),
                    g("lockfree-object-pool", None),
                );
            }
        }
    }
    eprintln!("goals (ebb, zero_on_return off):");
    for &size in &sizes {
        for &t in &threads {
            let ebb = find("ebb", Some(false), size, t, false).unwrap_or(f64::NAN);
            let limit = if t == 1 { 8.0 } else { 20.0 };
            let mut line = format!("  {size:>9} B {t} thr: get+drop {ebb:.1} ns (goal <= {limit})");
            if size >= 64 << 10 {
                let vec = find("vec_zeroed", None, size, t, false).unwrap_or(f64::NAN);
                let ebb_fill = find("ebb", Some(false), size, t, true).unwrap_or(f64::NAN);
                let vec_fill = find("vec_zeroed", None, size, t, true).unwrap_or(f64::NAN);
                line += &format!(
                    "; vs vec![0; n] {:.0}x (goal >= 10x); with fill {:.2}x (goal >= 1.3x)",
                    vec / ebb,
                    vec_fill / ebb_fill
                );
            }
            eprintln!("{line}");
        }
    }
    // The allocation count needs its own process (a counting global
    // allocator would tax every peer above): run the sibling binary.
    let allocs = std::env::current_exe()?.with_file_name("pool_allocs");
    if allocs.exists() {
        let status = std::process::Command::new(&allocs).status()?;
        anyhow::ensure!(status.success(), "pool_allocs failed: {status}");
    } else {
        eprintln!(
            "(allocation count: build it with `cargo build --release -p ebb-bench --bins` and rerun)"
        );
    }
    Ok(())
}

fn leak_overhead(args: &Args) -> Result<()> {
    let millis: u64 = args.value("millis", 200)?;
    let rounds: usize = args.value("rounds", 5)?;
    let time = std::time::Duration::from_millis(millis);
    let mut rows = leak::guard_rows(&[1, 2], time);
    // The allocator rows: the two sibling binaries, alternated.
    let dir = std::env::current_exe()?;
    let (bare, tracked) = (
        dir.with_file_name("alloc_bare"),
        dir.with_file_name("alloc_tracked"),
    );
    if bare.exists() && tracked.exists() {
        let run = |exe: &std::path::Path| -> Result<Vec<(usize, f64)>> {
            let out = std::process::Command::new(exe)
                .env("EBB_ALLOC_MILLIS", millis.to_string())
                .output()?;
            anyhow::ensure!(out.status.success(), "{} failed", exe.display());
            String::from_utf8(out.stdout)?
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l)?;
                    Ok((
                        v["threads"].as_u64().unwrap_or(0) as usize,
                        v["ns_per_op"].as_f64().unwrap_or(f64::NAN),
                    ))
                })
                .collect()
        };
        let mut samples: std::collections::BTreeMap<usize, (Vec<f64>, Vec<f64>)> =
            Default::default();
        for _ in 0..rounds {
            for (t, ns) in run(&tracked)? {
                samples.entry(t).or_default().0.push(ns);
            }
            for (t, ns) in run(&bare)? {
                samples.entry(t).or_default().1.push(ns);
            }
        }
        for (t, (mut with, mut without)) in samples {
            rows.push(leak::OverheadRow {
                what: "TrackingAllocator alloc+free".into(),
                threads: t,
                ns_per_op: leak::median(&mut with),
                baseline_ns_per_op: leak::median(&mut without),
            });
        }
    } else {
        eprintln!("(allocator rows: `cargo build --release -p ebb-bench --bins` first)");
    }
    eprintln!("leak-overhead (ns per op per thread; medians of alternated runs)");
    eprintln!(
        "  {:<44} {:>3} {:>10} {:>10} {:>9}",
        "what", "thr", "with", "without", "overhead"
    );
    for r in &rows {
        if args.flag("json") {
            println!("{}", r.to_json());
        }
        eprintln!(
            "  {:<44} {:>3} {:>10.2} {:>10.2} {:>8.2}%",
            r.what,
            r.threads,
            r.ns_per_op,
            r.baseline_ns_per_op,
            r.overhead_pct()
        );
    }
    eprintln!(
        "goals: Sampled(128) track+drop <= 25 ns; crc32c loop <= 2 %; TrackingAllocator <= 5 %"
    );
    Ok(())
}

/// Runs a sibling binary with this command's arguments after the scenario
/// (scenarios that need a global allocator of their own live in one).
fn sibling(name: &str) -> Result<()> {
    let exe = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        exe.exists(),
        "{name} is not built: run `cargo build --release -p ebb-bench --bins` first"
    );
    let status = std::process::Command::new(exe)
        .args(std::env::args().skip(2))
        .status()?;
    anyhow::ensure!(status.success(), "{name} failed: {status}");
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
