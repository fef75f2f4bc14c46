//! Arrow in and out: [`ingest`](crate::Engine::ingest) /
//! [`ingest_kv`](crate::Engine::ingest_kv) take record batches, checked
//! whole before the first row is stored; [`KvScan`] and [`VectorScan`]
//! build batches in pooled buffers handed to Arrow without a copy.
//!
//! Schemas:
//! - vectors: `id: UInt64` (no nulls), `vector: FixedSizeList<Float32, dim>`
//!   (no nulls, finite), `payload: Binary` (nullable; the column may be
//!   left out);
//! - KV: `key: Binary`, `value: Binary` (no nulls).

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ebb_leak::{ResourceKind, Tracked};
use ebb_pool::{BufferPool, PooledBuf};
use tokio_util::sync::CancellationToken;

use crate::checks::{check_key, check_value, check_vector};
use crate::dataset::Dataset;
use crate::error::{Error, Result};

/// Rows stored between two looks at the token.
pub const INGEST_CHUNK: usize = 1024;

/// Rows per batch a scan yields.
pub const SCAN_BATCH_ROWS: usize = 4096;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a ArrayRef>> {
    Ok(batch.schema().index_of(name).ok().map(|i| batch.column(i)))
}

fn required<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    column(batch, name)?.ok_or_else(|| Error::Schema {
        reason: format!(
            "no column {name:?} (columns: {:?})",
            batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        ),
    })
}

fn wrong_type(name: &str, want: &str, got: &DataType) -> Error {
    Error::Schema {
        reason: format!("column {name:?} is {got}, expected {want}"),
    }
}

fn binary<'a>(batch: &'a RecordBatch, name: &'static str) -> Result<Option<&'a BinaryArray>> {
    match column(batch, name)? {
        None => Ok(None),
        Some(a) => a
            .as_any()
            .downcast_ref::<BinaryArray>()
            .map(Some)
            .ok_or_else(|| wrong_type(name, "Binary", a.data_type())),
    }
}

fn no_nulls(array: &dyn Array, column: &'static str) -> Result<()> {
    if let Some(nulls) = array.nulls()
        && let Some(row) = (0..array.len()).find(|&i| nulls.is_null(i))
    {
        return Err(Error::Null { column, row });
    }
    Ok(())
}

/// A vectors batch, checked whole.
pub(crate) struct VectorBatch<'a> {
    ids: &'a UInt64Array,
    vectors: &'a FixedSizeListArray,
    values: &'a Float32Array,
    payloads: Option<&'a BinaryArray>,
    dim: usize,
}

impl VectorBatch<'_> {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn row(&self, i: usize) -> (u64, &[f32], Option<&[u8]>) {
        let at = self.vectors.value_offset_at(i);
        let vector = &self.values.values()[at..at + self.dim];
        let payload = self.payloads.filter(|p| p.is_valid(i)).map(|p| p.value(i));
        (self.ids.value(i), vector, payload)
    }
}

/// Checks a vectors batch against `dim` and `max_value_bytes`: schema,
/// nulls, finiteness, payload sizes.
pub(crate) fn check_vectors(
    batch: &RecordBatch,
    dim: usize,
    max_value_bytes: usize,
) -> Result<VectorBatch<'_>> {
    let ids_col = required(batch, "id")?;
    let ids = ids_col
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| wrong_type("id", "UInt64", ids_col.data_type()))?;
    no_nulls(ids, "id")?;
    let vec_col = required(batch, "vector")?;
    let vectors = vec_col
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| wrong_type("vector", "FixedSizeList<Float32>", vec_col.data_type()))?;
    let values = vectors
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| wrong_type("vector", "FixedSizeList<Float32>", vec_col.data_type()))?;
    if vectors.value_length() as usize != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: vectors.value_length() as usize,
        });
    }
    no_nulls(vectors, "vector")?;
    let payloads = binary(batch, "payload")?;
    let checked = VectorBatch {
        ids,
        vectors,
        values,
        payloads,
        dim,
    };
    for i in 0..checked.len() {
        let (_, vector, payload) = checked.row(i);
        check_vector(vector, dim)?;
        if let Some(p) = payload {
            check_value(p, max_value_bytes)?;
        }
    }
    // Inner nulls would read as zeros: refuse them too.
    if values.null_count() > 0 {
        return Err(Error::Null {
            column: "vector",
            row: (0..values.len())
                .find(|&i| values.is_null(i))
                .map_or(0, |v| v / dim.max(1)),
        });
    }
    Ok(checked)
}

