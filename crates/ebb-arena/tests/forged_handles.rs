//! Handles built from arbitrary bits: whatever a caller passes to
//! `from_bits`, `get`, `remove` and `replace` either find nothing or the
//! live record those bits name, never another record, freed memory or a
//! panic.
//!
//! Random `u64`s almost never name a claimed index, so the bits are derived
//! from real handles, in classes that each reach a different part of the
//! slot protocol, and the test asserts that every class was exercised:
//!
//! - `Live`: a live handle's own bits (must read its record);
//! - `GenPlusOne` / `GenMinusOne`: a live or removed handle's generation
//!   moved by one (an even, vacant generation: must find nothing);
//! - `GenZero`: a claimed index with generation 0;
//! - `Removed`: a removed handle (its slot vacant, on a stash or free list);
//! - `Reused`: a removed handle whose slot now holds a newer record;
//! - `Unclaimed`: an index past every claimed one, and far out of range;
//! - `OtherArena`: a live handle of another arena (finds nothing: handles
//!   carry their arena's identity);
//! - `Random`: any `u64`.
//!
//! The oracle is the model's map from bits to value: `get(from_bits(b))`
//! is `Some(v)` exactly when `b` is a live handle's bits with value `v`.

use std::collections::{BTreeSet, HashMap};

use ebb_arena::{
    BlobArena, BlobHandle, CancellationToken, CompactionPolicy, Handle, SlabConfig, TypedArena,
};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Live,
    GenPlusOne,
    GenMinusOne,
    GenZero,
    Removed,
    Reused,
    Unclaimed,
    OtherArena,
    Random,
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, usize),
    Remove(usize),
    Replace(usize, u8),
    Compact,
    Forge(Class, usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![
        Just(Class::Live),
        Just(Class::GenPlusOne),
        Just(Class::GenMinusOne),
        Just(Class::GenZero),
        Just(Class::Removed),
        Just(Class::Reused),
        Just(Class::Unclaimed),
        Just(Class::OtherArena),
        Just(Class::Random),
    ];
    prop_oneof![
        5 => (any::<u8>(), 0usize..300).prop_map(|(v, n)| Op::Insert(v, n)),
        3 => any::<usize>().prop_map(Op::Remove),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Op::Replace(i, v)),
        1 => Just(Op::Compact),
        8 => (class, any::<usize>(), any::<u64>()).prop_map(|(c, i, r)| Op::Forge(c, i, r)),
    ]
}

fn config() -> SlabConfig {
    SlabConfig::default()
        .with_slab_bytes(16 << 10)
        .with_shards(1)
}

/// The handles a forgery derives its bits from.
struct Sources<'a> {
    live: &'a [u64],
    removed: &'a [u64],
    reused: &'a [u64],
    other: &'a [u64],
    max_index: u64,
}

/// The bits a forged handle of `class` gets, or `None` if the state has
/// no handle to derive them from yet.
fn forge(class: Class, pick: usize, random: u64, src: &Sources<'_>) -> Option<u64> {
    let Sources {
        live,
        removed,
        reused,
        other,
        max_index,
    } = *src;
    let from = |v: &[u64]| (!v.is_empty()).then(|| v[pick % v.len()]);
    let with_gen = |bits: u64, g: u32| (bits & !0xFFFF_FFFF) | u64::from(g);
    Some(match class {
        Class::Live => from(live)?,
        Class::GenPlusOne => {
            let b = from(live).or_else(|| from(removed))?;
            with_gen(b, (b as u32).wrapping_add(1))
        }
        Class::GenMinusOne => {
            let b = from(live).or_else(|| from(removed))?;
            with_gen(b, (b as u32).wrapping_sub(1))
        }
        Class::GenZero => with_gen(from(live).or_else(|| from(removed))?, 0),
        Class::Removed => from(removed)?,
        Class::Reused => from(reused)?,
        Class::Unclaimed => {
            let index = if random & 1 == 0 {
                max_index + 1 + (random >> 40)
            } else {
                u64::from(u32::MAX - (random >> 60) as u32)
            };
            (index << 32) | (random & 0xFFFF_FFFF) | 1
        }
        Class::OtherArena => from(other)?,
        Class::Random => random,
    })
}

fn blob_of(v: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| v.wrapping_add(i as u8)).collect()
}

const CASES: u32 = if cfg!(miri) { 4 } else { 64 };
const STEPS: usize = if cfg!(miri) { 40 } else { 300 };

