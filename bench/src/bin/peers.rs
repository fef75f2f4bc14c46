//! `peers`: runs one scenario on ebb (and, where the scenario has them, on
//! its peers) and prints the figures.
//!
//! ```text
//! peers release [--json] [--bytes N] [--seed S] [--thp]
//! peers fragmentation [--json] [--total-bytes N] [--keep-percent P] [--seed S]
//!       [--allocators glibc,jemalloc,mimalloc,ebb] [--max-ebb-ratio R]
//! ```

use anyhow::{Result, bail};
use ebb_bench::args::Args;
use ebb_bench::{fragmentation, scenario};

const USAGE: &str = "usage: peers release [--json] [--bytes N] [--seed S] [--thp]\n       \
peers fragmentation [--json] [--total-bytes N] [--keep-percent P] [--seed S] [--allocators A,B] [--max-ebb-ratio R]";

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    match args.scenario.as_deref() {
        Some("release") => release(&args),
        Some("fragmentation") => fragmentation(&args),
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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
