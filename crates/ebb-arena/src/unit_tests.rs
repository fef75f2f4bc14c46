//! Tests of crate-internal mechanisms that no public call can reach on
//! purpose: a panic inside a thread's entry or a move group, a re-entrant
//! call, and a table that runs out of indices.

use std::panic::{AssertUnwindSafe, catch_unwind};

use ebb_slab::SlabConfig;

use crate::compact::LockedGroup;
use crate::raw::{RawArena, RecordFormat};
use crate::slots::SlotTable;

const FORMAT: RecordFormat = RecordFormat::Fixed { len: 8, align: 8 };

fn arena() -> RawArena {
    RawArena::new(SlabConfig::default().with_slab_bytes(64 << 10), FORMAT).expect("config")
}

fn insert(arena: &RawArena, value: u64) -> u64 {
    // SAFETY: writes one aligned u64, the whole 8-byte record.
    unsafe { arena.insert(FORMAT, 8, |p| p.cast::<u64>().write(value)) }.expect("insert")
}

#[test]
fn a_panic_inside_a_threads_entry_leaves_it_usable() {
    let arena = arena();
    insert(&arena, 1);
    let caught = catch_unwind(AssertUnwindSafe(|| {
        arena.reclaim.with_local(|_| panic!("a broken invariant"));
    }));
    assert!(caught.is_err());
    // The entry is marked free again: later calls use it, no panic.
    let bits = insert(&arena, 2);
    assert!(arena.read(bits).is_some());
    assert_eq!(arena.len(), 2);
}

#[test]
fn a_reentrant_call_runs_on_a_temporary_entry() {
    let arena = arena();
    let inner = arena.reclaim.with_local(|_outer| insert(&arena, 5));
    let (guard, ptr) = arena.read(inner).expect("stored");
    // SAFETY: a live 8-byte record, read under the pin.
    assert_eq!(unsafe { ptr.cast::<u64>().read() }, 5);
    drop(guard);
    assert_eq!(arena.len(), 1, "the temporary entry handed its count back");
    assert!(arena.remove(FORMAT, inner));
    assert_eq!(arena.len(), 0);
}

#[test]
fn a_panic_inside_a_move_group_unlocks_its_slots() {
    let table = SlotTable::new();
    let indices: Vec<u32> = table.grow_block(4).collect();
    let group: Vec<(u32, u32, u64)> = indices
        .iter()
        .map(|&i| {
            let slot = table.get(i).expect("slot");
            (i, slot.publish(100 + u64::from(i)), 100 + u64::from(i))
        })
        .collect();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let mut locked = LockedGroup::new(&table);
        locked.lock(&group);
        assert_eq!(locked.held().len(), 4);
        locked.finish_next(7); // the first one moved, then a panic
        panic!("a broken invariant mid-group");
    }));
    assert!(caught.is_err());
    // Every slot is unlocked: removes finish at once (they would spin
    // forever on a locked slot).
    for (k, &(index, generation, place)) in group.iter().enumerate() {
        let slot = table.get(index).expect("slot");
        let expected = if k == 0 { 7 } else { place };
        assert_eq!(slot.remove(generation), Some(expected));
    }
}

#[test]
fn a_full_table_sends_vacant_slots_where_every_thread_finds_them() {
    let arena =
        RawArena::with_slot_limit(SlabConfig::default().with_slab_bytes(64 << 10), FORMAT, 64)
            .expect("config");
    let handles: Vec<u64> = (0..64).map(|v| insert(&arena, v)).collect();
    // SAFETY: as in `insert`.
    let full = unsafe { arena.insert(FORMAT, 8, |p| p.cast::<u64>().write(0)) };
    assert!(matches!(
        full,
        Err(crate::Error::TooManyRecords { max: 64 })
    ));
    for bits in handles {
        assert!(arena.remove(FORMAT, bits));
    }
    // Another thread reaches every one of the 64 vacant slots, though this
    // thread (now idle) removed them all.
    std::thread::scope(|s| {
        s.spawn(|| {
            for v in 0..64 {
                insert(&arena, v);
            }
        });
    });
    assert_eq!(arena.len(), 64);
}

#[test]
fn a_parked_threads_state_is_taken_over_and_it_goes_on() {
    if !cfg!(miri) && !ebb_core::os::process_barrier_available() {
        return; // nothing can be taken over here (no membarrier)
    }
    let arena = arena();
    let parked = std::sync::Barrier::new(2);
    let resume = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let kept = insert(&arena, 1);
            let gone = insert(&arena, 2);
            assert!(arena.remove(FORMAT, gone)); // a retired record, a stashed slot
            parked.wait();
            resume.wait();
            // After the takeover: a fresh slab, the slot stash refilled.
            let again = insert(&arena, 3);
            assert!(arena.read(again).is_some());
            kept
        });
        parked.wait();
        let report = arena.reclaim_threads(true);
        resume.wait();
        let kept = worker.join().expect("worker");
        assert!(report.taken >= 1, "{report:?}");
        assert!(
            arena.read(kept).is_some(),
            "a taken-over thread's record stays"
        );
    });
    assert_eq!(arena.len(), 2);
    arena.reclaim_now();
    assert_eq!(arena.stats().live_bytes, 16);
}