/// Runs `ops` on a blob arena, checking every forged handle against the
/// model; returns the classes that were exercised.
fn run_blob(ops: &[Op]) -> BTreeSet<Class> {
    let arena = BlobArena::new(config()).expect("config");
    let other = BlobArena::new(config()).expect("config");
    let other_bits: Vec<u64> = (0..40u8)
        .map(|i| other.insert(&[i; 3]).expect("insert").to_bits())
        .collect();
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut live: Vec<u64> = Vec::new();
    let mut removed: Vec<u64> = Vec::new();
    let mut seen = BTreeSet::new();
    for op in ops {
        match op {
            Op::Insert(v, n) => {
                let h = arena.insert(&blob_of(*v, *n)).expect("insert").to_bits();
                model.insert(h, blob_of(*v, *n));
                live.push(h);
            }
            Op::Remove(i) if !live.is_empty() => {
                let h = live.swap_remove(i % live.len());
                assert!(arena.remove(BlobHandle::from_bits(h)));
                model.remove(&h);
                removed.push(h);
            }
            Op::Replace(i, v) if !live.is_empty() => {
                let h = live[i % live.len()];
                assert!(
                    arena
                        .replace(BlobHandle::from_bits(h), &blob_of(*v, 7))
                        .expect("replace")
                );
                model.insert(h, blob_of(*v, 7));
            }
            Op::Compact => {
                let policy = CompactionPolicy::default()
                    .with_max_live_ratio(0.9)
                    .with_min_reclaim_bytes(0);
                arena
                    .compact(&policy, &CancellationToken::new())
                    .expect("compact");
            }
            Op::Forge(class, pick, random) => {
                let reused: Vec<u64> = removed
                    .iter()
                    .copied()
                    .filter(|r| live.iter().any(|l| l >> 32 == r >> 32))
                    .collect();
                let max_index = live
                    .iter()
                    .chain(&removed)
                    .map(|b| b >> 32)
                    .max()
                    .unwrap_or(0);
                let sources = Sources {
                    live: &live,
                    removed: &removed,
                    reused: &reused,
                    other: &other_bits,
                    max_index,
                };
                let Some(bits) = forge(*class, *pick, *random, &sources) else {
                    continue;
                };
                seen.insert(*class);
                let h = BlobHandle::from_bits(bits);
                let expected = model.get(&bits);
                assert_eq!(
                    arena.get(h).as_deref(),
                    expected.map(|v| &v[..]),
                    "{class:?} bits {bits:#x} read the wrong thing"
                );
                if *class == Class::OtherArena {
                    assert!(
                        expected.is_none(),
                        "another arena's handle has this arena's bits"
                    );
                }
                if expected.is_none() {
                    assert!(
                        !arena.remove(h),
                        "{class:?} bits {bits:#x} removed a record"
                    );
                    assert!(
                        !arena.replace(h, b"forged").expect("replace"),
                        "{class:?} bits {bits:#x} replaced a record"
                    );
                }
            }
            _ => {}
        }
    }
    for (bits, v) in &model {
        assert_eq!(
            arena.get_vec(BlobHandle::from_bits(*bits)).as_ref(),
            Some(v)
        );
    }
    assert_eq!(arena.len(), model.len());
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn forged_blob_handles_find_nothing_or_their_own_record(
        ops in proptest::collection::vec(op(), 1..STEPS)
    ) {
        run_blob(&ops);
    }
}

/// Every class is reached by a fixed sequence (so a generator change
/// cannot quietly stop exercising one).
#[test]
fn every_forgery_class_is_exercised() {
    let mut ops = Vec::new();
    for i in 0..200 {
        ops.push(Op::Insert(i as u8, 10 + i % 50));
    }
    for i in 0..120 {
        ops.push(Op::Remove(i * 7));
    }
    ops.push(Op::Compact);
    for i in 0..60 {
        ops.push(Op::Insert(i as u8, 5));
    }
    let classes = [
        Class::Live,
        Class::GenPlusOne,
        Class::GenMinusOne,
        Class::GenZero,
        Class::Removed,
        Class::Reused,
        Class::Unclaimed,
        Class::OtherArena,
        Class::Random,
    ];
    for round in 0..20usize {
        for c in classes {
            ops.push(Op::Forge(
                c,
                round * 31,
                (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
        }
    }
    let seen = run_blob(&ops);
    assert_eq!(seen, classes.into_iter().collect::<BTreeSet<_>>());
}

/// The typed arena goes through the same slot protocol; a short check
/// that a removed handle's bits + 1 (a vacant generation) read nothing.
#[test]
fn typed_vacant_generation_reads_nothing() {
    let arena: TypedArena<[u64; 8]> = TypedArena::new(config()).expect("config");
    let h = arena.insert([7; 8]).expect("insert");
    let bits = h.to_bits();
    assert!(arena.remove(h));
    for g in [1u32, 2, 0, u32::MAX] {
        let forged = Handle::<[u64; 8]>::from_bits(
            (bits & !0xFFFF_FFFF) | u64::from((bits as u32).wrapping_add(g)),
        );
        assert!(arena.get(forged).is_none());
        assert!(!arena.remove(forged));
        assert!(!arena.replace(forged, [1; 8]).expect("replace"));
    }
    // A never-claimed index at generation 0 and 1.
    for g in [0u64, 1] {
        let forged = Handle::<[u64; 8]>::from_bits((1000 << 32) | g);
        assert!(arena.get(forged).is_none());
    }
}

#[test]
fn another_arenas_handles_find_nothing() {
    let (a, b) = (
        BlobArena::new(config()).expect("config"),
        BlobArena::new(config()).expect("config"),
    );
    let mine: Vec<BlobHandle> = (0..5000u32)
        .map(|i| a.insert(&i.to_le_bytes()).expect("insert"))
        .collect();
    let theirs: Vec<BlobHandle> = (0..5000u32)
        .map(|i| b.insert(&i.to_le_bytes()).expect("insert"))
        .collect();
    for h in &theirs {
        assert!(
            a.get(*h).is_none(),
            "{h:?} of arena b read a record of arena a"
        );
        assert!(!a.remove(*h));
        assert!(!a.replace(*h, b"x").expect("replace"));
    }
    assert_eq!(a.len(), 5000);
    for (i, h) in mine.iter().enumerate() {
        assert_eq!(a.get_vec(*h), Some((i as u32).to_le_bytes().to_vec()));
    }
}
