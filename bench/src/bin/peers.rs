//! `peers`: runs one scenario on ebb (and, where the scenario has them, on
//! its peers) and prints the figures.
//!
//! ```text
//! peers release [--json] [--bytes N] [--seed S] [--thp]
//! ```

use anyhow::{Result, bail};
use ebb_bench::args::Args;
use ebb_bench::scenario;

const USAGE: &str = "usage: peers release [--json] [--bytes N] [--seed S] [--thp]";

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    match args.scenario.as_deref() {
        Some("release") => release(&args),
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

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
