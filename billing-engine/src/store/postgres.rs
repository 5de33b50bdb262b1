//! The PostgreSQL [`Store`]: one database shared by any number of servers, each with a
//! pool of connections.
//!
//! A write runs at Read Committed and first locks its user: `SELECT … FOR UPDATE` on the
//! user's row of `user_locks` (inserted by the user's first write), **before its first
//! read**. Every statement after it then sees every earlier write about the user
//! committed, so a read-decide-write never works from a stale balance. (A Repeatable
//! Read snapshot taken before the lock would be stale: that is how overdrafts happen.)
//! Writes about different users never wait for each other, unlike SQLite's one writer.
//! A row lock, rather than an advisory lock, so that sharded PostgreSQL (Citus), which
//! lacks advisory locks across nodes, serves too.
//!
//! The lock is a statement of its own. Joined to the account read, it would save a round
//! trip, but after waiting for the lock PostgreSQL returns the joined account row as it
//! was before the wait: a stale balance again.
//!
//! Reads run in a Repeatable Read, read-only transaction: one snapshot, no locks.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::error::SqlState;
use postgres::types::{FromSql, Json, ToSql};
use postgres::{Client, NoTls, Row, Statement};
use rust_decimal::Decimal;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use time::{Date, OffsetDateTime};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::analytics_sql as sql;
use super::{postgres_schema, DeliveryState, Store, StoreError, StoreResult, Transaction};
use crate::account::{Account, Allowance, DayOps};
use crate::analytics::{self, MoneyBucket, MoneyRecord, PeriodRecord, Segment, TransactionFilter};
use crate::audit::{AuditFilter, AuditOutcome, AuditRecord, NewAuditRecord};
use crate::catalog::ChargeSource;
use crate::crypto::{ReferenceClaim, StoredObservation};
use crate::error::{BillingError, Result};
use crate::events::{Event, NewEvent};
use crate::ledger::{AllowancePeriod, LedgerEntry, NewEntry};
use crate::lots::{Allocation, CreditLot};
use crate::payment::{PaidPeriod, Payment, SavedMethod};
use crate::receipt::CustomerContact;
use crate::time_util::{from_millis, to_millis};
use crate::usage::{Hold, NewUsage, UsageCounter, UsageGroup, UsageRecord, UsageTotal};

// The ledger's columns an insert gives, and their placeholders.
macro_rules! usage_insert_columns {
    () => {
        "user_id, metric, amount, model_id, chat_id, hold_id, at, period_window, day_window, over_limit, \
         overage_credits, metadata, idempotency_key, events, request_hash, created_at"
    };
}

macro_rules! usage_values {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16"
    };
}

macro_rules! entry_insert_columns {
    () => {
        "user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta, allowance_owner, \
         allowance_start, op_day, idempotency_key, request_hash, reference, metadata, created_at"
    };
}

macro_rules! entry_values {
    () => {
        "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15"
    };
}

#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections this handle keeps open: at most this many of its calls run at once.
    pub pool_size: u32,
    /// How long a call waits for a connection and for its user's lock, retries
    /// included, before it fails with BUSY.
    pub lock_timeout: Duration,
    /// How many times a write runs when the server aborts it to resolve a conflict
    /// (serialization failure, deadlock, lock timeout).
    pub max_attempts: u32,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self { pool_size: 8, lock_timeout: Duration::from_millis(30_000), max_attempts: 5 }
    }
}

/// The URL parameter that sets [`PostgresOptions::pool_size`].
const POOL_SIZE_PARAM: &str = "pool_size";
/// The URL parameter naming a PEM file of the certificates that TLS trusts (as libpq's);
/// without it, the web's public roots (`webpki-roots`).
const ROOT_CERT_PARAM: &str = "sslrootcert";
/// The parameters the engine reads, and takes out of the URL before the driver reads it.
const ENGINE_PARAMS: [&str; 2] = [POOL_SIZE_PARAM, ROOT_CERT_PARAM];

impl PostgresOptions {
    /// The options a URL asks for (`?pool_size=N`), waiting at most `lock_timeout`.
    pub fn from_url(url: &str, lock_timeout: Duration) -> Result<Self> {
        let mut options = Self { lock_timeout, ..Self::default() };
        if let Some(size) = url_params(url).find_map(|(key, value)| (key == POOL_SIZE_PARAM).then_some(value)) {
            options.pool_size = size.parse().ok().filter(|size| (1..=1000).contains(size)).ok_or_else(|| {
                BillingError::invalid("location", "`pool_size` must be a whole number from 1 to 1000")
            })?;
        }
        Ok(options)
    }
}

fn url_params(url: &str) -> impl Iterator<Item = (&str, &str)> {
    url.split_once('?').map_or("", |(_, query)| query).split('&').filter_map(|pair| pair.split_once('='))
}

/// The URL without the engine's own parameters, for the driver.
fn driver_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let kept: Vec<&str> =
        query.split('&').filter(|pair| !ENGINE_PARAMS.contains(&pair.split('=').next().unwrap_or_default())).collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

pub struct PostgresStore {
    pool: r2d2::Pool<Connector>,
    options: PostgresOptions,
}

impl std::fmt::Debug for PostgresStore {
    // Never the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("options", &self.options).finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgresql://user:password@host:port/db`,
    /// with any parameter the `postgres` crate takes, such as `options=-csearch_path%3Dbilling`
    /// for a schema of its own) and brings its schema up to date.
    ///
    /// `sslmode=require` connects over TLS (rustls), verifying the server's certificate
    /// and name against the web's public roots, or against the PEM file that
    /// `sslrootcert=/path/ca.pem` names. Without it the connection is plain TCP.
    pub fn open(url: &str, options: PostgresOptions) -> Result<Self> {
        let config = postgres::Config::from_str(&driver_url(url))
            .map_err(|_| BillingError::invalid("location", "is not a PostgreSQL URL the driver accepts"))?;
        let root_cert = url_params(url).find_map(|(key, value)| (key == ROOT_CERT_PARAM).then_some(value));
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(tls_connector(root_cert)?),
            _ => None,
        };
        let connector = Connector { config, tls };
        let mut client = connector.open().map_err(pg_error)?;
        postgres_schema::migrate(&mut client)?;
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size)
            .min_idle(Some(0))
            // A broken connection shows on its first statement, which fails the call;
            // `has_broken` then keeps it out of the pool. Testing every checkout would
            // cost a round trip per call.
            .test_on_check_out(false)
            .connection_timeout(options.lock_timeout)
            .build_unchecked(connector);
        Ok(Self { pool, options })
    }

    fn connection(&self, deadline: Instant) -> StoreResult<r2d2::PooledConnection<Connector>> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.pool.get_timeout(left.max(Duration::from_millis(1))).map_err(|_| {
            if self.pool.state().connections == 0 {
                StoreError::unavailable("the PostgreSQL server cannot be reached")
            } else {
                // Every connection is busy with another call: not now, retry.
                StoreError::Busy { waited_ms: 0 }
            }
        })
    }

    /// One run of a write: the users' locks, `f`, and the commit. `f` gets the store's
    /// own transaction, so that the copy from another store can write rows as they are.
    fn attempt_write<T>(
        &self,
        user_ids: &[&str],
        f: &mut impl FnMut(&mut PgTx<'_>) -> Result<T>,
        deadline: Instant,
    ) -> Attempt<T> {
        let mut conn = match self.connection(deadline) {
            Ok(conn) => conn,
            Err(error) => return Attempt::Done(Err(error.into())),
        };
        // The server gives up a lock wait at the deadline (55P03), so no wait outlasts it.
        let lock_wait = deadline.saturating_duration_since(Instant::now()).as_millis().max(1);
        let begin = format!("BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = {lock_wait}");
        let mut tx = PgTx { conn: &mut conn, rerun: None };
        let result = tx
            .begin(&begin)
            .and_then(|()| tx.lock_users(user_ids))
            .map_err(BillingError::from)
            .and_then(|()| f(&mut tx));
        match result {
            Ok(value) => match tx.finish("COMMIT") {
                Ok(()) => Attempt::Done(Ok(value)),
                Err(_) if tx.rerun == Some(Rerun::Conflict) => Attempt::Rerun(Rerun::Conflict),
                // Lost while committing: the write may have been applied or not. The
                // caller retries with the same key, which replays it if it was.
                Err(_) if tx.rerun == Some(Rerun::LostConnection) => Attempt::Done(Err(StoreError::unavailable(
                    "the connection to PostgreSQL was lost while committing; retry with the same key",
                )
                .into())),
                Err(error) => Attempt::Done(Err(error.into())),
            },
            Err(error) => {
                let _ = tx.finish("ROLLBACK");
                match tx.rerun {
                    Some(why) => Attempt::Rerun(why),
                    None => Attempt::Done(Err(error)),
                }
            }
        }
    }

    /// One run of a read.
    fn attempt_read<T>(&self, f: &mut impl FnMut(&mut dyn Transaction) -> Result<T>, deadline: Instant) -> Attempt<T> {
        let mut conn = match self.connection(deadline) {
            Ok(conn) => conn,
            Err(error) => return Attempt::Done(Err(error.into())),
        };
        let mut tx = PgTx { conn: &mut conn, rerun: None };
        let result = tx
            .begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(BillingError::from)
            .and_then(|()| f(&mut tx));
        // A read-only transaction has nothing to keep: end it the same way either way.
        let finished = tx.finish("ROLLBACK");
        match (result, finished) {
            (Ok(value), Ok(())) => Attempt::Done(Ok(value)),
            _ if tx.rerun == Some(Rerun::LostConnection) => Attempt::Rerun(Rerun::LostConnection),
            (Err(error), _) => Attempt::Done(Err(error)),
            (Ok(_), Err(error)) => Attempt::Done(Err(error.into())),
        }
    }

    /// Runs `attempt` until it is done: again after a conflict (at most `max_attempts`
    /// runs, with backoff) and after a lost connection (at most once per pooled
    /// connection: a server restart drops them all), within the lock timeout.
    fn run<T>(&self, mut attempt: impl FnMut(Instant) -> Attempt<T>) -> Result<T> {
        let started = Instant::now();
        let deadline = started + self.options.lock_timeout;
        let waited =
            || BillingError::Busy { waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) };
        let (mut conflicts, mut lost) = (0, 0);
        loop {
            match attempt(deadline) {
                Attempt::Done(Err(BillingError::Busy { .. })) => return Err(waited()),
                Attempt::Done(result) => return result,
                Attempt::Rerun(Rerun::Conflict) => {
                    conflicts += 1;
                    if conflicts >= self.options.max_attempts || Instant::now() >= deadline {
                        return Err(waited());
                    }
                    std::thread::sleep(backoff(conflicts, deadline));
                }
                Attempt::Rerun(Rerun::LostConnection) => {
                    lost += 1;
                    if lost > self.options.pool_size || Instant::now() >= deadline {
                        return Err(StoreError::unavailable("the PostgreSQL server cannot be reached").into());
                    }
                }
            }
        }
    }
}

