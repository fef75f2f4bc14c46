//! The admin token: debug and admin routes need `Authorization: Bearer
//! <token>` when one is set (401 without the header, 403 with another
//! token; the scheme is matched case-insensitively, as RFC 7235 has it).
//! Compared in constant time: the loop runs over the guess's bytes (each
//! against the token's byte at that place, cycling), whatever the first
//! difference, so its timing depends only on the guess's own length:
//! nothing about how much of it was right, nor the token's length.

use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;

use super::error::ApiError;

/// `given == secret`, in time that depends only on `given.len()`.
pub fn constant_time_eq(given: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return given.is_empty();
    }
    let mut diff = (given.len() ^ secret.len()) as u64;
    for (i, x) in given.iter().enumerate() {
        diff |= u64::from(x ^ secret[i % secret.len()]);
    }
    std::hint::black_box(diff) == 0
}

/// Checks `headers` against `token` (none: every request passes).
pub fn check(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "this route needs Authorization: Bearer <admin token>",
        ));
    };
    let raw = value.as_bytes();
    let given = (raw.len() >= 7 && raw[..7].eq_ignore_ascii_case(b"bearer "))
        .then(|| &raw[7..])
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "the Authorization header is not `Bearer <token>`",
            )
        })?;
    if constant_time_eq(given, token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_token",
            "the admin token does not match",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(!constant_time_eq(b"x", b""));
        assert!(!constant_time_eq(b"secretsecret", b"secret"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn missing_is_401_and_wrong_is_403() {
        let mut h = HeaderMap::new();
        assert!(check(None, &h).is_ok());
        assert_eq!(
            check(Some("t"), &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        h.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert_eq!(
            check(Some("t"), &h).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        h.insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(check(Some("t"), &h).is_ok());
        h.insert(AUTHORIZATION, "bearer t".parse().unwrap());
        assert!(check(Some("t"), &h).is_ok());
        h.insert(AUTHORIZATION, "Bearer tt".parse().unwrap());
        assert_eq!(
            check(Some("t"), &h).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        h.insert(AUTHORIZATION, "Basic t".parse().unwrap());
        assert_eq!(
            check(Some("t"), &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
