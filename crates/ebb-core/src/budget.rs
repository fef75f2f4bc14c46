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
//! Invariants:
//!
//! 1. `reserved` equals the sum of `held` over every live reservation, up to
//!    the updates in flight on other threads (each update changes both).
//! 2. [`Reservation::try_grow`] never takes `reserved` above `limit`; only
//!    [`Reservation::grow`], which documents it, may.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// How many consumers an over-budget error names.
const TOP_CONSUMERS: usize = 3;

struct BudgetShared {
    /// The limit in bytes; `u64::MAX` means unlimited.
    limit: u64,
    /// Sum of `held` over live reservations (invariant 1).
    reserved: AtomicU64,
    /// Every reservation made, for stats; dead entries pruned on register.
    consumers: Mutex<Vec<Weak<ConsumerShared>>>,
}

struct ConsumerShared {
    name: String,
    held: AtomicU64,
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
            .field("reserved_bytes", &self.reserved_bytes())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit_bytes`.
    pub fn new(limit_bytes: u64) -> MemoryBudget {
        MemoryBudget {
            shared: Arc::new(BudgetShared {
                limit: limit_bytes,
                reserved: AtomicU64::new(0),
                consumers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A budget without a limit that still accounts who holds what.
    pub fn unlimited() -> MemoryBudget {
        MemoryBudget::new(u64::MAX)
    }

    /// A new, empty reservation for the consumer `name` (`"slab:kv"`, ...).
    /// Names should be few and stable: they become metric labels.
    pub fn reservation(&self, name: impl Into<String>) -> Reservation {
        let consumer = Arc::new(ConsumerShared {
            name: name.into(),
            held: AtomicU64::new(0),
        });
        let mut list = self.consumers();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&consumer));
        drop(list);
        Reservation {
            budget: Arc::clone(&self.shared),
            consumer,
        }
    }

    /// The limit, or `None` when unlimited.
    pub fn limit_bytes(&self) -> Option<u64> {
        (self.shared.limit != u64::MAX).then_some(self.shared.limit)
    }

    /// Bytes reserved by all consumers together.
    pub fn reserved_bytes(&self) -> u64 {
        self.shared.reserved.load(Ordering::Relaxed)
    }

    /// Bytes that can still be reserved (`u64::MAX` when unlimited).
    pub fn available_bytes(&self) -> u64 {
        self.shared.limit.saturating_sub(self.reserved_bytes())
    }

    /// A snapshot of the total and of each consumer, largest first.
    /// Reservations sharing a name are summed.
    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            limit_bytes: self.limit_bytes(),
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

    /// Reserves `bytes` more, or fails without changing anything
    /// (invariant 3).
    ///
    /// # Errors
    ///
    /// [`BudgetExceeded`] when the budget's total would pass its limit; it
    /// carries the request, what this consumer holds, what is available, the
    /// limit and the largest consumers.
    pub fn try_grow(&self, bytes: u64) -> Result<(), BudgetExceeded> {
        let limit = self.budget.limit;
        let mut current = self.budget.reserved.load(Ordering::Relaxed);
        loop {
            let Some(next) = current.checked_add(bytes).filter(|n| *n <= limit) else {
                return Err(self.exceeded(bytes, current));
            };
            match self.budget.reserved.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.consumer.held.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
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
            available_bytes: self.budget.limit.saturating_sub(reserved),
            limit_bytes: self.budget.limit,
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
    /// Bytes the budget had left.
    pub available_bytes: u64,
    /// The budget's limit.
    pub limit_bytes: u64,
    /// The largest consumers at the time, with what they held.
    pub top_consumers: Vec<(String, u64)>,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory budget exceeded: {} requested {} bytes, holds {}, {} available of a {} byte limit",
            self.consumer,
            self.requested_bytes,
            self.held_bytes,
            self.available_bytes,
            self.limit_bytes
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

/// A snapshot of a [`MemoryBudget`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BudgetStats {
    /// The limit, `None` when unlimited.
    pub limit_bytes: Option<u64>,
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

    #[derive(Debug, Clone)]
    enum Op {
        TryGrow(usize, u64),
        Shrink(usize, u64),
        Drop(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..400u64).prop_map(|(i, b)| Op::TryGrow(i, b)),
            2 => (0..3usize, 0..400u64).prop_map(|(i, b)| Op::Shrink(i, b)),
            1 => (0..3usize).prop_map(Op::Drop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 8 } else { 256 }))]
        /// The budget's total always equals a plain per-consumer model and
        /// never passes the limit through try_grow.
        #[test]
        fn budget_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
            const LIMIT: u64 = 1000;
            let budget = MemoryBudget::new(LIMIT);
            let mut res: Vec<Option<Reservation>> = (0..3).map(|i| Some(budget.reservation(format!("c{i}")))).collect();
            let mut model = [0u64; 3];
            for op in ops {
                match op {
                    Op::TryGrow(i, b) => {
                        let r = res[i].get_or_insert_with(|| budget.reservation(format!("c{i}")));
                        let fits = model.iter().sum::<u64>() + b <= LIMIT;
                        prop_assert_eq!(r.try_grow(b).is_ok(), fits);
                        if fits { model[i] += b; }
                    }
                    Op::Shrink(i, b) => {
                        if let Some(r) = &res[i] {
                            let given = r.shrink(b);
                            prop_assert_eq!(given, b.min(model[i]));
                            model[i] -= given;
                        }
                    }
                    Op::Drop(i) => { res[i] = None; model[i] = 0; }
                }
                prop_assert_eq!(budget.reserved_bytes(), model.iter().sum::<u64>());
                for (i, r) in res.iter().enumerate() {
                    if let Some(r) = r { prop_assert_eq!(r.size(), model[i]); }
                }
            }
        }
    }
}