enum Attempt<T> {
    Done(Result<T>),
    Rerun(Rerun),
}

/// Why a transaction the server ended runs again; either way the server rolled it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rerun {
    /// A serialization failure, deadlock or lock timeout.
    Conflict,
    /// The connection was closed (a server restart, a terminated backend).
    LostConnection,
}

impl Store for PostgresStore {
    /// Many users are locked in one statement, in one order (by id), so that two writes
    /// over the same users cannot each hold a lock the other waits for.
    fn write_many<T: Send>(
        &self,
        user_ids: &[&str],
        mut f: impl FnMut(&mut dyn Transaction) -> Result<T> + Send,
    ) -> Result<T> {
        self.run(|deadline| self.attempt_write(user_ids, &mut |tx: &mut PgTx<'_>| f(tx), deadline))
    }

    fn read<T>(&self, mut f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T> {
        self.run(|deadline| self.attempt_read(&mut f, deadline))
    }
}

/// Jittered exponential backoff before run `attempt + 1`: 2, 4, 8 … ms plus up to as
/// much again at random, so that the transactions that collided do not collide again;
/// never past the deadline.
fn backoff(attempt: u32, deadline: Instant) -> Duration {
    let base = Duration::from_millis(2u64 << attempt.min(10));
    let jitter = base.mul_f64(fastrand::f64());
    (base + jitter).min(deadline.saturating_duration_since(Instant::now()))
}

/// What the store's failures mean, decided here with fixed messages: no server text,
/// stored value or credential reaches a public error.
pub(super) fn pg_error(error: postgres::Error) -> StoreError {
    let Some(code) = error.code() else {
        return StoreError::unavailable("the PostgreSQL server cannot be reached");
    };
    if is_retryable(code) {
        return StoreError::Busy { waited_ms: 0 };
    }
    match *code {
        SqlState::UNIQUE_VIOLATION | SqlState::RESTRICT_VIOLATION => {
            let constraint = error.as_db_error().and_then(|db| db.constraint()).unwrap_or("the append-only ledger");
            StoreError::Conflict { constraint: constraint.to_owned() }
        }
        SqlState::DISK_FULL | SqlState::OUT_OF_MEMORY | SqlState::INSUFFICIENT_RESOURCES => StoreError::Full,
        SqlState::UNDEFINED_TABLE | SqlState::UNDEFINED_COLUMN => {
            StoreError::unavailable("the database lacks the engine's tables")
        }
        SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            StoreError::unavailable("the PostgreSQL server refused the credentials")
        }
        SqlState::INVALID_CATALOG_NAME => StoreError::unavailable("the PostgreSQL database does not exist"),
        SqlState::INSUFFICIENT_PRIVILEGE => StoreError::unavailable("the PostgreSQL role may not do this"),
        _ => StoreError::unavailable("the PostgreSQL server refused the statement"),
    }
}

/// The connection is gone: closed, broken, or ended by the server (shutdown, restart, a
/// terminated backend).
fn is_lost_connection(error: &postgres::Error) -> bool {
    let ended = [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW];
    error.is_closed()
        || error.code().is_some_and(|code| ended.contains(code))
        || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Serialization failure, deadlock and lock timeout: the server aborted the transaction
/// to resolve a conflict, and running it again may succeed.
fn is_retryable(code: &SqlState) -> bool {
    [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED, SqlState::LOCK_NOT_AVAILABLE].contains(code)
}

/// TLS that trusts the certificates of the PEM file at `root_cert`, else the web's
/// public roots.
fn tls_connector(root_cert: Option<&str>) -> Result<MakeRustlsConnect> {
    let unreadable = || BillingError::invalid("location", "`sslrootcert` names no readable PEM certificate file");
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|_| unreadable())? {
                roots.add(cert.map_err(|_| unreadable())?).map_err(|_| unreadable())?;
            }
            if roots.is_empty() {
                return Err(unreadable());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| BillingError::invalid("location", "TLS has no protocol version to offer"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Opens the pool's connections.
struct Connector {
    config: postgres::Config,
    /// `None` for plain TCP.
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    fn open(&self) -> std::result::Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }
}

/// A pooled connection with its prepared statements: preparing costs a round trip, so
/// each statement is prepared once per connection.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// A transaction was begun and not finished: a call panicked inside it. The pool
    /// drops such a connection (the server then rolls the transaction back).
    open: bool,
}

impl r2d2::ManageConnection for Connector {
    type Connection = PgConn;
    type Error = postgres::Error;

    fn connect(&self) -> std::result::Result<PgConn, postgres::Error> {
        Ok(PgConn { client: self.open()?, statements: HashMap::new(), open: false })
    }

    fn is_valid(&self, conn: &mut PgConn) -> std::result::Result<(), postgres::Error> {
        conn.client.simple_query("").map(drop)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.open || conn.client.is_closed()
    }
}

struct PgTx<'c> {
    conn: &'c mut PgConn,
    /// A statement failed in a way that running the transaction again may fix.
    rerun: Option<Rerun>,
}

type Param<'a> = &'a (dyn ToSql + Sync);

impl PgTx<'_> {
    fn fail(&mut self, error: postgres::Error) -> StoreError {
        if error.code().is_some_and(is_retryable) {
            self.rerun = Some(Rerun::Conflict);
        } else if is_lost_connection(&error) {
            self.rerun = Some(Rerun::LostConnection);
        }
        pg_error(error)
    }

    fn begin(&mut self, sql: &str) -> StoreResult<()> {
        self.simple(sql)?;
        self.conn.open = true;
        Ok(())
    }

    fn finish(&mut self, sql: &'static str) -> StoreResult<()> {
        self.simple(sql)?;
        self.conn.open = false;
        Ok(())
    }

    /// Statements without parameters or rows (BEGIN, COMMIT), in one round trip.
    fn simple(&mut self, sql: &str) -> StoreResult<()> {
        let result = self.conn.client.batch_execute(sql);
        result.map_err(|e| self.fail(e))
    }

    /// Takes the users' row locks for the rest of the transaction, in the order of their
    /// ids, creating the rows of users who never wrote.
    fn lock_users(&mut self, user_ids: &[&str]) -> StoreResult<()> {
        const LOCK: &str = "SELECT user_id FROM user_locks WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE";
        if let [user_id] = user_ids {
            return self.lock_user(user_id);
        }
        let mut ordered = user_ids.to_vec();
        ordered.sort_unstable();
        ordered.dedup();
        if self.rows(LOCK, &[&ordered])?.len() < ordered.len() {
            let insert = "INSERT INTO user_locks (user_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING";
            self.execute(insert, &[&ordered])?;
            self.rows(LOCK, &[&ordered])?;
        }
        Ok(())
    }

    /// Takes the user's row lock for the rest of the transaction, creating the row on
    /// the user's first write (a concurrent first write waits on the row's key, then
    /// finds the row).
    fn lock_user(&mut self, user_id: &str) -> StoreResult<()> {
        const LOCK: &str = "SELECT 1 FROM user_locks WHERE user_id = $1 FOR UPDATE";
        if self.rows(LOCK, &[&user_id])?.is_empty() {
            self.execute("INSERT INTO user_locks (user_id) VALUES ($1) ON CONFLICT DO NOTHING", &[&user_id])?;
            self.rows(LOCK, &[&user_id])?;
        }
        Ok(())
    }

    fn statement(&mut self, sql: &'static str) -> StoreResult<Statement> {
        if let Some(statement) = self.conn.statements.get(sql) {
            return Ok(statement.clone());
        }
        let prepared = self.conn.client.prepare(sql);
        let statement = prepared.map_err(|e| self.fail(e))?;
        self.conn.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    fn rows(&mut self, sql: &'static str, params: &[Param]) -> StoreResult<Vec<Row>> {
        let statement = self.statement(sql)?;
        let rows = self.conn.client.query(&statement, params);
        rows.map_err(|e| self.fail(e))
    }

    fn execute(&mut self, sql: &'static str, params: &[Param]) -> StoreResult<u64> {
        let statement = self.statement(sql)?;
        let changed = self.conn.client.execute(&statement, params);
        changed.map_err(|e| self.fail(e))
    }

    /// The row `sql` selects, if any, read by `read`.
    fn one<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        read: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        self.rows(sql, params)?.first().map(read).transpose()
    }

    /// Every row `sql` selects, in its order, read by `read`.
    fn many<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        read: fn(&Row) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        self.rows(sql, params)?.iter().map(read).collect()
    }

    /// Writes one row by its key; a row that is not there is a store failure.
    fn change_one(&mut self, sql: &'static str, params: &[Param], what: &'static str) -> StoreResult<()> {
        match self.execute(sql, params)? {
            1 => Ok(()),
            _ => Err(StoreError::unavailable(what)),
        }
    }

