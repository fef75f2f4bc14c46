//! Concurrency stress: 4 threads, 1M allocations and frees in all (scale with
//! EBB_STRESS_OPS), checksummed contents, a third of the frees done by
//! another thread than the allocating one. At the end every slab is
//! released and the stats show nothing live.

use std::alloc::Layout;
use std::sync::mpsc;

use ebb_slab::{RawSlabAlloc, SlabArena, SlabConfig};
use ebb_testkit::Rng;

fn ops_per_thread() -> usize {
    std::env::var("EBB_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(miri) { 2_000 } else { 1_000_000 })
        / 4
}

/// Fills with a pattern derived from `key` and returns nothing; `verify`
/// recomputes it. The key is stored in the first 8 bytes when they fit.
fn fill(bytes: &mut [u8], key: u64) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (key.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8;
    }
}

fn verify(bytes: &[u8], key: u64) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b == (key.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
}

#[derive(Clone, Copy)]
struct Sent(RawSlabAlloc, u64);

#[test]
fn four_threads_alloc_and_free_with_checksums() {
    // Under Miri the run is small: small slabs still seal and release.
    let slab_bytes = if cfg!(miri) { 4096 } else { 256 << 10 };
    let arena = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(slab_bytes)
            .with_shards(4),
    )
    .unwrap();
    let n = ops_per_thread();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Sent>()).unzip();
    let bad = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for (t, rx) in receivers.into_iter().enumerate() {
            let tx = senders[(t + 1) % 4].clone();
            let arena = &arena;
            let bad = &bad;
            s.spawn(move || {
                let mut rng = Rng::new(t as u64 + 1);
                let mut live = Vec::new();
                for i in 0..n {
                    let size = 1 + (rng.next_u64() % if cfg!(miri) { 64 } else { 2048 }) as usize;
                    let key = ((t as u64) << 40) | i as u64;
                    let mut a = arena
                        .alloc(Layout::from_size_align(size, 8).unwrap())
                        .unwrap();
                    fill(a.as_mut_slice(), key);
                    if i % 3 == 0 {
                        // Hand it to the next thread to check and free.
                        if tx.send(Sent(a.into_raw(), key)).is_err() {
                            unreachable!("receivers outlive senders");
                        }
                    } else {
                        live.push((a, key));
                    }
                    if live.len() > 256 {
                        let (a, key) =
                            live.swap_remove((rng.next_u64() % live.len() as u64) as usize);
                        if !verify(a.as_slice(), key) {
                            bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        arena.free(a).unwrap();
                    }
                    while let Ok(Sent(raw, key)) = rx.try_recv() {
                        // SAFETY: sent exactly once by the allocating thread.
                        let a = unsafe { arena.from_raw(raw) };
                        if !verify(a.as_slice(), key) {
                            bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        arena.free(a).unwrap();
                    }
                }
                drop(tx);
                for (a, key) in live {
                    if !verify(a.as_slice(), key) {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    arena.free(a).unwrap();
                }
                // Drain what is still in flight to us (senders finish first).
                for Sent(raw, key) in rx.iter() {
                    // SAFETY: sent exactly once by the allocating thread.
                    let a = unsafe { arena.from_raw(raw) };
                    if !verify(a.as_slice(), key) {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    arena.free(a).unwrap();
                }
            });
        }
        drop(senders);
    });
    assert_eq!(bad.into_inner(), 0, "corrupted allocations");
    let mid = arena.stats();
    assert_eq!(mid.live_bytes, 0, "{mid:?}");
    assert!(mid.releases_total > 0, "{mid:?}");
    arena.seal_active_slabs();
    let end = arena.stats();
    assert_eq!(
        (
            end.live_bytes,
            end.resident_bytes,
            end.slabs_active,
            end.slabs_sealed
        ),
        (0, 0, 0, 0),
        "{end:?}"
    );
}

/// Two threads on one shard: every allocation goes through the same lock.
/// Allocations must never overlap (each is filled with its owner's key and
/// checked after the other thread had every chance to write over it).
/// Regression test: a failed `try_lock` once unlocked the owner's lock.
#[test]
fn one_shard_two_threads_never_hand_out_the_same_bytes() {
    let arena = SlabArena::new(
        SlabConfig::default()
            .with_slab_bytes(64 << 10)
            .with_shards(1),
    )
    .unwrap();
    let rounds = if cfg!(miri) { 200 } else { 200_000 };
    let bad = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (arena, bad) = (&arena, &bad);
            s.spawn(move || {
                let mut live = Vec::new();
                for i in 0..rounds {
                    let key = (t << 32) | i;
                    let mut a = arena
                        .alloc(Layout::from_size_align(24, 8).unwrap())
                        .unwrap();
                    fill(a.as_mut_slice(), key);
                    live.push((a, key));
                    if live.len() == 32 {
                        for (a, key) in live.drain(..) {
                            if !verify(a.as_slice(), key) {
                                bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            arena.free(a).unwrap();
                        }
                    }
                }
                for (a, _) in live {
                    arena.free(a).unwrap();
                }
            });
        }
    });
    assert_eq!(bad.into_inner(), 0, "allocations overlapped");
    assert_eq!(arena.stats().live_bytes, 0);
}
