//! What the SQLite store's failures mean to a caller, decided in this one place with
//! fixed messages, as application-services' components do: no SQLite text, stored value
//! or user data reaches a public error, and `rusqlite` stays out of the public API.

use rusqlite::ErrorCode;

use super::StoreError;
use crate::error::BillingError;

/// A failure inside the SQLite store, before it is mapped to a [`StoreError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum SqliteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A stored value that does not read as its column's type; `column` is `table.column`.
    #[error("a value in `{column}` does not read")]
    Unreadable { column: String },
    /// The store found the database in a state it cannot work with; a fixed reason.
    #[error("{0}")]
    Unusable(&'static str),
    /// The file was written by a newer engine, whose schema this one does not know.
    #[error("schema version {found} is newer than this engine ({known})")]
    NewerSchema { found: usize, known: usize },
}

impl SqliteError {
    /// The column of an unreadable value, directly or inside a row conversion.
    fn unreadable_column(&self) -> Option<&str> {
        match self {
            Self::Unreadable { column } => Some(column),
            Self::Sqlite(rusqlite::Error::FromSqlConversionFailure(_, _, cause)) => match cause.downcast_ref() {
                Some(Self::Unreadable { column }) => Some(column),
                _ => None,
            },
            _ => None,
        }
    }
}

impl From<SqliteError> for StoreError {
    fn from(error: SqliteError) -> Self {
        if let Some(column) = error.unreadable_column() {
            return StoreError::Corrupt { column: column.to_owned() };
        }
        let failure = match &error {
            SqliteError::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => failure.code,
            SqliteError::Json(_) => return StoreError::unavailable("a stored JSON value does not read"),
            SqliteError::Unusable(reason) => return StoreError::unavailable(*reason),
            SqliteError::NewerSchema { .. } => {
                return StoreError::unavailable(format!("the database's {error}: upgrade the engine"))
            }
            _ => return StoreError::unavailable("the database answered something unexpected"),
        };
        match failure {
            // The store that waited fills in how long (see `SqliteStore::write`).
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy { waited_ms: 0 },
            ErrorCode::DiskFull => StoreError::Full,
            ErrorCode::ConstraintViolation => {
                StoreError::Conflict { constraint: "a unique key or the append-only ledger".to_owned() }
            }
            ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                StoreError::unavailable("the database file is damaged")
            }
            ErrorCode::CannotOpen => StoreError::unavailable("the database file cannot be opened"),
            ErrorCode::ReadOnly | ErrorCode::PermissionDenied => {
                StoreError::unavailable("the database file cannot be written")
            }
            ErrorCode::SystemIoFailure => StoreError::unavailable("the disk failed to read or write"),
            _ => StoreError::unavailable("the database failed"),
        }
    }
}

impl From<SqliteError> for BillingError {
    fn from(error: SqliteError) -> Self {
        StoreError::from(error).into()
    }
}
