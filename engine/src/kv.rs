//! [`KvStore`]: one dataset's key-value records, keys and values both in
//! ebb memory.
//!
//! A record is one blob in a `BlobArena`: the key's length (LEB128, one
//! byte for keys under 128 bytes), the key, the value. The key index is
//! `SHARDS` hashbrown `HashTable`s of handles alone (8 bytes and a control
//! byte per bucket, no key copy, no stored hash: a resize rehashes each key
//! from the arena), each behind its own lock, whose
//! allocation size is charged to the dataset's `kv` consumer as it grows and
//! given back as it shrinks.
//!
//! Invariants:
//!
//! 1. A table entry's handle names a live record (so its key, and the hash
//!    a resize needs, can always be read from the arena); an entry is replaced or removed under its shard's write
//!    lock, and the record it named is removed from the arena only after
//!    that, so a reader that found a handle and then sees it gone (`None`
//!    from the arena) knows the entry changed and looks again.
//! 2. The `kv` reservation holds every shard's `allocation_size()` (the
//!    arena charges its own slabs to the same consumer).

use std::hash::BuildHasher;

use ebb_arena::{BlobArena, BlobHandle, SlabConfig};
use ebb_core::{MemoryBudget, Reservation};
use ebb_pool::PooledBuf;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::RwLock;

use crate::error::{Error, Result};

/// The longest key accepted (64 KiB).
pub const MAX_KEY_BYTES: usize = 64 << 10;

/// Key-table shards: enough that two writers rarely share one.
const SHARDS: usize = 32;

/// A table entry: the record's handle (invariant 1).
#[derive(Clone, Copy)]
struct Entry {
    handle: BlobHandle,
}

#[derive(Default)]
struct Shard {
    table: HashTable<Entry>,
    /// The table's allocation size, as charged (invariant 2).
    charged: u64,
}

/// One dataset's KV records.
pub(crate) struct KvStore {
    arena: BlobArena,
    shards: Box<[RwLock<Shard>]>,
    hasher: DefaultHashBuilder,
    /// The tables' memory (invariant 2).
    tables: Reservation,
}

/// Writes `n` as LEB128 into `out`, returns the bytes written (at most 3
/// for a key length).
fn put_len(out: &mut [u8; 3], mut n: usize) -> usize {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

/// Splits a record into key and value; `None` if it is malformed (which
/// no record this store wrote is).
fn split_record(record: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0usize;
    for (i, &byte) in record.iter().enumerate().take(3) {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let rest = &record[i + 1..];
            return (len <= rest.len()).then(|| rest.split_at(len));
        }
    }
    None
}

impl KvStore {
    /// A store charging `budget`'s consumer `consumer`.
    pub fn new(budget: &MemoryBudget, consumer: &str) -> Result<KvStore> {
        let arena = BlobArena::new(
            SlabConfig::default()
                .with_name("kv")
                .with_budget(budget, consumer),
        )?;
        Ok(KvStore {
            arena,
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: DefaultHashBuilder::default(),
            tables: budget.reservation(consumer),
        })
    }

