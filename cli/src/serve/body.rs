//! Request bodies: read whole, up to `max_body_bytes` (413 past it, by
//! `Content-Length` before reading or as the bytes arrive), each chunk
//! within [`CHUNK_TIMEOUT`] (408 otherwise, so a client that stops sending
//! does not hold its buffer forever), and bounded together: the bodies in
//! flight may hold at most `4 x max_body_bytes` (a semaphore; past it,
//! 503 `server_busy` with Retry-After) and are charged to the engine's
//! memory budget under the consumer `http_bodies` (503 `over_budget` when
//! it refuses), so the budget sees request memory too. The permit and the
//! reservation live as long as the [`ReadBody`].

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use ebb_core::Reservation;
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AppState;
use super::error::{ApiError, ApiResult};

/// The longest wait for the next chunk of a body.
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// How many `max_body_bytes` may be in flight at once.
pub const IN_FLIGHT_BODIES: usize = 4;

/// The budget consumer request bodies are charged to.
pub const BODY_CONSUMER: &str = "http_bodies";

/// The bound on bodies in flight, in KiB permits.
pub struct BodyLimiter {
    permits: Arc<Semaphore>,
}

impl BodyLimiter {
    /// For bodies of at most `max_body_bytes` each.
    pub fn new(max_body_bytes: usize) -> BodyLimiter {
        let kib = (max_body_bytes * IN_FLIGHT_BODIES).div_ceil(1024);
        BodyLimiter {
            permits: Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS))),
        }
    }
}

/// A body read whole, with what it holds of the in-flight bound and of
/// the budget.
pub struct ReadBody {
    bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
    _charge: Reservation,
}

impl Deref for ReadBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl ReadBody {
    /// The bytes (the bound and the charge stay with `self`).
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
        "too many request bodies in flight; retry later",
    )
}

/// Reads `body` under the limits in the [module docs](self).
pub async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<ReadBody> {
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
    let permits = Arc::clone(&state.bodies.permits);
    let charge = state.engine.budget().reservation(BODY_CONSUMER);
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut held_kib = 0usize;
    // Takes the bound and the charge for `bytes` in all.
    let mut hold = |bytes: usize| -> ApiResult<()> {
        let kib = bytes.div_ceil(1024);
        if kib > held_kib {
            let more = u32::try_from(kib - held_kib).map_err(|_| busy())?;
            let p = Arc::clone(&permits)
                .try_acquire_many_owned(more)
                .map_err(|_| busy())?;
            match &mut held {
                Some(h) => h.merge(p),
                None => held = Some(p),
            }
            charge
                .try_grow(((kib - held_kib) * 1024) as u64)
                .map_err(|e| ApiError::from(ebb_engine::Error::OverBudget(e)))?;
            held_kib = kib;
        }
        Ok(())
    };
    let expected = declared.map_or(0, |n| n as usize).min(limit);
    hold(expected)?;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(expected);
    loop {
        let next = tokio::time::timeout(CHUNK_TIMEOUT, stream.next())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("no body bytes for {} s", CHUNK_TIMEOUT.as_secs()),
                )
            })?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("bad_body", format!("could not read the body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        hold(buf.len() + chunk.len())?;
        buf.extend_from_slice(&chunk);
    }
    Ok(ReadBody {
        bytes: Bytes::from(buf),
        _permit: held,
        _charge: charge,
    })
}
