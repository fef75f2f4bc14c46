//! The `/v1` data API: datasets, KV records, vectors, search, Arrow IPC
//! upload and export. Each handler decodes and checks its whole request
//! before it changes anything (see [`super::decode`]), reads its body up to
//! `max_body_bytes` (413 past it), and answers the engine's refusals
//! through [`ApiError`].

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::writer::StreamWriter;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ebb_engine::{DatasetConfig, Engine, kv_schema, vector_schema};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::AppState;
use super::decode::{self, ARROW_STREAM};
use super::error::{ApiError, ApiResult};
use super::report;

type AppStateRef = State<Arc<AppState>>;

/// The path's parameters, or a JSON 400.
fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request("bad_path", e.body_text()))
}

/// The request body, refusing one over `max_body_bytes` with 413 (by its
/// `Content-Length` before reading, else once the limit is passed).
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Bytes> {
    let limit = state.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over max_body_bytes = {limit}"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_body", format!("could not read the body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

/// 415 unless the body is JSON.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let media = decode::media_type(content_type(headers));
    if media == "application/json" || media.ends_with("+json") {
        Ok(())
    } else {
        Err(unsupported(&media, "application/json"))
    }
}

fn unsupported(media: &str, wanted: &str) -> ApiError {
    let got = if media.is_empty() { "none" } else { media };
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("content-type {got} is not accepted here (send {wanted})"),
    )
}

/// Runs a blocking engine call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request's task failed: {e}"),
        )
    })?
}

pub(crate) async fn create_dataset(
    State(state): AppStateRef,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    require_json(&headers)?;
    let body = read_body(&state, &headers, body).await?;
    let (req, metric) = decode::create_dataset(&body)?;
    state
        .engine
        .create_dataset(&req.name, DatasetConfig::new(req.dim, metric))?;
    let info = dataset_json(&state.engine, &req.name, false)?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub(crate) async fn list_datasets(State(state): AppStateRef) -> Json<Value> {
    let list: Vec<Value> = state
        .engine
        .list_datasets()
        .iter()
        .map(report::dataset_info)
        .collect();
    Json(json!({ "datasets": list }))
}

fn dataset_json(engine: &Engine, name: &str, with_stats: bool) -> ApiResult<Value> {
    let info = engine
        .list_datasets()
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| ebb_engine::Error::UnknownDataset {
            name: name.to_string(),
        })?;
    let mut v = report::dataset_info(&info);
    if with_stats {
        v["stats"] = report::dataset_stats(&engine.dataset_stats(name)?);
    }
    Ok(v)
}

pub(crate) async fn get_dataset(
    State(state): AppStateRef,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    Ok(Json(dataset_json(&state.engine, &name, true)?))
}

pub(crate) async fn drop_dataset(
    State(state): AppStateRef,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let engine = state.engine.clone();
    let dropped = name.clone();
    // Dropping frees every slab of the dataset: off the async threads.
    blocking(move || Ok(engine.drop_dataset(&dropped)?)).await?;
    Ok(Json(json!({ "dropped": name })))
}

pub(crate) async fn put_kv(
    State(state): AppStateRef,
    params: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    let (name, key) = path(params)?;
    let media = decode::media_type(content_type(&headers));
    if !(media.is_empty() || media == "application/octet-stream") {
        return Err(unsupported(&media, "application/octet-stream"));
    }
    let value = read_body(&state, &headers, body).await?;
    state.engine.put(&name, key.as_bytes(), &value)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn get_kv(
    State(state): AppStateRef,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (name, key) = path(params)?;
    match state.engine.get(&name, key.as_bytes())? {
        Some(value) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            value.into_bytes(),
        )
            .into_response()),
        None => Err(ApiError::not_found(
            "unknown_key",
            format!("no key {key:?} in dataset {name:?}"),
        )),
    }
}

pub(crate) async fn delete_kv(
    State(state): AppStateRef,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, key) = path(params)?;
    if state.engine.delete(&name, key.as_bytes())? {
        Ok(Json(json!({ "deleted": true })))
    } else {
        Err(ApiError::not_found(
            "unknown_key",
            format!("no key {key:?} in dataset {name:?}"),
        ))
    }
}

