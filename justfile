# ebb recipes. `just --list` shows them. Install just with `pip install rust-just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The whole test suite (what CI runs).
test:
    cargo test --workspace

# Format check and clippy, warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion benches (several minutes) and the peers figures.
bench:
    cargo bench -p ebb-bench --bench slab_alloc
    cargo bench -p ebb-bench --bench arena_handles
    cargo run --release -p ebb-bench --bin peers -- release --json
    cargo run --release -p ebb-bench --bin peers -- release --json --thp
    cargo run --release -p ebb-bench --bin peers -- fragmentation --json
    cargo build --release -p ebb-bench --bins
    cargo run --release -p ebb-bench --bin peers -- pool --json
    cargo run --release -p ebb-bench --bin peers -- leak-overhead --json
    ./target/release/peers hnsw --json

# What ebb-leak costs left on: guards per level, a crc32c loop, the allocator.
leak-overhead *ARGS:
    cargo build --release -p ebb-bench --bins
    cargo run --release -p ebb-bench --bin peers -- leak-overhead --json {{ARGS}}

# The planted leaks under LeakSanitizer (what it finds at exit, beside LeakCheck).
asan-leaks:
    RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" cargo build --example planted_leaks -p ebb-leak --target x86_64-unknown-linux-gnu
    for s in none guard thread task fd box-leak arc-cycle; do \
        ./target/x86_64-unknown-linux-gnu/debug/examples/planted_leaks $s 2>&1 | grep -E "leakcheck|SUMMARY" || true; \
    done

# The planted leaks under valgrind memcheck (with fd tracking).
valgrind-leaks:
    cargo build --example planted_leaks -p ebb-leak
    for s in none guard thread task fd box-leak arc-cycle; do \
        valgrind --leak-check=full --track-fds=yes ./target/debug/examples/planted_leaks $s 2>&1 \
            | grep -E "leakcheck|definitely lost|FILE DESCRIPTORS" || true; \
    done

# The vector index through its life (100k x 128 by default), then Python
# hnswlib on the same data (pip install hnswlib numpy).
hnsw *ARGS:
    cargo build --release -p ebb-bench --bins
    ./target/release/peers hnsw --json --write-data /tmp/hnsw_data {{ARGS}}
    ./target/release/peers hnsw --json --backend native --data /tmp/hnsw_data
    python3 bench/hnswlib_compare.py /tmp/hnsw_data

# The buffer pool figures (get+drop, get+fill+drop, allocation counts).
pool *ARGS:
    cargo build --release -p ebb-bench --bins
    cargo run --release -p ebb-bench --bin peers -- pool --json {{ARGS}}

# Full-scale arena tests (1 GiB compaction and cancellation, 60 s stress).
test-full:
    EBB_ARENA_BYTES=1073741824 EBB_ARENA_STRESS_SECS=60 cargo test --release -p ebb-arena

# The arena's insert+remove beside slotmap, slab and sharded-slab
# (criterion, 1 and 2 threads), then the quick profiling loop (ebb and
# slotmap alternating in one process, best and median of 20 rounds).
handles:
    cargo bench -p ebb-bench --bench arena_handles
    cargo run --release -p ebb-arena --example pairs

# One compaction of 1 GiB (GIB=n), timed, to profile with
# `perf record -D 4900` (compaction starts 5 s in).
compact-profile GIB="1":
    GIB={{GIB}} cargo run --release -p ebb-arena --example compact_profile

# The fragmentation scenario on glibc, jemalloc, mimalloc and ebb (2 GiB).
fragmentation *ARGS:
    cargo run --release -p ebb-bench --bin peers -- fragmentation --json {{ARGS}}

# The slab release figure alone (1 GiB).
release *ARGS:
    cargo run --release -p ebb-bench --bin peers -- release --json {{ARGS}}

# Miri over the heap-backed slabs (nightly + miri component). ebb-arena runs
# under Tree Borrows: crossbeam-epoch is known not to pass Stacked Borrows
# (crossbeam-rs/crossbeam#545) and crossbeam checks itself the same way.
miri:
    rustup component add --toolchain nightly miri rust-src
    MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -p ebb-core -p ebb-slab
    MIRIFLAGS="-Zmiri-disable-isolation -Zmiri-tree-borrows" cargo +nightly miri test -p ebb-arena
    MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation" EBB_POOL_STRESS_OPS=100 cargo +nightly miri test -p ebb-pool
    MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation" cargo +nightly miri test -p ebb-leak --test tracker
    MIRIFLAGS="-Zmiri-tree-borrows -Zmiri-disable-isolation -Zmiri-ignore-leaks" cargo +nightly miri test -p ebb-hnsw --test model native_l2

# AddressSanitizer (and LeakSanitizer) over the real mmap path.
asan:
    EBB_SANITIZER=address RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
        cargo test --no-fail-fast --target x86_64-unknown-linux-gnu -p ebb-core -p ebb-slab -p ebb-arena -p ebb-pool --tests

# valgrind memcheck over the slab tests.
valgrind:
    cargo test -p ebb-slab --tests --no-run
    for t in target/debug/deps/arena-* target/debug/deps/model-*; do \
        [ -x "$t" ] && valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite -q "$t" --test-threads=1; \
    done

# loom models of the lock-free cores.
loom:
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p ebb-slab -p ebb-arena -p ebb-pool --test loom
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p ebb-core --test presence_loom

