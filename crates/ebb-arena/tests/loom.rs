//! loom model of the handle slot protocol: a compaction move racing with a
//! remove, with a replace, and with a reader. Places are plain numbers here;
//! what matters is which places end up referenced, retired or freed.
//!
//! The slot has one read-modify-write per operation: a remove is a CAS of
//! the generation, a replace or move takes the slot's lock bit with a CAS
//! and stores the new place; readers never wait.
//!
//! Properties: a record is never lost, duplicated or resurrected; every
//! place is disposed of exactly once (retired by the winner or freed by the
//! loser of a race); a reader sees the old place or the new one, never a
//! vacant slot, while its handle is current.
//!
//! Run with `just loom`.

#![cfg(loom)]

use ebb_arena::__private::Slot;
use loom::sync::Arc;

const A: u64 = 1; // the record's place before the move
const B: u64 = 2; // the compaction's copy
const C: u64 = 3; // a replacement's place

/// What the compactor does with the outcome of its CAS: the place it must
/// dispose of (retire the old one when it won, free its copy when it lost).
fn compactor(slot: &Slot, generation: u32) -> u64 {
    if slot.move_place(generation, A, B) {
        A
    } else {
        B
    }
}

#[test]
fn move_racing_with_remove_disposes_each_place_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let generation = slot.publish(A);
        let s = Arc::clone(&slot);
        let mover = loom::thread::spawn(move || compactor(&s, generation));
        let removed = slot.remove(generation).expect("the only remover wins");
        let disposed_by_mover = mover.join().unwrap();
        let mut disposed = [removed, disposed_by_mover];
        disposed.sort_unstable();
        assert_eq!(disposed, [A, B], "each place disposed of exactly once");
        assert_eq!(slot.read(generation), None, "removed stays removed");
        assert_eq!(slot.occupied_place(), None);
    });
}

#[test]
fn move_racing_with_replace_keeps_the_replacement() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let generation = slot.publish(A);
        let s = Arc::clone(&slot);
        let mover = loom::thread::spawn(move || compactor(&s, generation));
        let retired_by_replace = slot.replace(generation, C).expect("record is live");
        let disposed_by_mover = mover.join().unwrap();
        let mut disposed = [retired_by_replace, disposed_by_mover];
        disposed.sort_unstable();
        assert_eq!(disposed, [A, B]);
        assert_eq!(
            slot.read(generation),
            Some(C),
            "the replacement is never lost"
        );
    });
}

#[test]
fn reader_sees_old_or_new_place_during_a_move() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let generation = slot.publish(A);
        let s = Arc::clone(&slot);
        let reader = loom::thread::spawn(move || s.read(generation));
        assert!(slot.move_place(generation, A, B));
        let seen = reader.join().unwrap();
        assert!(seen == Some(A) || seen == Some(B), "{seen:?}");
    });
}

#[test]
fn stale_handle_never_reads_a_reused_slot() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let old = slot.publish(A);
        let s = Arc::clone(&slot);
        let reader = loom::thread::spawn(move || s.read(old));
        assert_eq!(slot.remove(old), Some(A));
        let new = slot.publish(C);
        assert_ne!(old, new);
        let seen = reader.join().unwrap();
        assert!(
            seen == Some(A) || seen.is_none(),
            "stale handle saw {seen:?}"
        );
        assert_eq!(slot.read(old), None);
        assert_eq!(slot.read(new), Some(C));
    });
}

#[test]
fn two_removers_one_wins() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let generation = slot.publish(A);
        let s = Arc::clone(&slot);
        let other = loom::thread::spawn(move || s.remove(generation));
        let mine = slot.remove(generation);
        let theirs = other.join().unwrap();
        let mut won: Vec<u64> = [mine, theirs].into_iter().flatten().collect();
        won.sort_unstable();
        assert_eq!(won, [A], "exactly one remover gets the place");
    });
}

#[test]
fn remove_racing_with_replace_disposes_each_place_once() {
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let generation = slot.publish(A);
        let s = Arc::clone(&slot);
        // The replacer retires the old place if it won, else frees its own.
        let replacer = loom::thread::spawn(move || s.replace(generation, C).unwrap_or(C));
        let removed = slot.remove(generation).expect("the only remover wins");
        let disposed_by_replacer = replacer.join().unwrap();
        let mut disposed = [removed, disposed_by_replacer];
        disposed.sort_unstable();
        assert_eq!(disposed, [A, C], "each place disposed of exactly once");
        assert_eq!(slot.read(generation), None);
    });
}
