//! The retention store shared by [`BufferPool`](crate::BufferPool) and
//! [`ObjectPool`](crate::ObjectPool): per tier, the items waiting for
//! reuse, spread over stripes, with bounds, budget charging, counters and
//! adaptive caps.
//!
//! Invariants:
//! 1. A tier's item bound (its cap, and for buffers what its byte limit
//!    holds) is split into per-stripe shares that sum to the whole
//!    ([`share`](crate::stripe::share)); a stripe never retains past its
//!    share, so a tier never retains past its bound.
//! 2. Retained bytes are paid for with credit: a stripe's `charged_bytes`
//!    is taken from the pool's `credit_used`, which never passes the
//!    pool's total byte limit, and (with a budget) is held in the budget
//!    reservation too. `charged_bytes >= retained_bytes` whenever the
//!    stripe's lock is free, and `charged_bytes <= retained_bytes + 2 *
//!    max(granule, largest item)` after a take, so the pool never retains
//!    past its total and the budget sees what it retains within that slack
//!    per stripe (taken back from idle stripes when another needs it).
//! 3. Event counters (gets, hits, puts, discarded) are counted in the stripe
//!    of the thread that did the event; `retained` and `retained_bytes` in
//!    the stripe that holds the items. Sums over stripes are exact.
//! 4. A thread cache holds items only in places allotted to it: a stripe's
//!    `items + allotted` stays within its share, and its `retained_bytes`
//!    covers allotted places, so the bounds hold for thread caches too.
//! 5. An item's size ([`Retainable::retained_bytes`], user code for an
//!    object pool) is asked once per give, before any stripe lock is
//!    taken, and stored with the item ([`Held`]). Every byte count adds
//!    exactly that number when the item goes in and subtracts exactly the
//!    stored number when it comes out, so no count can underflow whatever
//!    the size method returns (a value that changes, a panic, `usize::MAX`),
//!    and no user code ever runs under a stripe lock.

use crossbeam_utils::CachePadded;
use ebb_core::budget::Reservation;
use ebb_core::sync::{AtomicU64, AtomicUsize, Ordering};

use crate::config::AdaptiveConfig;
use crate::stats::TierStats;
use crate::stripe::{OwnerCounter, StripeGuard, Stripes, share};

/// Credit moves between a stripe and the pool in steps of at most this
/// many bytes, so a put or take rarely touches a shared counter.
pub(crate) const MAX_CHARGE_GRANULE_BYTES: u64 = 1 << 20;

/// Something a pool can retain.
pub(crate) trait Retainable: Send {
    /// Heap bytes this item keeps while retained. May be user code: the
    /// store calls it outside every lock and only once per give
    /// (invariant 5).
    fn retained_bytes(&self) -> usize;
}

/// A retained item with the bytes it was charged when it went in
/// (invariant 5): taking it out subtracts exactly `bytes`.
pub(crate) struct Held<I> {
    item: I,
    bytes: usize,
}

/// Counters of one tier in one stripe (invariant 3).
#[derive(Default)]
pub(crate) struct TierCounters {
    gets: OwnerCounter,
    hits: OwnerCounter,
    puts: OwnerCounter,
    discarded: OwnerCounter,
    retained: OwnerCounter,
    retained_bytes: OwnerCounter,
}

struct TierState<I> {
    /// Each with the bytes it added to `bytes` (invariant 5).
    items: Vec<Held<I>>,
    bytes: usize,
    /// Places lent to thread caches (invariant 4): they count against the
    /// tier's share like items, and their bytes are in `retained_bytes`.
    allotted: usize,
    allotted_bytes: usize,
    window_gets: u64,
    window_hits: u64,
}

struct StripeState<I> {
    /// Padded: stripes' heap parts must not share cache lines either.
    tiers: Box<[CachePadded<TierState<I>>]>,
    retained_bytes: usize,
    /// Budget bytes this stripe holds (invariant 2).
    charged_bytes: u64,
    /// The largest item this stripe has retained: slack of two such items
    /// is kept, so a put and take of one large buffer do not move credit
    /// back and forth on every call.
    largest_item_bytes: u64,
}

type Counters = Box<[CachePadded<TierCounters>]>;
type Guard<'a, I> = StripeGuard<'a, StripeState<I>, Counters>;

