//! The one public error type, and [`ERROR_CODES`], the one table of its stable codes.
//!
//! Failures below the domain are mapped to these errors by the store that meets them,
//! in one place (the SQLite store's `store::sqlite_error`), with fixed messages: no
//! database text, stored value or user data reaches a public message.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// Everything the engine can refuse, each with a stable [`code`](BillingError::code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    /// `expired`: credits of lots whose expiry the refused call found, before it.
    #[error("not enough credits: {required} required, {available} available")]
    NotEnoughCredits { required: Decimal, available: Decimal, expired: Decimal },
    #[error("the daily limit of {limit} ops is reached; it resets at {}", crate::time_util::iso(*.resets_at))]
    DailyLimitReached { limit: u32, resets_at: OffsetDateTime },
    #[error("no active subscription")]
    NoSubscription,
    #[error("invalid plan `{plan_code}`: {reason}")]
    InvalidPlan { plan_code: String, reason: &'static str },
    #[error("no saved payment method")]
    NoPaymentMethod,
    #[error("the user already has an active `{plan_code}` subscription until {}", crate::time_util::iso(*.expires_at))]
    ActiveSubscription { plan_code: String, expires_at: OffsetDateTime },
    #[error("idempotency key `{key}` was already used for a different request")]
    IdempotencyConflict { key: String },
    #[error("invalid catalog: {path}: {message}")]
    InvalidCatalog { path: String, message: String },
    #[error("unknown user `{user_id}`")]
    UnknownUser { user_id: String },
    #[error("unknown operation `{operation}`")]
    UnknownOperation { operation: String },
    #[error("charge {charge_id} not found")]
    ChargeNotFound { charge_id: i64 },
    /// A check or reservation of usage would pass a quota. `window` is `period` or `day`.
    #[error(
        "the {window} quota of `{metric}` is reached: {used} used and {held} held of {limit}, {requested} requested"
    )]
    QuotaExceeded {
        metric: String,
        limit: u64,
        used: u64,
        held: u64,
        requested: u64,
        resets_at: OffsetDateTime,
        window: &'static str,
    },
    /// The user's plan lacks the feature; `cheapest_plan` is the cheapest plan that has
    /// it, if any.
    #[error("the feature `{feature}` is not on the user's plan")]
    FeatureNotAvailable { feature: String, cheapest_plan: Option<String> },
    #[error("unknown metric `{metric}`")]
    UnknownMetric { metric: String },
    #[error("hold `{hold_id}` not found")]
    HoldNotFound { hold_id: String },
    /// No granted credit lot has this id.
    #[error("no granted credit lot {lot_id}")]
    GrantNotFound { lot_id: i64 },
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: &'static str, message: String },
    #[error("payment provider error: {provider_code}: {description}")]
    PaymentError { provider_code: String, description: String, retryable: bool },
    #[error("invalid webhook: {reason}")]
    InvalidWebhook { reason: String },
    /// Another writer held the store's lock for the whole of the lock timeout. Nothing
    /// was written; the same call may be tried again (HTTP 503).
    #[error("the store is busy: waited {waited_ms} ms for the write lock")]
    Busy { waited_ms: u64 },
    /// The disk holding the store is full. Nothing was written; the store made what room
    /// it could (a WAL checkpoint), and writes work again once there is space.
    #[error("the disk is full: nothing was written")]
    StorageFull,
    #[error("storage error: {message}")]
    Storage { message: String },
    /// A stored value that no longer reads as what its column holds (edited by hand, or
    /// damaged). `column` is `table.column`. Code STORAGE_ERROR.
    #[error("storage error: a value in `{column}` does not read")]
    Unreadable { column: String },
}

