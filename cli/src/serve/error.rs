//! [`ApiError`]: every refusal the server answers, as a status code and
//! the one error body `{"error": {"code": "snake_case", "message": "..."}}`.
//!
//! The engine's errors map by kind: a caller's mistake is 4xx with the
//! engine's message (it names the values that were wrong), memory
//! pressure, an over-budget write and closing are 503 with `Retry-After`,
//! anything else is 500. A refused request changed nothing.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ebb_engine::Error;

/// Seconds a client is told to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answer: status, code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code (`snake_case`).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error of `status` with `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        let (status, code) = match &e {
            Error::UnknownDataset { .. } => (StatusCode::NOT_FOUND, "unknown_dataset"),
            Error::DatasetExists { .. } => (StatusCode::CONFLICT, "dataset_exists"),
            Error::BadName { .. } => (StatusCode::BAD_REQUEST, "bad_name"),
            Error::TooManyDatasets { .. } => (StatusCode::CONFLICT, "too_many_datasets"),
            Error::BadDatasetConfig { .. } => (StatusCode::BAD_REQUEST, "bad_dataset_config"),
            Error::DimensionMismatch { .. } => (StatusCode::BAD_REQUEST, "dimension_mismatch"),
            Error::NonFinite { .. } => (StatusCode::BAD_REQUEST, "non_finite"),
            Error::Schema { .. } => (StatusCode::BAD_REQUEST, "wrong_schema"),
            Error::Null { .. } => (StatusCode::BAD_REQUEST, "null_value"),
            Error::EmptyKey => (StatusCode::BAD_REQUEST, "empty_key"),
            Error::KeyTooLarge { .. } => (StatusCode::BAD_REQUEST, "key_too_large"),
            Error::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            Error::BadK { .. } => (StatusCode::BAD_REQUEST, "bad_k"),
            Error::OverBudget(_) => (StatusCode::SERVICE_UNAVAILABLE, "over_budget"),
            Error::MemoryPressure { .. } => (StatusCode::SERVICE_UNAVAILABLE, "memory_pressure"),
            Error::Closing => (StatusCode::SERVICE_UNAVAILABLE, "closing"),
            Error::Cancelled { .. } => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            Error::Allocation { .. } => (StatusCode::SERVICE_UNAVAILABLE, "allocation_failed"),
            Error::NoDataDir => (StatusCode::CONFLICT, "no_data_dir"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_mistakes_are_4xx_and_pressure_is_503() {
        let e: ApiError = Error::DimensionMismatch {
            expected: 4,
            got: 3,
        }
        .into();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "dimension_mismatch")
        );
        assert!(e.message.contains('4') && e.message.contains('3'), "{e:?}");
        let e: ApiError = Error::Closing.into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let e: ApiError = Error::UnknownDataset { name: "x".into() }.into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