/// The fixed bounds of one tier.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TierBound {
    /// The most items the tier retains whatever its cap (what its byte
    /// limit holds, for buffers).
    pub(crate) max_items: usize,
    /// The largest cap adaptive sizing may raise to.
    pub(crate) ceiling: usize,
}

/// The tier-wide part: its cap, moved by adaptive sizing.
struct TierShared {
    cap: AtomicUsize,
    bound: TierBound,
}

/// Items retained per tier over stripes.
pub(crate) struct RetainStore<I> {
    stripes: Stripes<StripeState<I>, Counters>,
    tiers: Box<[TierShared]>,
    adaptive: AdaptiveConfig,
    /// Bytes of credit stripes hold (invariant 2).
    credit_used: AtomicU64,
    total_bytes: u64,
    granule: u64,
    reservation: Option<Reservation>,
    budget_refusals: AtomicU64,
}

/// What [`RetainStore::take`] found.
pub(crate) struct Taken<I> {
    pub(crate) item: Option<I>,
    /// The stripe the taking thread counted in.
    pub(crate) stripe: usize,
}

impl<I: Retainable> RetainStore<I> {
    /// A store with one tier per `bounds` entry, retaining at most
    /// `total_bytes`.
    pub(crate) fn new(
        bounds: &[TierBound],
        stripes: usize,
        initial_cap: usize,
        total_bytes: usize,
        adaptive: AdaptiveConfig,
        reservation: Option<Reservation>,
    ) -> Self {
        let tier_count = bounds.len();
        let stripes = Stripes::new(stripes, |_| {
            let tiers = (0..tier_count)
                .map(|_| {
                    CachePadded::new(TierState {
                        items: Vec::new(),
                        bytes: 0,
                        allotted: 0,
                        allotted_bytes: 0,
                        window_gets: 0,
                        window_hits: 0,
                    })
                })
                .collect();
            let counters = (0..tier_count)
                .map(|_| CachePadded::new(TierCounters::default()))
                .collect();
            (
                StripeState {
                    tiers,
                    retained_bytes: 0,
                    charged_bytes: 0,
                    largest_item_bytes: 0,
                },
                counters,
            )
        });
        let tiers = bounds
            .iter()
            .map(|&bound| TierShared {
                cap: AtomicUsize::new(initial_cap),
                bound: TierBound {
                    max_items: bound.max_items,
                    ceiling: bound.ceiling.max(adaptive.floor).max(initial_cap),
                },
            })
            .collect();
        let total_bytes = total_bytes as u64;
        let granule =
            (total_bytes / (stripes.len() as u64 * 16)).clamp(1, MAX_CHARGE_GRANULE_BYTES);
        RetainStore {
            stripes,
            tiers,
            adaptive,
            credit_used: AtomicU64::new(0),
            total_bytes,
            granule,
            reservation,
            budget_refusals: AtomicU64::new(0),
        }
    }

    pub(crate) fn stripe_count(&self) -> usize {
        self.stripes.len()
    }

    /// A retained item of tier `t`, if any (a hit), counted as one get.
    #[inline]
    pub(crate) fn take(&self, t: usize) -> Taken<I> {
        let mut guard = self.stripes.lock_home();
        let stripe = guard.index();
        let (state, counters) = guard.parts();
        let mut item = pop(state, &counters[t], t);
        if item.is_none() && self.stripes.len() > 1 {
            item = self.steal(stripe, t);
        }
        let c = &counters[t];
        c.gets.add(1);
        let tier = &mut state.tiers[t];
        tier.window_gets += 1;
        if item.is_some() {
            c.hits.add(1);
            tier.window_hits += 1;
        }
        let mut evicted = Vec::new();
        if self.adaptive.enabled && tier.window_gets >= self.adaptive.interval {
            self.adjust_tier(&mut guard, t, &mut evicted);
        }
        self.settle_charge(&mut guard);
        drop(guard);
        drop(evicted);
        Taken { item, stripe }
    }

    /// Takes back a get counted in `stripe` whose fresh item could not be
    /// made (the allocator refused), so stats show no buffer in use.
    #[cold]
    pub(crate) fn uncount_get(&self, stripe: usize, t: usize) {
        let mut guard = self.stripes.lock(stripe);
        let (state, counters) = guard.parts();
        counters[t].gets.sub(1);
        let tier = &mut state.tiers[t];
        tier.window_gets = tier.window_gets.saturating_sub(1);
    }

