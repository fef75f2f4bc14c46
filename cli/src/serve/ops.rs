//! The operator routes: probes, `/metrics`, the debug reports and the
//! admin actions. Debug and admin routes check the admin token first
//! ([`super::auth`]); the actions run on the blocking pool and answer
//! their report as JSON.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ebb_engine::PressureLevel;
use ebb_metrics::{Format, Scrape};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::{AppState, auth, report};

type AppStateRef = State<Arc<AppState>>;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 while open, not shutting down and not at Critical; 503 (with the
/// reason) otherwise.
pub(crate) async fn readyz(State(state): AppStateRef) -> ApiResult<Json<Value>> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(not_ready("the server is shutting down"));
    }
    if state.engine.pressure_level() == PressureLevel::Critical {
        return Err(not_ready(
            "memory pressure is critical: writes are refused until memory is back under the soft limit",
        ));
    }
    Ok(Json(json!({ "ready": true })))
}

fn not_ready(why: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why)
}

/// The whole scrape: the engine's series and the server's.
pub(crate) fn scrape(state: &AppState) -> Scrape {
    let mut s = state.engine.scrape();
    state.http.collect(&mut s);
    s
}

pub(crate) async fn metrics(State(state): AppStateRef, headers: HeaderMap) -> Response {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let accept = accept.join(",");
    let format = Format::from_accept((!accept.is_empty()).then_some(accept.as_str()));
    let body = format.encode(&scrape(&state));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        body,
    )
        .into_response()
}

pub(crate) async fn debug_memory(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    auth::check(state.admin_token.as_deref(), &headers)?;
    let st = Arc::clone(&state);
    // smaps_rollup walks every mapping: off the async threads.
    let body = tokio::task::spawn_blocking(move || {
        let engine = &st.engine;
        let smaps = ebb_core::os::memory_breakdown().ok().map(|m| {
            json!({
                "rss_bytes": m.rss_bytes,
                "anonymous_bytes": m.anonymous_bytes,
                "anon_huge_bytes": m.anon_huge_bytes,
                "lazy_free_bytes": m.lazy_free_bytes,
                "swap_bytes": m.swap_bytes,
            })
        });
        let budget = engine.budget().stats();
        let datasets: Vec<Value> = engine
            .list_datasets()
            .iter()
            .map(|d| {
                let mut v = report::dataset_info(d);
                if let Ok(s) = engine.dataset_stats(&d.name) {
                    v["stats"] = report::dataset_stats(&s);
                }
                v
            })
            .collect();
        json!({
            "pressure": report::pressure(&engine.pressure_stats()),
            "smaps_rollup": smaps,
            "budget": {
                "limit_bytes": budget.limit_bytes,
                "headroom_bytes": budget.headroom_bytes,
                "reserved_bytes": budget.reserved_bytes,
                "consumers": budget.consumers.iter().map(|c| json!({
                    "name": c.name, "reserved_bytes": c.reserved_bytes,
                })).collect::<Vec<_>>(),
            },
            "datasets": datasets,
            "series": report::scrape_by_dataset(&scrape(&st)),
        })
    })
    .await
    .map_err(internal)?;
    Ok(Json(body))
}

fn internal(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("the request's task failed: {e}"),
    )
}

pub(crate) async fn debug_leaks(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Response> {
    auth::check(state.admin_token.as_deref(), &headers)?;
    let report = state.engine.leak_report();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        report.to_json(),
    )
        .into_response())
}

pub(crate) async fn debug_workers(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    auth::check(state.admin_token.as_deref(), &headers)?;
    let workers: Vec<Value> = state.engine.workers().iter().map(report::worker).collect();
    Ok(Json(json!({ "workers": workers })))
}

/// Runs an admin action on the blocking pool and answers its report.
async fn action(
    state: Arc<AppState>,
    headers: &HeaderMap,
    f: impl FnOnce(&ebb_engine::Engine) -> ebb_engine::Result<Value> + Send + 'static,
) -> ApiResult<Json<Value>> {
    auth::check(state.admin_token.as_deref(), headers)?;
    let value = tokio::task::spawn_blocking(move || f(&state.engine))
        .await
        .map_err(internal)??;
    Ok(Json(value))
}

pub(crate) async fn admin_compact(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    action(state, &headers, |e| Ok(report::release(&e.compact()?))).await
}

pub(crate) async fn admin_release_memory(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    action(state, &headers, |e| {
        Ok(report::release(&e.release_memory()?))
    })
    .await
}

pub(crate) async fn admin_snapshot(
    State(state): AppStateRef,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    action(state, &headers, |e| Ok(report::snapshot(&e.snapshot()?))).await
}
