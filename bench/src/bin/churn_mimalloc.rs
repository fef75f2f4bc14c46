//! `peers churn` with mimalloc as the global allocator (see `ebb_bench::churn`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    ebb_bench::churn::main("mimalloc", ebb_bench::purge::mimalloc)
}