    #[cold]
    fn steal(&self, home: usize, t: usize) -> Option<I> {
        for k in 1..self.stripes.len() {
            let index = (home + k) % self.stripes.len();
            if let Some(mut other) = self.stripes.try_lock(index) {
                let (state, counters) = other.parts();
                if let Some(item) = pop(state, &counters[t], t) {
                    self.settle_charge(&mut other);
                    return Some(item);
                }
            }
        }
        None
    }

    /// Returns `item` to tier `t`: retained if every bound allows, else
    /// dropped and counted as discarded. Returns whether it was retained.
    #[inline]
    pub(crate) fn give(&self, t: usize, item: I) -> bool {
        // Invariant 5: measured before any lock is taken.
        let bytes = item.retained_bytes();
        self.give_sized(t, item, bytes)
    }

    /// [`give`](Self::give) of an item the caller has measured: `bytes` is
    /// what it is charged while retained and what its take subtracts
    /// (invariant 5), whatever it is.
    #[inline]
    pub(crate) fn give_sized(&self, t: usize, item: I, bytes: usize) -> bool {
        self.give_counted(t, Held { item, bytes }, true)
    }

    /// Retains an item whose put was already counted elsewhere (a thread
    /// cache handing back what it held); dropped and counted as discarded
    /// when no bound allows it.
    pub(crate) fn adopt(&self, t: usize, item: I) -> bool {
        let bytes = item.retained_bytes();
        self.give_counted(t, Held { item, bytes }, false)
    }

    /// Counts a put whose item never reached the store (the user's
    /// `recycle` or `retained_bytes` panicked and the item was dropped):
    /// one put and one discard, so `in_use` and `discarded` stay exact.
    #[cold]
    pub(crate) fn count_lost_put(&self, t: usize) {
        let guard = self.stripes.lock_home();
        let c = &guard.counters()[t];
        c.puts.add(1);
        c.discarded.add(1);
    }

    #[inline]
    fn give_counted(&self, t: usize, item: Held<I>, count_put: bool) -> bool {
        let shared = &self.tiers[t];
        let cap = shared
            .cap
            .load(Ordering::Relaxed)
            .min(shared.bound.max_items);
        let mut guard = self.stripes.lock_home();
        let home = guard.index();
        if count_put {
            guard.counters()[t].puts.add(1);
        }
        let item = match self.try_retain(&mut guard, t, item, cap) {
            Ok(()) => return true,
            Err(Refused::Budget(item)) => item,
            Err(Refused::Full(item)) => {
                // Unlocked while trying the others, so they can take back
                // this stripe's slack credit if they need it.
                drop(guard);
                let item = match self.give_elsewhere(home, t, item, cap) {
                    Ok(()) => return true,
                    Err(item) => item,
                };
                guard = self.stripes.lock(home);
                item
            }
        };
        guard.counters()[t].discarded.add(1);
        drop(guard);
        drop(item);
        false
    }

    #[cold]
    fn give_elsewhere(
        &self,
        home: usize,
        t: usize,
        mut item: Held<I>,
        cap: usize,
    ) -> Result<(), Held<I>> {
        for k in 1..self.stripes.len() {
            let index = (home + k) % self.stripes.len();
            if let Some(mut other) = self.stripes.try_lock(index) {
                match self.try_retain(&mut other, t, item, cap) {
                    Ok(()) => return Ok(()),
                    Err(Refused::Budget(back)) => return Err(back),
                    Err(Refused::Full(back)) => item = back,
                }
            }
        }
        Err(item)
    }

