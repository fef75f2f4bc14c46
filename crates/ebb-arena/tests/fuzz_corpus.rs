//! Replays the fuzz corpus (`fuzz/corpus/ops/`) and a few fixed inputs on
//! stable Rust, so every input the fuzzer kept stays a regression test.

mod common;

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        common::ops::run(&data);
        n += 1;
    }
    assert!(n >= 4, "corpus has only {n} inputs");
}

#[test]
fn fixed_inputs_replay_cleanly() {
    common::ops::run(&[]);
    common::ops::run(&[0, 255, 3, 3, 0, 0, 6, 10, 0, 7, 0, 0]);
    let long: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    common::ops::run(&long);
}
