//! Model-based test of BufferPool against plain counters.
//!
//! Properties, after every step of a random sequence of get / write /
//! extend / drop / trim / adjust on a one-stripe pool:
//! 1. every tier's stats equal the model's counters (gets, hits, misses,
//!    puts, in_use, discarded, retained, retained_bytes, cap);
//! 2. retained never exceeds the cap, a tier's byte bound, or the total;
//! 3. with zero_on_return, every buffer handed out reads as zeros;
//!    without it, a reused buffer may hold old bytes but its length and
//!    capacity are right;
//! 4. the bytes a caller wrote are the bytes it reads back, across growth.

use ebb_pool::{AdaptiveConfig, BufferPool, PoolConfig, PooledBuf};
use proptest::prelude::*;

const TIERS: [usize; 4] = [64, 256, 1024, 4096];
const TIER_BYTES: usize = 8192;
const TOTAL_BYTES: usize = 12_000;
const INITIAL_CAP: usize = 3;

fn adaptive() -> AdaptiveConfig {
    AdaptiveConfig {
        interval: 5,
        floor: 2,
        ..AdaptiveConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Get(usize),
    Write(usize, u8),
    Extend(usize, usize),
    Drop(usize),
    Trim,
    Adjust,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop_oneof![0usize..=64, 65usize..=300, 0usize..=5000].prop_map(Op::Get),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Op::Write(i, b)),
        1 => (any::<usize>(), 0usize..3000).prop_map(|(i, n)| Op::Extend(i, n)),
        5 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::Trim),
        1 => Just(Op::Adjust),
    ]
}

#[derive(Clone, Debug, Default)]
struct TierModel {
    cap: usize,
    ceiling: usize,
    gets: u64,
    hits: u64,
    puts: u64,
    discarded: u64,
    retained: usize,
    window_gets: u64,
    window_hits: u64,
}

struct Model {
    tiers: Vec<TierModel>,
    oversized: u64,
    oversized_in_use: u64,
}

impl Model {
    fn new() -> Model {
        Model {
            tiers: TIERS
                .iter()
                .map(|&size| TierModel {
                    cap: INITIAL_CAP,
                    ceiling: (TIER_BYTES / size).max(2).max(INITIAL_CAP),
                    ..TierModel::default()
                })
                .collect(),
            oversized: 0,
            oversized_in_use: 0,
        }
    }

    fn retained_total(&self) -> usize {
        self.tiers
            .iter()
            .zip(TIERS)
            .map(|(t, s)| t.retained * s)
            .sum()
    }

    fn tier_of(len: usize) -> Option<usize> {
        TIERS.iter().position(|&s| s >= len)
    }

    fn get(&mut self, len: usize) -> Option<usize> {
        let Some(t) = Model::tier_of(len) else {
            self.oversized += 1;
            self.oversized_in_use += 1;
            return None;
        };
        let tier = &mut self.tiers[t];
        let hit = tier.retained > 0;
        if hit {
            tier.retained -= 1;
        }
        tier.gets += 1;
        tier.window_gets += 1;
        if hit {
            tier.hits += 1;
            tier.window_hits += 1;
        }
        if tier.window_gets >= adaptive().interval {
            self.adjust(t);
        }
        Some(t)
    }

    fn put(&mut self, tier: Option<usize>) {
        let Some(t) = tier else {
            self.oversized_in_use -= 1;
            return;
        };
        let size = TIERS[t];
        let total = self.retained_total();
        let tier = &mut self.tiers[t];
        tier.puts += 1;
        if tier.retained < tier.cap
            && (tier.retained + 1) * size <= TIER_BYTES
            && total + size <= TOTAL_BYTES
        {
            tier.retained += 1;
        } else {
            tier.discarded += 1;
        }
    }

    fn adjust(&mut self, t: usize) {
        let a = adaptive();
        let tier = &mut self.tiers[t];
        let (gets, hits) = (tier.window_gets, tier.window_hits);
        tier.window_gets = 0;
        tier.window_hits = 0;
        if gets == 0 {
            return;
        }
        let rate = hits as f64 / gets as f64;
        let cap = tier.cap;
        if rate < a.raise_below {
            let step = ((cap as f64 * a.raise_step).ceil() as usize).max(1);
            tier.cap = (cap + step).min(tier.ceiling.max(cap));
        } else if rate > a.lower_above && tier.retained > 0 {
            let step = ((cap as f64 * a.lower_step).floor() as usize).max(1);
            tier.cap = cap.saturating_sub(step).max(a.floor.min(cap));
        }
        while tier.retained > tier.cap {
            tier.retained -= 1;
            tier.discarded += 1;
        }
    }

    fn trim(&mut self) -> usize {
        let bytes = self.retained_total();
        for t in &mut self.tiers {
            t.retained = 0;
        }
        bytes
    }
}