    fn write_account(&mut self, sql: &'static str, a: &Account) -> StoreResult<()> {
        let subscription = a.subscription.as_ref().map(Json);
        self.change_one(
            sql,
            &[
                &a.user_id,
                &to_millis(a.created_at),
                &a.credits,
                &a.free_trial_awarded,
                &to_millis(a.freemium.anchor),
                &to_millis(a.freemium.period_start),
                &i64::from(a.freemium.used),
                &a.today.day.to_julian_day(),
                &i64::from(a.today.subscription),
                &i64::from(a.today.freemium),
                &subscription,
                &a.due_at().map(to_millis),
            ],
            "the account to update is not in the database",
        )
    }
}

impl Transaction for PgTx<'_> {
    fn account(&mut self, user_id: &str) -> StoreResult<Option<Account>> {
        let sql = concat!("SELECT ", account_columns!(), " FROM accounts WHERE user_id = $1");
        self.one(sql, &[&user_id], read_account)
    }

    fn insert_account(&mut self, account: &Account) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO accounts (",
            account_columns!(),
            ", subscription_due_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        self.write_account(sql, account)
    }

    fn update_account(&mut self, account: &Account) -> StoreResult<()> {
        let sql = "UPDATE accounts SET created_at = $2, credits = $3, free_trial_awarded = $4, free_anchor = $5, \
             free_period_start = $6, free_used = $7, day = $8, day_subscription_ops = $9, day_freemium_ops = $10, \
             subscription = $11, subscription_due_at = $12 WHERE user_id = $1";
        self.write_account(sql, account)
    }

    fn user_ids(&mut self) -> StoreResult<Vec<String>> {
        let sql = "SELECT user_id FROM accounts UNION SELECT user_id FROM ledger \
                   UNION SELECT user_id FROM payments ORDER BY user_id";
        self.many(sql, &[], |row| Cells::new(row, "accounts").get(0))
    }

    fn append_entry(&mut self, new: &NewEntry) -> StoreResult<LedgerEntry> {
        let sql =
            concat!("INSERT INTO ledger (", entry_insert_columns!(), ") VALUES (", entry_values!(), ") RETURNING id");
        let row = EntryRow::new(&new.entry, new.request_hash.as_deref());
        let rows = self.rows(sql, &row.params())?;
        let id = rows.first().ok_or_else(|| StoreError::unavailable("the ledger insert returned no id"))?;
        Ok(LedgerEntry { id: Cells::new(id, "ledger").get(0)?, ..new.entry.clone() })
    }

    fn entry(&mut self, id: i64) -> StoreResult<Option<LedgerEntry>> {
        self.one(concat!("SELECT ", entry_columns!(), " FROM ledger WHERE id = $1"), &[&id], read_entry)
    }

    fn entry_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(LedgerEntry, Option<String>)>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            ", request_hash FROM ledger WHERE user_id = $1 AND idempotency_key = $2"
        );
        self.one(sql, &[&user_id, &key], |row| Ok((read_entry(row)?, Cells::new(row, "ledger").get(15)?)))
    }

    fn refund_of(&mut self, user_id: &str, charge_id: i64) -> StoreResult<Option<LedgerEntry>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger WHERE user_id = $1 AND kind = 'refund' AND reference = $2"
        );
        self.one(sql, &[&user_id, &charge_id.to_string()], read_entry)
    }

    fn entries(&mut self, user_id: &str, before: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        self.many(sql, &[&user_id, &before.unwrap_or(i64::MAX), &i64::from(limit)], read_entry)
    }

    fn all_entries(&mut self, user_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let sql = concat!("SELECT ", entry_columns!(), " FROM ledger WHERE user_id = $1 ORDER BY id");
        self.many(sql, &[&user_id], read_entry)
    }

    fn users_due(&mut self, until: OffsetDateTime) -> StoreResult<Vec<String>> {
        let sql = "SELECT user_id FROM accounts WHERE subscription_due_at <= $1 ORDER BY subscription_due_at, user_id";
        self.many(sql, &[&to_millis(until)], |row| Cells::new(row, "accounts").get(0))
    }

    fn insert_payment(&mut self, p: &Payment, request_hash: Option<&str>) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO payments (",
            payment_columns!(),
            ", request_hash, crypto_state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29)"
        );
        let period = p.paid_period.as_ref();
        self.change_one(
            sql,
            &[
                &p.id,
                &p.user_id,
                &p.purpose.as_str(),
                &p.plan_code,
                &p.package_code,
                &p.amount,
                &p.currency,
                &p.credits,
                &p.description,
                &p.status.as_str(),
                &p.provider_payment_id,
                &p.provider_key,
                &p.save_payment_method,
                &p.return_url,
                &p.confirmation_url,
                &p.renewal_of,
                &p.refund_id,
                &p.payload.as_ref().map(Json),
                &p.idempotency_key,
                &to_millis(p.created_at),
                &to_millis(p.updated_at),
                &p.paid_at.map(to_millis),
                &p.refunded_amount,
                &period.map(|period| period.subscription_id.as_str()),
                &period.map(|period| to_millis(period.start)),
                &period.map(|period| to_millis(period.end)),
                &p.crypto.as_ref().map(Json),
                &request_hash,
                &p.crypto.as_ref().map(|c| c.state.as_str()),
            ],
            "the payment insert wrote no row",
        )
    }

    fn update_payment(&mut self, p: &Payment) -> StoreResult<()> {
        let sql = "UPDATE payments SET status = $3, provider_payment_id = $4, provider_key = $5, \
                   confirmation_url = $6, refund_id = $7, payload = $8, updated_at = $9, paid_at = $10, \
                   refunded_amount = $11, paid_subscription_id = $12, paid_from = $13, paid_until = $14, \
                   crypto = $15, crypto_state = $16 WHERE user_id = $1 AND id = $2";
        let period = p.paid_period.as_ref();
        self.change_one(
            sql,
            &[
                &p.user_id,
                &p.id,
                &p.status.as_str(),
                &p.provider_payment_id,
                &p.provider_key,
                &p.confirmation_url,
                &p.refund_id,
                &p.payload.as_ref().map(Json),
                &to_millis(p.updated_at),
                &p.paid_at.map(to_millis),
                &p.refunded_amount,
                &period.map(|period| period.subscription_id.as_str()),
                &period.map(|period| to_millis(period.start)),
                &period.map(|period| to_millis(period.end)),
                &p.crypto.as_ref().map(Json),
                &p.crypto.as_ref().map(|c| c.state.as_str()),
            ],
            "the payment to update is not in the database",
        )
    }

    fn payment(&mut self, id: &str) -> StoreResult<Option<Payment>> {
        self.one(concat!("SELECT ", payment_columns!(), " FROM payments WHERE id = $1"), &[&id], read_payment)
    }

    fn payment_by_provider_id(&mut self, provider_payment_id: &str) -> StoreResult<Option<Payment>> {
        let sql = concat!("SELECT ", payment_columns!(), " FROM payments WHERE provider_payment_id = $1");
        self.one(sql, &[&provider_payment_id], read_payment)
    }

    fn payment_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(Payment, Option<String>)>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            ", request_hash FROM payments WHERE user_id = $1 AND idempotency_key = $2"
        );
        self.one(sql, &[&user_id, &key], |row| Ok((read_payment(row)?, Cells::new(row, "payments").get(27)?)))
    }

    fn renewal_payment(&mut self, user_id: &str, period_key: &str) -> StoreResult<Option<Payment>> {
        let sql = concat!("SELECT ", payment_columns!(), " FROM payments WHERE user_id = $1 AND renewal_of = $2");
        self.one(sql, &[&user_id, &period_key], read_payment)
    }

    fn claim_sending(&mut self, payment_id: &str, until: OffsetDateTime, now: OffsetDateTime) -> StoreResult<bool> {
        let sql = "UPDATE payments SET sending_until = $2 \
                   WHERE id = $1 AND status = 'new' AND (sending_until IS NULL OR sending_until <= $3)";
        Ok(self.execute(sql, &[&payment_id, &to_millis(until), &to_millis(now)])? == 1)
    }

    fn end_sending(&mut self, payment_id: &str) -> StoreResult<()> {
        self.execute("UPDATE payments SET sending_until = NULL WHERE id = $1", &[&payment_id]).map(drop)
    }

    fn unsent_renewals(&mut self) -> StoreResult<Vec<Payment>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE purpose = 'renewal' AND status = 'new' ORDER BY created_at, id"
        );
        self.many(sql, &[], read_payment)
    }

    fn payment_history(&mut self, user_id: &str, limit: u32) -> StoreResult<Vec<Payment>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE user_id = $1 AND status <> 'new' AND purpose <> 'card_binding' \
             ORDER BY created_at DESC, seq DESC LIMIT $2"
        );
        self.many(sql, &[&user_id, &i64::from(limit)], read_payment)
    }

    fn all_payments(&mut self, user_id: &str) -> StoreResult<Vec<Payment>> {
        let sql = concat!("SELECT ", payment_columns!(), " FROM payments WHERE user_id = $1 ORDER BY created_at, seq");
        self.many(sql, &[&user_id], read_payment)
    }

    fn saved_method(&mut self, user_id: &str) -> StoreResult<Option<SavedMethod>> {
        let sql = "SELECT card FROM payment_methods WHERE user_id = $1";
        self.one(sql, &[&user_id], |row| Cells::new(row, "payment_methods").json(0))
    }

    fn save_method(&mut self, user_id: &str, method: &SavedMethod, now: OffsetDateTime) -> StoreResult<()> {
        let sql = "INSERT INTO payment_methods (user_id, card, saved_at, method_id) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (user_id) DO UPDATE SET card = excluded.card, saved_at = excluded.saved_at, \
                   method_id = excluded.method_id";
        let params: [Param; 4] = [&user_id, &Json(method), &to_millis(now), &method.method_id];
        self.change_one(sql, &params, "the payment method was not saved")
    }

    fn saved_method_by_id(&mut self, method_id: &str) -> StoreResult<Option<(String, SavedMethod)>> {
        let sql = "SELECT user_id, card FROM payment_methods WHERE method_id = $1";
        self.one(sql, &[&method_id], |row| {
            let cells = Cells::new(row, "payment_methods");
            Ok((cells.get(0)?, cells.json(1)?))
        })
    }

    fn forget_method(&mut self, user_id: &str) -> StoreResult<()> {
        self.execute("DELETE FROM payment_methods WHERE user_id = $1", &[&user_id]).map(drop)
    }

    fn customer_contact(&mut self, user_id: &str) -> StoreResult<Option<CustomerContact>> {
        let sql = "SELECT email, phone FROM customer_contacts WHERE user_id = $1";
        self.one(sql, &[&user_id], |row| {
            let cells = Cells::new(row, "customer_contacts");
            Ok(CustomerContact { email: cells.get(0)?, phone: cells.get(1)? })
        })
    }

    fn set_customer_contact(
        &mut self,
        user_id: &str,
        contact: &CustomerContact,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let sql = "INSERT INTO customer_contacts (user_id, email, phone, updated_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, phone = excluded.phone, \
                   updated_at = excluded.updated_at";
        let params: [Param; 4] = [&user_id, &contact.email, &contact.phone, &to_millis(now)];
        self.change_one(sql, &params, "the contact was not saved")
    }

    fn append_usage(&mut self, new: &NewUsage) -> StoreResult<i64> {
        let sql = concat!(
            "INSERT INTO usage_events (",
            usage_insert_columns!(),
            ") VALUES (",
            usage_values!(),
            ") RETURNING id"
        );
        let row = UsageRow::new(new)?;
        let rows = self.rows(sql, &row.params())?;
        let id = rows.first().ok_or_else(|| StoreError::unavailable("the usage insert returned no id"))?;
        Cells::new(id, "usage_events").get(0)
    }

    fn usage_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<(Vec<UsageRecord>, Option<String>)> {
        let sql =
            concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE user_id = $1 AND idempotency_key = $2");
        let Some(first) = self.one(sql, &[&user_id, &key], read_usage)? else {
            return Ok((Vec::new(), None));
        };
        let sql = concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_events WHERE user_id = $1 AND id >= $2 ORDER BY id LIMIT $3"
        );
        let events = i64::from(first.events.unwrap_or(1));
        let call = self.many(sql, &[&user_id, &first.record.id, &events], read_usage)?;
        Ok((call.into_iter().map(|usage| usage.record).collect(), first.request_hash))
    }

    fn usage_counters(&mut self, user_id: &str, period: &str, day: &str) -> StoreResult<Vec<UsageCounter>> {
        let sql = "SELECT metric, span, used, held FROM usage_counters WHERE user_id = $1 AND span IN ($2, $3)";
        self.many(sql, &[&user_id, &period, &day], read_counter)
    }

    fn add_usage(&mut self, user_id: &str, metric: &str, window: &str, used: i64, held: i64) -> StoreResult<()> {
        let sql = "INSERT INTO usage_counters AS c (user_id, metric, span, used, held) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (user_id, span, metric) DO UPDATE SET used = c.used + excluded.used, held = c.held + excluded.held";
        self.change_one(sql, &[&user_id, &metric, &window, &used, &held], "the usage counter was not written")
    }

    fn usage_totals(
        &mut self,
        user_id: &str,
        metric: &str,
        group: UsageGroup,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<UsageTotal>> {
        let sql = match group {
            UsageGroup::ModelId => {
                "SELECT model_id, sum(amount)::BIGINT, count(*) FROM usage_events \
                 WHERE user_id = $1 AND metric = $2 AND at >= $3 AND at < $4 GROUP BY model_id ORDER BY model_id"
            }
            UsageGroup::ChatId => {
                "SELECT chat_id, sum(amount)::BIGINT, count(*) FROM usage_events \
                 WHERE user_id = $1 AND metric = $2 AND at >= $3 AND at < $4 GROUP BY chat_id ORDER BY chat_id"
            }
        };
        let since = since.map_or(i64::MIN, to_millis);
        let until = until.map_or(i64::MAX, to_millis);
        self.many(sql, &[&user_id, &metric, &since, &until], |row| {
            let c = Cells::new(row, "usage_events");
            Ok(UsageTotal { key: c.get(0)?, amount: c.amount(1)?, events: c.amount(2)? })
        })
    }

    fn all_usage(&mut self, user_id: &str) -> StoreResult<Vec<NewUsage>> {
        let sql = concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE user_id = $1 ORDER BY id");
        self.many(sql, &[&user_id], read_usage)
    }

    fn all_usage_counters(&mut self, user_id: &str) -> StoreResult<Vec<UsageCounter>> {
        let sql = "SELECT metric, span, used, held FROM usage_counters WHERE user_id = $1 ORDER BY metric, span";
        self.many(sql, &[&user_id], read_counter)
    }

    fn insert_hold(&mut self, hold: &Hold) -> StoreResult<()> {
        let sql =
            "INSERT INTO holds (user_id, id, status, expires_at, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
        let params: [Param; 6] = [
            &hold.user_id,
            &hold.id,
            &hold.status.as_str(),
            &to_millis(hold.expires_at),
            &Json(hold),
            &to_millis(hold.created_at),
        ];
        self.change_one(sql, &params, "the hold was not stored")
    }

    fn update_hold(&mut self, hold: &Hold) -> StoreResult<()> {
        let sql = "UPDATE holds SET status = $3, data = $4 WHERE user_id = $1 AND id = $2";
        let params: [Param; 4] = [&hold.user_id, &hold.id, &hold.status.as_str(), &Json(hold)];
        self.change_one(sql, &params, "the hold to update is not in the database")
    }

    fn hold(&mut self, hold_id: &str) -> StoreResult<Option<Hold>> {
        self.one("SELECT status, data FROM holds WHERE id = $1", &[&hold_id], read_hold)
    }

    fn expired_holds(&mut self, user_id: &str, now: OffsetDateTime) -> StoreResult<Vec<Hold>> {
        let sql =
            "SELECT status, data FROM holds WHERE user_id = $1 AND status = 'open' AND expires_at <= $2 ORDER BY expires_at";
        self.many(sql, &[&user_id, &to_millis(now)], read_hold)
    }

    fn open_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>> {
        let sql =
            concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = $1 AND remaining <> 0 ORDER BY id");
        self.many(sql, &[&user_id], read_lot)
    }

    fn lot(&mut self, user_id: &str, lot_id: i64) -> StoreResult<Option<CreditLot>> {
        let sql = concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = $1 AND id = $2");
        self.one(sql, &[&user_id, &lot_id], read_lot)
    }

    fn insert_lot(&mut self, lot: &CreditLot) -> StoreResult<()> {
        let sql =
            concat!("INSERT INTO credit_lots (", lot_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
        let priority = i16::from(lot.priority);
        let (effective_at, expires_at) = (to_millis(lot.effective_at), lot.expires_at.map(to_millis));
        let params: [Param; 10] = [
            &lot.user_id,
            &lot.id,
            &lot.amount,
            &lot.remaining,
            &priority,
            &lot.category.as_str(),
            &effective_at,
            &expires_at,
            &lot.source.as_str(),
            &lot.reference,
        ];
        self.change_one(sql, &params, "the lot was not stored")
    }

    fn update_lot(&mut self, lot: &CreditLot) -> StoreResult<()> {
        let sql = "UPDATE credit_lots SET remaining = $3 WHERE user_id = $1 AND id = $2";
        self.change_one(sql, &[&lot.user_id, &lot.id, &lot.remaining], "the lot to update is not in the database")
    }

    fn insert_allocations(&mut self, user_id: &str, entry_id: i64, allocations: &[Allocation]) -> StoreResult<()> {
        let sql = "INSERT INTO lot_allocations (user_id, entry_id, lot_id, seq, amount) VALUES ($1, $2, $3, $4, $5)";
        for (seq, allocation) in allocations.iter().enumerate() {
            let seq = i32::try_from(seq).map_err(|_| StoreError::unavailable("an entry with too many allocations"))?;
            let params: [Param; 5] = [&user_id, &entry_id, &allocation.lot_id, &seq, &allocation.amount];
            self.change_one(sql, &params, "the allocation was not stored")?;
        }
        Ok(())
    }

    fn allocations(&mut self, user_id: &str, entry_id: i64) -> StoreResult<Vec<Allocation>> {
        let sql = "SELECT lot_id, amount FROM lot_allocations WHERE user_id = $1 AND entry_id = $2 ORDER BY seq";
        self.many(sql, &[&user_id, &entry_id], |row| {
            let c = Cells::new(row, "lot_allocations");
            Ok(Allocation { lot_id: c.get(0)?, amount: c.get(1)? })
        })
    }

    fn all_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>> {
        let sql = concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = $1 ORDER BY id");
        self.many(sql, &[&user_id], read_lot)
    }

    fn all_allocations(&mut self, user_id: &str) -> StoreResult<Vec<(i64, Allocation)>> {
        let sql = "SELECT entry_id, lot_id, amount FROM lot_allocations WHERE user_id = $1 ORDER BY entry_id, seq";
        self.many(sql, &[&user_id], |row| {
            let c = Cells::new(row, "lot_allocations");
            Ok((c.get(0)?, Allocation { lot_id: c.get(1)?, amount: c.get(2)? }))
        })
    }

    fn all_holds(&mut self, user_id: &str) -> StoreResult<Vec<Hold>> {
        self.many("SELECT status, data FROM holds WHERE user_id = $1 ORDER BY created_at, id", &[&user_id], read_hold)
    }

    fn append_event(&mut self, new: &NewEvent) -> StoreResult<Event> {
        let last = "SELECT max(sequence) FROM events WHERE user_id = $1";
        let last: Option<i64> = self.rows(last, &[&new.user_id])?.first().and_then(|row| row.get(0));
        let event = Event {
            event_id: new.event_id.clone(),
            event_type: new.event_type,
            user_id: new.user_id.clone(),
            sequence: last.unwrap_or(0) + 1,
            occurred_at: new.occurred_at,
            payload: new.payload.clone(),
        };
        let sql = concat!("INSERT INTO events (", event_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)");
        let params: [Param; 6] = [
            &event.event_id,
            &event.event_type.as_str(),
            &event.user_id,
            &event.sequence,
            &to_millis(event.occurred_at),
            &Json(&event.payload),
        ];
        self.change_one(sql, &params, "the event insert wrote no row")?;
        Ok(event)
    }

    fn events_after(&mut self, consumer: &str, limit: u32) -> StoreResult<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE (tx_id, id) > ( \
               coalesce((SELECT tx_id FROM event_consumers WHERE consumer = $1), '0'), \
               coalesce((SELECT id FROM event_consumers WHERE consumer = $1), 0)) \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, id LIMIT $2"
        );
        self.many(sql, &[&consumer, &i64::from(limit)], read_event)
    }

    fn ack_event(&mut self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        // Only an event `events_after` can have returned: one older than every running
        // transaction. A cursor past any other could skip an event that commits later.
        let sql = "INSERT INTO event_consumers (consumer, tx_id, id) \
                   SELECT $1, tx_id, id FROM events \
                   WHERE event_id = $2 AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
                   ON CONFLICT (consumer) DO UPDATE SET tx_id = excluded.tx_id, id = excluded.id, \
                   failed_attempts = 0, next_attempt_at = NULL \
                   WHERE (excluded.tx_id, excluded.id) > (event_consumers.tx_id, event_consumers.id)";
        self.execute(sql, &[&consumer, &event_id])?;
        let known = "SELECT 1 FROM events WHERE event_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())";
        Ok(!self.rows(known, &[&event_id])?.is_empty())
    }

    fn prune_events(&mut self, before: OffsetDateTime) -> StoreResult<u64> {
        let sql = "DELETE FROM events e WHERE occurred_at < $1 \
                   AND sequence < (SELECT max(sequence) FROM events newest WHERE newest.user_id = e.user_id)";
        self.execute(sql, &[&to_millis(before)])
    }

    fn user_events(&mut self, user_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE user_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3"
        );
        self.many(sql, &[&user_id, &after, &i64::from(limit)], read_event)
    }

    fn delivery(&mut self, consumer: &str) -> StoreResult<DeliveryState> {
        let sql = "SELECT failed_attempts, next_attempt_at, stopped_at FROM event_consumers WHERE consumer = $1";
        let state = self.one(sql, &[&consumer], |row| {
            let c = Cells::new(row, "event_consumers");
            Ok(DeliveryState {
                failed_attempts: u32::try_from(c.get::<i32>(0)?).map_err(|_| c.corrupt(0))?,
                next_attempt_at: c.time_opt(1)?,
                stopped_at: c.time_opt(2)?,
            })
        })?;
        Ok(state.unwrap_or_default())
    }

    fn append_audit(&mut self, r: &NewAuditRecord) -> StoreResult<i64> {
        let sql = concat!(
            "INSERT INTO audit_log (",
            audit_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id"
        );
        let rows = self.insert_audit(sql, r, None)?;
        rows.first().map(|row| row.get(0)).ok_or_else(|| StoreError::unavailable("the audit insert wrote no row"))
    }

    fn audit_records(&mut self, f: &AuditFilter, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let sql = concat!(
            "SELECT id, ",
            audit_columns!(),
            " FROM audit_log WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR actor = $2) \
             AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR outcome = $4) AND id < $5 \
             ORDER BY id DESC LIMIT $6"
        );
        let outcome = f.outcome.map(AuditOutcome::as_str);
        let params: [Param; 6] =
            [&f.user_id, &f.actor, &f.action, &outcome, &before.unwrap_or(i64::MAX), &i64::from(limit)];
        self.many(sql, &params, read_audit)
    }

    fn append_period(&mut self, p: &PeriodRecord) -> StoreResult<()> {
        let params: [Param; 12] = [
            &p.user_id,
            &p.payment_id,
            &p.plan_code,
            &p.kind.as_str(),
            &to_millis(p.starts_at),
            &to_millis(p.ends_at),
            &p.weight(),
            &p.monthly_micros,
            &p.currency,
            &p.network,
            &p.provider,
            &to_millis(p.created_at),
        ];
        self.change_one(sql::INSERT_PERIOD, &params, "the period insert wrote no row")
    }

    fn user_periods(&mut self, user_id: &str) -> StoreResult<Vec<PeriodRecord>> {
        self.many(sql::USER_PERIODS, &[&user_id], |row| {
            let c = Cells::new(row, "purchased_periods");
            Ok(PeriodRecord {
                user_id: c.get(0)?,
                payment_id: c.get(1)?,
                plan_code: c.get(2)?,
                kind: c.named(3)?,
                starts_at: c.time(4)?,
                ends_at: c.time(5)?,
                monthly_micros: c.get(7)?,
                currency: c.get(8)?,
                network: c.get(9)?,
                provider: c.get(10)?,
                created_at: c.time(11)?,
            })
        })
    }

    fn append_money(&mut self, m: &MoneyRecord) -> StoreResult<()> {
        self.insert_money(sql::INSERT_MONEY, m, None)
    }

    fn user_money(&mut self, user_id: &str) -> StoreResult<Vec<(i64, MoneyRecord)>> {
        self.many(sql::USER_MONEY, &[&user_id], read_money)
    }

    fn segments_at(&mut self, at: OffsetDateTime) -> StoreResult<Vec<(Segment, i64)>> {
        self.many(sql::SEGMENTS_AT, &[&to_millis(at)], |row| {
            let c = Cells::new(row, "purchased_periods");
            let micros: i64 = c.get(4)?;
            let segment = Segment {
                plan_code: c.get(0)?,
                currency: c.get(1)?,
                network: c.get(2)?,
                subscriptions: c.get::<i64>(3)?.max(0) as u64,
                mrr: analytics::from_micros(micros),
            };
            Ok((segment, micros))
        })
    }

    fn period_counts(
        &mut self,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> StoreResult<Vec<(analytics::PeriodKind, u64)>> {
        self.many(sql::PERIOD_COUNTS, &[&to_millis(from), &to_millis(to)], |row| {
            let c = Cells::new(row, "purchased_periods");
            Ok((c.named(0)?, c.get::<i64>(1)? as u64))
        })
    }

    fn churned(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<(String, u64, i64)>> {
        self.many(sql::CHURNED, &[&to_millis(from), &to_millis(to)], |row| {
            let c = Cells::new(row, "purchased_periods");
            Ok((c.get(0)?, c.get::<i64>(1)? as u64, c.get(2)?))
        })
    }

    fn money_buckets(
        &mut self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<MoneyBucket>> {
        self.many(sql::MONEY_BUCKETS, &[&bucket_ms, &to_millis(from), &to_millis(to)], |row| {
            let c = Cells::new(row, "money_movements");
            Ok(MoneyBucket {
                start_ms: c.get(0)?,
                currency: c.get(1)?,
                kind: c.named(2)?,
                provider: c.get(3)?,
                micros: c.get(4)?,
                count: c.get::<i64>(5)? as u64,
            })
        })
    }

    fn money_records(
        &mut self,
        f: &TransactionFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, MoneyRecord)>> {
        let (from, to) = (f.from.map_or(i64::MIN, to_millis), f.to.map_or(i64::MAX, to_millis));
        let min = f.min_amount.map_or(i64::MIN, analytics::to_micros);
        let max = f.max_amount.map_or(i64::MAX, analytics::to_micros);
        let (before, limit) = (before.unwrap_or(i64::MAX), i64::from(limit));
        let params: [Param; 10] =
            [&f.status, &f.provider, &f.network, &f.plan_code, &from, &to, &min, &max, &before, &limit];
        self.many(sql::MONEY_RECORDS, &params, read_money)
    }

    fn claim_reference(
        &mut self,
        chain_id: u64,
        token: &str,
        reference: u64,
        user_id: &str,
        payment_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let sql = "INSERT INTO crypto_references (chain_id, token, reference, user_id, payment_id, held_until) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain_id, token, reference) DO UPDATE SET \
                   user_id = excluded.user_id, payment_id = excluded.payment_id, held_until = excluded.held_until \
                   WHERE crypto_references.held_until <= $7";
        let params: [Param; 7] =
            [&wide(chain_id), &token, &wide(reference), &user_id, &payment_id, &to_millis(until), &to_millis(now)];
        Ok(self.execute(sql, &params)? == 1)
    }

    fn reference_holder(
        &mut self,
        chain_id: u64,
        token: &str,
        reference: u64,
    ) -> StoreResult<Option<(String, String)>> {
        let sql =
            "SELECT user_id, payment_id FROM crypto_references WHERE chain_id = $1 AND token = $2 AND reference = $3";
        self.one(sql, &[&wide(chain_id), &token, &wide(reference)], |row| {
            let c = Cells::new(row, "crypto_references");
            Ok((c.get(0)?, c.get(1)?))
        })
    }

    fn observation(
        &mut self,
        user_id: &str,
        chain_id: u64,
        tx_hash: &str,
        log_index: u64,
    ) -> StoreResult<Option<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = $1 AND chain_id = $2 AND tx_hash = $3 AND log_index = $4";
        self.one(sql, &[&user_id, &wide(chain_id), &tx_hash, &wide(log_index)], read_observation)
    }

    fn save_observation(&mut self, user_id: &str, stored: &StoredObservation) -> StoreResult<()> {
        let o = &stored.observation;
        let sql = "INSERT INTO crypto_observations (user_id, chain_id, tx_hash, log_index, payment_id, observation, \
                   seen_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_id, chain_id, tx_hash, log_index) \
                   DO UPDATE SET payment_id = excluded.payment_id, observation = excluded.observation";
        let params: [Param; 7] = [
            &user_id,
            &wide(o.chain_id),
            &o.tx_hash,
            &wide(o.log_index),
            &stored.payment_id,
            &Json(o),
            &to_millis(stored.seen_at),
        ];
        self.change_one(sql, &params, "the transfer was not saved")
    }

    fn payment_observations(&mut self, user_id: &str, payment_id: &str) -> StoreResult<Vec<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = $1 AND payment_id = $2 ORDER BY seen_at, tx_hash, log_index";
        self.many(sql, &[&user_id, &payment_id], read_observation)
    }

    fn all_observations(&mut self, user_id: &str) -> StoreResult<Vec<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = $1 ORDER BY seen_at, tx_hash, log_index";
        self.many(sql, &[&user_id], read_observation)
    }

    fn all_references(&mut self) -> StoreResult<Vec<ReferenceClaim>> {
        let sql = "SELECT chain_id, token, reference, user_id, payment_id, held_until FROM crypto_references \
                   ORDER BY chain_id, token, reference";
        self.many(sql, &[], |row| {
            let c = Cells::new(row, "crypto_references");
            Ok(ReferenceClaim {
                chain_id: c.get::<i64>(0)? as u64,
                token: c.get(1)?,
                reference: c.get::<i64>(2)? as u64,
                user_id: c.get(3)?,
                payment_id: c.get(4)?,
                held_until: c.time(5)?,
            })
        })
    }

    fn all_chain_heads(&mut self) -> StoreResult<Vec<(u64, u64)>> {
        self.many("SELECT chain_id, block_number FROM chain_heads ORDER BY chain_id", &[], |row| {
            let c = Cells::new(row, "chain_heads");
            Ok((c.get::<i64>(0)? as u64, c.get::<i64>(1)? as u64))
        })
    }

    fn raise_chain_head(&mut self, chain_id: u64, block: u64) -> StoreResult<u64> {
        let sql = "INSERT INTO chain_heads (chain_id, block_number) VALUES ($1, $2) ON CONFLICT (chain_id) \
                   DO UPDATE SET block_number = greatest(chain_heads.block_number, excluded.block_number) \
                   RETURNING block_number";
        let rows = self.rows(sql, &[&wide(chain_id), &wide(block)])?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0)) as u64)
    }

    fn chain_head(&mut self, chain_id: u64) -> StoreResult<Option<u64>> {
        let rows = self.rows("SELECT block_number FROM chain_heads WHERE chain_id = $1", &[&wide(chain_id)])?;
        Ok(rows.first().map(|row| row.get::<_, i64>(0) as u64))
    }

    fn crypto_payments_to_check(&mut self, since: OffsetDateTime) -> StoreResult<Vec<(String, String)>> {
        let sql = "SELECT user_id, id FROM payments WHERE crypto_state IN ('pending', 'confirming', 'underpaid') \
                   OR (crypto_state IN ('succeeded', 'overpaid') AND updated_at >= $1) ORDER BY created_at, id";
        self.many(sql, &[&to_millis(since)], |row| {
            let c = Cells::new(row, "payments");
            Ok((c.get(0)?, c.get(1)?))
        })
    }

    fn set_delivery(&mut self, consumer: &str, state: &DeliveryState) -> StoreResult<()> {
        let sql = "INSERT INTO event_consumers (consumer, failed_attempts, next_attempt_at, stopped_at) \
                   VALUES ($1, $2, $3, $4) ON CONFLICT (consumer) DO UPDATE SET \
                   failed_attempts = excluded.failed_attempts, next_attempt_at = excluded.next_attempt_at, \
                   stopped_at = excluded.stopped_at";
        let attempts = i32::try_from(state.failed_attempts).unwrap_or(i32::MAX);
        let params: [Param; 4] =
            [&consumer, &attempts, &state.next_attempt_at.map(to_millis), &state.stopped_at.map(to_millis)];
        self.change_one(sql, &params, "the delivery state was not saved")
    }
}