impl BillingError {
    /// The stable string code of the contract (`NOT_ENOUGH_CREDITS`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotEnoughCredits { .. } => "NOT_ENOUGH_CREDITS",
            Self::DailyLimitReached { .. } => "DAILY_LIMIT_REACHED",
            Self::NoSubscription => "NO_SUBSCRIPTION",
            Self::InvalidPlan { .. } => "INVALID_PLAN",
            Self::NoPaymentMethod => "NO_PAYMENT_METHOD",
            Self::ActiveSubscription { .. } => "ACTIVE_SUBSCRIPTION",
            Self::IdempotencyConflict { .. } => "IDEMPOTENCY_CONFLICT",
            Self::InvalidCatalog { .. } => "INVALID_CATALOG",
            Self::UnknownUser { .. } => "UNKNOWN_USER",
            Self::UnknownOperation { .. } => "UNKNOWN_OPERATION",
            Self::ChargeNotFound { .. } => "CHARGE_NOT_FOUND",
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Self::FeatureNotAvailable { .. } => "FEATURE_NOT_AVAILABLE",
            Self::UnknownMetric { .. } => "UNKNOWN_METRIC",
            Self::HoldNotFound { .. } => "HOLD_NOT_FOUND",
            Self::GrantNotFound { .. } => "GRANT_NOT_FOUND",
            Self::PaymentError { .. } => "PAYMENT_ERROR",
            Self::InvalidWebhook { .. } => "INVALID_WEBHOOK",
            Self::Busy { .. } => "BUSY",
            Self::StorageFull => "STORAGE_FULL",
            Self::Storage { .. } | Self::Unreadable { .. } => "STORAGE_ERROR",
        }
    }

    /// The message for the bindings: the error's text, cut to [`MAX_MESSAGE_CHARS`], so
    /// that an error about a 10 MB field is not 10 MB.
    pub fn message(&self) -> String {
        bounded(&self.to_string(), MAX_MESSAGE_CHARS)
    }

    /// Machine-readable details for the bindings (`required`/`available` for
    /// NOT_ENOUGH_CREDITS, the offending field for INVALID_ARGUMENT, ...). Decimals and
    /// times are strings, as everywhere in JSON; a string that repeats the caller's input
    /// is cut to [`MAX_ECHO_CHARS`].
    pub fn details(&self) -> Map<String, Value> {
        let value = match self {
            Self::NotEnoughCredits { required, available, expired } => json!({
                "required": required.to_string(), "available": available.to_string(), "expired": expired.to_string(),
            }),
            Self::DailyLimitReached { limit, resets_at } => {
                json!({ "limit": limit, "resets_at": crate::time_util::iso(*resets_at) })
            }
            Self::InvalidPlan { plan_code, reason } => json!({ "plan_code": plan_code, "reason": reason }),
            Self::ActiveSubscription { plan_code, expires_at } => {
                json!({ "plan_code": plan_code, "expires_at": crate::time_util::iso(*expires_at) })
            }
            Self::IdempotencyConflict { key } => json!({ "idempotency_key": key }),
            Self::InvalidCatalog { path, message } => json!({ "path": path, "message": message }),
            Self::UnknownUser { user_id } => json!({ "user_id": user_id }),
            Self::UnknownOperation { operation } => json!({ "operation": operation }),
            Self::ChargeNotFound { charge_id } => json!({ "charge_id": charge_id }),
            Self::InvalidArgument { field, message } => json!({ "field": field, "message": message }),
            Self::QuotaExceeded { metric, limit, used, held, requested, resets_at, window } => json!({
                "metric": metric, "limit": limit, "used": used, "held": held, "requested": requested,
                "resets_at": crate::time_util::iso(*resets_at), "window": window,
            }),
            Self::FeatureNotAvailable { feature, cheapest_plan } => {
                json!({ "feature": feature, "cheapest_plan": cheapest_plan })
            }
            Self::UnknownMetric { metric } => json!({ "metric": metric }),
            Self::HoldNotFound { hold_id } => json!({ "hold_id": hold_id }),
            Self::GrantNotFound { lot_id } => json!({ "lot_id": lot_id }),
            Self::PaymentError { provider_code, description, retryable } => {
                json!({ "provider_code": provider_code, "description": description, "retryable": retryable })
            }
            Self::InvalidWebhook { reason } => json!({ "reason": reason }),
            Self::Busy { waited_ms } => json!({ "waited_ms": waited_ms, "retryable": true }),
            Self::Storage { message } => json!({ "message": message }),
            Self::Unreadable { column } => json!({ "column": column }),
            Self::NoSubscription | Self::NoPaymentMethod | Self::StorageFull => json!({}),
        };
        match value {
            Value::Object(map) => {
                map.into_iter().map(|(key, value)| (key, bounded_value(value, MAX_ECHO_CHARS))).collect()
            }
            _ => Map::new(),
        }
    }

    /// A failure of the store rather than of the request: BUSY, STORAGE_FULL and
    /// STORAGE_ERROR. Such a failure ends the whole transaction it happened in (a batch,
    /// or a commit shared by several callers), not just one request of it.
    pub fn is_storage_failure(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::StorageFull | Self::Storage { .. } | Self::Unreadable { .. })
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field, message: message.into() }
    }
}

/// The most characters of one value an error's details repeat.
pub const MAX_ECHO_CHARS: usize = 256;
/// The most characters of an error's message: a sentence and a bounded echo.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// `text`, cut to `max` characters and marked with `…` when it was longer.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn bounded_value(value: Value, max: usize) -> Value {
    match value {
        Value::String(text) => Value::String(bounded(&text, max)),
        other => other,
    }
}

/// One error code: what an HTTP API answers it with, and whether the same call may
/// succeed when tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorCode {
    pub code: &'static str,
    pub http_status: u16,
    pub retryable: bool,
}

const fn code(code: &'static str, http_status: u16, retryable: bool) -> ErrorCode {
    ErrorCode { code, http_status, retryable }
}

