//! Request decoding: bytes in, a typed request or an [`ApiError`] out,
//! never a panic, whatever the bytes (the fuzz target drives
//! [`decode_any`]). Pure functions: nothing here touches the engine, so a
//! request refused here changed nothing.
//!
//! Shapes (fixed; unknown fields are refused so a typo is not ignored):
//! - create: `{"name": "docs", "dim": 384, "metric": "l2"|"cosine"|"dot"}`
//! - vectors: `{"vectors": [{"id": 1, "vector": [..], "payload": "UTF-8"}]}`
//!   (or `"payload_b64"` for binary payloads; not both), built into one
//!   Arrow batch in the engine's ingest schema, every row's dimension
//!   checked first;
//! - an Arrow IPC stream of vectors batches;
//! - search: `{"vector": [..], "k": 10}` (`k` defaults to 10).

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use base64::Engine as _;
use ebb_engine::Metric;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};

/// The content type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The most rows one JSON vectors request takes (a bound on the batch
/// built from it, beside `max_body_bytes`).
pub const MAX_JSON_ROWS: usize = 1 << 20;

/// `POST /v1/datasets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    /// The dataset's name.
    pub name: String,
    /// Its vectors' dimension.
    pub dim: usize,
    /// `l2`, `cosine` or `dot`.
    pub metric: String,
}

/// `POST /v1/datasets/{name}/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    /// The query.
    pub vector: Vec<f32>,
    /// How many hits (default 10).
    #[serde(default = "default_k")]
    pub k: usize,
}

fn default_k() -> usize {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorsBody {
    vectors: Vec<VectorRow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorRow {
    id: u64,
    vector: Vec<f32>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_b64: Option<String>,
}

/// Parses a JSON body, telling a syntax error (`bad_json`) from a body of
/// the wrong shape (`bad_request`).
pub fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request("bad_request", e.to_string()),
        _ => ApiError::bad_request("bad_json", e.to_string()),
    })
}

/// The metric a create request names.
pub fn metric(name: &str) -> ApiResult<Metric> {
    match name {
        "l2" => Ok(Metric::L2),
        "cosine" => Ok(Metric::Cosine),
        "dot" => Ok(Metric::Dot),
        other => Err(ApiError::bad_request(
            "bad_metric",
            format!("metric {other:?} is not one of l2, cosine, dot"),
        )),
    }
}

/// A create request, its metric checked.
pub fn create_dataset(body: &[u8]) -> ApiResult<(CreateDataset, Metric)> {
    let req: CreateDataset = json(body)?;
    let m = metric(&req.metric)?;
    Ok((req, m))
}

/// A search request.
pub fn search(body: &[u8]) -> ApiResult<Search> {
    json(body)
}

/// A JSON vectors body as one batch in the ingest schema of `dim`.
pub fn vectors_json(body: &[u8], dim: usize) -> ApiResult<RecordBatch> {
    let req: VectorsBody = json(body)?;
    if req.vectors.len() > MAX_JSON_ROWS {
        return Err(ApiError::bad_request(
            "too_many_rows",
            format!(
                "{} vectors in one request, the most is {MAX_JSON_ROWS}",
                req.vectors.len()
            ),
        ));
    }
    let rows = req.vectors.len();
    let mut ids = Vec::with_capacity(rows);
    let mut values = Vec::with_capacity(rows.saturating_mul(dim).min(1 << 26));
    let mut payloads: Vec<Option<Vec<u8>>> = Vec::with_capacity(rows);
    for (i, row) in req.vectors.into_iter().enumerate() {
        if row.vector.len() != dim {
            return Err(ApiError::bad_request(
                "dimension_mismatch",
                format!(
                    "vectors[{i}] has {} dimensions, the dataset has {dim}",
                    row.vector.len()
                ),
            ));
        }
        let payload = match (row.payload, row.payload_b64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "bad_payload",
                    format!("vectors[{i}] has both payload and payload_b64"),
                ));
            }
            (Some(text), None) => Some(text.into_bytes()),
            (None, Some(b64)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| {
                        ApiError::bad_request(
                            "bad_payload",
                            format!("vectors[{i}].payload_b64 is not base64: {e}"),
                        )
                    })?,
            ),
            (None, None) => None,
        };
        ids.push(row.id);
        values.extend_from_slice(&row.vector);
        payloads.push(payload);
    }
    batch(dim, ids, values, payloads)
}

