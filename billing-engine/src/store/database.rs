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

/// How [`Database::open`] (and so `Billing::open_with`) opens a SQLite file; the
/// catalog's `lock_timeout_ms` gives the rest of its [`SqliteOptions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    pub durability: Durability,
    /// See [`SqliteOptions::shared_commits`].
    pub shared_commits: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        let SqliteOptions { durability, shared_commits, .. } = SqliteOptions::default();
        Self { durability, shared_commits }
    }
}

impl From<Durability> for LocalOptions {
    fn from(durability: Durability) -> Self {
        Self { durability, ..Self::default() }
    }
}

const URL_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Whether `location` names a PostgreSQL database (by its URL) rather than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    URL_SCHEMES.iter().any(|scheme| location.starts_with(scheme))
}

impl Database {
    /// Opens `location`: a PostgreSQL URL, else a SQLite path. `lock_timeout` bounds
    /// every wait for another writer; `local` applies to SQLite (PostgreSQL's durability
    /// is the server's `synchronous_commit`, and the server groups commits itself).
    pub fn open(location: impl AsRef<Path>, lock_timeout: Duration, local: LocalOptions) -> Result<Self> {
        let location = location.as_ref();
        let Some(url) = location.to_str().filter(|text| is_postgres_url(text)) else {
            let LocalOptions { durability, shared_commits } = local;
            let options = SqliteOptions { lock_timeout, durability, shared_commits };
            return Ok(Self::Sqlite(SqliteStore::open(location, options)?));
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
    fn write_many<T: Send>(
        &self,
        user_ids: &[&str],
        f: impl FnMut(&mut dyn Transaction) -> Result<T> + Send,
    ) -> Result<T> {
        match self {
            Self::Sqlite(store) => store.write_many(user_ids, f),
            #[cfg(feature = "postgres")]
            Self::Postgres(store) => store.write_many(user_ids, f),
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
