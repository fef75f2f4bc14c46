//! [`Presence`]: lets a reclaimer take over state that one owner thread
//! uses without locks, while that owner is away, at the cost of two plain
//! stores and a load per owner operation.
//!
//! The owner marks itself inside before each operation on its state and
//! outside after it. A reclaimer (a compaction, a trim) that finds it
//! outside asks for a takeover, runs one process-wide memory barrier
//! ([`fence_requests`]: `membarrier(2)`), and checks again: if the owner is
//! still outside, the state is the reclaimer's until its [`Takeover`]
//! drops, and an owner that comes back meanwhile waits for it.
//!
//! ```text
//!   owner                                 reclaimer
//!   state = seq|BUSY  (store)             takeover = REQUESTED  (CAS)
//!   light_fence()     (compiler only)     heavy_fence()         (membarrier)
//!   takeover != NONE? (load) ─► wait      state & BUSY?         (load) ─► withdraw
//!   ... works on its state ...            ... works on the owner's state ...
//!   state = seq       (store, Release)    takeover = TAKEN      (store, Release)
//! ```
//!
//! Why it is sound (asymmetric Dekker): the barrier runs a full fence on
//! every thread of the process, so for the owner's store of `BUSY` either
//! it came before that fence, and the reclaimer's load after the barrier
//! sees it (it withdraws), or it came after, and so did the owner's load of
//! `takeover`, which then sees `REQUESTED` (it waits). Either way the two
//! never work on the state at once.
//!
//! Invariants:
//!
//! 1. The owner touches its state only between [`enter`](Presence::enter)
//!    and [`exit`](Presence::exit), and never while `takeover` reads
//!    `REQUESTED` with a reclaimer's confirmation pending or held.
//! 2. A reclaimer touches the state only while it holds a [`Takeover`],
//!    which [`Request::confirm`] gives only for a request that a successful
//!    [`fence_requests`] fenced after it was made (the types enforce the
//!    order: request, fence, confirm).
//! 3. Only reclaimers move `takeover` out of `NONE` and `REQUESTED`; only
//!    the owner moves it out of `TAKEN`.
//!
//! Where the kernel has no private expedited membarrier, `heavy_fence`
//! returns false and reclaimers withdraw: nothing is taken over (the owner
//! side never pays for a real fence). Under loom and Miri both sides use a
//! `SeqCst` fence instead, which is the textbook Dekker, so the protocol
//! itself is modelled and checked there.

use crate::sync::{AtomicU8, AtomicU64, Ordering, spin_wait};

const BUSY: u64 = 1;
const NONE: u8 = 0;
const REQUESTED: u8 = 1;
const TAKEN: u8 = 2;

/// The owner's side of the fence: a compiler fence (the reclaimer's
/// [`fence_requests`] supplies the hardware one).
#[inline(always)]
pub fn light_fence() {
    #[cfg(not(any(loom, miri)))]
    std::sync::atomic::compiler_fence(Ordering::SeqCst);
    #[cfg(any(loom, miri))]
    crate::sync::fence(Ordering::SeqCst);
}

/// The reclaimer's side: a memory barrier on every thread of the process.
/// False if none can be had here (then nothing may be taken over).
fn heavy_fence() -> bool {
    #[cfg(not(any(loom, miri)))]
    {
        crate::os::process_barrier()
    }
    #[cfg(any(loom, miri))]
    {
        crate::sync::fence(Ordering::SeqCst);
        true
    }
}

/// One owner's presence flag and the takeover handshake; see the module
/// docs.
#[derive(Debug)]
pub struct Presence {
    /// The owner's operation count (`<< 1`) and `BUSY` while inside;
    /// written by the owner only.
    state: AtomicU64,
    /// `NONE`, `REQUESTED` or `TAKEN` (invariant 3).
    takeover: AtomicU8,
}

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

impl Presence {
    /// An owner that is outside, never taken over.
    pub fn new() -> Presence {
        Presence {
            state: AtomicU64::new(0),
            takeover: AtomicU8::new(NONE),
        }
    }

    /// Owner: marks the start of an operation on its state, unless it is
    /// inside one already (a re-entrant call: `None`, and nothing changes).
    /// Returns the value to pass to [`exit`](Self::exit). The owner's count
    /// of operations lives in the state word itself (bumped here), so a
    /// reclaimer can tell an idle owner from a busy one; if a reclaimer
    /// took the state over since the owner's last operation, the owner sees
    /// what the reclaimer left (invariant 2).
    #[inline(always)]
    pub fn try_enter(&self) -> Option<u64> {
        // Only the owner writes `state`: a plain load and store.
        let state = self.state.load(Ordering::Relaxed);
        if state & BUSY != 0 {
            return None;
        }
        let next = state.wrapping_add(2);
        self.state.store(next | BUSY, Ordering::Relaxed);
        light_fence();
        if self.takeover.load(Ordering::Relaxed) != NONE {
            self.wait_out_takeover();
        }
        Some(next)
    }

