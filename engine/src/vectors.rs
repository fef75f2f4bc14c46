//! [`VectorStore`]: one dataset's vectors (in its index) and their payloads
//! (in a `BlobArena`), keyed by id.
//!
//! Invariants:
//!
//! 1. A payload map entry names a live payload record of a point the index
//!    holds; an upsert stores the new payload first, then the point, then
//!    the map entry, and removes the old payload last, so a failed step
//!    leaves the previous point and payload as they were.
//! 2. The map's allocation is charged to the dataset's `payloads`
//!    consumer, as is the payload arena.

use std::collections::HashMap;

use ebb_arena::{BlobArena, BlobHandle, SlabConfig};
use ebb_core::maintenance::Maintenance;
use ebb_core::{MemoryBudget, Reservation};
use ebb_hnsw::{HnswRsGraph, IndexConfig, NativeGraph, RebuildPolicy, VectorIndex};
use parking_lot::Mutex;

use crate::dataset::{DatasetConfig, IndexKind};
use crate::error::{Error, Result};

/// The index of a dataset, whichever backend it was created with.
pub(crate) enum AnyIndex {
    /// The native graph.
    Native(VectorIndex<NativeGraph>),
    /// hnsw_rs (the reference backend).
    HnswRs(VectorIndex<HnswRsGraph>),
}

macro_rules! each {
    ($self:expr, $i:ident => $e:expr) => {
        match $self {
            AnyIndex::Native($i) => $e,
            AnyIndex::HnswRs($i) => $e,
        }
    };
}

impl AnyIndex {
    pub fn upsert(&self, id: u64, v: &[f32]) -> ebb_hnsw::Result<()> {
        each!(self, i => i.upsert(id, v))
    }
    pub fn delete(&self, id: u64) -> bool {
        each!(self, i => i.delete(id))
    }
    pub fn search(&self, q: &[f32], k: usize) -> ebb_hnsw::Result<Vec<(u64, f32)>> {
        each!(self, i => i.search(q, k))
    }
    pub fn len(&self) -> usize {
        each!(self, i => i.len())
    }
    pub fn contains(&self, id: u64) -> bool {
        each!(self, i => i.contains(id))
    }
    pub fn stats(&self) -> ebb_hnsw::IndexStats {
        each!(self, i => i.stats())
    }
    pub fn get_vector(&self, id: u64) -> Option<Vec<f32>> {
        each!(self, i => i.get_vector(id))
    }
    pub fn ids(&self) -> Vec<u64> {
        each!(self, i => i.ids())
    }
    pub fn with_vectors(&self, ids: &[u64], f: impl FnMut(u64, &[f32])) -> usize {
        each!(self, i => i.with_vectors(ids, f))
    }
    pub fn set_max_deleted_ratio(&self, ratio: f64) {
        each!(self, i => {
            let policy = i.rebuild_policy().with_max_deleted_ratio(ratio);
            // A ratio from the validated config: always accepted.
            let _ = i.set_rebuild_policy(policy);
        })
    }
    pub fn flush_delta(&self) -> ebb_hnsw::Result<()> {
        each!(self, i => i.flush_delta())
    }
    pub fn maintenance(&self) -> &dyn Maintenance {
        each!(self, i => i as &dyn Maintenance)
    }
}

/// One dataset's vectors and payloads.
pub(crate) struct VectorStore {
    dim: usize,
    index: AnyIndex,
    payloads: BlobArena,
    /// id -> payload (invariant 1).
    map: Mutex<HashMap<u64, BlobHandle>>,
    /// The map's memory (invariant 2).
    map_charge: Reservation,
}

/// Bytes a `HashMap<u64, BlobHandle>` bucket takes (key, value, control).
const MAP_BUCKET_BYTES: u64 = 17;

