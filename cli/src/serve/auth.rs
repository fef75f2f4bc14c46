//! The admin token: debug and admin routes need `Authorization: Bearer
//! <token>` when one is set (401 without the header, 403 with another
//! token). Compared in constant time: every byte of the longer of the two
//! is looked at whatever the first difference, so the answer's timing says
//! nothing about how much of a guess was right.

use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;

use super::error::ApiError;

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
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
    let given = value.as_bytes().strip_prefix(b"Bearer ").ok_or_else(|| {
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
        h.insert(AUTHORIZATION, "Basic t".parse().unwrap());
        assert_eq!(
            check(Some("t"), &h).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }
}
