//! The hot path alone, for instruction counts: `N` (default 1 000 000)
//! get+drop pairs of a 100-byte buffer on one thread, after a warm-up.
//!
//! ```text
//! cargo build --release -p ebb-pool --example get_drop
//! valgrind --tool=callgrind target/release/examples/get_drop 1000000
//! valgrind --tool=callgrind target/release/examples/get_drop 2000000
//! ```
//!
//! The difference of the two totals over 1 000 000 is the cost of one
//! get+drop, with setup and teardown cancelled out.

use std::hint::black_box;

use ebb_pool::{BufferPool, PoolConfig};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let pool =
        BufferPool::new(PoolConfig::small_records().with_zero_on_return(false)).expect("config");
    drop(pool.get(100));
    for _ in 0..n {
        let buf = black_box(&pool).get(black_box(100));
        black_box(&buf);
        drop(buf);
    }
}
