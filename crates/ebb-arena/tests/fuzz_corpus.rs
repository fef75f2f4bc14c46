//! Replays the fuzz corpus (`fuzz/corpus/ops/`) and a few fixed inputs on
//! stable Rust, so every input the fuzzer kept stays a regression test.

mod common;

#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ops");
    let mut n = 0;
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("entry").path())
        .collect();
    paths.sort();
    // Miri interprets every step: two inputs check the logic there.
    paths.truncate(if cfg!(miri) { 2 } else { usize::MAX });
    for path in paths {
        let data = std::fs::read(&path).expect("corpus file");
        common::ops::run(&data);
        n += 1;
    }
    assert!(n >= 2, "corpus has only {n} inputs");
}

#[test]
fn fixed_inputs_replay_cleanly() {
    common::ops::run(&[]);
    common::ops::run(&[0, 255, 3, 3, 0, 0, 6, 10, 0, 7, 0, 0]);
    let len: u32 = if cfg!(miri) { 300 } else { 3000 };
    let long: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    common::ops::run(&long);
}