# Fuzz the arena's op sequences (nightly + cargo-fuzz; opt-in). New corpus
# inputs land in crates/ebb-arena/fuzz/corpus/ops and are replayed by
# `cargo test` (tests/fuzz_corpus.rs).
fuzz-arena SECS="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd crates/ebb-arena && cargo +nightly fuzz run ops fuzz/corpus/ops -- -max_total_time={{SECS}}

# The engine's lifecycle figures: close during a 1 GiB compaction and a
# 100k-point rebuild, hung workers, burst to Elevated, a 768 MiB cgroup.
lifecycle *ARGS:
    cargo build --release -p ebb-bench --bins
    ./target/release/peers lifecycle --json {{ARGS}}

# The engine under 5 minutes of ingest-and-churn once per global allocator
# (glibc, jemalloc, mimalloc): 15 minutes.
churn *ARGS:
    cargo build --release -p ebb-bench --bins
    ./target/release/peers churn --json {{ARGS}}

# `ebb serve` over HTTP beside the same engine in-process: search QPS (2
# connections vs 1 thread), 64 connections of mixed requests, a scrape of
# 64 datasets, the idle server's RSS.
serve-bench *ARGS:
    cargo build --release -p ebb -p ebb-bench --bins
    ./target/release/peers serve --json {{ARGS}}

# Fuzz the request decoders of `ebb serve` (nightly + cargo-fuzz, installed
# if missing); new inputs land in cli/fuzz/corpus/decode, which
# cli/tests/fuzz_corpus.rs replays on stable.
fuzz-serve secs="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd cli && cargo +nightly fuzz run decode fuzz/corpus/decode -- -max_total_time={{secs}}

# The 20-minute soak (release build) with the streaming runbook
# bench/runbooks/random-xs-churn.yaml replayed beside the load:
# samples.csv, rss.png/svg and summary.json (recall@10 per search step
# included) in target/soak/, exit 0 only when the verdict passes.
soak *ARGS:
    cargo build --release -p ebb
    ./target/release/ebb soak --duration 20m --out target/soak --workload bench/runbooks/random-xs-churn.yaml {{ARGS}}

# The integration tests at full scale (50k vectors of 128-d and 50k KV
# records per cycle; a 1 GiB compaction and a 100k-point rebuild cancelled).
integration-full:
    EBB_INTEGRATION_FULL=1 cargo test --release -p ebb-integration -- --nocapture

# heaptrack over a short soak (SECS seconds, 64 MiB live) of the
# system-allocator build (jemalloc's own symbols hide its allocations from
# heaptrack): target/profile/heaptrack.ebb.*, then its peak and leak
# summary. docs/profiling.md says how to read it.
memory-profile SECS="60":
    command -v heaptrack >/dev/null || (apt-get update -qq && apt-get install -y -qq heaptrack) || { echo "heaptrack is needed: apt-get install heaptrack"; exit 1; }
    cargo build --release -p ebb --no-default-features --target-dir target/sysalloc
    mkdir -p target/profile && rm -f target/profile/heaptrack.ebb.*
    heaptrack -o target/profile/heaptrack.ebb ./target/sysalloc/release/ebb soak --duration {{SECS}}s --live-bytes 67108864 --out target/profile/soak-heaptrack || echo "(the soak's verdict failed; the profile is still written)"
    heaptrack_print --print-allocators=0 --print-temporary=0 --print-peaks=1 --print-leaks=1 --peak-limit 10 --sub-peak-limit 1 target/profile/heaptrack.ebb.* > target/profile/heaptrack.txt
    grep -vE '^\s+(at /rustc/|at /root/.cargo/|at .*/.cargo/registry/|in /)' target/profile/heaptrack.txt | awk 'NR <= 160' ; tail -n 8 target/profile/heaptrack.txt
    @echo "all of it: target/profile/heaptrack.txt; interactive: heaptrack_gui $(ls target/profile/heaptrack.ebb.*)"

# dhat's heap profiler over a short soak (SECS seconds, 32 MiB live; dhat
# serialises every allocation, so the soak runs slower):
# target/profile/dhat-heap.json, for dh_view or `just memory-compare`.
heap SECS="60" OUT="target/profile/dhat-heap.json":
    cargo build --release -p ebb --features dhat-heap --target-dir target/dhat
    mkdir -p "$(dirname {{OUT}})"
    EBB_DHAT_FILE={{OUT}} ./target/dhat/release/ebb soak --duration {{SECS}}s --live-bytes 33554432 --out target/profile/soak-dhat || echo "(the soak's verdict failed; the profile is still written)"
    @echo "{{OUT}}: open it in https://nnethercote.github.io/dh_view/dh_view.html, or compare two with just memory-compare"

# The allocation sites that grew from profile A to profile B (two dhat
# JSON files from `just heap`, or two heaptrack files via heaptrack_print
# --diff), as a table. ARGS: --metric gb|eb|tb|mb, --top N, --frames K.
memory-compare A B *ARGS:
    python3 bench/memory_compare.py {{A}} {{B}} {{ARGS}}

# The leak-sensitive tests (LeakCheck children: ebb-leak, the engine's
# leak tests, the integration cycles and open/close), then the integration
# tests under AddressSanitizer + LeakSanitizer on the system allocator.
memory-check:
    cargo test -p ebb-leak -p ebb-integration
    cargo test -p ebb-engine --test leaks
    EBB_SANITIZER=address RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address --cfg ebb_system_alloc" \
        cargo test --target x86_64-unknown-linux-gnu --target-dir target/asan -p ebb-integration
