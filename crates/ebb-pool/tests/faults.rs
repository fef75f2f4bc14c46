//! Fault injection for ebb-pool (issue 12).
//!
//! ebb-pool never calls the OS layer: its buffers are 64-byte aligned
//! allocations of the global allocator (`std::alloc::alloc_zeroed`, in
//! `raw.rs`) and its objects are whatever the caller's factory makes. No
//! path reaches `ebb_core::os::Mapping` or `madvise`, so the schedules of
//! `ebb_core::os::fault` cannot make any pool call fail;
//! `no_pool_path_reaches_the_os_layer` arms every schedule and runs every
//! fallible path to prove it (and fails if a pool path ever starts mapping
//! memory through `ebb_core::os` without a fault test of its own).
//!
//! What can fail is the global allocator refusing. That is tested with a
//! real refusal instead of a schedule: a request of 2^47 bytes (128 TiB,
//! the whole user address space of x86-64) passes `Layout` but no `mmap`
//! can back it. Public fallible paths, and what covers them:
//!
//! - `BufferPool::try_get` past the largest tier: `Error::OutOfMemory`,
//!   pool and budget unchanged
//!   (`refused_oversized_get_is_out_of_memory_and_changes_nothing`);
//! - `PooledBuf::try_reserve` past the largest tier: `Error::OutOfMemory`,
//!   buffer unchanged (`refused_reserve_is_out_of_memory_and_keeps_the_buffer`);
//! - `BufferPool::try_get` within a tier: a tier buffer is at most the
//!   largest tier (MiBs), so a refusal there cannot be provoked without a
//!   failing global allocator; its error path (`make_fresh`) is the same
//!   shape as the oversized one (uncharge, then `OutOfMemory`). Not
//!   covered.
//! - `PooledBuf::try_set_len` allocates nothing (`TooLarge` past the
//!   capacity), `BufferPool::new` and `ObjectPool::new` allocate no buffer,
//!   `ObjectPool::try_get` fails only on the budget (the factory's own
//!   allocation failure aborts, as any Rust allocation does): none can
//!   fail on memory; they run under the armed schedules.
//!
//! Since the refused size cannot succeed, "the same call succeeds" is
//! shown with the same path (an oversized buffer) at a size the system
//! can give.

#![cfg(not(miri))]

use ebb_core::MemoryBudget;
use ebb_core::os::fault;
use ebb_pool::{BufferPool, Error, ObjectPool, ObjectPoolConfig, PoolConfig};

/// More than any `mmap` can give (the x86-64 user address space), less
/// than `isize::MAX`: `Layout` accepts it, the allocator refuses it.
const REFUSED: usize = 1 << 47;

fn pool(budget: &MemoryBudget) -> BufferPool {
    BufferPool::new(PoolConfig::default().with_budget(budget, "faults")).unwrap()
}

#[test]
fn no_pool_path_reaches_the_os_layer() {
    fault::fail_maps(0, u32::MAX);
    fault::fail_trims(0, u32::MAX);
    fault::fail_advises(0, u32::MAX);
    let budget = MemoryBudget::unlimited();
    let pool = pool(&budget);
    let largest = *pool.tiers().last().unwrap();
    let mut small = pool.try_get(100).unwrap();
    small.extend_from_slice(&[7; 100]);
    small.try_reserve(10_000).unwrap();
    small.try_set_len(small.capacity()).unwrap();
    let big = pool.try_get(largest + 1).unwrap();
    assert!(big.is_oversized());
    let got = pool.get(4096);
    drop((small, big, got));
    assert!(pool.try_get(4096).is_ok());
    pool.trim();
    let objects = ObjectPool::new(ObjectPoolConfig::default(), || vec![0u8; 64]).unwrap();
    let o = objects.try_get().unwrap();
    drop(o);
    let o = objects.get();
    drop(o);
    fault::reset();
    assert_eq!(objects.stats().gets_total, 2);
}

#[test]
fn refused_oversized_get_is_out_of_memory_and_changes_nothing() {
    let budget = MemoryBudget::unlimited();
    let pool = pool(&budget);
    let largest = *pool.tiers().last().unwrap();
    let mut held = pool.try_get(1000).unwrap();
    held.fill(0x5a);
    let before = pool.stats();
    let charged = budget.reserved_bytes();
    let r = pool.try_get(REFUSED);
    match &r {
        Err(Error::OutOfMemory { requested_bytes }) => assert_eq!(*requested_bytes, REFUSED),
        other => panic!("expected OutOfMemory, got {:?}", other.as_ref().err()),
    }
    assert_eq!(pool.stats(), before);
    assert_eq!(budget.reserved_bytes(), charged);
    assert!(held.iter().all(|&b| b == 0x5a) && held.len() == 1000);
    // The same path at a size the system can give.
    let mut big = pool.try_get(largest * 2).unwrap();
    big.extend_from_slice(&[1; 64]);
    assert!(big.is_oversized());
    assert_eq!(pool.stats().oversized_in_use, before.oversized_in_use + 1);
    drop(big);
    assert_eq!(budget.reserved_bytes(), charged);
}

#[test]
fn refused_reserve_is_out_of_memory_and_keeps_the_buffer() {
    let budget = MemoryBudget::unlimited();
    let pool = pool(&budget);
    let largest = *pool.tiers().last().unwrap();
    let mut buf = pool.try_get(1000).unwrap();
    buf.fill(0xa5);
    let (cap, before, charged) = (buf.capacity(), pool.stats(), budget.reserved_bytes());
    let r = buf.try_reserve(REFUSED);
    assert!(
        matches!(r, Err(Error::OutOfMemory { requested_bytes }) if requested_bytes >= REFUSED),
        "{r:?}"
    );
    assert_eq!((buf.len(), buf.capacity()), (1000, cap));
    assert!(buf.iter().all(|&b| b == 0xa5));
    assert_eq!(pool.stats(), before);
    assert_eq!(budget.reserved_bytes(), charged);
    // The same path at a size the system can give: the bytes move to an
    // oversized buffer.
    buf.try_reserve(largest * 2).unwrap();
    assert!(buf.is_oversized() && buf.capacity() >= 1000 + largest * 2);
    assert_eq!(buf.len(), 1000);
    assert!(buf.iter().all(|&b| b == 0xa5));
}
