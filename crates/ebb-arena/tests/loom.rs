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
//! The handle table's free lists (a tagged lock-free stack per stripe),
//! `claimed` and the block growth run here as the real `SlotTable` on the
//! sync shim (a tiny table under loom: 4 chunks of 4 slots); so does the
//! ready queue whose count once changed outside its lock.
//!
//! Run with `just loom`.

#![cfg(loom)]

use ebb_arena::__private::{ReadyQueue, Retired, Slot, SlotTable};
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

#[test]
fn stashed_slot_publish_never_lets_a_stale_handle_read() {
    // A thread's stash keeps a vacant slot with its generation and
    // publishes into it with two plain stores (`publish_vacant`); a reader
    // with the handle of the slot's previous record must see that record
    // or nothing, never the new one.
    loom::model(|| {
        let slot = Arc::new(Slot::new());
        let old = slot.publish(A);
        assert_eq!(slot.remove(old), Some(A));
        let vacant = old.wrapping_add(1);
        let s = Arc::clone(&slot);
        let reader = loom::thread::spawn(move || (s.read(old), s.read(vacant)));
        let new = slot.publish_vacant(C, vacant);
        let (stale, forged) = reader.join().unwrap();
        assert_eq!(stale, None, "a removed handle read {stale:?}");
        assert_eq!(forged, None, "a vacant generation read {forged:?}");
        assert_eq!(slot.read(new), Some(C));
    });
}

#[test]
fn free_list_hands_each_index_to_one_claimer() {
    // Two threads release indices onto the free lists and claim them back
    // concurrently: no index is claimed twice, none is lost.
    loom::model(|| {
        let table = Arc::new(SlotTable::new());
        let block: Vec<u32> = table.grow_block(3).collect();
        assert_eq!(block, [0, 1, 2]);
        table.release(0);
        let t = Arc::clone(&table);
        let other = loom::thread::spawn(move || {
            t.release(1);
            t.claim_free()
        });
        let mine = table.claim_free();
        let theirs = other.join().unwrap();
        let mut claimed: Vec<u32> = [mine, theirs].into_iter().flatten().collect();
        claimed.extend(std::iter::from_fn(|| table.claim_free()));
        claimed.sort_unstable();
        assert_eq!(claimed, [0, 1], "each released index claimed exactly once");
    });
}

#[test]
fn concurrent_growth_hands_out_disjoint_blocks() {
    // `claimed` (what scans read) covers every index handed out, and two
    // threads growing at once get disjoint blocks of initialized slots.
    loom::model(|| {
        let table = Arc::new(SlotTable::new());
        let t = Arc::clone(&table);
        let other = loom::thread::spawn(move || {
            let block: Vec<u32> = t.grow_block(3).collect();
            let seen = t.high_water();
            (block, seen)
        });
        let mine: Vec<u32> = table.grow_block(3).collect();
        assert!(table.high_water() >= mine.iter().max().map_or(0, |m| m + 1));
        let (theirs, seen) = other.join().unwrap();
        assert!(seen >= theirs.iter().max().map_or(0, |m| m + 1));
        let mut all: Vec<u32> = mine.iter().chain(&theirs).copied().collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3, 4, 5]);
        for i in all {
            let slot = table.get(i).expect("a claimed index has a slot");
            assert_eq!(slot.read(0), None);
            assert_eq!(slot.occupied(), None);
        }
    });
}

#[test]
fn ready_queue_count_never_runs_ahead_of_its_batches() {
    // A push and a swap race: the count a writer reads to decide whether
    // to drain is never more than what was queued (it once wrapped below
    // zero, reading ~1.8e19, when the swap subtracted before the push
    // added).
    loom::model(|| {
        let queue = Arc::new(ReadyQueue::default());
        let q = Arc::clone(&queue);
        let pusher = loom::thread::spawn(move || {
            q.push_all(vec![Retired {
                slab: 0,
                records: 3,
                bytes: 30,
            }]);
            q.len()
        });
        let mut out = Vec::new();
        queue.swap_into(&mut out);
        let seen = queue.len();
        assert!(seen <= 3, "count read {seen}");
        let seen_by_pusher = pusher.join().unwrap();
        assert!(seen_by_pusher <= 3, "count read {seen_by_pusher}");
        let taken: u32 = out.iter().flatten().map(|r| r.records).sum();
        let mut rest = Vec::new();
        queue.swap_into(&mut rest);
        let left: u32 = rest.iter().flatten().map(|r| r.records).sum();
        assert_eq!(taken + left, 3);
        assert_eq!(queue.len(), 0);
    });
}
