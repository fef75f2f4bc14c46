//! Fuzz target: random op sequences against the model (see
//! `tests/common/ops.rs`). Run with `just fuzz-arena`.

#![no_main]

#[path = "../../tests/common/ops.rs"]
mod ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ops::run(data));
