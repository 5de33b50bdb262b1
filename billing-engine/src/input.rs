//! Checks on caller input, done before any store access so bad input changes nothing.

use serde_json::Value;

use crate::error::{BillingError, Result};

pub const MAX_ID_BYTES: usize = 128;
pub const MAX_TEXT_BYTES: usize = 1024;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_PAGE: u32 = 1000;

/// User ids and idempotency keys: 1 to 128 bytes, no control characters.
pub fn id(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(BillingError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_BYTES {
        return Err(BillingError::invalid(field, format!("at most {MAX_ID_BYTES} bytes, got {}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(BillingError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Free text such as a reason: non-empty, bounded.
pub fn text(field: &'static str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(BillingError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_TEXT_BYTES {
        return Err(BillingError::invalid(field, format!("at most {MAX_TEXT_BYTES} bytes, got {}", value.len())));
    }
    Ok(())
}

/// Metadata is a JSON object of bounded size.
pub fn metadata(value: Option<&Value>) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    if !value.is_object() {
        return Err(BillingError::invalid("metadata", "must be a JSON object"));
    }
    let size = value.to_string().len();
    if size > MAX_METADATA_BYTES {
        return Err(BillingError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_BYTES} bytes as JSON, got {size}"),
        ));
    }
    Ok(())
}

pub fn page_size(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(BillingError::invalid("limit", format!("expected 1 to {MAX_PAGE}, got {limit}")));
    }
    Ok(())
}
