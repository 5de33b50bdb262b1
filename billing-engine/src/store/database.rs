//! The store a location names: what [`Billing::open`](crate::Billing::open) and the
//! bindings use, so one call opens a SQLite file or a PostgreSQL database.

use std::path::Path;
use std::time::Duration;

use super::{Durability, SqliteOptions, SqliteStore, Store, Transaction};
use crate::error::Result;

/// A SQLite file (or `:memory:`), or a PostgreSQL database named by a
/// `postgres://`/`postgresql://` URL (feature `postgres`).
#[derive(Debug)]
pub enum Database {
    Sqlite(SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(super::PostgresStore),
}

const URL_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `location` names a PostgreSQL database (by its URL) rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    URL_SCHEMES.iter().any(|scheme| location.starts_with(scheme))
}

impl Database {
    /// Opens `location`: a PostgreSQL URL, else a SQLite path. `lock_timeout` bounds
    /// every wait for another writer; `durability` applies to SQLite (PostgreSQL's is
    /// the server's `synchronous_commit`).
    pub fn open(location: impl AsRef<Path>, lock_timeout: Duration, durability: Durability) -> Result<Self> {
        let location = location.as_ref();
        let Some(url) = location.to_str().filter(|text| is_postgres_url(text)) else {
            return Ok(Self::Sqlite(SqliteStore::open(location, SqliteOptions { lock_timeout, durability })?));
        };
        Self::open_url(url, lock_timeout)
    }

    #[cfg(feature = "postgres")]
    fn open_url(url: &str, lock_timeout: Duration) -> Result<Self> {
        let options = super::PostgresOptions::from_url(url, lock_timeout)?;
        Ok(Self::Postgres(super::PostgresStore::open(url, options)?))
    }

    #[cfg(not(feature = "postgres"))]
    fn open_url(_url: &str, _lock_timeout: Duration) -> Result<Self> {
        Err(crate::error::BillingError::invalid(
            "location",
            "this build has no PostgreSQL store: enable the `postgres` feature",
        ))
    }
}

impl Store for Database {
    fn write<T>(&self, user_id: &str, f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(store) => store.write(user_id, f),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.write(user_id, f),
        }
    }

    fn read<T>(&self, f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(store) => store.read(f),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.read(f),
        }
    }
}