fn batch(
    dim: usize,
    ids: Vec<u64>,
    values: Vec<f32>,
    payloads: Vec<Option<Vec<u8>>>,
) -> ApiResult<RecordBatch> {
    ebb_engine::vector_batch(dim, ids, values, payloads)
        .map_err(|e| ApiError::bad_request("bad_vectors", e.to_string()))
}

/// Every batch of an Arrow IPC stream (schema checks are the engine's).
///
/// arrow-ipc (60) panics on some malformed streams (a buffer slice past its
/// message, found by the bit-flip test) instead of returning an error, so
/// the decoding runs under `catch_unwind` and a panic there is a 400 like
/// any other bad stream. Unwind safety: the closure owns only its reader
/// over the request's bytes and the batches it decodes, all dropped on a
/// panic; nothing shared is left half-updated.
pub fn arrow_stream(body: &[u8]) -> ApiResult<Vec<RecordBatch>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_stream(body))) {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("arrow-ipc panicked on a malformed stream; answered 400");
            Err(ApiError::bad_request(
                "bad_arrow",
                "not an Arrow IPC stream: malformed message",
            ))
        }
    }
}

fn read_stream(body: &[u8]) -> ApiResult<Vec<RecordBatch>> {
    let bad = |e: arrow_schema::ArrowError| {
        ApiError::bad_request("bad_arrow", format!("not an Arrow IPC stream: {e}"))
    };
    let reader = StreamReader::try_new(Cursor::new(body), None).map_err(bad)?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    for batch in reader {
        let batch = batch.map_err(bad)?;
        rows += batch.num_rows();
        if rows > 16 * MAX_JSON_ROWS {
            return Err(ApiError::bad_request(
                "too_many_rows",
                format!("over {} rows in one request", 16 * MAX_JSON_ROWS),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// A body's media type (before any `;`), lower case.
pub fn media_type(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Runs every decoder on `data` (the fuzz target's entry: none may panic).
/// The first byte picks the dimension for the vectors decoders.
pub fn decode_any(data: &[u8]) {
    let dim = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    let rest = data.get(1..).unwrap_or(&[]);
    let _ = create_dataset(rest);
    let _ = search(rest);
    let _ = vectors_json(rest, dim);
    let _ = arrow_stream(rest);
    let _ = media_type(std::str::from_utf8(rest).ok());
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, BinaryArray};

    #[test]
    fn json_vectors_become_one_batch_and_a_bad_row_refuses_all() {
        let body = br#"{"vectors": [{"id": 1, "vector": [1, 2], "payload": "a"},
                                    {"id": 2, "vector": [3, 4], "payload_b64": "AAE="},
                                    {"id": 3, "vector": [5, 6]}]}"#;
        let b = vectors_json(body, 2).unwrap();
        assert_eq!(b.num_rows(), 3);
        let p = b.column(2).as_any().downcast_ref::<BinaryArray>().unwrap();
        assert_eq!(p.value(0), b"a");
        assert_eq!(p.value(1), [0u8, 1]);
        assert!(p.is_null(2));
        let bad = br#"{"vectors": [{"id": 1, "vector": [1, 2]}, {"id": 2, "vector": [1]}]}"#;
        let e = vectors_json(bad, 2).unwrap_err();
        assert_eq!(e.code, "dimension_mismatch");
        assert!(e.message.contains("vectors[1]"), "{e:?}");
    }

    #[test]
    fn syntax_and_shape_errors_have_their_codes() {
        assert_eq!(search(b"{").unwrap_err().code, "bad_json");
        assert_eq!(
            search(br#"{"vector": "x"}"#).unwrap_err().code,
            "bad_request"
        );
        assert_eq!(
            search(br#"{"vector": [1], "kk": 3}"#).unwrap_err().code,
            "bad_request"
        );
        assert_eq!(search(br#"{"vector": [1]}"#).unwrap().k, 10);
        assert_eq!(
            create_dataset(br#"{"name": "a", "dim": 2, "metric": "hamming"}"#)
                .unwrap_err()
                .code,
            "bad_metric"
        );
        assert_eq!(arrow_stream(b"not arrow").unwrap_err().code, "bad_arrow");
    }

    #[test]
    fn decoders_take_any_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..400 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            decode_any(&data);
        }
    }
}
