//! [`OwnerState`]: state one owner thread works on without locks, which a
//! reclaimer can take over while the owner is outside it (the thread
//! caches' magazines: a trim reaches an idle thread's buffers).
//!
//! The handshake is `ebb_core::presence`: the owner marks itself inside
//! (two plain stores and a load, a compiler fence), the reclaimer asks,
//! runs one process-wide barrier for all its requests, and confirms.
//!
//! ```text
//!   owner thread                       reclaimer (trim, maintenance)
//!   with_owner(|s| ..)                 take_over([a, b, c], |i, s| ..)
//!     try_enter  ─ waits if taken ─┐     request each outside owner
//!     f(&mut s)                    │     fence_requests  (membarrier, once)
//!     exit                         └──── confirm each; f(i, &mut s); drop
//! ```
//!
//! Invariants:
//!
//! 1. `state` is reached by the owner only inside [`with_owner`]
//!    (entered), or through [`get_unchecked`] once no reclaimer can reach
//!    the state any more (the caller's contract); by a reclaimer only
//!    while it holds the owner's [`Takeover`](ebb_core::presence::Takeover).
//!    The presence protocol makes the two exclusive (its invariants 1, 2).
//! 2. Only one thread acts as the owner of a state (the `unsafe`
//!    contract of [`with_owner`]): the presence word is written with plain
//!    stores, which two owners would race on.
//!
//! [`with_owner`]: OwnerState::with_owner
//! [`get_unchecked`]: OwnerState::get_unchecked

use std::cell::UnsafeCell;

use ebb_core::presence::{Presence, fence_requests};

/// State of one owner thread that reclaimers may take over; see the
/// module docs.
pub struct OwnerState<S> {
    presence: Presence,
    /// Invariant 1.
    state: UnsafeCell<S>,
}

// SAFETY: the state is reached by one thread at a time (invariant 1: the
// owner while entered, a reclaimer while it holds the takeover, which the
// presence protocol makes exclusive), so it moves between threads like a
// value behind a lock: `S: Send` is all it needs. The presence is atomics.
unsafe impl<S: Send> Sync for OwnerState<S> {}

impl<S> OwnerState<S> {
    /// State whose owner is outside and was never taken over.
    pub fn new(state: S) -> OwnerState<S> {
        OwnerState {
            presence: Presence::new(),
            state: UnsafeCell::new(state),
        }
    }

    /// Owner: runs `f` on the state, marked inside; waits first while a
    /// reclaimer holds it. `None` (and `f` does not run) on a re-entrant
    /// call, inside another `with_owner` of this state.
    ///
    /// # Safety
    ///
    /// Only one thread, the owner, ever calls this or
    /// [`get_unchecked`](Self::get_unchecked) on this state (invariant 2).
    #[inline(always)]
    pub unsafe fn with_owner<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        /// Marks the owner outside again, on return and on unwind alike.
        struct Exit<'a>(&'a Presence, u64);
        impl Drop for Exit<'_> {
            #[inline(always)]
            fn drop(&mut self) {
                self.0.exit(self.1);
            }
        }
        let entered = self.presence.try_enter()?;
        let _exit = Exit(&self.presence, entered);
        // SAFETY: entered just now, so no reclaimer holds or can confirm a
        // takeover until we exit (presence invariants 1, 2), and no other
        // owner call is live (the caller's contract; a re-entrant one
        // found the presence entered and returned above).
        Some(f(unsafe { &mut *self.state.get() }))
    }

    /// Owner: the state without the handshake.
    ///
    /// # Safety
    ///
    /// - the caller is the owner (invariant 2) and holds no other
    ///   reference to the state;
    /// - no reclaimer can reach this state any more (it left every
    ///   registry a reclaimer reads), and whatever the last reclaimer
    ///   wrote happens before this call (the registry's lock orders it).
    #[expect(
        clippy::mut_from_ref,
        reason = "exclusive by the caller's contract (# Safety)"
    )]
    pub unsafe fn get_unchecked(&self) -> &mut S {
        // SAFETY: the caller's contract: nobody else reaches the state.
        unsafe { &mut *self.state.get() }
    }

    /// Reclaimer: takes over every state in `states` whose owner is
    /// outside it, runs `f(index, state)` on each (`index`: its place in
    /// `states`), and hands each back, marked taken over. Owners that
    /// come back meanwhile wait; owners inside are skipped. Returns how
    /// many were taken, or `None` where no process-wide barrier can be had
    /// (then none is). `f` should be short: owners wait while it runs.
    pub fn take_over<'a>(
        states: impl IntoIterator<Item = &'a OwnerState<S>>,
        mut f: impl FnMut(usize, &mut S),
    ) -> Option<usize>
    where
        S: 'a,
    {
        let (mut requests, picked): (Vec<_>, Vec<_>) = states
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| Some((s.presence.request()?, (i, s))))
            .unzip();
        if requests.is_empty() {
            return Some(0);
        }
        if !fence_requests(&mut requests) {
            return None; // the requests withdraw as they drop
        }
        let mut taken = 0;
        for (request, (i, s)) in requests.into_iter().zip(picked) {
            let Some(takeover) = request.confirm() else {
                continue;
            };
            // SAFETY: we hold the owner's takeover: it is outside and
            // waits until the takeover drops (invariant 1); another
            // reclaimer cannot hold one at once (its request would have
            // failed), so this is the only reference.
            f(i, unsafe { &mut *s.state.get() });
            drop(takeover);
            taken += 1;
        }
        Some(taken)
    }
}