    #[inline]
    fn try_retain(
        &self,
        guard: &mut Guard<'_, I>,
        t: usize,
        item: Held<I>,
        cap: usize,
    ) -> Result<(), Refused<I>> {
        let parts = self.stripes.len();
        let index = guard.index();
        // Invariant 5: the size was measured before the lock; no user code
        // runs here.
        let bytes = item.bytes;
        let (state, counters) = guard.parts();
        let tier = &mut state.tiers[t];
        // Invariant 1: the item bound is checked against this stripe's share.
        if tier.items.len() + tier.allotted >= share(cap, parts, index) {
            return Err(Refused::Full(item));
        }
        // An item whose size passes what a count can hold passes every
        // bound too: no stripe will take it.
        let Some(needed) = state.retained_bytes.checked_add(bytes) else {
            return Err(Refused::Budget(item));
        };
        let needed = needed as u64;
        if needed > state.charged_bytes && self.charge(&mut state.charged_bytes, needed).is_err() {
            // Other stripes may sit on slack credit: take it back and try
            // once more, so the bounds are exact whenever they are free.
            self.squeeze_slack(index);
            if let Err(refused) = self.charge(&mut state.charged_bytes, needed) {
                if refused == ChargeRefused::Budget {
                    self.budget_refusals.fetch_add(1, Ordering::Relaxed);
                }
                return Err(Refused::Budget(item));
            }
        }
        // Charged, so `bytes` fits the pool's total: these sums cannot
        // overflow (invariant 2).
        state.largest_item_bytes = state.largest_item_bytes.max(bytes as u64);
        tier.items.push(item);
        tier.bytes += bytes;
        state.retained_bytes += bytes;
        let c = &counters[t];
        c.retained.add(1);
        c.retained_bytes.add(bytes as u64);
        Ok(())
    }

    /// Raises a stripe's credit to at least `needed` bytes, rounded up to
    /// a granule where the total allows (invariant 2). Changes nothing
    /// when the pool's total or the budget refuses.
    fn charge(&self, charged: &mut u64, needed: u64) -> Result<(), ChargeRefused> {
        let least = needed - *charged;
        // Rounding up must not overflow for an item near `u64::MAX` bytes
        // (the total then refuses it below).
        let want = least
            .checked_next_multiple_of(self.granule)
            .unwrap_or(least);
        let mut used = self.credit_used.load(Ordering::Relaxed);
        let grant = loop {
            let available = self.total_bytes.saturating_sub(used);
            if available < least {
                return Err(ChargeRefused::Total);
            }
            let grant = want.min(available);
            match self.credit_used.compare_exchange_weak(
                used,
                used + grant,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break grant,
                Err(seen) => used = seen,
            }
        };
        if let Some(reservation) = &self.reservation
            && reservation.try_grow(grant).is_err()
        {
            self.credit_used.fetch_sub(grant, Ordering::Relaxed);
            return Err(ChargeRefused::Budget);
        }
        *charged += grant;
        Ok(())
    }

    /// Gives back `bytes` of a stripe's credit.
    fn uncharge(&self, charged: &mut u64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        *charged -= bytes;
        self.credit_used.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(reservation) = &self.reservation {
            reservation.shrink(bytes);
        }
    }

    /// Takes back every other free stripe's credit beyond what it retains.
    #[cold]
    fn squeeze_slack(&self, except: usize) {
        for index in (0..self.stripes.len()).filter(|&i| i != except) {
            if let Some(mut other) = self.stripes.try_lock(index) {
                let (state, _) = other.parts();
                let slack = state.charged_bytes - state.retained_bytes as u64;
                self.uncharge(&mut state.charged_bytes, slack);
            }
        }
    }

    /// Gives back credit a stripe no longer needs (invariant 2).
    #[inline]
    fn settle_charge(&self, guard: &mut Guard<'_, I>) {
        let (state, _) = guard.parts();
        let retained = state.retained_bytes as u64;
        let slack = self.granule.max(state.largest_item_bytes);
        if state.charged_bytes > retained.saturating_add(slack.saturating_mul(2)) {
            let give_back = state.charged_bytes - (retained + slack);
            self.uncharge(&mut state.charged_bytes, give_back);
        }
    }