    /// The records' arena (for stats and maintenance).
    pub fn arena(&self) -> &BlobArena {
        &self.arena
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The table uses the low bits; pick the shard by the high ones.
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    /// The hash of an entry's key, read from the arena (for resizes; the
    /// record is live, invariant 1, as the shard's write lock is held).
    fn rehash(&self, entry: &Entry) -> u64 {
        self.arena
            .with(entry.handle, |record| {
                split_record(record).map_or(0, |(key, _)| self.hash(key))
            })
            .unwrap_or(0)
    }

    /// True if `handle` names a record with key `key`.
    fn key_is(&self, handle: BlobHandle, key: &[u8]) -> bool {
        self.arena
            .with(handle, |record| {
                split_record(record).is_some_and(|(k, _)| k == key)
            })
            .unwrap_or(false)
    }

    /// Stores `value` under `key`, replacing what was there. `encode` is a
    /// scratch buffer for the record.
    pub fn put(&self, key: &[u8], value: &[u8], encode: &mut PooledBuf) -> Result<()> {
        let mut len = [0u8; 3];
        let n = put_len(&mut len, key.len());
        encode.clear();
        encode.extend_from_slice(&len[..n]);
        encode.extend_from_slice(key);
        encode.extend_from_slice(value);
        let handle = self.arena.insert(encode)?;
        let hash = self.hash(key);
        let replaced = {
            let mut shard = self.shard(hash).write();
            match self.upsert_entry(&mut shard, hash, key, handle) {
                Ok(replaced) => replaced,
                Err(e) => {
                    drop(shard);
                    self.arena.remove(handle);
                    return Err(e);
                }
            }
        };
        if let Some(old) = replaced {
            // After the entry changed (invariant 1).
            self.arena.remove(old);
        }
        Ok(())
    }

    /// Points `key`'s entry at `handle`; returns the handle it replaced.
    fn upsert_entry(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: &[u8],
        handle: BlobHandle,
    ) -> Result<Option<BlobHandle>> {
        if let Some(entry) = shard.table.find_mut(hash, |e| self.key_is(e.handle, key)) {
            return Ok(Some(std::mem::replace(&mut entry.handle, handle)));
        }
        if shard.table.len() == shard.table.capacity() {
            self.grow(shard)?;
        }
        shard
            .table
            .insert_unique(hash, Entry { handle }, |e| self.rehash(e));
        Ok(None)
    }

    /// Doubles a full table, charging the new allocation first.
    fn grow(&self, shard: &mut Shard) -> Result<()> {
        let additional = shard.table.len().max(16);
        shard
            .table
            .try_reserve(additional, |e| self.rehash(e))
            .map_err(|_| Error::Allocation {
                what: "a key table",
                bytes: additional.saturating_mul(size_of::<Entry>()),
            })?;
        self.recharge(shard)
    }

    /// Brings the charge in line with the table's allocation; on refusal
    /// shrinks the table back (nothing in it is lost).
    fn recharge(&self, shard: &mut Shard) -> Result<()> {
        let size = shard.table.allocation_size() as u64;
        if size > shard.charged {
            if let Err(e) = self.tables.try_grow(size - shard.charged) {
                let len = shard.table.len();
                shard.table.shrink_to(len, |e| self.rehash(e));
                let shrunk = shard.table.allocation_size() as u64;
                if shrunk > shard.charged {
                    self.tables.grow(shrunk - shard.charged);
                } else {
                    self.tables.shrink(shard.charged - shrunk);
                }
                shard.charged = shrunk;
                return Err(e.into());
            }
        } else {
            self.tables.shrink(shard.charged - size);
        }
        shard.charged = size;
        Ok(())
    }

    /// Calls `f` with the value under `key`.
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let hash = self.hash(key);
        let mut f = Some(f);
        loop {
            let handle = {
                let shard = self.shard(hash).read();
                shard
                    .table
                    .find(hash, |e| self.key_is(e.handle, key))?
                    .handle
            };
            let read = self.arena.with(handle, |record| {
                let (_, value) = split_record(record).expect("records are well formed");
                (f.take().expect("called once"))(value)
            });
            if let Some(r) = read {
                return Some(r);
            }
            // Replaced or deleted since (invariant 1): look again.
        }
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        let hash = self.hash(key);
        let removed = {
            let mut shard = self.shard(hash).write();
            match shard.table.find_entry(hash, |e| self.key_is(e.handle, key)) {
                Ok(entry) => Some(entry.remove().0.handle),
                Err(_) => None,
            }
        };
        match removed {
            Some(handle) => {
                self.arena.remove(handle);
                true
            }
            None => false,
        }
    }

    /// Key-table shards (a scan's unit).
    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    /// Calls `f` with shard `i`'s record count and each of its keys, under
    /// the shard's read lock (writers to it wait; keep `f` short).
    pub fn shard_keys(
        &self,
        i: usize,
        mut f: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let shard = self.shards[i].read();
        let n = shard.table.len();
        for entry in shard.table.iter() {
            // Live while the lock is held (invariant 1).
            let pushed = self
                .arena
                .with(entry.handle, |r| split_record(r).map(|(k, _)| f(n, k)));
            if let Some(Some(r)) = pushed {
                r?;
            }
        }
        Ok(())
    }

    /// Live records.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().table.len()).sum()
    }

    /// Bytes the key tables hold (charged to `kv`).
    pub fn table_bytes(&self) -> u64 {
        self.tables.size()
    }

    /// Shrinks tables that are at most a quarter full; returns the bytes
    /// given back.
    pub fn shrink_tables(&self) -> u64 {
        let mut released = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            if shard.table.len() * 4 <= shard.table.capacity() && shard.table.capacity() > 0 {
                let before = shard.charged;
                let len = shard.table.len();
                shard.table.shrink_to(len, |e| self.rehash(e));
                // Shrinking never asks for more.
                let _ = self.recharge(&mut shard);
                released += before.saturating_sub(shard.charged);
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, MAX_KEY_BYTES] {
            let key = vec![7u8; len];
            let mut out = [0u8; 3];
            let n = put_len(&mut out, len);
            let mut record = out[..n].to_vec();
            record.extend_from_slice(&key);
            record.extend_from_slice(b"value");
            let (k, v) = split_record(&record).unwrap();
            assert_eq!((k.len(), v), (len, &b"value"[..]));
        }
        assert!(split_record(&[0x85]).is_none(), "a length past the end");
        assert!(split_record(&[5, 1, 2]).is_none());
    }

    #[test]
    fn tables_are_charged_and_given_back() {
        let budget = MemoryBudget::unlimited();
        let kv = KvStore::new(&budget, "t/kv").unwrap();
        let pool = ebb_pool::BufferPool::new(ebb_pool::PoolConfig::default()).unwrap();
        for i in 0u32..10_000 {
            kv.put(&i.to_le_bytes(), b"v", &mut pool.get(8)).unwrap();
        }
        let charged = kv.table_bytes();
        assert!(charged >= 10_000 * 8, "{charged}");
        for i in 0u32..10_000 {
            assert!(kv.delete(&i.to_le_bytes()));
        }
        assert!(kv.shrink_tables() >= charged / 2);
        assert!(kv.table_bytes() < charged / 4);
    }
}