/// Checks a KV batch: schema, nulls, key and value sizes.
pub(crate) fn check_kv(
    batch: &RecordBatch,
    max_value_bytes: usize,
) -> Result<(&BinaryArray, &BinaryArray)> {
    required(batch, "key")?;
    required(batch, "value")?;
    let (Some(keys), Some(values)) = (binary(batch, "key")?, binary(batch, "value")?) else {
        unreachable!("both columns exist (checked above)");
    };
    no_nulls(keys, "key")?;
    no_nulls(values, "value")?;
    for i in 0..keys.len() {
        check_key(keys.value(i))?;
        check_value(values.value(i), max_value_bytes)?;
    }
    Ok((keys, values))
}

/// The schema of a vectors scan.
pub fn vector_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
        Field::new("payload", DataType::Binary, true),
    ]))
}

/// The schema of a KV scan.
pub fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
    ]))
}

/// A batch in the [`vector_schema`] of `dim`: `ids`, their vectors as
/// `values` (row-major, `ids.len() x dim` floats) and one optional payload
/// per id (`None` is a null; `payloads` may be empty to leave them all
/// null). The values themselves are checked by
/// [`ingest`](crate::Engine::ingest), not here.
///
/// # Errors
/// [`Error::Schema`] when `dim` is 0 or past `i32::MAX`, `values` does not
/// hold `ids.len() x dim` floats, or `payloads` is neither empty nor one
/// per id.
pub fn vector_batch<P: AsRef<[u8]>>(
    dim: usize,
    ids: Vec<u64>,
    values: Vec<f32>,
    payloads: Vec<Option<P>>,
) -> Result<RecordBatch> {
    let schema_err = |reason: String| Error::Schema { reason };
    let dim_i32 = i32::try_from(dim)
        .ok()
        .filter(|&d| d > 0)
        .ok_or_else(|| schema_err(format!("dimension {dim} is not in 1..={}", i32::MAX)))?;
    if Some(values.len()) != ids.len().checked_mul(dim) {
        return Err(schema_err(format!(
            "{} floats for {} ids of dimension {dim}",
            values.len(),
            ids.len()
        )));
    }
    if !payloads.is_empty() && payloads.len() != ids.len() {
        return Err(schema_err(format!(
            "{} payloads for {} ids",
            payloads.len(),
            ids.len()
        )));
    }
    let rows = ids.len();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(item, dim_i32, Arc::new(Float32Array::from(values)), None)
            .map_err(|e| schema_err(e.to_string()))?;
    let payloads: BinaryArray = if payloads.is_empty() {
        BinaryArray::new_null(rows)
    } else {
        payloads
            .iter()
            .map(|p| p.as_ref().map(AsRef::as_ref))
            .collect()
    };
    RecordBatch::try_new(
        vector_schema(dim),
        vec![
            Arc::new(UInt64Array::from(ids)),
            Arc::new(vectors),
            Arc::new(payloads),
        ],
    )
    .map_err(|e| schema_err(e.to_string()))
}

/// A batch in the [`kv_schema`]: `keys[i]` with `values[i]`. Keys and
/// values are checked by [`ingest_kv`](crate::Engine::ingest_kv).
///
/// # Errors
/// [`Error::Schema`] when the two lengths differ or the bytes of either
/// column pass `i32::MAX` (an Arrow `Binary` column's offsets are 32-bit).
pub fn kv_batch<K: AsRef<[u8]>, V: AsRef<[u8]>>(keys: &[K], values: &[V]) -> Result<RecordBatch> {
    if keys.len() != values.len() {
        return Err(Error::Schema {
            reason: format!("{} keys for {} values", keys.len(), values.len()),
        });
    }
    RecordBatch::try_new(
        kv_schema(),
        vec![binary_column(keys)?, binary_column(values)?],
    )
    .map_err(|e| Error::Schema {
        reason: e.to_string(),
    })
}