/// A money movement and its id, read by `money_columns!`.
fn read_money(row: &Row) -> StoreResult<(i64, MoneyRecord)> {
    let c = Cells::new(row, "money_movements");
    let record = MoneyRecord {
        user_id: c.get(1)?,
        payment_id: c.get(2)?,
        kind: c.named(3)?,
        micros: c.get(4)?,
        currency: c.get(5)?,
        provider: c.get(6)?,
        network: c.get(7)?,
        plan_code: c.get(8)?,
        package_code: c.get(9)?,
        at: c.time(10)?,
    };
    Ok((c.get(0)?, record))
}

fn read_audit(row: &Row) -> StoreResult<AuditRecord> {
    let c = Cells::new(row, "audit_log");
    let user_id: String = c.get(1)?;
    Ok(AuditRecord {
        id: c.get(0)?,
        user_id: (!user_id.is_empty()).then_some(user_id),
        actor: c.get(2)?,
        action: c.get(3)?,
        target: c.get(4)?,
        outcome: c.named(5)?,
        reason: c.get(6)?,
        before: c.json_opt(7)?,
        after: c.json_opt(8)?,
        error: c.json_opt(9)?,
        request_id: c.get(10)?,
        created_at: c.time(11)?,
    })
}

fn read_observation(row: &Row) -> StoreResult<StoredObservation> {
    let c = Cells::new(row, "crypto_observations");
    Ok(StoredObservation { payment_id: c.get(0)?, observation: c.json(1)?, seen_at: c.time(2)? })
}