struct Out {
    buf: PooledBuf,
    /// The tier the model thinks it is in.
    tier: Option<usize>,
    /// What the caller wrote.
    expect: Vec<u8>,
}

fn check(pool: &BufferPool, model: &Model, zero: bool) -> Result<(), TestCaseError> {
    let stats = pool.stats();
    for (t, (got, want)) in stats.tiers.iter().zip(&model.tiers).enumerate() {
        prop_assert_eq!(got.gets_total, want.gets, "tier {} gets", t);
        prop_assert_eq!(got.hits_total, want.hits, "tier {} hits", t);
        prop_assert_eq!(got.misses_total, want.gets - want.hits, "tier {} misses", t);
        prop_assert_eq!(got.puts_total, want.puts, "tier {} puts", t);
        prop_assert_eq!(got.in_use, want.gets - want.puts, "tier {} in_use", t);
        prop_assert_eq!(got.discarded_total, want.discarded, "tier {} discarded", t);
        prop_assert_eq!(got.retained, want.retained as u64, "tier {} retained", t);
        prop_assert_eq!(got.retained_bytes, (want.retained * TIERS[t]) as u64);
        prop_assert_eq!(got.cap, want.cap as u64, "tier {} cap", t);
        prop_assert!(got.retained <= got.cap);
        prop_assert!(got.retained_bytes as usize <= TIER_BYTES);
    }
    prop_assert!(stats.retained_bytes as usize <= TOTAL_BYTES);
    prop_assert_eq!(stats.oversized_total, model.oversized);
    prop_assert_eq!(stats.oversized_in_use, model.oversized_in_use);
    let _ = zero;
    Ok(())
}

fn run(ops: Vec<Op>, zero: bool) -> Result<(), TestCaseError> {
    let pool = BufferPool::new(
        PoolConfig::default()
            .with_tiers(TIERS)
            .with_max_retained(INITIAL_CAP)
            .with_max_retained_bytes(TIER_BYTES)
            .with_max_total_retained_bytes(TOTAL_BYTES)
            .with_adaptive(adaptive())
            .with_stripes(1)
            .with_thread_cache(false)
            .with_zero_on_return(zero),
    )
    .expect("valid config");
    let mut model = Model::new();
    let mut out: Vec<Out> = Vec::new();
    for op in ops {
        match op {
            Op::Get(len) => {
                let buf = pool.get(len);
                let tier = model.get(len);
                prop_assert_eq!(buf.len(), len);
                match tier {
                    Some(t) => prop_assert_eq!(buf.capacity(), TIERS[t]),
                    None => prop_assert!(buf.is_oversized() && buf.capacity() >= len),
                }
                if zero {
                    prop_assert!(
                        buf.iter().all(|&b| b == 0),
                        "a handed-out buffer holds old bytes"
                    );
                }
                let expect = buf.to_vec();
                out.push(Out { buf, tier, expect });
            }
            Op::Write(i, byte) if !out.is_empty() => {
                let k = i % out.len();
                let o = &mut out[k];
                o.buf.fill(byte);
                o.expect.fill(byte);
            }
            Op::Extend(i, n) if !out.is_empty() => {
                let k = i % out.len();
                let o = &mut out[k];
                let needed = o.buf.len() + n;
                if needed > o.buf.capacity() {
                    // It moves: a get of max(needed, 2 x capacity), then the
                    // old buffer is put back.
                    let want = needed.max(o.buf.capacity() * 2);
                    let new_tier = model.get(want);
                    model.put(o.tier);
                    o.tier = new_tier;
                }
                let data: Vec<u8> = (0..n).map(|k| k as u8 ^ 0x5a).collect();
                o.buf.extend_from_slice(&data);
                o.expect.extend_from_slice(&data);
                if let Some(t) = o.tier {
                    prop_assert_eq!(o.buf.capacity(), TIERS[t]);
                }
            }
            Op::Drop(i) if !out.is_empty() => {
                let o = out.swap_remove(i % out.len());
                prop_assert_eq!(&o.buf[..], &o.expect[..], "bytes read back differ");
                drop(o.buf);
                model.put(o.tier);
            }
            Op::Trim => {
                let want = model.trim();
                prop_assert_eq!(pool.trim(), want);
            }
            Op::Adjust => {
                pool.adjust_now();
                for t in 0..TIERS.len() {
                    model.adjust(t);
                }
            }
            _ => {}
        }
        check(&pool, &model, zero)?;
    }
    for o in out.drain(..) {
        prop_assert_eq!(&o.buf[..], &o.expect[..]);
        drop(o.buf);
        model.put(o.tier);
    }
    check(&pool, &model, zero)?;
    prop_assert_eq!(pool.stats().in_use, 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]

    #[test]
    fn stats_match_the_model_with_zeroing(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, true)?;
    }

    #[test]
    fn stats_match_the_model_without_zeroing(ops in prop::collection::vec(op(), 1..200)) {
        run(ops, false)?;
    }
}