impl VectorStore {
    pub fn new(
        config: &DatasetConfig,
        max_deleted_ratio: f64,
        budget: &MemoryBudget,
        index_consumer: &str,
        payload_consumer: &str,
    ) -> Result<VectorStore> {
        let index_config = IndexConfig::new(config.dim, config.metric)
            .with_m(config.m)
            .with_ef_construction(config.ef_construction)
            .with_ef_search(config.ef_search)
            .with_rebuild(RebuildPolicy::default().with_max_deleted_ratio(max_deleted_ratio))
            .with_budget(budget, index_consumer)
            .with_name("index");
        let index = match config.index {
            IndexKind::Native => AnyIndex::Native(VectorIndex::with_backend(index_config)?),
            IndexKind::HnswRs => AnyIndex::HnswRs(VectorIndex::with_backend(index_config)?),
        };
        Ok(VectorStore {
            dim: config.dim,
            index,
            payloads: BlobArena::new(
                SlabConfig::default()
                    .with_name("payloads")
                    .with_budget(budget, payload_consumer),
            )?,
            map: Mutex::new(HashMap::new()),
            map_charge: budget.reservation(payload_consumer),
        })
    }

    pub fn set_max_deleted_ratio(&self, ratio: f64) {
        self.index.set_max_deleted_ratio(ratio);
    }

    pub fn index(&self) -> &AnyIndex {
        &self.index
    }

    pub fn payloads(&self) -> &BlobArena {
        &self.payloads
    }

    /// Checks a vector's length and components (before anything is stored).
    pub fn check(&self, vector: &[f32]) -> Result<()> {
        crate::checks::check_vector(vector, self.dim)
    }

    /// Keeps the map's charge at its capacity; refuses growth over budget.
    fn charge_map(&self, map: &mut HashMap<u64, BlobHandle>) -> Result<()> {
        if map.len() < map.capacity() {
            return Ok(());
        }
        let additional = map.len().max(16);
        let want = (map.capacity() + additional) as u64 * MAP_BUCKET_BYTES * 8 / 7;
        let held = self.map_charge.size();
        if want > held {
            self.map_charge.try_grow(want - held)?;
        }
        map.try_reserve(additional).map_err(|_| Error::Allocation {
            what: "a payload map",
            bytes: additional * MAP_BUCKET_BYTES as usize,
        })?;
        Ok(())
    }

    pub fn upsert(&self, id: u64, vector: &[f32], payload: Option<&[u8]>) -> Result<()> {
        self.check(vector)?;
        let stored = payload.map(|p| self.payloads.insert(p)).transpose()?;
        let undo = |e: Error| {
            if let Some(h) = stored {
                self.payloads.remove(h);
            }
            e
        };
        // Room in the map first, so the steps after the index cannot fail.
        {
            let mut map = self.map.lock();
            self.charge_map(&mut map).map_err(undo)?;
        }
        // The payload is published before the point, and a delete takes
        // the point out before the payload, so a search never sees a point
        // without the payload it was stored with.
        let old = {
            let mut map = self.map.lock();
            match stored {
                Some(h) => map.insert(id, h),
                None => map.remove(&id),
            }
        };
        if let Err(e) = self.index.upsert(id, vector) {
            // Put the old payload back (a concurrent upsert of the same id
            // in this window is overwritten: the index refused this one).
            let mut map = self.map.lock();
            match old {
                Some(o) => map.insert(id, o),
                None => map.remove(&id),
            };
            drop(map);
            return Err(undo(e.into()));
        }
        if let Some(old) = old {
            self.payloads.remove(old);
        }
        Ok(())
    }

    pub fn delete(&self, id: u64) -> bool {
        let deleted = self.index.delete(id);
        if let Some(old) = self.map.lock().remove(&id) {
            self.payloads.remove(old);
        }
        deleted
    }

    /// Calls `f` with the payload of `id`, if it has one.
    pub fn payload_with<R>(&self, id: u64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mut f = Some(f);
        loop {
            let handle = *self.map.lock().get(&id)?;
            let read = self
                .payloads
                .with(handle, |p| (f.take().expect("called once"))(p));
            if read.is_some() {
                return read;
            }
            // Replaced by a concurrent upsert since (the old payload goes
            // after the map entry changes, invariant 1): look again.
        }
    }

    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>> {
        self.check(query)?;
        Ok(self.index.search(query, k)?)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Bytes the payload map holds (charged to `payloads`).
    pub fn map_bytes(&self) -> u64 {
        self.map_charge.size()
    }
}
