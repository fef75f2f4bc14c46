//! One memory budget that every consumer reserves from before it grows.
//!
//! A [`MemoryBudget`] is a limit (or none) and a running total. Each consumer
//! (a slab arena, a buffer pool, an index graph) holds a named
//! [`Reservation`] and calls [`Reservation::try_grow`] *before* it takes
//! memory from the OS and [`Reservation::shrink`] after it gives memory back;
//! dropping the reservation returns whatever it still holds. The engine can
//! then say at any moment who holds what ([`MemoryBudget::stats`]) and refuse
//! cleanly at its limit instead of being killed past it.
//!
//! ```text
//!   MemoryBudget (limit 8 GiB, reserved = Σ held)
//!     ├── Reservation "slab:kv-values"   held 5.1 GiB
//!     ├── Reservation "pool:buffers"     held 0.3 GiB
//!     └── Reservation "hnsw:graph"       held 1.9 GiB
//! ```
//!
//! Two things make it a contract rather than a counter:
//!
//! - **Headroom.** Work that *frees* memory needs a little memory first (a
//!   compaction copies live records into fresh target slabs before it can
//!   release the sparse ones). So the budget keeps a headroom that ordinary
//!   growth cannot take and reclaiming work can: each compacting consumer
//!   declares its share ([`Reservation::set_headroom`]; an arena declares two
//!   slabs), writes grow through [`Reservation::try_grow`] up to
//!   `limit - headroom`, compaction through
//!   [`Reservation::try_grow_for_reclaim`] up to `limit`. At the limit the
//!   one operation that gives memory back can still run.
//! - **A limit that moves.** [`MemoryBudget::set_limit`] changes it at run
//!   time (an operator, a pressure controller, a cgroup resize); lowering it
//!   below what is reserved revokes nothing, it refuses growth until
//!   consumers shrink.
//!
//! Consumer names become metric labels, so they are bounded: past
//! [`MemoryBudget::max_consumer_names`] distinct live names (64 by default)
//! a new name is accounted as `other`.
//!
//! Invariants:
//!
//! 1. `reserved` equals the sum of `held` over every live reservation, and
//!    `headroom` the sum of their headroom shares, up to the updates in
//!    flight on other threads (each update changes both).
//! 2. [`Reservation::try_grow`] never takes `reserved` above
//!    `limit - headroom`, [`Reservation::try_grow_for_reclaim`] never above
//!    `limit`; only [`Reservation::grow`], which documents it, may.
//! 3. A failed `try_grow` changes nothing.
//!
//! The fast path of `try_grow` is one compare-and-swap on the budget's total
//! plus one uncontended add on the reservation's own counter.
//!
//! Callers guarantee they shrink a reservation only by bytes they really
//! gave back; the budget cannot check that. Implementations of consumers
//! must call `try_grow` before acquiring memory, so a refusal leaves their
//! state unchanged.

use std::fmt;
// Atomics from the loom shim; `Arc`, `Weak` and `Mutex` are std's (loom has
// no `Weak`, and the consumer list is not a loom-modelled algorithm).
use std::sync::{Arc, Mutex, Weak};

use crate::sync::{AtomicU64, AtomicUsize, Ordering};

/// How many consumers an over-budget error names.
const TOP_CONSUMERS: usize = 3;

/// Distinct consumer names a budget accounts separately by default.
pub const DEFAULT_MAX_CONSUMER_NAMES: usize = 64;

/// The name consumers past the name cap are accounted under.
pub const OTHER_CONSUMER: &str = "other";

struct BudgetShared {
    /// The limit in bytes; `u64::MAX` means unlimited.
    limit: AtomicU64,
    /// Sum of the headroom shares of live reservations (invariant 1).
    headroom: AtomicU64,
    /// Sum of `held` over live reservations (invariant 1).
    reserved: AtomicU64,
    /// Distinct names accounted separately; the rest are `other`.
    max_names: AtomicUsize,
    /// Every reservation made, for stats; dead entries pruned on register.
    consumers: Mutex<Vec<Weak<ConsumerShared>>>,
}

struct ConsumerShared {
    name: String,
    held: AtomicU64,
    /// This consumer's share of the budget's headroom.
    headroom: AtomicU64,
}