/// A non-null `Binary` column, or [`Error::Schema`] past 32-bit offsets.
fn binary_column<B: AsRef<[u8]>>(items: &[B]) -> Result<ArrayRef> {
    let bytes = items
        .iter()
        .try_fold(0usize, |n, b| n.checked_add(b.as_ref().len()));
    if bytes.is_none_or(|n| n > i32::MAX as usize) {
        return Err(Error::Schema {
            reason: format!("a column of {} rows passes i32::MAX bytes", items.len()),
        });
    }
    Ok(Arc::new(BinaryArray::from_iter_values(
        items.iter().map(AsRef::as_ref),
    )))
}

/// A growing column of binary values in two pooled buffers (offsets and
/// bytes), handed to Arrow without a copy.
struct BinaryBuilder {
    offsets: PooledBuf,
    bytes: PooledBuf,
}

impl BinaryBuilder {
    fn new(pool: &BufferPool, rows: usize) -> Result<BinaryBuilder> {
        let mut offsets = pool.try_get((rows + 1) * 4)?;
        offsets.clear();
        offsets.extend_from_slice(&0i32.to_le_bytes());
        let mut bytes = pool.try_get(rows * 64)?;
        bytes.clear();
        Ok(BinaryBuilder { offsets, bytes })
    }

    fn push(&mut self, value: &[u8]) -> Result<()> {
        self.bytes.try_reserve(value.len())?;
        self.bytes.extend_from_slice(value);
        let end = i32::try_from(self.bytes.len()).map_err(|_| Error::Schema {
            reason: "a scan batch over 2 GiB of binary data".into(),
        })?;
        self.offsets.extend_from_slice(&end.to_le_bytes());
        Ok(())
    }

    fn finish(self, nulls: Option<NullBuffer>) -> BinaryArray {
        let n = self.offsets.len() / 4;
        let offsets = ScalarBuffer::<i32>::new(self.offsets.into_arrow_buffer(), 0, n);
        BinaryArray::new(
            OffsetBuffer::new(offsets),
            self.bytes.into_arrow_buffer(),
            nulls,
        )
    }
}

/// Batches of a dataset's KV records, `SCAN_BATCH_ROWS` at a time, one
/// key-table shard after another: a shard's keys are copied under its read
/// lock (so every key live for the whole scan is in it, with a value it
/// held meanwhile), then its values are read key by key.
pub struct KvScan {
    dataset: Arc<Dataset>,
    /// The scan as a tracked resource (crate::leaks).
    _tracked: Tracked,
    /// The next shard to copy the keys of.
    shard: usize,
    /// The current shard's keys, in pooled buffers, and the next one to
    /// read.
    keys: Option<(BinaryArray, usize)>,
    token: CancellationToken,
}

impl KvScan {
    #[track_caller]
    pub(crate) fn new(dataset: Arc<Dataset>, token: CancellationToken) -> KvScan {
        KvScan {
            dataset,
            _tracked: crate::leaks::tracker().track(ResourceKind::Iterator, "kv_scan"),
            shard: 0,
            keys: None,
            token,
        }
    }

