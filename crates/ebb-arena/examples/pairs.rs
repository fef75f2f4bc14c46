//! Insert 1000 `[u8; 64]` then remove them, in a loop, for TypedArena and
//! slotmap alternately in one process: the best of several timed rounds, in
//! ns per insert+remove pair, and the ratio. A quick profiling loop for a
//! noisy machine; the criterion bench `arena_handles` is the figure of
//! record. `SLAB=<bytes>` sets the slab size.
use std::hint::black_box;
use std::time::Instant;

use ebb_arena::{SlabConfig, TypedArena};

fn time(mut round: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..500 {
        round();
    }
    t.elapsed().as_nanos() as f64 / 500e3
}

fn main() {
    let slab = std::env::var("SLAB").map_or(2 << 20, |v| v.parse().expect("SLAB bytes"));
    let arena: TypedArena<[u8; 64]> =
        TypedArena::new(SlabConfig::default().with_slab_bytes(slab)).expect("arena");
    let mut map = slotmap::SlotMap::new();
    let mut keys = Vec::with_capacity(1000);
    let mut map_keys = Vec::with_capacity(1000);
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(20, |a| a.parse().expect("rounds"));
    let (mut ebb, mut reference) = (f64::MAX, f64::MAX);
    let (mut ebb_all, mut reference_all) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let round = |keys: &mut Vec<_>| {
            time(|| {
                for i in 0..1000u32 {
                    keys.push(arena.insert(black_box([i as u8; 64])).expect("insert"));
                }
                for k in keys.drain(..) {
                    assert!(arena.remove(black_box(k)));
                }
            })
        };
        // `FRESH_THREADS=1`: every round on a new thread, as criterion's
        // multi-thread harness does.
        let t = if std::env::var_os("FRESH_THREADS").is_some() {
            std::thread::scope(|s| {
                s.spawn(|| round(&mut Vec::with_capacity(1000)))
                    .join()
                    .unwrap()
            })
        } else {
            round(&mut keys)
        };
        ebb = ebb.min(t);
        ebb_all.push(t);
        let r = time(|| {
            for i in 0..1000u32 {
                map_keys.push(map.insert(black_box([i as u8; 64])));
            }
            for k in map_keys.drain(..) {
                black_box(map.remove(k));
            }
        });
        reference = reference.min(r);
        reference_all.push(r);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ebb_median, reference_median) = (median(&mut ebb_all), median(&mut reference_all));
    println!(
        "ebb {ebb:.2} ns/pair, slotmap {reference:.2} ns/pair, ratio {:.2} (best of {rounds}); medians {ebb_median:.2} / {reference_median:.2} = {:.2}",
        ebb / reference,
        ebb_median / reference_median
    );
}
