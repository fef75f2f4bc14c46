//! The input checks every entry point shares (single calls and Arrow
//! batches alike), so a key, value or vector is judged the same way
//! wherever it comes in.

use crate::error::{Error, Result};
use crate::kv::MAX_KEY_BYTES;

/// A key: 1..=`MAX_KEY_BYTES` bytes.
pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// A value or payload: at most `max` bytes (`max_value_bytes`).
pub(crate) fn check_value(value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// A vector: `dim` finite components.
pub(crate) fn check_vector(vector: &[f32], dim: usize) -> Result<()> {
    if vector.len() != dim {
        return Err(Error::DimensionMismatch {
            expected: dim,
            got: vector.len(),
        });
    }
    if let Some((index, &value)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFinite { index, value });
    }
    Ok(())
}