    /// Copies the next non-empty shard's keys; false when none is left.
    fn next_shard(&mut self) -> Result<bool> {
        while self.shard < self.dataset.kv.shard_count() {
            let pool = &self.dataset.pool;
            let mut keys: Option<BinaryBuilder> = None;
            self.dataset.kv.shard_keys(self.shard, |n, key| {
                let builder = match &mut keys {
                    Some(b) => b,
                    None => keys.insert(BinaryBuilder::new(pool, n)?),
                };
                builder.push(key)
            })?;
            self.shard += 1;
            if let Some(keys) = keys.map(|b| b.finish(None))
                && !keys.is_empty()
            {
                self.keys = Some((keys, 0));
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some((keys, at)) = &mut self.keys {
                if *at < keys.len() {
                    let end = (*at + SCAN_BATCH_ROWS).min(keys.len());
                    let pool = &self.dataset.pool;
                    let (mut out_keys, mut values) = (
                        BinaryBuilder::new(pool, end - *at)?,
                        BinaryBuilder::new(pool, end - *at)?,
                    );
                    for i in *at..end {
                        let key = keys.value(i);
                        // Deleted since its shard was copied: left out.
                        if let Some(r) = self.dataset.kv.get_with(key, |v| values.push(v)) {
                            r?;
                            out_keys.push(key)?;
                        }
                    }
                    *at = end;
                    let batch = RecordBatch::try_new(
                        kv_schema(),
                        vec![
                            Arc::new(out_keys.finish(None)),
                            Arc::new(values.finish(None)),
                        ],
                    )
                    .map_err(|e| Error::Schema {
                        reason: e.to_string(),
                    })?;
                    return Ok(Some(batch));
                }
                self.keys = None;
            }
            if !self.next_shard()? {
                return Ok(None);
            }
        }
    }
}

impl Iterator for KvScan {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.shard >= self.dataset.kv.shard_count() && self.keys.is_none() {
            return None;
        }
        if self.token.is_cancelled() {
            self.shard = self.dataset.kv.shard_count();
            self.keys = None;
            return Some(Err(Error::Closing));
        }
        match self.batch() {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => None,
            Err(e) => {
                self.shard = self.dataset.kv.shard_count();
                self.keys = None;
                Some(Err(e))
            }
        }
    }
}

/// Batches of a dataset's vectors with their payloads.
pub struct VectorScan {
    dataset: Arc<Dataset>,
    /// The scan as a tracked resource (crate::leaks).
    _tracked: Tracked,
    ids: Vec<u64>,
    at: usize,
    token: CancellationToken,
}

impl VectorScan {
    #[track_caller]
    pub(crate) fn new(dataset: Arc<Dataset>, token: CancellationToken) -> VectorScan {
        let ids = dataset.vectors.index().ids();
        VectorScan {
            dataset,
            _tracked: crate::leaks::tracker().track(ResourceKind::Iterator, "vector_scan"),
            ids,
            at: 0,
            token,
        }
    }

    fn batch(&mut self) -> Result<RecordBatch> {
        let end = (self.at + SCAN_BATCH_ROWS).min(self.ids.len());
        let chunk = &self.ids[self.at..end];
        self.at = end;
        let d = &self.dataset;
        let dim = d.config.dim;
        let mut ids = d.pool.try_get(chunk.len() * 8)?;
        ids.clear();
        let mut vectors = d.pool.try_get(chunk.len() * dim * 4)?;
        vectors.clear();
        d.vectors.index().with_vectors(chunk, |id, v| {
            ids.extend_from_slice(&id.to_le_bytes());
            for x in v {
                vectors.extend_from_slice(&x.to_le_bytes());
            }
        });
        let rows = ids.len() / 8;
        let mut payloads = BinaryBuilder::new(&d.pool, rows)?;
        let mut valid = Vec::with_capacity(rows);
        for row in 0..rows {
            let id = u64::from_le_bytes(ids[row * 8..row * 8 + 8].try_into().expect("8 bytes"));
            match d.vectors.payload_with(id, |p| payloads.push(p)) {
                Some(pushed) => {
                    pushed?;
                    valid.push(true);
                }
                None => {
                    payloads.push(&[])?;
                    valid.push(false);
                }
            }
        }
        let ids = UInt64Array::new(ScalarBuffer::new(ids.into_arrow_buffer(), 0, rows), None);
        let values = Float32Array::new(
            ScalarBuffer::new(vectors.into_arrow_buffer(), 0, rows * dim),
            None,
        );
        let vectors = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, false)),
            dim as i32,
            Arc::new(values),
            None,
        );
        let payloads = payloads.finish(Some(NullBuffer::from(valid)));
        RecordBatch::try_new(
            vector_schema(dim),
            vec![Arc::new(ids), Arc::new(vectors), Arc::new(payloads)],
        )
        .map_err(|e| Error::Schema {
            reason: e.to_string(),
        })
    }
}

impl Iterator for VectorScan {
    type Item = Result<RecordBatch>;
    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.at >= self.ids.len() {
            return None;
        }
        if self.token.is_cancelled() {
            self.at = self.ids.len();
            return Some(Err(Error::Closing));
        }
        Some(self.batch())
    }
}
