//! Replays the fuzz corpus (cli/fuzz/corpus/decode, what `just fuzz-serve`
//! grows) through the request decoders on stable, and drives the Arrow
//! decoder with every truncation and a sweep of bit flips of a real IPC
//! stream: no input may panic.

use arrow_ipc::writer::StreamWriter;
use ebb::serve::decode;

#[test]
fn the_corpus_decodes_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the corpus directory") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        decode::decode_any(&data);
        n += 1;
    }
    assert!(n >= 8, "the corpus has {n} inputs");
}

fn stream() -> Vec<u8> {
    let dim = 3;
    let values: Vec<f32> = (0..30).map(|i| i as f32).collect();
    let payloads = (0..10)
        .map(|i| (i % 2 == 0).then(|| vec![i as u8; i]))
        .collect();
    let batch = ebb_engine::vector_batch(dim, (0..10).collect(), values, payloads).unwrap();
    let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    w.into_inner().unwrap()
}

#[test]
fn damaged_arrow_streams_are_refused_without_a_panic() {
    let good = stream();
    assert_eq!(decode::arrow_stream(&good).unwrap().len(), 2);
    // arrow-ipc panics on some of these (caught and answered as 400):
    // keep its messages out of the test log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for len in 0..good.len() {
        let _ = decode::arrow_stream(&good[..len]);
    }
    for i in 0..good.len() {
        for bit in [0u8, 3, 7] {
            let mut bad = good.clone();
            bad[i] ^= 1 << bit;
            let _ = decode::arrow_stream(&bad);
        }
    }
    std::panic::set_hook(hook);
}