/// Every code a call can fail with, and only those. [`BillingError::code`], the Python
/// exception classes, the README and `docs/API.md` are checked against this table by tests.
pub const ERROR_CODES: &[ErrorCode] = &[
    code("NOT_ENOUGH_CREDITS", 402, false),
    code("DAILY_LIMIT_REACHED", 429, false),
    code("NO_SUBSCRIPTION", 409, false),
    code("INVALID_PLAN", 400, false),
    code("NO_PAYMENT_METHOD", 409, false),
    code("ACTIVE_SUBSCRIPTION", 409, false),
    code("IDEMPOTENCY_CONFLICT", 409, false),
    code("INVALID_CATALOG", 500, false),
    code("UNKNOWN_USER", 404, false),
    code("UNKNOWN_OPERATION", 404, false),
    code("CHARGE_NOT_FOUND", 404, false),
    code("INVALID_ARGUMENT", 400, false),
    code("QUOTA_EXCEEDED", 429, false),
    code("FEATURE_NOT_AVAILABLE", 403, false),
    code("UNKNOWN_METRIC", 404, false),
    code("HOLD_NOT_FOUND", 404, false),
    code("GRANT_NOT_FOUND", 404, false),
    code("PAYMENT_ERROR", 502, true),
    code("INVALID_WEBHOOK", 400, false),
    code("BUSY", 503, true),
    code("STORAGE_FULL", 507, true),
    code("STORAGE_ERROR", 500, false),
    // Not an engine error: a binding's report of a panic it caught.
    code(INTERNAL_ERROR, 500, false),
];

/// The code a binding reports a Rust panic with.
pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";

pub type Result<T, E = BillingError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_repeats_a_bounded_part_of_a_huge_input() {
        let huge = "x".repeat(10_000_000);
        let err = BillingError::invalid("return_url", format!("expected an http(s) URL, got `{huge}`"));
        assert_eq!(err.message().chars().count(), MAX_MESSAGE_CHARS + 1, "cut, and marked with …");
        assert!(err.message().ends_with('…'));
        let plan = BillingError::InvalidPlan { plan_code: huge.clone(), reason: "unknown" };
        let details = plan.details();
        assert_eq!(details["plan_code"].as_str().unwrap().chars().count(), MAX_ECHO_CHARS + 1);
        assert_eq!(details["reason"], "unknown", "short values stay whole");
        let cyrillic = BillingError::UnknownMetric { metric: "м".repeat(300) };
        assert!(cyrillic.details()["metric"].as_str().unwrap().starts_with(&"м".repeat(MAX_ECHO_CHARS)));
    }

    /// One of each variant, so that a new variant without a row in the table fails here.
    fn every_variant() -> Vec<BillingError> {
        let at = OffsetDateTime::UNIX_EPOCH;
        vec![
            BillingError::NotEnoughCredits { required: Decimal::ONE, available: Decimal::ZERO, expired: Decimal::ZERO },
            BillingError::DailyLimitReached { limit: 1, resets_at: at },
            BillingError::NoSubscription,
            BillingError::InvalidPlan { plan_code: "p".into(), reason: "r" },
            BillingError::NoPaymentMethod,
            BillingError::ActiveSubscription { plan_code: "p".into(), expires_at: at },
            BillingError::IdempotencyConflict { key: "k".into() },
            BillingError::InvalidCatalog { path: "p".into(), message: "m".into() },
            BillingError::UnknownUser { user_id: "u".into() },
            BillingError::UnknownOperation { operation: "o".into() },
            BillingError::ChargeNotFound { charge_id: 1 },
            BillingError::InvalidArgument { field: "f", message: "m".into() },
            BillingError::QuotaExceeded {
                metric: "m".into(),
                limit: 1,
                used: 1,
                held: 0,
                requested: 1,
                resets_at: at,
                window: "period",
            },
            BillingError::FeatureNotAvailable { feature: "f".into(), cheapest_plan: None },
            BillingError::UnknownMetric { metric: "m".into() },
            BillingError::HoldNotFound { hold_id: "h".into() },
            BillingError::GrantNotFound { lot_id: 1 },
            BillingError::PaymentError { provider_code: "c".into(), description: "d".into(), retryable: true },
            BillingError::InvalidWebhook { reason: "r".into() },
            BillingError::Busy { waited_ms: 1 },
            BillingError::StorageFull,
            BillingError::Storage { message: "m".into() },
            BillingError::Unreadable { column: "t.c".into() },
        ]
    }

    #[test]
    fn the_table_holds_every_code_of_every_variant_and_nothing_else() {
        let mut raised: Vec<&str> = every_variant().iter().map(BillingError::code).collect();
        raised.push(INTERNAL_ERROR);
        raised.sort_unstable();
        raised.dedup();
        let mut table: Vec<&str> = ERROR_CODES.iter().map(|c| c.code).collect();
        table.sort_unstable();
        assert_eq!(raised, table);
    }

    #[test]
    fn the_readme_and_the_api_docs_list_every_code() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        for doc in ["README.md", "docs/API.md"] {
            let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
            for code in ERROR_CODES {
                assert!(text.contains(code.code), "{doc} does not mention {}", code.code);
            }
        }
        let api = std::fs::read_to_string(format!("{root}/docs/API.md")).unwrap();
        for code in ERROR_CODES {
            let first_cell = |line: &str| line.split('|').nth(1).unwrap_or_default().contains(code.code);
            let row = api.lines().find(|l| l.starts_with('|') && first_cell(l)).expect(code.code);
            assert!(
                row.contains(&format!("| {} |", code.http_status)),
                "docs/API.md: {} is not {}",
                code.code,
                code.http_status
            );
        }
    }
}
