//! Two threads of random operations on one arena, checked against what a
//! linearizable map of independent records allows.
//!
//! Shared records (inserted before the threads start) are read, replaced
//! and removed by both threads at once, while each thread also inserts and
//! removes records of its own and one thread compacts. Every value written
//! is unique (`[record, thread, seq, seq]`), so each read says which write
//! it saw. Properties:
//!
//! 1. A shared record is removed by at most one successful `remove`.
//! 2. Once a thread sees a record gone (a successful remove, or a read of
//!    `None`), every later operation of that thread on it fails: removal
//!    is permanent.
//! 3. A read returns the initial value or a value some successful replace
//!    wrote; if it returns this thread's own write, that is this thread's
//!    latest successful replace (its own writes are never seen out of
//!    order), and after its own replace it never sees the initial value.
//! 4. At the end a removed record reads `None`; any other reads the
//!    initial value (no successful replace) or one thread's last
//!    successful replace.
//! 5. A thread's own records read back exactly; `len` and the live bytes
//!    equal what the logs imply.

use std::sync::Barrier;

use ebb_arena::{BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig};
use proptest::prelude::*;

const SHARED: usize = 12;

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    Replace(usize),
    Remove(usize),
    InsertOwn(usize),
    RemoveOwn(usize),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SHARED).prop_map(Op::Get),
        2 => (0..SHARED).prop_map(Op::Replace),
        1 => (0..SHARED).prop_map(Op::Remove),
        2 => (1usize..200).prop_map(Op::InsertOwn),
        1 => any::<usize>().prop_map(Op::RemoveOwn),
        1 => Just(Op::Compact),
    ]
}

#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Read(Option<Vec<u8>>),
    Done(bool),
    Other,
}

fn value(record: usize, thread: u8, seq: u16) -> Vec<u8> {
    let s = seq.to_le_bytes();
    // Padded so records span slabs and compaction moves them.
    let mut v = vec![record as u8, thread, s[0], s[1]];
    v.resize(48 + record * 8, thread ^ 0x5A);
    v
}

const INITIAL: u8 = 255;

/// A thread's operations with what each returned, in program order.
type Log = Vec<(Op, Outcome)>;

/// One thread's run: its log of (op, outcome) and its own live records.
fn run_thread(
    arena: &BlobArena,
    shared: &[BlobHandle],
    thread: u8,
    ops: &[Op],
) -> (Log, Vec<(BlobHandle, Vec<u8>)>) {
    let mut log = Vec::with_capacity(ops.len());
    let mut own: Vec<(BlobHandle, Vec<u8>)> = Vec::new();
    let mut seq = 0u16;
    for op in ops {
        let outcome = match op {
            Op::Get(i) => Outcome::Read(arena.get_vec(shared[*i])),
            Op::Replace(i) => {
                seq += 1;
                Outcome::Done(
                    arena
                        .replace(shared[*i], &value(*i, thread, seq))
                        .expect("replace"),
                )
            }
            Op::Remove(i) => Outcome::Done(arena.remove(shared[*i])),
            Op::InsertOwn(n) => {
                let v = vec![thread; *n];
                own.push((arena.insert(&v).expect("insert"), v));
                Outcome::Other
            }
            Op::RemoveOwn(k) => {
                if !own.is_empty() {
                    let (h, _) = own.swap_remove(k % own.len());
                    assert!(arena.remove(h), "a thread's own record vanished");
                }
                Outcome::Other
            }
            Op::Compact => {
                if thread == 0 {
                    let policy = CompactionPolicy::default()
                        .with_max_live_ratio(0.9)
                        .with_min_reclaim_bytes(0);
                    arena
                        .compact(&policy, &CancellationToken::new())
                        .expect("compact");
                }
                Outcome::Other
            }
        };
        log.push((op.clone(), outcome));
    }
    (log, own)
}

