//! Checks on caller input, done before any store access so bad input changes nothing.
//! The bindings use the parsers here for arguments that cross as text (amounts, JSON).

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{BillingError, Result};

pub const MAX_ID_BYTES: usize = 128;
pub const MAX_TEXT_BYTES: usize = 1024;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
pub const MAX_PAGE: u32 = 1000;
/// The most requests one batch call takes: a batch is one transaction, which holds the
/// write lock while it runs.
pub const MAX_BATCH: usize = 10_000;

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

/// A batch: at most [`MAX_BATCH`] requests.
pub fn batch_size(len: usize) -> Result<()> {
    if len > MAX_BATCH {
        return Err(BillingError::invalid("requests", format!("at most {MAX_BATCH} per batch, got {len}")));
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

/// The most decimal places a credit amount has.
pub const CREDIT_DECIMALS: u32 = 6;
/// The most decimal places a money amount has: what payment providers take.
pub const MONEY_DECIMALS: u32 = 2;
/// The largest amount, of credits or money, one call may move: far beyond any real
/// balance, and far enough below `Decimal::MAX` that no sum of them overflows.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(0xA764_0000, 0x0DE0_B6B3, 0, false, 0); // 10^18

/// A credit amount: at most [`CREDIT_DECIMALS`] places and [`MAX_AMOUNT`] in size,
/// refused rather than rounded.
pub fn credits(field: &'static str, amount: Decimal) -> Result<Decimal> {
    bounded(field, amount, CREDIT_DECIMALS)
}

/// A money amount: above zero, at most [`MONEY_DECIMALS`] places and [`MAX_AMOUNT`].
pub fn money(field: &'static str, amount: Decimal) -> Result<Decimal> {
    if amount <= Decimal::ZERO {
        return Err(BillingError::invalid(field, format!("must be above zero, got {amount}")));
    }
    bounded(field, amount, MONEY_DECIMALS)
}

fn bounded(field: &'static str, amount: Decimal, decimals: u32) -> Result<Decimal> {
    if amount.normalize().scale() > decimals {
        return Err(BillingError::invalid(field, format!("at most {decimals} decimal places, got {amount}")));
    }
    if amount.abs() > MAX_AMOUNT {
        return Err(BillingError::invalid(field, format!("at most {MAX_AMOUNT} in size, got {amount}")));
    }
    Ok(amount)
}

pub fn page_size(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(BillingError::invalid("limit", format!("expected 1 to {MAX_PAGE}, got {limit}")));
    }
    Ok(())
}

/// An amount given as a decimal string (`"12.50"`, `"-2"`), exactly: a value with more
/// digits than a `Decimal` holds is refused rather than rounded.
pub fn decimal(field: &'static str, text: &str) -> Result<Decimal> {
    Decimal::from_str_exact(text.trim())
        .map_err(|_| BillingError::invalid(field, format!("expected a decimal number, got `{text}`")))
}

/// An instant given as RFC 3339 text.
pub fn moment(field: &'static str, text: &str) -> Result<time::OffsetDateTime> {
    crate::time_util::parse_iso(text)
        .ok_or_else(|| BillingError::invalid(field, format!("expected an RFC 3339 time, got `{text}`")))
}

/// An optional argument given as JSON text, read into `T`.
pub fn json<T: DeserializeOwned>(field: &'static str, text: Option<&str>) -> Result<Option<T>> {
    text.map(serde_json::from_str).transpose().map_err(|e| BillingError::invalid(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_arguments_parse_exactly_or_name_their_field() {
        assert_eq!(decimal("amount", " -12.50 ").unwrap().to_string(), "-12.50");
        for bad in ["ten", "", "1e3", "0.00000000000000000000000000001"] {
            let err = decimal("amount", bad).unwrap_err();
            assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("amount")), "{bad}");
        }
        assert_eq!(MAX_AMOUNT.to_string(), "1000000000000000000");
        assert_eq!(credits("amount", "-2.000001".parse().unwrap()).unwrap().to_string(), "-2.000001");
        assert_eq!(money("amount", "50.10".parse().unwrap()).unwrap().to_string(), "50.10");
        for (check, bad) in [
            (credits as fn(&'static str, Decimal) -> Result<Decimal>, "0.0000001"),
            (credits, "1000000000000000001"),
            (money, "0.001"),
            (money, "0"),
            (money, "-1.00"),
        ] {
            let err = check("amount", bad.parse().unwrap()).unwrap_err();
            assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("amount")), "{bad}");
        }
        assert_eq!(json::<Value>("metadata", None).unwrap(), None);
        assert_eq!(json::<Value>("metadata", Some(r#"{"a":1}"#)).unwrap(), Some(serde_json::json!({"a": 1})));
        assert_eq!(json::<Value>("metadata", Some("{")).unwrap_err().details()["field"], "metadata");
    }
}
