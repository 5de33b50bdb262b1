//! The one public error type and its stable codes.
//!
//! Internal failures (SQLite, JSON, stored data that no longer parses) are mapped to
//! [`BillingError::Storage`] in exactly one place, [`StoreError`]'s `From` impl, so no
//! lower-level message leaks through any other path.

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// Everything the engine can refuse, each with a stable [`code`](BillingError::code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BillingError {
    #[error("not enough credits: {required} required, {available} available")]
    NotEnoughCredits { required: Decimal, available: Decimal },
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
    #[error("storage error: unreadable value in `{column}`: {value}")]
    Unreadable { column: String, value: String },
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
            Self::PaymentError { .. } => "PAYMENT_ERROR",
            Self::InvalidWebhook { .. } => "INVALID_WEBHOOK",
            Self::Busy { .. } => "BUSY",
            Self::StorageFull => "STORAGE_FULL",
            Self::Storage { .. } | Self::Unreadable { .. } => "STORAGE_ERROR",
        }
    }

    /// Machine-readable details for the bindings (`required`/`available` for
    /// NOT_ENOUGH_CREDITS, the offending field for INVALID_ARGUMENT, ...). Decimals and
    /// times are strings, as everywhere in JSON.
    pub fn details(&self) -> Map<String, Value> {
        let value = match self {
            Self::NotEnoughCredits { required, available } => {
                json!({ "required": required.to_string(), "available": available.to_string() })
            }
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
            Self::PaymentError { provider_code, description, retryable } => {
                json!({ "provider_code": provider_code, "description": description, "retryable": retryable })
            }
            Self::InvalidWebhook { reason } => json!({ "reason": reason }),
            Self::Busy { waited_ms } => json!({ "waited_ms": waited_ms, "retryable": true }),
            Self::Storage { message } => json!({ "message": message }),
            Self::Unreadable { column, value } => json!({ "column": column, "value": value }),
            Self::NoSubscription | Self::NoPaymentMethod | Self::StorageFull => json!({}),
        };
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field, message: message.into() }
    }
}

/// A failure below the domain: the database, or stored data that no longer parses.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A stored value that does not read as its column's type; `column` is `table.column`.
    #[error("corrupt stored value in `{column}`: {value}")]
    Corrupt { column: String, value: String },
}

impl StoreError {
    /// SQLite gave up waiting for another connection's lock.
    pub fn is_busy(&self) -> bool {
        let Self::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) = self else { return false };
        matches!(failure.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    }

    /// The unreadable value behind this error, directly or inside a row conversion.
    fn corrupt(&self) -> Option<&StoreError> {
        match self {
            Self::Corrupt { .. } => Some(self),
            Self::Sqlite(rusqlite::Error::FromSqlConversionFailure(_, _, cause)) => {
                cause.downcast_ref::<StoreError>().filter(|inner| matches!(inner, Self::Corrupt { .. }))
            }
            _ => None,
        }
    }

    /// The disk (or the volume's quota) is full.
    pub fn is_disk_full(&self) -> bool {
        let Self::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) = self else { return false };
        failure.code == rusqlite::ErrorCode::DiskFull
    }
}

impl From<StoreError> for BillingError {
    fn from(error: StoreError) -> Self {
        if error.is_busy() {
            // The store that waited fills in how long (see `SqliteStore::write`).
            return BillingError::Busy { waited_ms: 0 };
        }
        if error.is_disk_full() {
            return BillingError::StorageFull;
        }
        if let Some(StoreError::Corrupt { column, value }) = error.corrupt() {
            let value: String = value.chars().take(64).collect();
            return BillingError::Unreadable { column: column.clone(), value };
        }
        // SQLite's own messages name tables and constraints, never user data or secrets.
        BillingError::Storage { message: error.to_string() }
    }
}

pub type Result<T, E = BillingError> = std::result::Result<T, E>;
