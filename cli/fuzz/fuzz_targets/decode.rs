//! Every request decoder of `ebb serve` on arbitrary bytes: none may
//! panic (the first byte picks the dataset dimension).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ebb::serve::decode::decode_any(data);
});