    /// Moves tier `t`'s cap by the hit rate of this stripe's window and
    /// evicts this stripe's items past its new share into `evicted`.
    fn adjust_tier(&self, guard: &mut Guard<'_, I>, t: usize, evicted: &mut Vec<I>) {
        let parts = self.stripes.len();
        let index = guard.index();
        let (state, counters) = guard.parts();
        let tier = &mut state.tiers[t];
        let gets = tier.window_gets;
        let hits = tier.window_hits;
        tier.window_gets = 0;
        tier.window_hits = 0;
        if gets == 0 {
            return;
        }
        let hit_rate = hits as f64 / gets as f64;
        let shared = &self.tiers[t];
        let a = &self.adaptive;
        let unused = !tier.items.is_empty();
        let mut new_cap = 0;
        let _ = shared
            .cap
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cap| {
                new_cap = cap;
                let next = a.next_cap(cap, hit_rate, unused, shared.bound.ceiling)?;
                new_cap = next;
                Some(next)
            });
        let keep =
            share(new_cap.min(shared.bound.max_items), parts, index).saturating_sub(tier.allotted);
        let c = &counters[t];
        while tier.items.len() > keep {
            let Some(Held { item, bytes }) = tier.items.pop() else {
                break;
            };
            // Invariant 5: exactly what this item added.
            tier.bytes -= bytes;
            state.retained_bytes -= bytes;
            c.retained.sub(1);
            c.retained_bytes.sub(bytes as u64);
            c.discarded.add(1);
            evicted.push(item);
        }
    }

    /// Adds gets and hits a thread cache served on its own to tier `t`'s
    /// adaptive window (in the calling thread's stripe), so adaptive sizing
    /// sees all traffic, not only what reaches the store.
    #[cold]
    pub(crate) fn feed_window(&self, t: usize, gets: u64, hits: u64) {
        if !self.adaptive.enabled {
            return;
        }
        let mut evicted = Vec::new();
        let mut guard = self.stripes.lock_home();
        let (state, _) = guard.parts();
        let tier = &mut state.tiers[t];
        tier.window_gets += gets;
        tier.window_hits += hits;
        if tier.window_gets >= self.adaptive.interval {
            self.adjust_tier(&mut guard, t, &mut evicted);
        }
        self.settle_charge(&mut guard);
        drop(guard);
        drop(evicted);
    }

    /// The gets between two adaptive steps, or `None` when adaptive sizing
    /// is off.
    pub(crate) fn adaptive_interval(&self) -> Option<u64> {
        self.adaptive.enabled.then_some(self.adaptive.interval)
    }

    /// Runs the adaptive step now on every stripe and tier that saw gets
    /// since its last step (the pressure controller and tests use this).
    pub(crate) fn adjust_now(&self) {
        for index in 0..self.stripes.len() {
            let mut evicted = Vec::new();
            let mut guard = self.stripes.lock(index);
            for t in 0..self.tiers.len() {
                self.adjust_tier(&mut guard, t, &mut evicted);
            }
            self.settle_charge(&mut guard);
            drop(guard);
            drop(evicted);
        }
    }

    /// Drops every retained item; returns (items, bytes) dropped. Their
    /// budget goes back at once.
    pub(crate) fn trim(&self) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        for index in 0..self.stripes.len() {
            let mut guard = self.stripes.lock(index);
            let (state, counters) = guard.parts();
            let mut dropped = Vec::new();
            let mut allotted_bytes = 0;
            for (tier, c) in state.tiers.iter_mut().zip(counters.iter()) {
                count += tier.items.len();
                bytes += tier.bytes;
                tier.bytes = 0;
                allotted_bytes += tier.allotted_bytes;
                dropped.append(&mut tier.items);
                c.retained.set(0);
                c.retained_bytes.set(0);
            }
            // Places lent to thread caches stay lent (invariant 4); their
            // owners give them back when they see the trim.
            state.retained_bytes = allotted_bytes;
            let slack = state.charged_bytes - allotted_bytes as u64;
            self.uncharge(&mut state.charged_bytes, slack);
            drop(guard);
            drop(dropped);
        }
        (count, bytes)
    }

    /// Lends up to `want` places of tier `t`, each for an item of `bytes`,
    /// to the calling thread's cache (invariant 4). Returns the stripe they
    /// came from and how many were granted (0 when the bounds are full).
    pub(crate) fn try_allot(&self, t: usize, bytes: usize, want: usize) -> (usize, usize) {
        let mut guard = self.stripes.lock_home();
        let home = guard.index();
        let granted = self.allot_in(&mut guard, t, bytes, want);
        if granted > 0 || self.stripes.len() == 1 {
            return (home, granted);
        }
        drop(guard);
        // The home stripe's share is lent out or full: another may have room.
        for k in 1..self.stripes.len() {
            let index = (home + k) % self.stripes.len();
            if let Some(mut other) = self.stripes.try_lock(index) {
                let granted = self.allot_in(&mut other, t, bytes, want);
                if granted > 0 {
                    return (index, granted);
                }
            }
        }
        (home, 0)
    }

    fn allot_in(&self, guard: &mut Guard<'_, I>, t: usize, bytes: usize, want: usize) -> usize {
        let shared = &self.tiers[t];
        let cap = shared
            .cap
            .load(Ordering::Relaxed)
            .min(shared.bound.max_items);
        let parts = self.stripes.len();
        let index = guard.index();
        let (state, _) = guard.parts();
        let tier = &state.tiers[t];
        let room = share(cap, parts, index).saturating_sub(tier.items.len() + tier.allotted);
        let mut granted = want.min(room);
        while granted > 0 {
            let needed = (state.retained_bytes + granted * bytes) as u64;
            if needed <= state.charged_bytes
                || self.charge(&mut state.charged_bytes, needed).is_ok()
            {
                break;
            }
            granted /= 2;
        }
        let tier = &mut state.tiers[t];
        tier.allotted += granted;
        tier.allotted_bytes += granted * bytes;
        state.retained_bytes += granted * bytes;
        state.largest_item_bytes = state.largest_item_bytes.max(bytes as u64);
        granted
    }

    /// Takes back `count` places of tier `t` lent from `stripe`, each of
    /// `bytes`.
    pub(crate) fn unallot(&self, stripe: usize, t: usize, count: usize, bytes: usize) {
        if count == 0 {
            return;
        }
        let mut guard = self.stripes.lock(stripe);
        let (state, _) = guard.parts();
        let tier = &mut state.tiers[t];
        tier.allotted -= count;
        tier.allotted_bytes -= count * bytes;
        state.retained_bytes -= count * bytes;
        self.settle_charge(&mut guard);
    }

    /// Counters of tier `t` summed over stripes.
    pub(crate) fn tier_stats(&self, t: usize, size_bytes: usize) -> TierStats {
        let mut s = TierStats {
            size_bytes,
            cap: self.tiers[t].cap.load(Ordering::Relaxed),
            ..TierStats::default()
        };
        let (mut gets, mut puts) = (0u64, 0u64);
        for counters in self.stripes.counters() {
            let c = &counters[t];
            // Puts before gets: a put follows its get, so reading in this
            // order never shows more puts than gets.
            puts = puts.wrapping_add(c.puts.get());
            gets = gets.wrapping_add(c.gets.get());
            s.hits = s.hits.wrapping_add(c.hits.get());
            s.discarded = s.discarded.wrapping_add(c.discarded.get());
            s.retained = s.retained.wrapping_add(c.retained.get());
            s.retained_bytes = s.retained_bytes.wrapping_add(c.retained_bytes.get());
        }
        s.gets = gets;
        s.puts = puts;
        s.misses = gets.saturating_sub(s.hits);
        s.allocations = s.misses;
        s.in_use = gets.saturating_sub(puts);
        s
    }

    /// Puts refused because the budget was full.
    pub(crate) fn budget_refusals(&self) -> u64 {
        self.budget_refusals.load(Ordering::Relaxed)
    }

    /// Credit held for retained items (at least the retained bytes,
    /// invariant 2); with a budget, what its reservation holds.
    pub(crate) fn charged_bytes(&self) -> u64 {
        self.credit_used.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChargeRefused {
    /// The pool's total byte bound.
    Total,
    /// The memory budget.
    Budget,
}

enum Refused<I> {
    /// A bound of this stripe is reached; another stripe may take it.
    Full(Held<I>),
    /// The total or the budget refused; no stripe will do better.
    Budget(Held<I>),
}

#[inline]
fn pop<I: Retainable>(state: &mut StripeState<I>, c: &TierCounters, t: usize) -> Option<I> {
    let tier = &mut state.tiers[t];
    let Held { item, bytes } = tier.items.pop()?;
    // Invariant 5: exactly what this item added when it went in.
    tier.bytes -= bytes;
    state.retained_bytes -= bytes;
    c.retained.sub(1);
    c.retained_bytes.sub(bytes as u64);
    Some(item)
}
