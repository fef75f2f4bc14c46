//! `peers churn` with glibc as the global allocator (see `ebb_bench::churn`).

fn main() -> anyhow::Result<()> {
    ebb_bench::churn::main("glibc", ebb_bench::purge::glibc)
}
