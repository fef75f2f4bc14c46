//! The allocation-heavy loop on the bare system allocator (the baseline of
//! `peers leak-overhead`).

fn main() {
    ebb_bench::leak::alloc_main("system");
}