/// A chain id, block or log index as PostgreSQL's `BIGINT` (they are far below 2^63).
fn wide(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn read_event(row: &Row) -> StoreResult<Event> {
    let c = Cells::new(row, "events");
    Ok(Event {
        event_id: c.get(0)?,
        event_type: c.named(1)?,
        user_id: c.get(2)?,
        sequence: c.get(3)?,
        occurred_at: c.time(4)?,
        payload: c.json(5)?,
    })
}

/// A ledger entry as the columns of `entry_insert_columns!` hold it.
struct EntryRow<'e> {
    entry: &'e LedgerEntry,
    request_hash: Option<&'e str>,
    kind: &'static str,
    source: Option<&'static str>,
    allowance_owner: Option<&'e str>,
    allowance_start: Option<i64>,
    op_day: Option<i32>,
    metadata: Option<Json<&'e serde_json::Value>>,
    created_at: i64,
}

impl<'e> EntryRow<'e> {
    fn new(entry: &'e LedgerEntry, request_hash: Option<&'e str>) -> Self {
        Self {
            entry,
            request_hash,
            kind: entry.kind.as_str(),
            source: entry.source.map(ChargeSource::as_str),
            allowance_owner: entry.allowance.as_ref().map(|a| a.owner.as_str()),
            allowance_start: entry.allowance.as_ref().map(|a| to_millis(a.start)),
            op_day: entry.op_day.map(Date::to_julian_day),
            metadata: entry.metadata.as_ref().map(Json),
            created_at: to_millis(entry.created_at),
        }
    }