pub(crate) async fn upsert_vectors(
    State(state): AppStateRef,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    let media = decode::media_type(content_type(&headers));
    let arrow = media == ARROW_STREAM;
    if !arrow && media != "application/json" {
        return Err(unsupported(
            &media,
            "application/json or application/vnd.apache.arrow.stream",
        ));
    }
    // The dataset first: an unknown one is 404 whatever the body.
    let dim = state
        .engine
        .list_datasets()
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.config.dim)
        .ok_or_else(|| ebb_engine::Error::UnknownDataset { name: name.clone() })?;
    let body = read_body(&state, &headers, body).await?;
    let engine = state.engine.clone();
    let stored = blocking(move || {
        let batches: Vec<RecordBatch> = if arrow {
            decode::arrow_stream(&body)?
        } else {
            vec![decode::vectors_json(&body, dim)?]
        };
        // Every batch checked before any is stored.
        for b in &batches {
            engine.check_ingest(&name, b)?;
        }
        let mut stored = 0usize;
        for b in &batches {
            stored += engine.ingest(&name, b)?;
        }
        Ok(stored)
    })
    .await?;
    Ok(Json(json!({ "stored": stored })))
}

pub(crate) async fn delete_vector(
    State(state): AppStateRef,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let (name, id) = path(params)?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_id",
            format!("vector id {id:?} is not an unsigned integer"),
        )
    })?;
    if state.engine.delete_vector(&name, id)? {
        Ok(Json(json!({ "deleted": true })))
    } else {
        Err(ApiError::not_found(
            "unknown_vector",
            format!("no vector {id} in dataset {name:?}"),
        ))
    }
}

pub(crate) async fn search(
    State(state): AppStateRef,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let name = path(name)?;
    require_json(&headers)?;
    let body = read_body(&state, &headers, body).await?;
    let req = decode::search(&body)?;
    // A search is a few hundred microseconds of CPU: on the async thread,
    // as a blocking-pool hop would cost more than it saves.
    let hits = state.engine.search(&name, &req.vector, req.k)?;
    let hits: Vec<Value> = hits.iter().map(report::hit).collect();
    Ok(Json(json!({ "hits": hits })))
}

/// Which part of a dataset an export streams.
#[derive(Clone, Copy)]
enum Part {
    Vectors,
    Kv,
}

fn export_part(uri: &Uri) -> ApiResult<Part> {
    let mut part = Part::Vectors;
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("part", "vectors")) => part = Part::Vectors,
            Some(("part", "kv")) => part = Part::Kv,
            _ => {
                return Err(ApiError::bad_request(
                    "bad_query",
                    format!("query {pair:?} is not part=vectors or part=kv"),
                ));
            }
        }
    }
    Ok(part)
}

pub(crate) async fn export(
    State(state): AppStateRef,
    name: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = path(name)?;
    let part = export_part(&uri)?;
    let engine = state.engine.clone();
    let dim = engine
        .list_datasets()
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.config.dim)
        .ok_or_else(|| ebb_engine::Error::UnknownDataset { name: name.clone() })?;
    // Scans are made here so an error before the first byte is an answer.
    let scan: Box<dyn Iterator<Item = ebb_engine::Result<RecordBatch>> + Send> = match part {
        Part::Vectors => Box::new(engine.scan(&name)?),
        Part::Kv => Box::new(engine.scan_kv(&name)?),
    };
    let schema = match part {
        Part::Vectors => vector_schema(dim),
        Part::Kv => kv_schema(),
    };
    // The blocking side writes IPC messages into a channel of a few
    // chunks; the body streams them (the whole dataset is never buffered).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let fail = |tx: &tokio::sync::mpsc::Sender<_>, e: String| {
            let _ = tx.blocking_send(Err(std::io::Error::other(e)));
        };
        let mut writer = match StreamWriter::try_new(Vec::new(), &schema) {
            Ok(w) => w,
            Err(e) => return fail(&tx, e.to_string()),
        };
        let flush = |writer: &mut StreamWriter<Vec<u8>>| {
            let chunk = std::mem::take(writer.get_mut());
            chunk.is_empty() || tx.blocking_send(Ok(Bytes::from(chunk))).is_ok()
        };
        if !flush(&mut writer) {
            return;
        }
        for batch in scan {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => return fail(&tx, e.to_string()),
            };
            if let Err(e) = writer.write(&batch) {
                return fail(&tx, e.to_string());
            }
            // A client that went away ends the scan.
            if !flush(&mut writer) {
                return;
            }
        }
        if let Err(e) = writer.finish() {
            return fail(&tx, e.to_string());
        }
        flush(&mut writer);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
        Body::from_stream(stream),
    )
        .into_response())
}
