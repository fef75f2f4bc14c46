//! The router: every route, its handler, and the layers every request
//! goes through (request metrics by route template; JSON answers for an
//! unknown route, a wrong method and a handler that panicked).
//!
//! | route | handler |
//! |---|---|
//! | `POST /v1/datasets`, `GET /v1/datasets` | create, list |
//! | `GET`, `DELETE /v1/datasets/{name}` | info with stats, drop |
//! | `PUT`, `GET`, `DELETE /v1/datasets/{name}/kv/{key}` | KV (raw bytes) |
//! | `POST /v1/datasets/{name}/vectors` | JSON or Arrow IPC upload |
//! | `DELETE /v1/datasets/{name}/vectors/{id}` | delete a vector |
//! | `POST /v1/datasets/{name}/search` | k nearest |
//! | `GET /v1/datasets/{name}/export` | Arrow IPC stream (`?part=kv` for KV) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | probes, metrics |
//! | `GET /debug/{memory,leaks,workers}` | reports (token) |
//! | `POST /admin/{compact,release-memory,snapshot}` | actions (token) |

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use super::error::ApiError;
use super::{api, ops};

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The whole router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/datasets",
            post(api::create_dataset).get(api::list_datasets),
        )
        .route(
            "/v1/datasets/{name}",
            get(api::get_dataset).delete(api::drop_dataset),
        )
        .route(
            "/v1/datasets/{name}/kv/{key}",
            get(api::get_kv).put(api::put_kv).delete(api::delete_kv),
        )
        .route("/v1/datasets/{name}/vectors", post(api::upsert_vectors))
        .route(
            "/v1/datasets/{name}/vectors/{id}",
            axum::routing::delete(api::delete_vector),
        )
        .route("/v1/datasets/{name}/search", post(api::search))
        .route("/v1/datasets/{name}/export", get(api::export))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/debug/memory", get(ops::debug_memory))
        .route("/debug/leaks", get(ops::debug_leaks))
        .route("/debug/workers", get(ops::debug_workers))
        .route("/admin/compact", post(ops::admin_compact))
        .route("/admin/release-memory", post(ops::admin_release_memory))
        .route("/admin/snapshot", post(ops::admin_snapshot))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            record_matched,
        ))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Bodies are read by the handlers against max_body_bytes (with a
        // JSON 413), not by axum's default 2 MiB limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn(catch_panic))
        .with_state(state)
}

/// A handler that panics answers a JSON 500 (and logs it) instead of a
/// reset connection: no caller input is meant to reach a panic, and if one
/// does the client still gets the error body every answer has.
async fn catch_panic(request: Request, next: Next) -> Response {
    use futures_util::FutureExt;
    let route = request.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%route, "a request handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the request failed inside the server (logged)",
            )
            .into_response()
        }
    }
}

/// Records a matched request's route template, status class and time.
async fn record_matched(
    State(state): State<Arc<AppState>>,
    path: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = path.as_str().to_string();
    let response = next.run(request).await;
    state.http.record(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn unknown_route(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.http.record(UNMATCHED, 404, 0.0);
    ApiError::not_found(
        "unknown_route",
        format!("no route {} {}", request.method(), request.uri().path()),
    )
    .into_response()
}

async fn wrong_method(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.http.record(UNMATCHED, 405, 0.0);
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
    .into_response()
}
