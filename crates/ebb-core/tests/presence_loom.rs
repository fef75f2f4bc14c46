//! loom model of the takeover handshake (`ebb_core::presence`): an owner
//! working on its state and a reclaimer taking it over never touch the
//! state at once (loom's `UnsafeCell` fails the model on any overlap), and
//! every change each makes survives. Under loom both fences are `SeqCst`
//! fences, standing in for the compiler fence plus `membarrier(2)`.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release -p ebb-core --test presence_loom`.

#![cfg(loom)]

use ebb_core::presence::{Presence, fence_requests};
use loom::cell::UnsafeCell;
use loom::sync::Arc;

struct Owned {
    presence: Presence,
    /// Slabs the owner holds (the state a reclaimer takes).
    slabs: UnsafeCell<u32>,
}

// SAFETY: `slabs` is reached only under the presence protocol (the model
// checks exactly that).
unsafe impl Sync for Owned {}

#[test]
fn owner_and_reclaimer_never_overlap() {
    loom::model(|| {
        let owned = Arc::new(Owned {
            presence: Presence::new(),
            slabs: UnsafeCell::new(1),
        });
        let o = Arc::clone(&owned);
        let owner = loom::thread::spawn(move || {
            for _ in 0..2 {
                let entered = o.presence.try_enter().expect("not re-entrant");
                // The owner adds a slab when it has none.
                o.slabs.with_mut(|s| {
                    // SAFETY: inside the owner's section (invariant 1).
                    let s = unsafe { &mut *s };
                    if *s == 0 {
                        *s = 1;
                    }
                });
                o.presence.exit(entered);
            }
        });
        let mut took = 0;
        if let Some(request) = owned.presence.request() {
            let mut requests = [request];
            assert!(fence_requests(&mut requests));
            let [request] = requests;
            if let Some(_takeover) = request.confirm() {
                owned.slabs.with_mut(|s| {
                    // SAFETY: the takeover is held (invariant 2).
                    let s = unsafe { &mut *s };
                    took = *s;
                    *s = 0;
                });
            }
        }
        owner.join().unwrap();
        let left = owned.slabs.with(|s| {
            // SAFETY: both threads are done.
            unsafe { *s }
        });
        assert!(took <= 1 && left <= 1);
        // The owner's last operation left it holding one slab, unless the
        // takeover came after it.
        assert!(left == 1 || took == 1, "took {took}, left {left}");
    });
}
