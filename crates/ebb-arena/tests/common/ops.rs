//! Byte-decoded operation sequences against a `HashMap` model, shared by
//! the fuzz target (`fuzz/fuzz_targets/ops.rs`) and the stable replay of its
//! corpus (`tests/fuzz_corpus.rs`). The ops are those of `tests/model.rs`:
//! insert, remove, replace, compact, read of a removed handle, and a
//! forged handle (a real handle's bits with the generation or index moved),
//! which must find nothing or exactly the live record its bits name.
//!
//! `run` panics on the first divergence from the model: that is the
//! fuzzer's signal.

use std::collections::HashMap;

use ebb_arena::{BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig};

/// Decodes `data` into ops and checks each against the model.
pub fn run(data: &[u8]) {
    let arena = BlobArena::new(
        SlabConfig::default()
            .with_slab_bytes(16 << 10)
            .with_shards(1),
    )
    .expect("valid config");
    let mut model: HashMap<BlobHandle, Vec<u8>> = HashMap::new();
    let mut live: Vec<BlobHandle> = Vec::new();
    let mut dead: Vec<BlobHandle> = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0) as usize;
        let arg2 = bytes.next().unwrap_or(0) as usize;
        match op % 9 {
            0..=2 => {
                let value: Vec<u8> = (0..arg * 4 + arg2 % 4)
                    .map(|i| (i + op as usize) as u8)
                    .collect();
                let h = arena.insert(&value).expect("insert");
                assert!(!model.contains_key(&h), "handle reused while live");
                model.insert(h, value);
                live.push(h);
            }
            3 | 4 if !live.is_empty() => {
                let h = live.swap_remove(arg % live.len());
                assert!(arena.remove(h), "remove of a live handle failed");
                model.remove(&h);
                dead.push(h);
            }
            5 if !live.is_empty() => {
                let h = live[arg % live.len()];
                let value = vec![arg2 as u8; arg2];
                assert!(
                    arena.replace(h, &value).expect("replace"),
                    "replace of a live handle failed"
                );
                model.insert(h, value);
            }
            6 => {
                let ratio = 0.3 + (arg % 64) as f64 / 100.0;
                let policy = CompactionPolicy::default()
                    .with_max_live_ratio(ratio)
                    .with_min_reclaim_bytes(0);
                arena
                    .compact(&policy, &CancellationToken::new())
                    .expect("compact");
            }
            7 if !dead.is_empty() => {
                let h = dead[arg % dead.len()];
                assert!(arena.get(h).is_none(), "stale handle read a record");
                assert!(!arena.remove(h), "stale handle removed a record");
            }
            8 if !live.is_empty() || !dead.is_empty() => {
                let pool = if arg2.is_multiple_of(2) && !live.is_empty() {
                    &live
                } else if !dead.is_empty() {
                    &dead
                } else {
                    &live
                };
                let base = pool[arg % pool.len()].to_bits();
                let delta = (arg2 as u64) >> 1;
                let bits = match arg2 % 3 {
                    0 => base.wrapping_add(delta), // generation moved
                    1 => base.wrapping_sub(delta),
                    _ => base ^ ((delta + 1) << 32), // index moved
                };
                let forged = BlobHandle::from_bits(bits);
                let expected = model.get(&forged);
                assert_eq!(
                    arena.get(forged).as_deref(),
                    expected.map(|v| &v[..]),
                    "forged handle {bits:#x} read the wrong record"
                );
            }
            _ => {}
        }
        assert_eq!(arena.len(), model.len(), "len diverged");
    }
    for (h, v) in &model {
        assert_eq!(arena.get_vec(*h).as_ref(), Some(v), "record diverged");
    }
    arena.reclaim();
    let expected: u64 = model.values().map(|v| 4 + v.len() as u64).sum();
    assert_eq!(arena.stats().live_bytes, expected, "live bytes diverged");
}