    fn params(&self) -> [Param<'_>; 15] {
        let e = self.entry;
        [
            &e.user_id,
            &self.kind,
            &self.source,
            &e.operation,
            &e.credits_delta,
            &e.credits_balance_after,
            &e.ops_delta,
            &self.allowance_owner,
            &self.allowance_start,
            &self.op_day,
            &e.idempotency_key,
            &self.request_hash,
            &e.reference,
            &self.metadata,
            &self.created_at,
        ]
    }
}

/// The cells of one row of `table`; a value that does not read as its column's type is
/// [`StoreError::Corrupt`] naming `table.column`, so the integrity audit can report it.
struct Cells<'r> {
    row: &'r Row,
    table: &'static str,
}

impl<'r> Cells<'r> {
    fn new(row: &'r Row, table: &'static str) -> Self {
        Self { row, table }
    }

    fn corrupt(&self, idx: usize) -> StoreError {
        let name = self.row.columns().get(idx).map_or("?", |column| column.name());
        StoreError::Corrupt { column: format!("{}.{name}", self.table) }
    }

    fn get<T: FromSql<'r>>(&self, idx: usize) -> StoreResult<T> {
        self.row.try_get(idx).map_err(|_| self.corrupt(idx))
    }

    fn time(&self, idx: usize) -> StoreResult<OffsetDateTime> {
        Ok(from_millis(self.get(idx)?))
    }

    fn time_opt(&self, idx: usize) -> StoreResult<Option<OffsetDateTime>> {
        Ok(self.get::<Option<i64>>(idx)?.map(from_millis))
    }

    /// A count the engine keeps as `u32`, stored as `BIGINT`.
    fn count(&self, idx: usize) -> StoreResult<u32> {
        u32::try_from(self.get::<i64>(idx)?).map_err(|_| self.corrupt(idx))
    }

    /// A usage amount or count, stored as `BIGINT`, never negative.
    fn amount(&self, idx: usize) -> StoreResult<u64> {
        u64::try_from(self.get::<i64>(idx)?).map_err(|_| self.corrupt(idx))
    }

    fn day(&self, idx: usize) -> StoreResult<Date> {
        Date::from_julian_day(self.get(idx)?).map_err(|_| self.corrupt(idx))
    }

    /// An enum stored by its `as_str` name.
    fn named<T: FromStr>(&self, idx: usize) -> StoreResult<T> {
        self.get::<&str>(idx)?.parse().map_err(|_| self.corrupt(idx))
    }

    fn named_opt<T: FromStr>(&self, idx: usize) -> StoreResult<Option<T>> {
        self.get::<Option<&str>>(idx)?.map(|text| text.parse().map_err(|_| self.corrupt(idx))).transpose()
    }

    fn json<T: DeserializeOwned>(&self, idx: usize) -> StoreResult<T> {
        Ok(self.get::<Json<T>>(idx)?.0)
    }

    fn json_opt<T: DeserializeOwned>(&self, idx: usize) -> StoreResult<Option<T>> {
        Ok(self.get::<Option<Json<T>>>(idx)?.map(|json| json.0))
    }
}

