//! `peers churn` with jemalloc as the global allocator (see `ebb_bench::churn`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    ebb_bench::churn::main("jemalloc", ebb_bench::purge::jemalloc)
}