/// A memory limit shared by every consumer of one engine. Cheap to clone
/// (an `Arc`).
///
/// ```
/// use ebb_core::MemoryBudget;
///
/// let budget = MemoryBudget::new(1 << 20);
/// let slabs = budget.reservation("slabs");
/// slabs.try_grow(768 << 10).unwrap();
/// let err = budget.reservation("pool").try_grow(512 << 10).unwrap_err();
/// assert_eq!(err.available_bytes, 256 << 10);
/// assert_eq!(err.top_consumers[0], ("slabs".to_string(), 768 << 10));
/// drop(slabs);
/// assert_eq!(budget.reserved_bytes(), 0);
/// ```
#[derive(Clone)]
pub struct MemoryBudget {
    shared: Arc<BudgetShared>,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit_bytes", &self.limit_bytes())
            .field("headroom_bytes", &self.headroom_bytes())
            .field("reserved_bytes", &self.reserved_bytes())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit_bytes`.
    pub fn new(limit_bytes: u64) -> MemoryBudget {
        MemoryBudget {
            shared: Arc::new(BudgetShared {
                limit: AtomicU64::new(limit_bytes),
                headroom: AtomicU64::new(0),
                reserved: AtomicU64::new(0),
                max_names: AtomicUsize::new(DEFAULT_MAX_CONSUMER_NAMES),
                consumers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A budget without a limit that still accounts who holds what.
    pub fn unlimited() -> MemoryBudget {
        MemoryBudget::new(u64::MAX)
    }

    /// Accounts at most `names` distinct consumer names separately (the
    /// rest as [`OTHER_CONSUMER`], so stats hold at most `names + 1`);
    /// applies to reservations made after.
    pub fn with_max_consumer_names(self, names: usize) -> MemoryBudget {
        self.shared.max_names.store(names, Ordering::Relaxed);
        self
    }

    /// The cap on distinct consumer names.
    pub fn max_consumer_names(&self) -> usize {
        self.shared.max_names.load(Ordering::Relaxed)
    }

    /// A new, empty reservation for the consumer `name` (`"kv"`,
    /// `"index"`, ...). Names should be few and stable: they become metric
    /// labels; past the name cap a new name is accounted as `other`.
    pub fn reservation(&self, name: impl Into<String>) -> Reservation {
        let mut name = name.into();
        let mut list = self.consumers();
        list.retain(|w| w.strong_count() > 0);
        let live: Vec<Arc<ConsumerShared>> = list.iter().filter_map(Weak::upgrade).collect();
        if !live.iter().any(|c| c.name == name) {
            let mut distinct: Vec<&str> = live
                .iter()
                .map(|c| c.name.as_str())
                .filter(|n| *n != OTHER_CONSUMER)
                .collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() >= self.max_consumer_names() {
                name = OTHER_CONSUMER.to_string();
            }
        }
        let consumer = Arc::new(ConsumerShared {
            name,
            held: AtomicU64::new(0),
            headroom: AtomicU64::new(0),
        });
        list.push(Arc::downgrade(&consumer));
        drop(list);
        Reservation {
            budget: Arc::clone(&self.shared),
            consumer,
        }
    }

    /// The limit, or `None` when unlimited.
    pub fn limit_bytes(&self) -> Option<u64> {
        let limit = self.shared.limit.load(Ordering::Relaxed);
        (limit != u64::MAX).then_some(limit)
    }

    /// Changes the limit at run time (`None`: unlimited). Lowering it below
    /// what is reserved takes nothing back: growth is refused until the
    /// consumers shrink under it.
    pub fn set_limit(&self, limit_bytes: Option<u64>) {
        self.shared
            .limit
            .store(limit_bytes.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Bytes reserved by all consumers together.
    pub fn reserved_bytes(&self) -> u64 {
        self.shared.reserved.load(Ordering::Relaxed)
    }

    /// The headroom kept for reclaiming work (the sum of the consumers'
    /// shares, at most the limit).
    pub fn headroom_bytes(&self) -> u64 {
        self.shared.headroom()
    }

    /// Bytes ordinary growth can still reserve (`limit - headroom -
    /// reserved`; `u64::MAX` when unlimited).
    pub fn available_bytes(&self) -> u64 {
        self.shared
            .write_limit()
            .saturating_sub(self.reserved_bytes())
    }