/// A usage event's values in the order of `usage_insert_columns!`.
struct UsageRow<'u> {
    new: &'u NewUsage,
    amount: i64,
    at: i64,
    events: Option<i32>,
    created_at: i64,
    metadata: Option<Json<&'u serde_json::Value>>,
}

impl<'u> UsageRow<'u> {
    fn new(new: &'u NewUsage) -> StoreResult<Self> {
        let amount = i64::try_from(new.record.amount)
            .map_err(|_| StoreError::unavailable("a usage amount past what the store holds"))?;
        let events = new
            .events
            .map(i32::try_from)
            .transpose()
            .map_err(|_| StoreError::unavailable("a usage batch past what the store holds"))?;
        Ok(Self {
            new,
            amount,
            at: to_millis(new.record.at),
            events,
            created_at: to_millis(new.created_at),
            metadata: new.record.metadata.as_ref().map(Json),
        })
    }

    fn params(&self) -> [Param<'_>; 16] {
        let (n, r) = (self.new, &self.new.record);
        [
            &r.user_id,
            &r.metric,
            &self.amount,
            &r.model_id,
            &r.chat_id,
            &r.hold_id,
            &self.at,
            &n.period_window,
            &n.day_window,
            &r.over_limit,
            &r.overage_credits,
            &self.metadata,
            &n.idempotency_key,
            &self.events,
            &n.request_hash,
            &self.created_at,
        ]
    }
}

fn read_usage(row: &Row) -> StoreResult<NewUsage> {
    let c = Cells::new(row, "usage_events");
    Ok(NewUsage {
        record: UsageRecord {
            id: c.get(0)?,
            user_id: c.get(1)?,
            metric: c.get(2)?,
            amount: c.amount(3)?,
            model_id: c.get(4)?,
            chat_id: c.get(5)?,
            hold_id: c.get(6)?,
            at: c.time(7)?,
            over_limit: c.get(10)?,
            overage_credits: c.get::<Decimal>(11)?,
            metadata: c.json_opt(12)?,
            replayed: false,
        },
        period_window: c.get(8)?,
        day_window: c.get(9)?,
        idempotency_key: c.get(13)?,
        events: c.get::<Option<i32>>(14)?.map(|n| u32::try_from(n).map_err(|_| c.corrupt(14))).transpose()?,
        request_hash: c.get(15)?,
        created_at: c.time(16)?,
    })
}

fn read_lot(row: &Row) -> StoreResult<CreditLot> {
    let c = Cells::new(row, "credit_lots");
    Ok(CreditLot {
        user_id: c.get(0)?,
        id: c.get(1)?,
        amount: c.get(2)?,
        remaining: c.get(3)?,
        priority: u8::try_from(c.get::<i16>(4)?).map_err(|_| c.corrupt(4))?,
        category: c.named(5)?,
        effective_at: c.time(6)?,
        expires_at: c.time_opt(7)?,
        source: c.named(8)?,
        reference: c.get(9)?,
    })
}

fn read_counter(row: &Row) -> StoreResult<UsageCounter> {
    let c = Cells::new(row, "usage_counters");
    Ok(UsageCounter { metric: c.get(0)?, window: c.get(1)?, used: c.amount(2)?, held: c.amount(3)? })
}

/// A hold from `status, data`: the status column is the one the queries select by, so
/// it is the one that counts.
fn read_hold(row: &Row) -> StoreResult<Hold> {
    let c = Cells::new(row, "holds");
    Ok(Hold { status: c.named(0)?, ..c.json(1)? })
}

fn read_account(row: &Row) -> StoreResult<Account> {
    let c = Cells::new(row, "accounts");
    Ok(Account {
        user_id: c.get(0)?,
        created_at: c.time(1)?,
        credits: c.get::<Decimal>(2)?,
        free_trial_awarded: c.get(3)?,
        freemium: Allowance { anchor: c.time(4)?, period_start: c.time(5)?, used: c.count(6)? },
        today: DayOps { day: c.day(7)?, subscription: c.count(8)?, freemium: c.count(9)? },
        subscription: c.json_opt(10)?,
    })
}

fn read_entry(row: &Row) -> StoreResult<LedgerEntry> {
    let c = Cells::new(row, "ledger");
    let owner: Option<String> = c.get(8)?;
    let start = c.time_opt(9)?;
    Ok(LedgerEntry {
        id: c.get(0)?,
        user_id: c.get(1)?,
        kind: c.named(2)?,
        source: c.named_opt(3)?,
        operation: c.get(4)?,
        credits_delta: c.get(5)?,
        credits_balance_after: c.get(6)?,
        ops_delta: c.get(7)?,
        allowance: owner.zip(start).map(|(owner, start)| AllowancePeriod { owner, start }),
        op_day: c
            .get::<Option<i32>>(10)?
            .map(|day| Date::from_julian_day(day).map_err(|_| c.corrupt(10)))
            .transpose()?,
        idempotency_key: c.get(11)?,
        reference: c.get(12)?,
        metadata: c.json_opt(13)?,
        created_at: c.time(14)?,
    })
}

fn read_payment(row: &Row) -> StoreResult<Payment> {
    let c = Cells::new(row, "payments");
    Ok(Payment {
        id: c.get(0)?,
        user_id: c.get(1)?,
        purpose: c.named(2)?,
        plan_code: c.get(3)?,
        package_code: c.get(4)?,
        amount: c.get(5)?,
        currency: c.get(6)?,
        credits: c.get(7)?,
        description: c.get(8)?,
        status: c.named(9)?,
        provider_payment_id: c.get(10)?,
        provider_key: c.get(11)?,
        save_payment_method: c.get(12)?,
        return_url: c.get(13)?,
        confirmation_url: c.get(14)?,
        renewal_of: c.get(15)?,
        refund_id: c.get(16)?,
        payload: c.json_opt(17)?,
        idempotency_key: c.get(18)?,
        created_at: c.time(19)?,
        updated_at: c.time(20)?,
        paid_at: c.time_opt(21)?,
        refunded_amount: c.get(22)?,
        paid_period: match (c.get::<Option<String>>(23)?, c.time_opt(24)?, c.time_opt(25)?) {
            (Some(subscription_id), Some(start), Some(end)) => Some(PaidPeriod { subscription_id, start, end }),
            _ => None,
        },
        crypto: c.json_opt(26)?,
    })
}

/// What [`PostgresStore::copy_from`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub users: u64,
    pub entries: u64,
    pub payments: u64,
    pub usage_events: u64,
    pub audit_records: u64,
    /// The overview's rows: purchased periods (and their cuts and churns) and money
    /// movements.
    pub overview_rows: u64,
    /// Users the target already had, left as they are (a copy run again after it was
    /// stopped goes on where it stopped).
    pub skipped: u64,
}

/// One user's rows, as read from the source store.
struct UserRows {
    account: Option<Account>,
    entries: Vec<(LedgerEntry, Option<String>)>,
    payments: Vec<(Payment, Option<String>)>,
    method: Option<SavedMethod>,
    contact: Option<CustomerContact>,
    usage: Vec<NewUsage>,
    counters: Vec<UsageCounter>,
    holds: Vec<Hold>,
    lots: Vec<CreditLot>,
    allocations: Vec<(i64, Allocation)>,
    events: Vec<Event>,
    observations: Vec<StoredObservation>,
    periods: Vec<PeriodRecord>,
    money: Vec<(i64, MoneyRecord)>,
}

impl PostgresStore {
    /// Copies every user of `source` (a SQLite store, say) into this database, user by
    /// user, each in one transaction: accounts, ledger entries with their ids, keys and
    /// request fingerprints, payments with theirs, saved cards (saved at the time of the
    /// copy), usage events (ids and keys too), counters, holds, credit lots and their
    /// allocations, events, crypto transfers, and the overview's periods and money
    /// movements (ids too). Then the audit log and what crypto payments share. Users this
    /// database already has are skipped. Stop the writers of
    /// `source` first; run [`Billing::verify_integrity`](crate::Billing::verify_integrity)
    /// on this database after.
    pub fn copy_from(&self, source: &impl Store) -> Result<CopyReport> {
        let mut report = CopyReport::default();
        for user_id in source.read(|tx| Ok(tx.user_ids()?))? {
            let rows = source.read(|tx| read_user(tx, &user_id))?;
            if self.copy_user(&user_id, &rows)? {
                report.users += 1;
                report.entries += rows.entries.len() as u64;
                report.payments += rows.payments.len() as u64;
                report.usage_events += rows.usage.len() as u64;
                report.overview_rows += (rows.periods.len() + rows.money.len()) as u64;
            } else {
                report.skipped += 1;
            }
        }
        report.audit_records = self.copy_audit_log(source)?;
        self.copy_crypto_state(source)?;
        // New entries get ids after the copied ones.
        let deadline = Instant::now() + self.options.lock_timeout;
        let mut conn = self.connection(deadline)?;
        conn.client
            .batch_execute(
                "SELECT setval(pg_get_serial_sequence('ledger', 'id'), GREATEST((SELECT max(id) FROM ledger), 1));
                 SELECT setval(pg_get_serial_sequence('usage_events', 'id'),
                     GREATEST((SELECT max(id) FROM usage_events), 1));
                 SELECT setval(pg_get_serial_sequence('audit_log', 'id'),
                     GREATEST((SELECT max(id) FROM audit_log), 1));
                 SELECT setval(pg_get_serial_sequence('money_movements', 'id'),
                     GREATEST((SELECT max(id) FROM money_movements), 1));",
            )
            .map_err(pg_error)?;
        Ok(report)
    }