/// Checks properties 1 to 4 for shared record `i`.
fn check_shared(i: usize, logs: &[Log; 2], final_value: Option<Vec<u8>>) {
    let mut removes = 0;
    let mut last_write: [Option<Vec<u8>>; 2] = [None, None];
    for (t, log) in logs.iter().enumerate() {
        let mut gone = false;
        let mut seq = 0u16;
        let mut mine: Option<Vec<u8>> = None;
        for (op, outcome) in log {
            let on_i = matches!(op, Op::Get(j) | Op::Replace(j) | Op::Remove(j) if *j == i);
            if matches!(op, Op::Replace(_)) {
                seq += 1;
            }
            if !on_i {
                continue;
            }
            match (op, outcome) {
                (Op::Remove(_), Outcome::Done(ok)) => {
                    assert!(!(gone && *ok), "record {i}: thread {t} removed it twice");
                    if *ok {
                        removes += 1;
                        gone = true;
                    }
                }
                (Op::Replace(_), Outcome::Done(ok)) => {
                    assert!(
                        !(gone && *ok),
                        "record {i}: thread {t} replaced a removed record"
                    );
                    if *ok {
                        mine = Some(value(i, t as u8, seq));
                        last_write[t] = mine.clone();
                    }
                }
                (Op::Get(_), Outcome::Read(read)) => match read {
                    None => gone = true,
                    Some(v) => {
                        assert!(!gone, "record {i}: thread {t} read it after it was gone");
                        assert_eq!(v[0] as usize, i, "record {i} read another record");
                        let writer = v[1];
                        if writer == INITIAL {
                            assert!(
                                mine.is_none(),
                                "record {i}: thread {t} saw the initial value after its own replace"
                            );
                        } else if usize::from(writer) == t {
                            assert_eq!(
                                Some(v),
                                mine.as_ref(),
                                "record {i}: thread {t} saw its own writes out of order"
                            );
                        } else {
                            assert!(
                                usize::from(writer) < 2,
                                "record {i}: unknown writer {writer}"
                            );
                        }
                    }
                },
                other => panic!("unexpected log entry {other:?}"),
            }
        }
    }
    assert!(removes <= 1, "record {i} removed {removes} times");
    if removes == 1 {
        assert_eq!(final_value, None, "record {i} came back after its remove");
    } else {
        let v = final_value.unwrap_or_else(|| panic!("record {i} lost"));
        let allowed: Vec<&Vec<u8>> = last_write.iter().flatten().collect();
        if allowed.is_empty() {
            assert_eq!(
                v,
                value(i, INITIAL, 0),
                "record {i} changed with no replace"
            );
        } else {
            assert!(
                allowed.contains(&&v),
                "record {i} ends on a value no last replace wrote"
            );
        }
    }
}

fn run(ops: [Vec<Op>; 2]) {
    let arena = BlobArena::new(
        SlabConfig::default()
            .with_slab_bytes(4 << 10)
            .with_shards(2),
    )
    .expect("config");
    let shared: Vec<BlobHandle> = (0..SHARED)
        .map(|i| arena.insert(&value(i, INITIAL, 0)).expect("insert"))
        .collect();
    let barrier = Barrier::new(2);
    let [ops0, ops1] = &ops;
    let (r0, r1) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            barrier.wait();
            run_thread(&arena, &shared, 0, ops0)
        });
        let b = s.spawn(|| {
            barrier.wait();
            run_thread(&arena, &shared, 1, ops1)
        });
        (a.join().expect("thread 0"), b.join().expect("thread 1"))
    });
    let logs = [r0.0, r1.0];
    let mut live_bytes = 0u64;
    let mut live = 0usize;
    for (i, h) in shared.iter().enumerate() {
        let final_value = arena.get_vec(*h);
        if let Some(v) = &final_value {
            live_bytes += 4 + v.len() as u64;
            live += 1;
        }
        check_shared(i, &logs, final_value);
    }
    for (h, v) in r0.1.iter().chain(&r1.1) {
        assert_eq!(
            arena.get_vec(*h).as_ref(),
            Some(v),
            "a thread's own record changed"
        );
        live_bytes += 4 + v.len() as u64;
        live += 1;
    }
    assert_eq!(arena.len(), live);
    arena.reclaim();
    assert_eq!(arena.stats().live_bytes, live_bytes);
}

const CASES: u32 = if cfg!(miri) { 2 } else { 48 };
const STEPS: usize = if cfg!(miri) { 20 } else { 120 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn two_threads_stay_linearizable(
        a in proptest::collection::vec(op(), 1..STEPS),
        b in proptest::collection::vec(op(), 1..STEPS),
    ) {
        run([a, b]);
    }
}
