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
//!    pool's total byte limit (`total_bytes`, which a setter may lower:
//!    then no new credit is granted until the credit used is under it
//!    again). `charged_bytes >= retained_bytes` whenever the stripe's lock
//!    is free, and `charged_bytes <= retained_bytes + 2 * max(granule,
//!    largest item)` after a take, so the pool never retains past its
//!    total (slack is taken back from idle stripes when another needs it).
//!    Credit is not the budget: see invariant 6.
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
//! 6. The budget reservation holds exactly the bytes of every item the
//!    pool made and has not freed, retained or out: an item is charged
//!    when it is made (`charge_new`, on a miss), its charge travels with
//!    it (`Held::bytes` in the store, the guard's own record outside),
//!    and it is uncharged by exactly that number where it is freed
//!    (`free_charged`: a discard, an eviction, a trim). Puts and takes
//!    never touch the reservation.

use crossbeam_utils::CachePadded;
use ebb_core::budget::{BudgetExceeded, Reservation};
use ebb_core::sync::{AtomicU64, AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

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

/// The starting bounds of one tier.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TierBound {
    /// The most items the tier retains whatever its cap (what its byte
    /// limit holds, for buffers).
    pub(crate) max_items: usize,
    /// The largest cap adaptive sizing may raise to.
    pub(crate) ceiling: usize,
}

/// The tier-wide part: its cap, moved by adaptive sizing and setters, and
/// its bounds, moved by setters.
struct TierShared {
    cap: AtomicUsize,
    /// [`TierBound::max_items`], settable at run time.
    max_items: AtomicUsize,
    /// [`TierBound::ceiling`], settable at run time.
    ceiling: AtomicUsize,
    /// Places lent to thread caches now, and their bytes (for
    /// `maintenance_due`: counters only).
    lent: AtomicUsize,
    lent_bytes: AtomicU64,
}

impl TierShared {
    /// The most items the tier may hold now: its cap within its bound.
    #[inline]
    fn limit(&self) -> usize {
        self.cap
            .load(Ordering::Relaxed)
            .min(self.max_items.load(Ordering::Relaxed))
    }
}

/// Most bytes an item may be charged past the budget's limit by an
/// infallible call (a larger claim is no real allocation: it is not
/// charged, and the item goes at its next put).
const MAX_OVERRUN_CHARGE_BYTES: u64 = 1 << 48;

/// Items retained per tier over stripes.
pub(crate) struct RetainStore<I> {
    stripes: Stripes<StripeState<I>, Counters>,
    tiers: Box<[TierShared]>,
    adaptive: AdaptiveConfig,
    /// Bytes of credit stripes hold (invariant 2).
    credit_used: AtomicU64,
    /// The pool's total retained bound (settable).
    total_bytes: AtomicU64,
    granule: u64,
    /// Every item made and not freed (invariant 6). A private unlimited
    /// budget's when the pool was given none.
    reservation: Reservation,
    budget_refusals: AtomicU64,
    budget_overruns: AtomicU64,
    /// Adaptive windows fed by thread caches (activity the stripes'
    /// counters do not see).
    fed: AtomicU64,
}