    /// A snapshot of the total and of each consumer, largest first.
    /// Reservations sharing a name are summed.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            limit_bytes: self.limit_bytes(),
            headroom_bytes: self.headroom_bytes(),
            reserved_bytes: self.reserved_bytes(),
            consumers: self.shared.consumer_totals(),
        }
    }

    fn consumers(&self) -> std::sync::MutexGuard<'_, Vec<Weak<ConsumerShared>>> {
        // A panic while holding this lock cannot break the list (pushes and
        // retains are atomic as far as readers can tell), so poison is moot.
        self.shared
            .consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl BudgetShared {
    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    fn headroom(&self) -> u64 {
        self.headroom.load(Ordering::Relaxed).min(self.limit())
    }

    /// What ordinary growth may reach (invariant 2).
    fn write_limit(&self) -> u64 {
        self.limit().saturating_sub(self.headroom())
    }

    /// Adds `bytes` to `reserved` if the total stays within `bound`;
    /// returns the total seen on refusal.
    fn try_add(&self, bytes: u64, bound: u64) -> Result<(), u64> {
        let mut current = self.reserved.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(bytes).filter(|n| *n <= bound) else {
                return Err(current);
            };
            match self.reserved.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    fn consumer_totals(&self) -> Vec<ConsumerStats> {
        let list = self
            .consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut totals: Vec<ConsumerStats> = Vec::new();
        for c in list.iter().filter_map(Weak::upgrade) {
            let held = c.held.load(Ordering::Relaxed);
            match totals.iter_mut().find(|t| t.name == c.name) {
                Some(t) => t.reserved_bytes += held,
                None => totals.push(ConsumerStats {
                    name: c.name.clone(),
                    reserved_bytes: held,
                }),
            }
        }
        totals.sort_by(|a, b| {
            b.reserved_bytes
                .cmp(&a.reserved_bytes)
                .then(a.name.cmp(&b.name))
        });
        totals
    }
}

/// A consumer's share of a [`MemoryBudget`]; returns what it holds on drop.
///
/// `Send + Sync`: every method takes `&self`, so one reservation can be
/// grown from many threads (the shards of a slab arena do).
pub struct Reservation {
    budget: Arc<BudgetShared>,
    consumer: Arc<ConsumerShared>,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("consumer", &self.consumer.name)
            .field("held_bytes", &self.size())
            .finish()
    }
}

impl Reservation {
    /// The consumer name given to [`MemoryBudget::reservation`].
    pub fn consumer(&self) -> &str {
        &self.consumer.name
    }

    /// Bytes this reservation holds.
    pub fn size(&self) -> u64 {
        self.consumer.held.load(Ordering::Relaxed)
    }

    /// The budget this reservation belongs to.
    pub fn budget(&self) -> MemoryBudget {
        MemoryBudget {
            shared: Arc::clone(&self.budget),
        }
    }

    /// Reserves `bytes` more, within the limit less the headroom, or fails
    /// without changing anything (invariants 2, 3).
    ///
    /// # Errors
    ///
    /// [`BudgetExceeded`] when the budget's total would pass its limit less
    /// the headroom; it carries the request, what this consumer holds, what
    /// is available, the limit, the headroom and the largest consumers.
    pub fn try_grow(&self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.try_grow_within(bytes, self.budget.write_limit())
    }

    /// Reserves `bytes` more for work that frees memory (a compaction's
    /// target slabs), which may take the headroom ordinary growth cannot:
    /// up to the limit itself (invariant 2).
    ///
    /// # Errors
    ///
    /// [`BudgetExceeded`] when even the headroom does not hold `bytes`.
    pub fn try_grow_for_reclaim(&self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.try_grow_within(bytes, self.budget.limit())
    }

