//! `peers serve` runs this: `ebb serve` over HTTP beside the same engine
//! in-process (bench/src/serve.rs), on jemalloc as the `ebb` binary is.
//!
//! ```text
//! serve_bench [--json] [--n 100000] [--dim 128] [--nq 1000] [--qps-secs 5]
//!             [--mixed-secs 20] [--connections 64] [--scrape-datasets 64] [--seed 7]
//! ```

use anyhow::Result;
use ebb_bench::args::Args;
use ebb_bench::serve::{ServeBenchConfig, run};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<()> {
    ebb::allocator::register_jemalloc_purge();
    let args = Args::parse(std::env::args().skip(1).filter(|a| a != "serve"))?;
    let c = ServeBenchConfig {
        n: args.value("n", 100_000)?,
        dim: args.value("dim", 128)?,
        nq: args.value("nq", 1000)?,
        qps_secs: args.value("qps-secs", 5.0)?,
        mixed_secs: args.value("mixed-secs", 20.0)?,
        connections: args.value("connections", 64)?,
        scrape_datasets: args.value("scrape-datasets", 64)?,
        seed: args.value("seed", 7)?,
    };
    let report = run(&c)?;
    if args.flag("json") {
        println!("{report}");
    }
    Ok(())
}
