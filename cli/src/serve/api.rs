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
use serde_json::{Value, json};

use super::AppState;
use super::body::read_body;
use super::decode::{self, ARROW_STREAM};
use super::error::{ApiError, ApiResult};
use super::report;

type AppStateRef = State<Arc<AppState>>;

/// The path's parameters, or a JSON 400.
fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::bad_request("bad_path", e.body_text()))
}

/// 503 before a write's body is read, while the engine refuses writes
/// (Critical pressure): the client learns at once, and the server does
/// not buffer a body it would refuse.
fn refuse_at_critical(state: &AppState) -> ApiResult<()> {
    if state.engine.pressure_level() == ebb_engine::PressureLevel::Critical {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "memory_pressure",
            "memory pressure is critical: writes are refused until memory is back under the soft limit",
        ));
    }
    Ok(())
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// 415 unless the body is JSON.
fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let media = decode::media_type(content_type(headers));
    if is_json(&media) {
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
    refuse_at_critical(&state)?;
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
    if !arrow && !is_json(&media) {
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
    refuse_at_critical(&state)?;
    let body = read_body(&state, &headers, body).await?;
    let engine = state.engine.clone();
    let stored = blocking(move || {
        let body = body;
        let batches: Vec<RecordBatch> = if arrow {
            decode::arrow_stream(&body)?
        } else {
            vec![decode::vectors_json(&body, dim)?]
        };
        // One write: every batch checked before any is stored.
        engine.ingest_all(&name, &batches).map_err(|e| {
            let stored = e.stored;
            let mut api = ApiError::from(e.error);
            if stored > 0 {
                api.message = format!("{} ({stored} rows were stored before it)", api.message);
            }
            api
        })
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
) -> ApiResult<Response> {
    let name = path(name)?;
    require_json(&headers)?;
    let body = read_body(&state, &headers, body).await?;
    let req = decode::search(&body)?;
    // A search is a few hundred microseconds of CPU: on the async thread,
    // as a blocking-pool hop would cost more than it saves.
    let hits = state.engine.search(&name, &req.vector, req.k)?;
    let body = serde_json::to_vec(&report::SearchJson {
        hits: hits.iter().map(report::HitJson::new).collect(),
    })
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

type Scan = Box<dyn Iterator<Item = ebb_engine::Result<RecordBatch>> + Send>;

/// How long the export waits for a client to take the next chunk before it
/// gives up (a client that stops reading must not hold a blocking thread
/// and a scan forever).
const EXPORT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Writes `scan` as an IPC stream into `tx`, chunk by chunk, from a
/// blocking thread; `Err` says why it stopped short.
fn write_stream(
    handle: &tokio::runtime::Handle,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    schema: &arrow_schema::SchemaRef,
    scan: Scan,
) -> Result<(), String> {
    let send = |chunk: Vec<u8>| -> Result<(), String> {
        if chunk.is_empty() {
            return Ok(());
        }
        match handle.block_on(tokio::time::timeout(
            EXPORT_SEND_TIMEOUT,
            tx.send(Ok(Bytes::from(chunk))),
        )) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the client went away".into()),
            Err(_) => Err(format!(
                "the client took no data for {} s",
                EXPORT_SEND_TIMEOUT.as_secs()
            )),
        }
    };
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
    send(std::mem::take(writer.get_mut()))?;
    for batch in scan {
        let batch = batch.map_err(|e| e.to_string())?;
        writer.write(&batch).map_err(|e| e.to_string())?;
        send(std::mem::take(writer.get_mut()))?;
    }
    writer.finish().map_err(|e| e.to_string())?;
    send(std::mem::take(writer.get_mut()))
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
    // The scan is made first (it copies the ids: off the async threads),
    // so an error before the first byte is an answer.
    let scan_engine = engine.clone();
    let scan_name = name.clone();
    let scan = blocking(move || -> ApiResult<Scan> {
        Ok(match part {
            Part::Vectors => Box::new(scan_engine.scan(&scan_name)?),
            Part::Kv => Box::new(scan_engine.scan_kv(&scan_name)?),
        })
    })
    .await?;
    let schema = match part {
        Part::Vectors => vector_schema(dim),
        Part::Kv => kv_schema(),
    };
    // The blocking side writes IPC messages into a channel of a few
    // chunks; the body streams them (the whole dataset is never buffered).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let fail = |e: String| {
            let _ = tx.try_send(Err(std::io::Error::other(e)));
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            write_stream(&handle, &tx, &schema, scan)
        }));
        match run {
            Ok(Ok(())) => done.store(true, std::sync::atomic::Ordering::Release),
            Ok(Err(e)) => fail(e),
            Err(_) => fail("the export failed".into()),
        }
    });
    // A channel that closes before the producer said it finished (a
    // failure, a panic, a refused task) ends the body with an error, so
    // the client sees a broken transfer, never a short stream as if whole.
    let stream = futures_util::stream::unfold((rx, finished), |(mut rx, finished)| async move {
        match rx.recv().await {
            Some(item) => Some((item, (rx, finished))),
            None if finished.load(std::sync::atomic::Ordering::Acquire) => None,
            None => Some((
                Err(std::io::Error::other("the export stopped before its end")),
                (rx, Arc::new(std::sync::atomic::AtomicBool::new(true))),
            )),
        }
    });
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
        Body::from_stream(stream),
    )
        .into_response())
}