    fn try_grow_within(&self, bytes: u64, bound: u64) -> Result<(), BudgetExceeded> {
        self.budget
            .try_add(bytes, bound)
            .map_err(|seen| self.exceeded(bytes, seen))?;
        self.consumer.held.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Sets this consumer's share of the budget's headroom: bytes ordinary
    /// growth (anyone's [`try_grow`](Self::try_grow)) leaves free for
    /// reclaiming work ([`try_grow_for_reclaim`](Self::try_grow_for_reclaim)).
    /// A compacting arena declares two of its slabs. Given back on drop.
    pub fn set_headroom(&self, bytes: u64) {
        let prev = self.consumer.headroom.swap(bytes, Ordering::Relaxed);
        if bytes >= prev {
            self.budget
                .headroom
                .fetch_add(bytes - prev, Ordering::Relaxed);
        } else {
            self.budget
                .headroom
                .fetch_sub(prev - bytes, Ordering::Relaxed);
        }
    }

    /// This consumer's share of the headroom.
    pub fn headroom(&self) -> u64 {
        self.consumer.headroom.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` more even past the limit: for memory already taken
    /// that must be accounted (the fallible twin is [`try_grow`](Self::try_grow)).
    pub fn grow(&self, bytes: u64) {
        self.budget.reserved.fetch_add(bytes, Ordering::Relaxed);
        self.consumer.held.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back up to `bytes`; returns how many were given back (less
    /// than asked only if this reservation held less).
    pub fn shrink(&self, bytes: u64) -> u64 {
        let prev = self
            .consumer
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(bytes))
            })
            .unwrap_or_else(|h| h);
        let released = prev.min(bytes);
        self.budget.reserved.fetch_sub(released, Ordering::Relaxed);
        released
    }

    /// Gives back everything; returns the bytes given back.
    pub fn free(&self) -> u64 {
        self.shrink(u64::MAX)
    }

    #[cold]
    fn exceeded(&self, requested: u64, reserved: u64) -> BudgetExceeded {
        let mut top = self.budget.consumer_totals();
        top.truncate(TOP_CONSUMERS);
        BudgetExceeded {
            consumer: self.consumer.name.clone(),
            requested_bytes: requested,
            held_bytes: self.size(),
            available_bytes: self.budget.write_limit().saturating_sub(reserved),
            limit_bytes: self.budget.limit(),
            headroom_bytes: self.budget.headroom(),
            top_consumers: top
                .into_iter()
                .map(|c| (c.name, c.reserved_bytes))
                .collect(),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.free();
        self.set_headroom(0);
    }
}

/// A reservation could not grow: the numbers an operator acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// Who asked.
    pub consumer: String,
    /// Bytes asked for.
    pub requested_bytes: u64,
    /// Bytes this consumer already held.
    pub held_bytes: u64,
    /// Bytes ordinary growth had left (limit less headroom less reserved).
    pub available_bytes: u64,
    /// The budget's limit.
    pub limit_bytes: u64,
    /// The headroom kept for reclaiming work (compaction), which ordinary
    /// growth cannot take.
    pub headroom_bytes: u64,
    /// The largest consumers at the time, with what they held.
    pub top_consumers: Vec<(String, u64)>,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory budget exceeded: {} requested {} bytes, holds {}, {} available of a {} byte limit ({} kept for compaction)",
            self.consumer,
            self.requested_bytes,
            self.held_bytes,
            self.available_bytes,
            self.limit_bytes,
            self.headroom_bytes
        )?;
        if !self.top_consumers.is_empty() {
            f.write_str("; top consumers:")?;
            for (i, (name, bytes)) in self.top_consumers.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                write!(f, "{sep}{name}={bytes}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for BudgetExceeded {}

/// A snapshot of a [`MemoryBudget`], flat plain data for metrics
/// (docs/metrics.md maps each field to its Prometheus metric). One budget
/// serves an engine, so it carries no instance name; per-consumer entries
/// carry the `consumer` label, bounded by the name cap
/// ([`MemoryBudget::max_consumer_names`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// The limit, `None` when unlimited (the exporter then writes no
    /// sample).
    pub limit_bytes: Option<u64>,
    /// The headroom kept for reclaiming work.
    pub headroom_bytes: u64,
    /// Bytes reserved in total.
    pub reserved_bytes: u64,
    /// Per consumer name, largest first.
    pub consumers: Vec<ConsumerStats>,
}

/// What one consumer name holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// The consumer name.
    pub name: String,
    /// Bytes reserved under that name.
    pub reserved_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn failed_try_grow_changes_nothing_and_names_the_numbers() {
        let budget = MemoryBudget::new(1000);
        let a = budget.reservation("slab:a");
        let b = budget.reservation("pool:b");
        a.try_grow(600).unwrap();
        b.try_grow(300).unwrap();
        let err = b.try_grow(200).unwrap_err();
        assert_eq!(err.consumer, "pool:b");
        assert_eq!(err.requested_bytes, 200);
        assert_eq!(err.held_bytes, 300);
        assert_eq!(err.available_bytes, 100);
        assert_eq!(err.limit_bytes, 1000);
        assert_eq!(
            err.top_consumers,
            vec![("slab:a".to_string(), 600), ("pool:b".to_string(), 300)]
        );
        let msg = err.to_string();
        assert!(
            msg.contains("requested 200") && msg.contains("slab:a=600"),
            "{msg}"
        );
        assert_eq!(budget.reserved_bytes(), 900);
        assert_eq!(b.size(), 300);
    }

    #[test]
    fn drop_and_shrink_return_bytes() {
        let budget = MemoryBudget::new(100);
        let a = budget.reservation("a");
        a.try_grow(100).unwrap();
        assert_eq!(a.shrink(30), 30);
        assert_eq!(a.shrink(1000), 70);
        assert_eq!(budget.reserved_bytes(), 0);
        a.try_grow(50).unwrap();
        drop(a);
        assert_eq!(budget.reserved_bytes(), 0);
        assert!(budget.stats().consumers.is_empty());
    }

    #[test]
    fn grow_may_pass_the_limit_and_try_grow_then_refuses() {
        let budget = MemoryBudget::new(10);
        let a = budget.reservation("a");
        a.grow(15);
        assert_eq!(budget.available_bytes(), 0);
        assert!(a.try_grow(1).is_err());
        a.shrink(15);
        a.try_grow(10).unwrap();
    }

    #[test]
    fn stats_are_flat_bytes_with_limit_headroom_and_consumers() {
        let budget = MemoryBudget::new(1000);
        let arena = budget.reservation("slab:kv");
        let pool = budget.reservation("pool:records");
        arena.try_grow(600).unwrap();
        arena.set_headroom(100);
        pool.try_grow(250).unwrap();
        assert!(pool.try_grow(100).is_err(), "the headroom is kept");
        let s = budget.stats();
        assert_eq!(
            (s.limit_bytes, s.headroom_bytes, s.reserved_bytes),
            (Some(1000), 100, 850)
        );
        let by_name: Vec<_> = s
            .consumers
            .iter()
            .map(|c| (c.name.as_str(), c.reserved_bytes))
            .collect();
        assert_eq!(by_name, [("slab:kv", 600), ("pool:records", 250)]);
        drop(arena);
        let s = budget.stats();
        assert_eq!((s.headroom_bytes, s.reserved_bytes), (0, 250));
    }

    #[test]
    fn stats_sum_consumers_by_name() {
        let budget = MemoryBudget::unlimited();
        let a1 = budget.reservation("slab");
        let a2 = budget.reservation("slab");
        let b = budget.reservation("pool");
        a1.try_grow(5).unwrap();
        a2.try_grow(7).unwrap();
        b.try_grow(3).unwrap();
        let s = budget.stats();
        assert_eq!(s.limit_bytes, None);
        assert_eq!(s.reserved_bytes, 15);
        assert_eq!(
            s.consumers[0],
            ConsumerStats {
                name: "slab".into(),
                reserved_bytes: 12
            }
        );
        assert_eq!(
            s.consumers[1],
            ConsumerStats {
                name: "pool".into(),
                reserved_bytes: 3
            }
        );
    }

    #[test]
    fn concurrent_try_grow_never_passes_the_limit() {
        let budget = MemoryBudget::new(10_000);
        let (granted, held): (Vec<u64>, Vec<Reservation>) = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let r = budget.reservation("t");
                    s.spawn(move || {
                        let mut ok = 0;
                        for _ in 0..5_000 {
                            if r.try_grow(3).is_ok() {
                                ok += 3;
                            }
                        }
                        (ok, r)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).unzip()
        });
        let granted: u64 = granted.iter().sum();
        assert!(granted <= 10_000);
        assert!(granted >= 9_997, "the limit was not reached: {granted}");
        assert_eq!(budget.reserved_bytes(), granted);
        drop(held);
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[test]
    fn headroom_is_kept_from_writes_and_open_to_reclaim() {
        let budget = MemoryBudget::new(1000);
        let arena = budget.reservation("kv");
        arena.set_headroom(200);
        assert_eq!(budget.headroom_bytes(), 200);
        assert_eq!(budget.available_bytes(), 800);
        arena.try_grow(800).unwrap();
        let err = arena.try_grow(1).unwrap_err();
        assert_eq!((err.available_bytes, err.headroom_bytes), (0, 200));
        assert!(err.to_string().contains("200 kept for compaction"), "{err}");
        // Compaction may take the headroom, and no more.
        arena.try_grow_for_reclaim(150).unwrap();
        assert!(arena.try_grow_for_reclaim(51).is_err());
        arena.try_grow_for_reclaim(50).unwrap();
        assert_eq!(budget.reserved_bytes(), 1000);
        arena.set_headroom(50);
        assert_eq!(budget.headroom_bytes(), 50);
        drop(arena);
        assert_eq!((budget.reserved_bytes(), budget.headroom_bytes()), (0, 0));
    }

    #[test]
    fn the_limit_changes_at_run_time() {
        let budget = MemoryBudget::new(100);
        let a = budget.reservation("a");
        a.try_grow(80).unwrap();
        budget.set_limit(Some(50));
        assert_eq!(budget.limit_bytes(), Some(50));
        assert!(a.try_grow(1).is_err(), "over the lowered limit");
        assert_eq!(a.size(), 80, "lowering revokes nothing");
        a.shrink(40);
        a.try_grow(10).unwrap();
        budget.set_limit(None);
        a.try_grow(1 << 40).unwrap();
        assert_eq!(budget.limit_bytes(), None);
    }

    #[test]
    fn consumer_names_are_capped_as_other() {
        let budget = MemoryBudget::unlimited().with_max_consumer_names(2);
        let a = budget.reservation("a");
        let b = budget.reservation("b");
        let a2 = budget.reservation("a");
        let c = budget.reservation("c");
        assert_eq!(
            (a.consumer(), b.consumer(), a2.consumer(), c.consumer()),
            ("a", "b", "a", OTHER_CONSUMER)
        );
        drop(b);
        // A name freed by its last reservation makes room again.
        assert_eq!(budget.reservation("d").consumer(), "d");
    }

    #[derive(Debug, Clone)]
    enum Op {
        TryGrow(usize, u64),
        TryGrowReclaim(usize, u64),
        Shrink(usize, u64),
        Headroom(usize, u64),
        Limit(u64),
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..400u64).prop_map(|(i, b)| Op::TryGrow(i, b)),
            2 => (0..3usize, 0..400u64).prop_map(|(i, b)| Op::TryGrowReclaim(i, b)),
            2 => (0..3usize, 0..400u64).prop_map(|(i, b)| Op::Shrink(i, b)),
            1 => (0..3usize, 0..300u64).prop_map(|(i, b)| Op::Headroom(i, b)),
            1 => (500..1500u64).prop_map(Op::Limit),
            1 => (0..3usize).prop_map(Op::Drop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]
        /// The budget's total always equals a plain per-consumer model and
        /// never passes the limit through try_grow.
        #[test]
        fn budget_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            let mut limit = 1000u64;
            let budget = MemoryBudget::new(limit);
            let mut res: Vec<Option<Reservation>> = (0..3).map(|i| Some(budget.reservation(format!("c{i}")))).collect();
            let mut model = [0u64; 3];
            let mut headroom = [0u64; 3];
            for op in ops {
                let total = model.iter().sum::<u64>();
                let kept = headroom.iter().sum::<u64>().min(limit);
                match op {
                    Op::TryGrow(i, b) | Op::TryGrowReclaim(i, b) => {
                        let reclaim = matches!(op, Op::TryGrowReclaim(..));
                        let r = res[i].get_or_insert_with(|| budget.reservation(format!("c{i}")));
                        let bound = if reclaim { limit } else { limit - kept };
                        let fits = total + b <= bound;
                        let got = if reclaim { r.try_grow_for_reclaim(b) } else { r.try_grow(b) };
                        prop_assert_eq!(got.is_ok(), fits);
                        if fits { model[i] += b; }
                    }
                    Op::Shrink(i, b) => {
                        if let Some(r) = &res[i] {
                            let given = r.shrink(b);
                            prop_assert_eq!(given, b.min(model[i]));
                            model[i] -= given;
                        }
                    }
                    Op::Headroom(i, b) => {
                        if let Some(r) = &res[i] {
                            r.set_headroom(b);
                            headroom[i] = b;
                        }
                    }
                    Op::Limit(l) => {
                        budget.set_limit(Some(l));
                        limit = l;
                    }
                    Op::Drop(i) => { res[i] = None; model[i] = 0; headroom[i] = 0; }
                }
                prop_assert_eq!(budget.reserved_bytes(), model.iter().sum::<u64>());
                prop_assert_eq!(budget.headroom_bytes(), headroom.iter().sum::<u64>().min(limit));
                for (i, r) in res.iter().enumerate() {
                    if let Some(r) = r { prop_assert_eq!(r.size(), model[i]); }
                }
            }
        }
    }
}