/// What [`RetainStore::take`] found.
pub(crate) struct Taken<I> {
    /// The item and the bytes it is charged (invariant 6).
    pub(crate) item: Option<(I, usize)>,
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
        reservation: Reservation,
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
                max_items: AtomicUsize::new(bound.max_items),
                ceiling: AtomicUsize::new(bound.ceiling.max(adaptive.floor).max(initial_cap)),
                lent: AtomicUsize::new(0),
                lent_bytes: AtomicU64::new(0),
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
            total_bytes: AtomicU64::new(total_bytes),
            granule,
            reservation,
            budget_refusals: AtomicU64::new(0),
            budget_overruns: AtomicU64::new(0),
            fed: AtomicU64::new(0),
        }
    }

    pub(crate) fn stripe_count(&self) -> usize {
        self.stripes.len()
    }

    /// A retained item of tier `t`, if any (a hit), counted as one get,
    /// with the bytes it is charged (invariant 6).
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
        self.free_all(evicted);
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
    fn steal(&self, home: usize, t: usize) -> Option<(I, usize)> {
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
        let cap = self.tiers[t].limit();
        let mut guard = self.stripes.lock_home();
        let home = guard.index();
        if count_put {
            guard.counters()[t].puts.add(1);
        }
        let item = match self.try_retain(&mut guard, t, item, cap) {
            Ok(()) => return true,
            Err(Refused::Total(item)) => item,
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
        self.free_one(item);
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
                    Err(Refused::Total(back)) => return Err(back),
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
            return Err(Refused::Total(item));
        };
        let needed = needed as u64;
        if needed > state.charged_bytes && self.charge(&mut state.charged_bytes, needed).is_err() {
            // Other stripes may sit on slack credit: take it back and try
            // once more, so the bounds are exact whenever they are free.
            self.squeeze_slack(index);
            if self.charge(&mut state.charged_bytes, needed).is_err() {
                return Err(Refused::Total(item));
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
    /// when the pool's total refuses.
    fn charge(&self, charged: &mut u64, needed: u64) -> Result<(), ()> {
        let least = needed - *charged;
        // Rounding up must not overflow for an item near `u64::MAX` bytes
        // (the total then refuses it below).
        let want = least
            .checked_next_multiple_of(self.granule)
            .unwrap_or(least);
        let total = self.total_bytes.load(Ordering::Relaxed);
        let mut used = self.credit_used.load(Ordering::Relaxed);
        let grant = loop {
            let available = total.saturating_sub(used);
            if available < least {
                return Err(());
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
    }

    /// Charges a fresh item of `bytes` to the budget (invariant 6): only
    /// on a miss. `strict` (a `try_` call): refused past the limit, and
    /// nothing changes. Otherwise charged past the limit all the same
    /// (counted as an overrun) so the budget sees it, unless the claim is
    /// too large to be memory. Returns the bytes charged, which the caller
    /// frees with [`free_charged`](Self::free_charged).
    ///
    /// # Errors
    ///
    /// The budget's refusal, when `strict`.
    #[cold]
    pub(crate) fn charge_new(&self, bytes: u64, strict: bool) -> Result<u64, BudgetExceeded> {
        match self.reservation.try_grow(bytes) {
            Ok(()) => Ok(bytes),
            Err(e) if strict => {
                self.budget_refusals.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            Err(_) if bytes <= MAX_OVERRUN_CHARGE_BYTES => {
                self.budget_overruns.fetch_add(1, Ordering::Relaxed);
                self.reservation.grow(bytes);
                Ok(bytes)
            }
            Err(_) => Ok(0),
        }
    }

    /// Charges `bytes` more for an item already out (an object that grew
    /// while in use), or refuses without changing anything.
    pub(crate) fn charge_growth(&self, bytes: u64) -> Result<(), BudgetExceeded> {
        self.reservation.try_grow(bytes).inspect_err(|_| {
            self.budget_refusals.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Uncharges `bytes` of items freed (invariant 6).
    #[inline]
    pub(crate) fn free_charged(&self, bytes: u64) {
        if bytes != 0 {
            self.reservation.shrink(bytes);
        }
    }

    /// Frees one item (outside every lock) and uncharges it.
    fn free_one(&self, held: Held<I>) {
        self.free_charged(held.bytes as u64);
        drop(held.item);
    }

    /// Frees `items` (outside every lock: an object's drop is user code)
    /// and uncharges them (invariant 6).
    fn free_all(&self, items: Vec<Held<I>>) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0usize);
        for held in items {
            count += 1;
            bytes = bytes.saturating_add(held.bytes);
            // Uncharged before the drop, so a panicking drop loses no
            // count.
            self.free_charged(held.bytes as u64);
            drop(held.item);
        }
        (count, bytes)
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
    fn adjust_tier(&self, guard: &mut Guard<'_, I>, t: usize, evicted: &mut Vec<Held<I>>) {
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
                let next = a.next_cap(
                    cap,
                    hit_rate,
                    unused,
                    shared.ceiling.load(Ordering::Relaxed),
                )?;
                new_cap = next;
                Some(next)
            });
        let keep = share(
            new_cap.min(shared.max_items.load(Ordering::Relaxed)),
            parts,
            index,
        )
        .saturating_sub(tier.allotted);
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
            evicted.push(Held { item, bytes });
        }
    }

    /// Adds gets and hits a thread cache served on its own to tier `t`'s
    /// adaptive window (in the calling thread's stripe), so adaptive sizing
    /// sees all traffic, not only what reaches the store.
    #[cold]
    pub(crate) fn feed_window(&self, t: usize, gets: u64, hits: u64) {
        self.fed.fetch_add(gets, Ordering::Relaxed);
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
        self.free_all(evicted);
    }

    /// The gets between two adaptive steps, or `None` when adaptive sizing
    /// is off.
    pub(crate) fn adaptive_interval(&self) -> Option<u64> {
        self.adaptive.enabled.then_some(self.adaptive.interval)
    }

    /// Runs the adaptive step now on every stripe and tier that saw gets
    /// since its last step (the pressure controller and tests use this).
    pub(crate) fn adjust_now(&self) {
        if !self.adaptive.enabled {
            return; // caps stay where they were set
        }
        for index in 0..self.stripes.len() {
            let mut evicted = Vec::new();
            let mut guard = self.stripes.lock(index);
            for t in 0..self.tiers.len() {
                self.adjust_tier(&mut guard, t, &mut evicted);
            }
            self.settle_charge(&mut guard);
            drop(guard);
            self.free_all(evicted);
        }
    }

    /// Drops every retained item; returns (items, bytes) dropped. Their
    /// budget goes back at once (invariant 6).
    pub(crate) fn trim(&self) -> (usize, usize) {
        let (count, bytes, _) = self.trim_until(&CancellationToken::new());
        (count, bytes)
    }

    /// [`trim`](Self::trim), stripe by stripe, stopping before the next
    /// stripe once `token` is cancelled. Returns (items, bytes, cancelled).
    pub(crate) fn trim_until(&self, token: &CancellationToken) -> (usize, usize, bool) {
        let (mut count, mut bytes) = (0, 0);
        for index in 0..self.stripes.len() {
            if token.is_cancelled() {
                return (count, bytes, true);
            }
            let mut guard = self.stripes.lock(index);
            let (state, counters) = guard.parts();
            let mut dropped = Vec::new();
            let mut allotted_bytes = 0;
            for (tier, c) in state.tiers.iter_mut().zip(counters.iter()) {
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
            let (n, b) = self.free_all(dropped);
            count += n;
            bytes += b;
        }
        (count, bytes, false)
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
        let cap = shared.limit();
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
        shared.lent.fetch_add(granted, Ordering::Relaxed);
        shared
            .lent_bytes
            .fetch_add((granted * bytes) as u64, Ordering::Relaxed);
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
        let shared = &self.tiers[t];
        shared.lent.fetch_sub(count, Ordering::Relaxed);
        shared
            .lent_bytes
            .fetch_sub((count * bytes) as u64, Ordering::Relaxed);
    }

    /// Counters of tier `t` summed over stripes.
    pub(crate) fn tier_stats(&self, t: usize, size_bytes: usize) -> TierStats {
        let mut s = TierStats {
            size_bytes: size_bytes as u64,
            cap: self.tiers[t].cap.load(Ordering::Relaxed) as u64,
            ..TierStats::default()
        };
        let (mut gets, mut puts) = (0u64, 0u64);
        for counters in self.stripes.counters() {
            let c = &counters[t];
            // Puts before gets: a put follows its get, so reading in this
            // order never shows more puts than gets.
            puts = puts.wrapping_add(c.puts.get());
            gets = gets.wrapping_add(c.gets.get());
            s.hits_total = s.hits_total.wrapping_add(c.hits.get());
            s.discarded_total = s.discarded_total.wrapping_add(c.discarded.get());
            s.retained = s.retained.wrapping_add(c.retained.get());
            s.retained_bytes = s.retained_bytes.wrapping_add(c.retained_bytes.get());
        }
        s.gets_total = gets;
        s.puts_total = puts;
        s.misses_total = gets.saturating_sub(s.hits_total);
        s.allocations_total = s.misses_total;
        s.in_use = gets.saturating_sub(puts);
        s
    }

    /// Fresh allocations the budget refused.
    pub(crate) fn budget_refusals(&self) -> u64 {
        self.budget_refusals.load(Ordering::Relaxed)
    }

    /// Fresh allocations charged past the budget's limit.
    pub(crate) fn budget_overruns(&self) -> u64 {
        self.budget_overruns.load(Ordering::Relaxed)
    }

    /// Bytes the budget reservation holds: every item made and not freed
    /// (invariant 6).
    pub(crate) fn charged_bytes(&self) -> u64 {
        self.reservation.size()
    }

    /// Sets the pool's total retained bound (invariant 2: lowering it
    /// refuses new credit until what is used is under it).
    pub(crate) fn set_total_bytes(&self, bytes: usize) {
        self.total_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// The pool's total retained bound.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.total_bytes.load(Ordering::Relaxed)
    }

    /// Sets tier `t`'s cap (adaptive sizing moves it on from there).
    pub(crate) fn set_cap(&self, t: usize, cap: usize) {
        self.tiers[t].cap.store(cap, Ordering::Relaxed);
    }

    /// Sets tier `t`'s item bound and the ceiling adaptive sizing may
    /// raise its cap to.
    pub(crate) fn set_max_items(&self, t: usize, max_items: usize) {
        let shared = &self.tiers[t];
        shared.max_items.store(max_items, Ordering::Relaxed);
        shared
            .ceiling
            .store(max_items.max(self.adaptive.floor), Ordering::Relaxed);
    }

    /// What `maintenance_due` reads, from counters only (no lock).
    pub(crate) fn pressure(&self) -> Pressure {
        let mut p = Pressure {
            activity: self.fed.load(Ordering::Relaxed),
            ..Pressure::default()
        };
        for (t, shared) in self.tiers.iter().enumerate() {
            let (mut items, mut bytes) = (0u64, 0u64);
            for counters in self.stripes.counters() {
                let c = &counters[t];
                p.activity = p
                    .activity
                    .wrapping_add(c.gets.get())
                    .wrapping_add(c.puts.get());
                items = items.wrapping_add(c.retained.get());
                bytes = bytes.wrapping_add(c.retained_bytes.get());
            }
            let lent = shared.lent.load(Ordering::Relaxed) as u64;
            let lent_bytes = shared.lent_bytes.load(Ordering::Relaxed);
            p.store_bytes = p.store_bytes.wrapping_add(bytes);
            p.lent_bytes = p.lent_bytes.wrapping_add(lent_bytes);
            let held = items + lent;
            let limit = shared.limit() as u64;
            if held > limit {
                let held_bytes = bytes + lent_bytes;
                p.over_cap_bytes += held_bytes / held * (held - limit);
            }
        }
        let total = p.store_bytes + p.lent_bytes;
        p.over_cap_bytes = p
            .over_cap_bytes
            .max(total.saturating_sub(self.total_bytes()));
        p
    }
}

/// Counters behind `maintenance_due`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pressure {
    /// Gets and puts the stripes counted plus thread caches' fed windows:
    /// unchanged between two reads means no traffic reached the store.
    pub(crate) activity: u64,
    /// Bytes retained in the store.
    pub(crate) store_bytes: u64,
    /// Bytes lent to thread caches.
    pub(crate) lent_bytes: u64,
    /// Bytes held past a cap or the total bound.
    pub(crate) over_cap_bytes: u64,
}

enum Refused<I> {
    /// A bound of this stripe is reached; another stripe may take it.
    Full(Held<I>),
    /// The total refused; no stripe will do better.
    Total(Held<I>),
}

#[inline]
fn pop<I: Retainable>(
    state: &mut StripeState<I>,
    c: &TierCounters,
    t: usize,
) -> Option<(I, usize)> {
    let tier = &mut state.tiers[t];
    let Held { item, bytes } = tier.items.pop()?;
    // Invariant 5: exactly what this item added when it went in.
    tier.bytes -= bytes;
    state.retained_bytes -= bytes;
    c.retained.sub(1);
    c.retained_bytes.sub(bytes as u64);
    Some((item, bytes))
}
