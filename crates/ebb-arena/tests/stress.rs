//! Concurrency stress: 2 reader threads, 1 writer (insert/remove/replace)
//! and a compactor looping, for EBB_ARENA_STRESS_SECS (default 10 s).
//! Every record carries its key, a version and a checksum; readers check
//! every record they read. Properties: zero wrong reads, and at the end
//! every record the writer believes live is present with its last value.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ebb_arena::{
    BlobArena, BlobHandle, CancellationToken, CompactionPolicy, SlabConfig, TypedArena,
};
use ebb_testkit::Rng;

const KEYS: usize = 4096;

fn secs() -> f64 {
    std::env::var("EBB_ARENA_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(miri) { 0.5 } else { 10.0 })
}

/// key (8) | version (8) | payload | checksum (8).
fn encode(key: u64, version: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + len);
    v.extend_from_slice(&key.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend((0..len).map(|i| (key ^ version).wrapping_add(i as u64) as u8));
    let sum = checksum(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// Returns (key, version) if the record is intact.
fn decode(bytes: &[u8]) -> Option<(u64, u64)> {
    if bytes.len() < 24 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    Some((
        u64::from_le_bytes(body[..8].try_into().ok()?),
        u64::from_le_bytes(body[8..16].try_into().ok()?),
    ))
}

const NONE: u64 = u64::MAX;

#[test]
#[cfg_attr(miri, ignore = "time-based: runs as a real stress test only")]
fn readers_writer_and_compactor_never_see_a_wrong_record() {
    let arena = BlobArena::new(
        SlabConfig::default()
            .with_slab_bytes(64 << 10)
            .with_shards(2),
    )
    .unwrap();
    // Published handle per key (NONE when absent) and its version.
    let handles: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(NONE)).collect();
    let stop = AtomicBool::new(false);
    let wrong = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let compactions = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs_f64(secs());
    let mut versions = vec![0u64; KEYS];

    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (arena, handles, stop, wrong, reads) = (&arena, &handles, &stop, &wrong, &reads);
            s.spawn(move || {
                let mut rng = Rng::new(0xABCD + r);
                while !stop.load(Ordering::Relaxed) {
                    let key = (rng.next_u64() % KEYS as u64) as usize;
                    let bits = handles[key].load(Ordering::Acquire);
                    if bits == NONE {
                        continue;
                    }
                    // The handle may be removed meanwhile (None is fine);
                    // what is read must be this key's record, intact.
                    if let Some(ok) = arena.with(BlobHandle::from_bits(bits), |b| {
                        decode(b).map(|(k, _)| k == key as u64)
                    }) {
                        reads.fetch_add(1, Ordering::Relaxed);
                        if ok != Some(true) {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        {
            let (arena, stop, compactions) = (&arena, &stop, &compactions);
            s.spawn(move || {
                let policy = CompactionPolicy::default()
                    .with_max_live_ratio(0.7)
                    .with_min_reclaim_bytes(0);
                while !stop.load(Ordering::Relaxed) {
                    arena.compact(&policy, &CancellationToken::new()).unwrap();
                    compactions.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
            });
        }
        // The writer is this thread.
        let mut rng = Rng::new(7);
        while Instant::now() < deadline {
            for _ in 0..256 {
                let key = (rng.next_u64() % KEYS as u64) as usize;
                // Up to 600 bytes: records of 256 and more are moved with
                // streaming stores, the rest with ordinary copies.
                let len = (rng.next_u64() % 600) as usize;
                let bits = handles[key].load(Ordering::Relaxed);
                match (bits == NONE, rng.next_u64() % 3) {
                    (true, _) => {
                        versions[key] += 1;
                        let h = arena
                            .insert(&encode(key as u64, versions[key], len))
                            .unwrap();
                        handles[key].store(h.to_bits(), Ordering::Release);
                    }
                    (false, 0) => {
                        handles[key].store(NONE, Ordering::Release);
                        assert!(arena.remove(BlobHandle::from_bits(bits)));
                    }
                    (false, _) => {
                        versions[key] += 1;
                        assert!(
                            arena
                                .replace(
                                    BlobHandle::from_bits(bits),
                                    &encode(key as u64, versions[key], len)
                                )
                                .unwrap()
                        );
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    assert_eq!(wrong.load(Ordering::Relaxed), 0, "wrong reads");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(compactions.load(Ordering::Relaxed) > 0);
    let mut live = 0;
    for (key, h) in handles.iter().enumerate() {
        let bits = h.load(Ordering::Relaxed);
        if bits == NONE {
            continue;
        }
        live += 1;
        let got = arena.with(BlobHandle::from_bits(bits), decode).flatten();
        assert_eq!(got, Some((key as u64, versions[key])), "key {key}");
    }
    assert_eq!(arena.len(), live, "no duplicated or lost records");
    assert!(
        arena.stats().slabs_compacted_total > 0,
        "{:?}",
        arena.stats()
    );
}

/// Several writers at once: slot claims and releases race on the lock-free
/// free list. Every handle a thread holds must read back its own value, and
/// no two live records may share a handle.
#[test]
fn concurrent_writers_never_share_or_lose_a_slot() {
    let arena = BlobArena::new(SlabConfig::default().with_slab_bytes(64 << 10)).unwrap();
    let rounds = if cfg!(miri) { 50 } else { 50_000 };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let arena = &arena;
            s.spawn(move || {
                let mut rng = Rng::new(t + 100);
                let mut mine: Vec<(BlobHandle, u64)> = Vec::new();
                for i in 0..rounds {
                    let v = (t << 48) | i;
                    if mine.len() < 64 && rng.below(3) != 0 {
                        mine.push((arena.insert(&v.to_le_bytes()).unwrap(), v));
                    } else if !mine.is_empty() {
                        let (h, v) = mine.swap_remove(rng.below(mine.len() as u64) as usize);
                        assert_eq!(arena.get_vec(h), Some(v.to_le_bytes().to_vec()));
                        assert!(arena.remove(h));
                    }
                }
                for (h, v) in mine {
                    assert_eq!(arena.get_vec(h), Some(v.to_le_bytes().to_vec()));
                }
            });
        }
    });
}

/// Each thread keeps its own slab, slot stash, record count and retired
/// batch in the arena. When a thread exits, all of it comes back: its count
/// folds into `len`, its slabs wait for the next thread (and are sealed by
/// a compaction, so compactable and releasable), and its retirements are
/// freed once the arena reclaims.
#[test]
fn a_thread_leaving_hands_back_its_slab_count_and_retirements() {
    let arena =
        TypedArena::<[u64; 8]>::new(SlabConfig::default().with_slab_bytes(64 << 10)).unwrap();
    let n = if cfg!(miri) { 40 } else { 4000 };
    let kept: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                let arena = &arena;
                s.spawn(move || {
                    let handles: Vec<_> = (0..n)
                        .map(|i| arena.insert([t * 1_000_000 + i; 8]).unwrap())
                        .collect();
                    // Remove every other one: the removes stay in this
                    // thread's retired batch until it leaves.
                    handles
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, h)| {
                            if i % 2 == 0 {
                                Some(h)
                            } else {
                                assert!(arena.remove(h));
                                None
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // `join` (unlike the scope's own wait) returns after the thread's
        // thread-local destructors ran.
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(arena.len(), kept.len());
    assert_eq!(arena.len() as u64, n);
    arena.reclaim();
    let live = arena.stats().live_bytes;
    assert_eq!(live, kept.len() as u64 * 64, "retired records were freed");
    let policy = CompactionPolicy::default().with_min_reclaim_bytes(0);
    arena.compact(&policy, &CancellationToken::new()).unwrap();
    let stats = arena.stats();
    assert_eq!(
        stats.slabs_active, 0,
        "departed threads' slabs are sealed: {stats:?}"
    );
    for h in kept {
        assert!(arena.get(h).is_some());
    }
}

/// A thread arriving takes over the slab a departed thread left with room
/// in it, instead of mapping a fresh one.
#[test]
fn a_thread_arriving_adopts_a_departed_threads_slab() {
    let arena = TypedArena::<u64>::new(SlabConfig::default().with_slab_bytes(64 << 10)).unwrap();
    let insert_one =
        |v: u64| std::thread::scope(|s| s.spawn(|| arena.insert(v).unwrap()).join().unwrap());
    let first = insert_one(1);
    let reserved = arena.stats().reserved_bytes;
    assert_eq!(reserved, 64 << 10);
    let second = insert_one(2);
    assert_eq!(
        arena.stats().reserved_bytes,
        reserved,
        "{:?}",
        arena.stats()
    );
    assert_eq!(arena.get_copied(first), Some(1));
    assert_eq!(arena.get_copied(second), Some(2));
    assert_eq!(arena.len(), 2);
}