    /// Waits while a reclaimer decides or works; acknowledges a finished
    /// takeover (its Acquire load makes the reclaimer's writes visible).
    #[cold]
    #[inline(never)]
    fn wait_out_takeover(&self) {
        let mut spins = 0;
        loop {
            match self.takeover.load(Ordering::Acquire) {
                REQUESTED => {
                    spin_wait(spins);
                    spins += 1;
                }
                TAKEN => {
                    self.takeover.store(NONE, Ordering::Release);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Owner: marks the end of an operation (`entered`: what
    /// [`try_enter`](Self::try_enter) returned).
    #[inline(always)]
    pub fn exit(&self, entered: u64) {
        self.state.store(entered, Ordering::Release);
    }

    /// Owner: [`exit`](Self::exit) without the value `try_enter` returned,
    /// for a caller that would rather not carry it: the owner is the only
    /// writer of `state`, so what it reads now is what `try_enter` stored,
    /// and clearing the busy bit yields the same value `exit` would store.
    /// Call only while inside (after a `try_enter` that returned `Some`).
    #[inline(always)]
    pub fn exit_current(&self) {
        let state = self.state.load(Ordering::Relaxed);
        debug_assert!(state & BUSY != 0, "exit_current while outside");
        self.state.store(state & !BUSY, Ordering::Release);
    }

    /// Reclaimer: the owner's published operation count, and whether it is
    /// inside an operation right now.
    pub fn observe(&self) -> (u64, bool) {
        let state = self.state.load(Ordering::Acquire);
        (state >> 1, state & BUSY != 0)
    }

    /// True while the owner is inside an operation: for the owner itself,
    /// to tell a re-entrant call from a first one.
    #[inline(always)]
    pub fn is_entered(&self) -> bool {
        self.state.load(Ordering::Relaxed) & BUSY != 0
    }

    /// Reclaimer, step 1: asks to take the state over. `None` if the owner
    /// is inside or another takeover is pending. Pass the requests to one
    /// [`fence_requests`] (for any number of them), then
    /// [`confirm`](Request::confirm) each; a request dropped unconfirmed
    /// (or on unwind) is withdrawn, and its owner goes on.
    pub fn request(&self) -> Option<Request<'_>> {
        if self.observe().1 {
            return None;
        }
        self.takeover
            .compare_exchange(NONE, REQUESTED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            .then_some(Request {
                presence: self,
                fenced: false,
            })
    }
}

/// A pending takeover request (step 1 done). Withdrawn when dropped
/// unconfirmed (invariant 3: only its reclaimer moves it on).
#[derive(Debug)]
#[must_use = "a request dropped unconfirmed is withdrawn"]
pub struct Request<'a> {
    presence: &'a Presence,
    /// Set by a successful [`fence_requests`] that ran after the request.
    fenced: bool,
}

/// Reclaimer, step 2: one heavy fence (`membarrier(2)`) for every request in `requests`
/// (each made before this call). True if it ran; false where no barrier can
/// be had, and then no request can be confirmed (drop them).
pub fn fence_requests(requests: &mut [Request<'_>]) -> bool {
    if requests.is_empty() || !heavy_fence() {
        return false;
    }
    for r in requests.iter_mut() {
        r.fenced = true;
    }
    true
}

impl<'a> Request<'a> {
    /// Reclaimer, step 3: the takeover, if the request was fenced and the
    /// owner is still outside (invariant 2); else it is withdrawn and the
    /// owner goes on.
    pub fn confirm(self) -> Option<Takeover<'a>> {
        if !self.fenced || self.presence.observe().1 {
            return None; // dropped: withdrawn
        }
        let presence = self.presence;
        std::mem::forget(self);
        Some(Takeover { presence })
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        self.presence.takeover.store(NONE, Ordering::Release);
    }
}

/// A reclaimer's hold on an owner's state; the owner waits while it lives.
/// Dropping it hands the state back, marked taken over.
#[derive(Debug)]
#[must_use = "the takeover ends when this drops"]
pub struct Takeover<'a> {
    presence: &'a Presence,
}

impl Drop for Takeover<'_> {
    fn drop(&mut self) {
        self.presence.takeover.store(TAKEN, Ordering::Release);
    }
}