    /// Copies what crypto payments share across users: the references taken (one held
    /// here already stays), the chain heads, and the transfers no payment holds.
    fn copy_crypto_state(&self, source: &impl Store) -> Result<()> {
        let references = source.read(|tx| Ok(tx.all_references()?))?;
        let heads = source.read(|tx| Ok(tx.all_chain_heads()?))?;
        let unmatched = source.read(|tx| Ok(tx.all_observations("")?))?;
        let mut copy = |tx: &mut PgTx<'_>| -> Result<()> {
            for r in &references {
                let never = OffsetDateTime::UNIX_EPOCH;
                tx.claim_reference(r.chain_id, &r.token, r.reference, &r.user_id, &r.payment_id, r.held_until, never)?;
            }
            for (chain_id, block) in &heads {
                tx.raise_chain_head(*chain_id, *block)?;
            }
            for stored in &unmatched {
                tx.save_observation("", stored)?;
            }
            Ok(())
        };
        self.run(|deadline| self.attempt_write(&[], &mut copy, deadline))
    }

    /// Copies the audit log with its ids, a page at a time; a record copied before is
    /// left as it is. How many records it copied.
    fn copy_audit_log(&self, source: &impl Store) -> Result<u64> {
        let mut copied = 0;
        let mut before = None;
        loop {
            let page = source.read(|tx| Ok(tx.audit_records(&AuditFilter::default(), before, 1000)?))?;
            let Some(last) = page.last() else { return Ok(copied) };
            before = Some(last.id);
            let mut copy = |tx: &mut PgTx<'_>| -> Result<u64> {
                let mut written = 0;
                for record in &page {
                    written += tx.copy_audit(record)?;
                }
                Ok(written)
            };
            copied += self.run(|deadline| self.attempt_write(&[], &mut copy, deadline))?;
        }
    }

    /// Writes one user's rows, as a write of that user (locked, run again after a
    /// conflict), unless the user is here already; whether it wrote.
    fn copy_user(&self, user_id: &str, rows: &UserRows) -> Result<bool> {
        let now = OffsetDateTime::now_utc();
        let mut copy = |tx: &mut PgTx<'_>| -> Result<bool> {
            let present = tx.rows("SELECT 1 FROM ledger WHERE user_id = $1 LIMIT 1", &[&user_id])?;
            if tx.account(user_id)?.is_some() || !present.is_empty() {
                return Ok(false);
            }
            if let Some(account) = &rows.account {
                tx.insert_account(account)?;
            }
            for (entry, request_hash) in &rows.entries {
                tx.copy_entry(entry, request_hash.as_deref())?;
            }
            for (payment, request_hash) in &rows.payments {
                tx.insert_payment(payment, request_hash.as_deref())?;
            }
            if let Some(method) = &rows.method {
                tx.save_method(user_id, method, method.saved_at.unwrap_or(now))?;
            }
            if let Some(contact) = &rows.contact {
                tx.set_customer_contact(user_id, contact, now)?;
            }
            for usage in &rows.usage {
                tx.copy_usage(usage)?;
            }
            for c in &rows.counters {
                tx.add_usage(user_id, &c.metric, &c.window, counted(c.used)?, counted(c.held)?)?;
            }
            for hold in &rows.holds {
                tx.insert_hold(hold)?;
            }
            for lot in &rows.lots {
                tx.insert_lot(lot)?;
            }
            for (entry_id, allocations) in group_by_entry(&rows.allocations) {
                tx.insert_allocations(user_id, entry_id, &allocations)?;
            }
            for event in &rows.events {
                tx.copy_event(event)?;
            }
            for stored in &rows.observations {
                tx.save_observation(user_id, stored)?;
            }
            for period in &rows.periods {
                tx.append_period(period)?;
            }
            for (id, money) in &rows.money {
                tx.insert_money(COPY_MONEY, money, Some(*id))?;
            }
            Ok(true)
        };
        self.run(|deadline| self.attempt_write(&[user_id], &mut copy, deadline))
    }
}

fn read_user(tx: &mut dyn Transaction, user_id: &str) -> Result<UserRows> {
    let mut entries = Vec::new();
    for entry in tx.all_entries(user_id)? {
        let hash = match &entry.idempotency_key {
            Some(key) => tx.entry_by_key(user_id, key)?.and_then(|(_, hash)| hash),
            None => None,
        };
        entries.push((entry, hash));
    }
    let mut payments = Vec::new();
    for payment in tx.all_payments(user_id)? {
        let hash = match &payment.idempotency_key {
            Some(key) => tx.payment_by_key(user_id, key)?.and_then(|(_, hash)| hash),
            None => None,
        };
        payments.push((payment, hash));
    }
    Ok(UserRows {
        account: tx.account(user_id)?,
        entries,
        payments,
        method: tx.saved_method(user_id)?,
        contact: tx.customer_contact(user_id)?,
        usage: tx.all_usage(user_id)?,
        counters: tx.all_usage_counters(user_id)?,
        holds: tx.all_holds(user_id)?,
        lots: tx.all_lots(user_id)?,
        allocations: tx.all_allocations(user_id)?,
        events: tx.user_events(user_id, 0, u32::MAX)?,
        observations: tx.all_observations(user_id)?,
        periods: tx.user_periods(user_id)?,
        money: tx.user_money(user_id)?,
    })
}

/// Allocations grouped by their entry, each group in its order.
fn group_by_entry(allocations: &[(i64, Allocation)]) -> Vec<(i64, Vec<Allocation>)> {
    let mut groups: Vec<(i64, Vec<Allocation>)> = Vec::new();
    for (entry_id, allocation) in allocations {
        match groups.last_mut() {
            Some((last, group)) if last == entry_id => group.push(allocation.clone()),
            _ => groups.push((*entry_id, vec![allocation.clone()])),
        }
    }
    groups
}

/// A usage count as the store's `BIGINT`.
fn counted(amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| StoreError::unavailable("a usage amount past what the store holds"))
}

/// A money movement of another store, with its id (`$11`): PostgreSQL's copy.
const COPY_MONEY: &str = "INSERT INTO money_movements (user_id, payment_id, kind, micros, currency, \
     provider, network, plan_code, package_code, at, id) OVERRIDING SYSTEM VALUE \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

impl PgTx<'_> {
    /// Stores an event of another store as it is, its sequence included.
    fn copy_event(&mut self, event: &Event) -> StoreResult<()> {
        let sql = concat!("INSERT INTO events (", event_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6)");
        let params: [Param; 6] = [
            &event.event_id,
            &event.event_type.as_str(),
            &event.user_id,
            &event.sequence,
            &to_millis(event.occurred_at),
            &Json(&event.payload),
        ];
        self.change_one(sql, &params, "the event insert wrote no row")
    }

    /// Stores an audit record of another store with its id, unless it is here already;
    /// how many rows it wrote.
    fn copy_audit(&mut self, r: &AuditRecord) -> StoreResult<u64> {
        let sql = concat!(
            "INSERT INTO audit_log (",
            audit_columns!(),
            ", id) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT DO NOTHING RETURNING id"
        );
        Ok(self.insert_audit(sql, &NewAuditRecord::from(r), Some(r.id))?.len() as u64)
    }

    /// Runs an insert of `audit_columns!` (and `id`, when given, as the last parameter).
    fn insert_audit(&mut self, sql: &'static str, r: &NewAuditRecord, id: Option<i64>) -> StoreResult<Vec<Row>> {
        let user_id = r.user_id.as_deref().unwrap_or("");
        let (before, after, error) =
            (r.before.as_ref().map(Json), r.after.as_ref().map(Json), r.error.as_ref().map(Json));
        let (outcome, created_at) = (r.outcome.as_str(), to_millis(r.created_at));
        let mut params: Vec<Param> = vec![
            &user_id,
            &r.actor,
            &r.action,
            &r.target,
            &outcome,
            &r.reason,
            &before,
            &after,
            &error,
            &r.request_id,
            &created_at,
        ];
        if let Some(id) = &id {
            params.push(id);
        }
        self.rows(sql, &params)
    }

    /// Runs an insert of a money movement (and its `id`, when given, as the last parameter).
    fn insert_money(&mut self, sql: &'static str, m: &MoneyRecord, id: Option<i64>) -> StoreResult<()> {
        let (kind, at) = (m.kind.as_str(), to_millis(m.at));
        let mut params: Vec<Param> = vec![
            &m.user_id,
            &m.payment_id,
            &kind,
            &m.micros,
            &m.currency,
            &m.provider,
            &m.network,
            &m.plan_code,
            &m.package_code,
            &at,
        ];
        if let Some(id) = &id {
            params.push(id);
        }
        self.change_one(sql, &params, "the money insert wrote no row")
    }

    /// Stores a usage event of another store as it is, its id included.
    fn copy_usage(&mut self, usage: &NewUsage) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO usage_events (id, ",
            usage_insert_columns!(),
            ") OVERRIDING SYSTEM VALUE VALUES ($17, ",
            usage_values!(),
            ")"
        );
        let row = UsageRow::new(usage)?;
        let mut params = row.params().to_vec();
        params.push(&usage.record.id);
        self.change_one(sql, &params, "the usage insert wrote no row")
    }

    /// Stores an entry of another store as it is, its id included.
    fn copy_entry(&mut self, e: &LedgerEntry, request_hash: Option<&str>) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO ledger (id, ",
            entry_insert_columns!(),
            ") OVERRIDING SYSTEM VALUE VALUES ($16, ",
            entry_values!(),
            ")"
        );
        let row = EntryRow::new(e, request_hash);
        let mut params = row.params().to_vec();
        params.push(&e.id);
        self.change_one(sql, &params, "the ledger insert wrote no row")
    }
}
