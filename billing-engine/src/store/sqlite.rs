//! The default [`Store`]: one SQLite file shared by any number of threads and processes.
//!
//! WAL lets readers run beside the single writer. Writes start with `BEGIN IMMEDIATE`,
//! taking SQLite's write lock before the first read, so a read-decide-write sequence can
//! never interleave with another process's; inside one process writers also queue on a
//! mutex, so threads wait in line instead of in SQLite's sleeping busy handler.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::types::Type;
use rusqlite::{params, CachedStatement, Connection, OpenFlags, OptionalExtension, Row};
use rust_decimal::Decimal;
use time::{Date, OffsetDateTime};

use super::analytics_sql as sql;
use super::sqlite_error::SqliteError;
use super::sqlite_writer::{CommitStats, Writer};
use super::{schema, DeliveryState, Store, StoreError, StoreResult, Transaction};
use crate::account::{Account, Allowance, DayOps};
use crate::analytics::{
    self, MoneyBucket, MoneyKind, MoneyRecord, PeriodKind, PeriodRecord, Segment, TransactionFilter,
};
use crate::audit::{AuditFilter, AuditOutcome, AuditRecord, NewAuditRecord};
use crate::catalog::ChargeSource;
use crate::crypto::{ReferenceClaim, StoredObservation};
use crate::error::{BillingError, Result};
use crate::events::{Event, EventType, NewEvent};
use crate::ledger::{AllowancePeriod, EntryKind, LedgerEntry, NewEntry};
use crate::lots::{Allocation, CreditLot, LotCategory, LotSource};
use crate::payment::{PaidPeriod, Payment, PaymentStatus, Purpose, SavedMethod};
use crate::receipt::CustomerContact;
use crate::time_util::{from_millis, to_millis};
use crate::usage::{Hold, HoldStatus, NewUsage, UsageCounter, UsageGroup, UsageRecord, UsageTotal};

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: a commit is on disk when it returns, even after power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the last commits may be lost on power loss (never on a
    /// process crash); the file is never corrupted. Faster.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a writer waits for another process's write to finish.
    pub lock_timeout: Duration,
    pub durability: Durability,
    /// Whether concurrent writers of this process share commits (see
    /// `store::sqlite_writer`): one commit then carries many threads' transactions, each
    /// acknowledged once that commit is durable. On by default; a writer alone is never
    /// delayed by it. Always off for `:memory:`, which has no commit cost to share.
    pub shared_commits: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { lock_timeout: Duration::from_millis(5000), durability: Durability::Full, shared_commits: true }
    }
}

pub struct SqliteStore {
    /// `None` for `:memory:`, where the writer connection is the only one (each
    /// in-memory connection would be a database of its own).
    path: Option<PathBuf>,
    options: SqliteOptions,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

const MEMORY: &str = ":memory:";
/// Takes the write lock before the first read: see the module docs.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
const BEGIN_READ: &str = "BEGIN DEFERRED";
/// A user's lots with credits left: read on every write.
const OPEN_LOTS: &str =
    concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = ?1 AND remaining <> '0' ORDER BY id");
const STATEMENT_CACHE: usize = 32;
/// About the WAL's size at SQLite's automatic checkpoint (1000 pages of 4 KiB).
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, or a private in-memory one for
    /// `":memory:"`, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref();
        let path = (path.as_os_str() != MEMORY).then(|| path.to_path_buf());
        let conn = connect(path.as_deref(), &options)?;
        in_transaction(&conn, BEGIN_WRITE, |conn| Ok(schema::migrate(conn)?))?;
        let writer = Writer::new(conn, options.shared_commits && path.is_some());
        Ok(Self { path, options, writer, readers: Mutex::new(Vec::new()) })
    }

    /// How many commits this handle made, and how many writes they carried: with shared
    /// commits, fewer commits than writes.
    pub fn commit_stats(&self) -> CommitStats {
        self.writer.stats()
    }

    /// Runs `work` against one deadline for every wait on the way (this process's queue,
    /// then other processes' locks); BUSY, with the whole wait, when it runs out.
    fn within_lock_timeout<T>(&self, work: impl FnOnce(Instant) -> Result<T>) -> Result<T> {
        let started = Instant::now();
        work(started + self.options.lock_timeout).map_err(|error| match error {
            BillingError::Busy { .. } => {
                BillingError::Busy { waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) }
            }
            other => other,
        })
    }

    fn read_on<T>(conn: &Connection, mut f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T> {
        in_transaction(conn, BEGIN_READ, |conn| f(&mut SqliteTx::new(conn)))
    }
}

/// SQLite has one writer, so every user's lock is the database's write lock, taken by
/// `BEGIN IMMEDIATE`; a write never needs to run again.
impl Store for SqliteStore {
    fn write_many<T: Send>(
        &self,
        _user_ids: &[&str],
        mut f: impl FnMut(&mut dyn Transaction) -> Result<T> + Send,
    ) -> Result<T> {
        self.within_lock_timeout(|deadline| self.writer.write(deadline, |tx| f(tx)))
    }

    fn read<T>(&self, f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T> {
        let Some(path) = &self.path else {
            return self.within_lock_timeout(|deadline| Self::read_on(&*self.writer.lock(deadline)?, f));
        };
        self.within_lock_timeout(|_| {
            let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => connect(Some(path), &self.options)?,
            };
            let result = Self::read_on(&conn, f);
            self.readers.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            result
        })
    }
}

fn connect(path: Option<&Path>, options: &SqliteOptions) -> Result<Connection, SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match path {
        Some(path) => Connection::open_with_flags(path, flags)?,
        None => Connection::open_in_memory()?,
    };
    conn.busy_timeout(options.lock_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The query planner's stability guarantee: a statement keeps the plan it was prepared
    // with. Without it SQLite marks many statements (an ORDER BY beside `user_id = ?1`, a
    // range on a bound value) to be prepared anew whenever a parameter is bound again,
    // and rusqlite's cache clears the bindings of every statement it takes back, so
    // those statements were parsed and planned on every run: a third of a charge paid
    // from credits, most of a `check_usage`.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    if path.is_some() {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SqliteError::Unusable("the database file cannot use write-ahead logging"));
        }
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // A WAL that grew (a long reader held back checkpoints) shrinks back to this when it
    // is next reset, instead of keeping its largest size on disk for good.
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// Runs `f` between `begin` and COMMIT; an error or a panic in `f` rolls back. Every
/// transaction of the store, the schema migration included, goes through here. BEGIN and
/// COMMIT are cached statements: parsing them anew is a measurable part of a charge.
fn in_transaction<T>(conn: &Connection, begin: &'static str, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    execute(conn, begin)?;
    let mut open = OpenTransaction { conn, committed: false };
    let value = f(conn)?;
    execute(conn, "COMMIT")?;
    open.committed = true;
    Ok(value)
}

/// Runs a statement without parameters or rows, from the statement cache.
pub(super) fn execute(conn: &Connection, sql: &'static str) -> Result<(), SqliteError> {
    conn.prepare_cached(sql).and_then(|mut stmt| stmt.execute([]))?;
    Ok(())
}

/// Rolls back the open transaction, if one is open, with whatever it held.
pub(super) fn roll_back(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = execute(conn, "ROLLBACK");
    }
}

/// Rolls back a transaction that did not reach COMMIT, also while unwinding a panic.
struct OpenTransaction<'c> {
    conn: &'c Connection,
    committed: bool,
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.committed {
            roll_back(self.conn);
        }
    }
}

pub(super) struct SqliteTx<'c> {
    pub(super) conn: &'c Connection,
    /// The usage event insert, held over the transaction: a batch appends thousands, and
    /// looking a statement up in the cache costs a tenth of an append.
    usage_insert: Option<CachedStatement<'c>>,
}

impl<'c> SqliteTx<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self { conn, usage_insert: None }
    }
}

impl SqliteTx<'_> {
    /// Marks a point inside the transaction that what follows can be undone back to.
    pub(super) fn savepoint(&self) -> StoreResult<()> {
        Ok(execute(self.conn, "SAVEPOINT member")?)
    }

    /// Ends the savepoint, keeping what was written since it (`keep`) or undoing it.
    pub(super) fn end_savepoint(&self, keep: bool) -> StoreResult<()> {
        if !keep {
            execute(self.conn, "ROLLBACK TO member")?;
        }
        Ok(execute(self.conn, "RELEASE member")?)
    }
}

impl Transaction for SqliteTx<'_> {
    fn account(&mut self, user_id: &str) -> StoreResult<Option<Account>> {
        let sql = concat!("SELECT ", account_columns!(), " FROM accounts WHERE user_id = ?1");
        self.one(sql, [user_id], account_from_row)
    }

    fn insert_account(&mut self, account: &Account) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO accounts (",
            account_columns!(),
            ", subscription_due_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        );
        self.write_account(sql, account)
    }

    fn update_account(&mut self, account: &Account) -> StoreResult<()> {
        let sql = "UPDATE accounts SET created_at = ?2, credits = ?3, free_trial_awarded = ?4, free_anchor = ?5, \
             free_period_start = ?6, free_used = ?7, day = ?8, day_subscription_ops = ?9, day_freemium_ops = ?10, \
             subscription = ?11, subscription_due_at = ?12 WHERE user_id = ?1";
        self.write_account(sql, account)
    }

    fn user_ids(&mut self) -> StoreResult<Vec<String>> {
        let sql = "SELECT user_id FROM accounts UNION SELECT user_id FROM ledger \
                   UNION SELECT user_id FROM payments ORDER BY user_id";
        self.many(sql, [], |row| row.get(0))
    }

    fn append_entry(&mut self, new: &NewEntry) -> StoreResult<LedgerEntry> {
        let e = &new.entry;
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO ledger (user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta, \
                 allowance_owner, allowance_start, op_day, idempotency_key, request_hash, reference, metadata, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .map_err(SqliteError::from)?;
        let metadata = e.metadata.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        stmt.execute(params![
            e.user_id,
            e.kind.as_str(),
            e.source.map(ChargeSource::as_str),
            e.operation,
            e.credits_delta.to_string(),
            e.credits_balance_after.to_string(),
            e.ops_delta,
            e.allowance.as_ref().map(|a| a.owner.as_str()),
            e.allowance.as_ref().map(|a| to_millis(a.start)),
            e.op_day.map(Date::to_julian_day),
            e.idempotency_key,
            new.request_hash,
            e.reference,
            metadata,
            to_millis(e.created_at),
        ])
        .map_err(SqliteError::from)?;
        Ok(LedgerEntry { id: self.conn.last_insert_rowid(), ..e.clone() })
    }

    fn entry(&mut self, id: i64) -> StoreResult<Option<LedgerEntry>> {
        self.one(concat!("SELECT ", entry_columns!(), " FROM ledger WHERE id = ?1"), params![id], entry_from_row)
    }

    fn entry_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(LedgerEntry, Option<String>)>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            ", request_hash FROM ledger WHERE user_id = ?1 AND idempotency_key = ?2"
        );
        self.one(sql, params![user_id, key], |row| Ok((entry_from_row(row)?, row.get(15)?)))
    }

    fn refund_of(&mut self, user_id: &str, charge_id: i64) -> StoreResult<Option<LedgerEntry>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger WHERE kind = 'refund' AND reference = ?2 AND user_id = ?1"
        );
        self.one(sql, params![user_id, charge_id.to_string()], entry_from_row)
    }

    fn entries(&mut self, user_id: &str, before: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM ledger WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
        );
        self.many(sql, params![user_id, before.unwrap_or(i64::MAX), limit], entry_from_row)
    }

    fn users_due(&mut self, until: OffsetDateTime) -> StoreResult<Vec<String>> {
        let sql = "SELECT user_id FROM accounts WHERE subscription_due_at <= ?1 ORDER BY subscription_due_at";
        self.many(sql, [to_millis(until)], |row| row.get(0))
    }

    fn insert_payment(&mut self, p: &Payment, request_hash: Option<&str>) -> StoreResult<()> {
        let sql = concat!(
            "INSERT INTO payments (",
            payment_columns!(),
            ", request_hash, crypto_state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
             ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)"
        );
        let payload = p.payload.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        let crypto = p.crypto.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![
            p.id,
            p.user_id,
            p.purpose.as_str(),
            p.plan_code,
            p.package_code,
            p.amount.to_string(),
            p.currency,
            p.credits.map(|c| c.to_string()),
            p.description,
            p.status.as_str(),
            p.provider_payment_id,
            p.provider_key,
            p.save_payment_method,
            p.return_url,
            p.confirmation_url,
            p.renewal_of,
            p.refund_id,
            payload,
            p.idempotency_key,
            to_millis(p.created_at),
            to_millis(p.updated_at),
            p.paid_at.map(to_millis),
            p.refunded_amount.to_string(),
            p.paid_period.as_ref().map(|period| period.subscription_id.as_str()),
            p.paid_period.as_ref().map(|period| to_millis(period.start)),
            p.paid_period.as_ref().map(|period| to_millis(period.end)),
            crypto,
            request_hash,
            p.crypto.as_ref().map(|c| c.state.as_str()),
        ])
        .map_err(SqliteError::from)?;
        Ok(())
    }

    fn update_payment(&mut self, p: &Payment) -> StoreResult<()> {
        // Only what a payment's life changes; what it was created for stays as written.
        let sql = "UPDATE payments SET status = ?2, provider_payment_id = ?3, provider_key = ?4, \
                   confirmation_url = ?5, refund_id = ?6, payload = ?7, updated_at = ?8, paid_at = ?9, \
                   refunded_amount = ?10, paid_subscription_id = ?11, paid_from = ?12, paid_until = ?13, \
                   crypto = ?14, crypto_state = ?15 WHERE id = ?1";
        let payload = p.payload.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        let crypto = p.crypto.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let changed = stmt
            .execute(params![
                p.id,
                p.status.as_str(),
                p.provider_payment_id,
                p.provider_key,
                p.confirmation_url,
                p.refund_id,
                payload,
                to_millis(p.updated_at),
                p.paid_at.map(to_millis),
                p.refunded_amount.to_string(),
                p.paid_period.as_ref().map(|period| period.subscription_id.as_str()),
                p.paid_period.as_ref().map(|period| to_millis(period.start)),
                p.paid_period.as_ref().map(|period| to_millis(period.end)),
                crypto,
                p.crypto.as_ref().map(|c| c.state.as_str()),
            ])
            .map_err(SqliteError::from)?;
        if changed != 1 {
            return Err(StoreError::unavailable("the payment to update is not in the database"));
        }
        Ok(())
    }

    fn payment(&mut self, id: &str) -> StoreResult<Option<Payment>> {
        self.one(concat!("SELECT ", payment_columns!(), " FROM payments WHERE id = ?1"), params![id], payment_from_row)
    }

    fn payment_by_provider_id(&mut self, provider_payment_id: &str) -> StoreResult<Option<Payment>> {
        let sql = concat!("SELECT ", payment_columns!(), " FROM payments WHERE provider_payment_id = ?1");
        self.one(sql, params![provider_payment_id], payment_from_row)
    }

    fn payment_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(Payment, Option<String>)>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            ", request_hash FROM payments WHERE user_id = ?1 AND idempotency_key = ?2"
        );
        self.one(sql, params![user_id, key], |row| Ok((payment_from_row(row)?, row.get(27)?)))
    }

    fn renewal_payment(&mut self, user_id: &str, period_key: &str) -> StoreResult<Option<Payment>> {
        let sql = concat!("SELECT ", payment_columns!(), " FROM payments WHERE renewal_of = ?2 AND user_id = ?1");
        self.one(sql, params![user_id, period_key], payment_from_row)
    }

    fn claim_sending(&mut self, payment_id: &str, until: OffsetDateTime, now: OffsetDateTime) -> StoreResult<bool> {
        let sql = "UPDATE payments SET sending_until = ?2 \
                   WHERE id = ?1 AND status = 'new' AND (sending_until IS NULL OR sending_until <= ?3)";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let claimed = stmt.execute(params![payment_id, to_millis(until), to_millis(now)]).map_err(SqliteError::from)?;
        Ok(claimed == 1)
    }

    fn end_sending(&mut self, payment_id: &str) -> StoreResult<()> {
        let mut stmt = self
            .conn
            .prepare_cached("UPDATE payments SET sending_until = NULL WHERE id = ?1")
            .map_err(SqliteError::from)?;
        stmt.execute([payment_id]).map_err(SqliteError::from)?;
        Ok(())
    }

    fn unsent_renewals(&mut self) -> StoreResult<Vec<Payment>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE purpose = 'renewal' AND status = 'new' ORDER BY created_at"
        );
        self.many(sql, [], payment_from_row)
    }

    fn payment_history(&mut self, user_id: &str, limit: u32) -> StoreResult<Vec<Payment>> {
        let sql = concat!(
            "SELECT ",
            payment_columns!(),
            " FROM payments WHERE user_id = ?1 AND status <> 'new' AND purpose <> 'card_binding' \
             ORDER BY created_at DESC, rowid DESC LIMIT ?2"
        );
        self.many(sql, params![user_id, limit], payment_from_row)
    }

    fn all_payments(&mut self, user_id: &str) -> StoreResult<Vec<Payment>> {
        let sql =
            concat!("SELECT ", payment_columns!(), " FROM payments WHERE user_id = ?1 ORDER BY created_at, rowid");
        self.many(sql, params![user_id], payment_from_row)
    }

    fn saved_method(&mut self, user_id: &str) -> StoreResult<Option<SavedMethod>> {
        let card: Option<String> =
            self.one("SELECT card FROM payment_methods WHERE user_id = ?1", [user_id], |row| row.get(0))?;
        Ok(card.map(|json| serde_json::from_str(&json)).transpose().map_err(SqliteError::from)?)
    }

    fn save_method(&mut self, user_id: &str, method: &SavedMethod, now: OffsetDateTime) -> StoreResult<()> {
        let sql = "INSERT INTO payment_methods (user_id, card, saved_at, method_id) VALUES (?1, ?2, ?3, ?4) \
                   ON CONFLICT (user_id) DO UPDATE SET card = excluded.card, saved_at = excluded.saved_at, \
                   method_id = excluded.method_id";
        let json = serde_json::to_string(method).map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![user_id, json, to_millis(now), method.method_id]).map_err(SqliteError::from)?;
        Ok(())
    }

    fn saved_method_by_id(&mut self, method_id: &str) -> StoreResult<Option<(String, SavedMethod)>> {
        let sql = "SELECT user_id, card FROM payment_methods WHERE method_id = ?1";
        let found: Option<(String, String)> = self.one(sql, [method_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
        let parse = |(user, json): (String, String)| serde_json::from_str(&json).map(|method| (user, method));
        Ok(found.map(parse).transpose().map_err(SqliteError::from)?)
    }

    fn forget_method(&mut self, user_id: &str) -> StoreResult<()> {
        let mut stmt =
            self.conn.prepare_cached("DELETE FROM payment_methods WHERE user_id = ?1").map_err(SqliteError::from)?;
        stmt.execute([user_id]).map_err(SqliteError::from)?;
        Ok(())
    }

    fn customer_contact(&mut self, user_id: &str) -> StoreResult<Option<CustomerContact>> {
        let sql = "SELECT email, phone FROM customer_contacts WHERE user_id = ?1";
        self.one(sql, [user_id], |row| Ok(CustomerContact { email: row.get(0)?, phone: row.get(1)? }))
    }

    fn set_customer_contact(
        &mut self,
        user_id: &str,
        contact: &CustomerContact,
        now: OffsetDateTime,
    ) -> StoreResult<()> {
        let sql = "INSERT INTO customer_contacts (user_id, email, phone, updated_at) VALUES (?1, ?2, ?3, ?4) \
                   ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, phone = excluded.phone, \
                   updated_at = excluded.updated_at";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![user_id, contact.email, contact.phone, to_millis(now)]).map_err(SqliteError::from)?;
        Ok(())
    }

    fn all_entries(&mut self, user_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let sql = concat!("SELECT ", entry_columns!(), " FROM ledger WHERE user_id = ?1 ORDER BY id");
        self.many(sql, params![user_id], entry_from_row)
    }

    fn append_usage(&mut self, new: &NewUsage) -> StoreResult<i64> {
        let r = &new.record;
        let stmt = match &mut self.usage_insert {
            Some(stmt) => stmt,
            None => self.usage_insert.insert(self.conn.prepare_cached(
                "INSERT INTO usage_events (user_id, metric, amount, model_id, chat_id, hold_id, at, period_window, \
                 day_window, over_limit, overage_credits, metadata, idempotency_key, events, request_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .map_err(SqliteError::from)?),
        };
        let metadata = r.metadata.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        // Nearly every event has no overage: its text is not built each time.
        let overage = (!r.overage_credits.is_zero()).then(|| r.overage_credits.to_string());
        stmt.execute(params![
            r.user_id,
            r.metric,
            counted(r.amount)?,
            r.model_id,
            r.chat_id,
            r.hold_id,
            to_millis(r.at),
            new.period_window,
            new.day_window,
            r.over_limit,
            overage.as_deref().unwrap_or("0"),
            metadata,
            new.idempotency_key,
            new.events,
            new.request_hash,
            to_millis(new.created_at),
        ])
        .map_err(SqliteError::from)?;
        Ok(self.conn.last_insert_rowid())
    }

    fn usage_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<(Vec<UsageRecord>, Option<String>)> {
        let sql =
            concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE user_id = ?1 AND idempotency_key = ?2");
        let Some(first) = self.one(sql, params![user_id, key], usage_from_row)? else {
            return Ok((Vec::new(), None));
        };
        // The call's events follow the keyed one: a scan of ids from it (`+user_id` keeps the
        // planner off the per-user index, whose scan would grow with the user's history).
        let sql = concat!(
            "SELECT ",
            usage_columns!(),
            " FROM usage_events WHERE id >= ?1 AND +user_id = ?2 ORDER BY id LIMIT ?3"
        );
        let events = first.events.unwrap_or(1);
        let call = self.many(sql, params![first.record.id, user_id, events], usage_from_row)?;
        Ok((call.into_iter().map(|usage| usage.record).collect(), first.request_hash))
    }

    fn usage_counters(&mut self, user_id: &str, period: &str, day: &str) -> StoreResult<Vec<UsageCounter>> {
        let sql = "SELECT metric, span, used, held FROM usage_counters WHERE user_id = ?1 AND span IN (?2, ?3)";
        self.many(sql, params![user_id, period, day], counter_from_row)
    }

    fn add_usage(&mut self, user_id: &str, metric: &str, window: &str, used: i64, held: i64) -> StoreResult<()> {
        let sql = "INSERT INTO usage_counters (user_id, metric, span, used, held) VALUES (?1, ?2, ?3, ?4, ?5) \
                   ON CONFLICT (user_id, span, metric) DO UPDATE SET used = used + excluded.used, held = held + excluded.held";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![user_id, metric, window, used, held]).map_err(SqliteError::from)?;
        Ok(())
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
                "SELECT model_id, sum(amount), count(*) FROM usage_events \
                 WHERE user_id = ?1 AND metric = ?2 AND at >= ?3 AND at < ?4 GROUP BY model_id ORDER BY model_id"
            }
            UsageGroup::ChatId => {
                "SELECT chat_id, sum(amount), count(*) FROM usage_events \
                 WHERE user_id = ?1 AND metric = ?2 AND at >= ?3 AND at < ?4 GROUP BY chat_id ORDER BY chat_id"
            }
        };
        let since = since.map_or(i64::MIN, to_millis);
        let until = until.map_or(i64::MAX, to_millis);
        self.many(sql, params![user_id, metric, since, until], |row| {
            Ok(UsageTotal { key: row.get(0)?, amount: amount(row, 1)?, events: amount(row, 2)? })
        })
    }

    fn all_usage(&mut self, user_id: &str) -> StoreResult<Vec<NewUsage>> {
        let sql = concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE user_id = ?1 ORDER BY id");
        self.many(sql, params![user_id], usage_from_row)
    }

    fn all_usage_counters(&mut self, user_id: &str) -> StoreResult<Vec<UsageCounter>> {
        let sql = "SELECT metric, span, used, held FROM usage_counters WHERE user_id = ?1 ORDER BY metric, span";
        self.many(sql, params![user_id], counter_from_row)
    }

    fn insert_hold(&mut self, hold: &Hold) -> StoreResult<()> {
        let sql =
            "INSERT INTO holds (user_id, id, status, expires_at, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
        let data = serde_json::to_string(hold).map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let values = params![
            hold.user_id,
            hold.id,
            hold.status.as_str(),
            to_millis(hold.expires_at),
            data,
            to_millis(hold.created_at)
        ];
        stmt.execute(values).map_err(SqliteError::from)?;
        Ok(())
    }

    fn update_hold(&mut self, hold: &Hold) -> StoreResult<()> {
        let sql = "UPDATE holds SET status = ?3, data = ?4 WHERE user_id = ?1 AND id = ?2";
        let data = serde_json::to_string(hold).map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        match stmt.execute(params![hold.user_id, hold.id, hold.status.as_str(), data]).map_err(SqliteError::from)? {
            1 => Ok(()),
            _ => Err(StoreError::unavailable("the hold to update is not in the database")),
        }
    }

    fn hold(&mut self, hold_id: &str) -> StoreResult<Option<Hold>> {
        self.one("SELECT status, data FROM holds WHERE id = ?1", [hold_id], hold_from_row)
    }

    fn expired_holds(&mut self, user_id: &str, now: OffsetDateTime) -> StoreResult<Vec<Hold>> {
        let sql = "SELECT status, data FROM holds WHERE user_id = ?1 AND status = 'open' AND expires_at <= ?2 \
                   ORDER BY expires_at";
        self.many(sql, params![user_id, to_millis(now)], hold_from_row)
    }

    fn open_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>> {
        self.many(OPEN_LOTS, [user_id], lot_from_row)
    }

    fn lot(&mut self, user_id: &str, lot_id: i64) -> StoreResult<Option<CreditLot>> {
        let sql = concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = ?1 AND id = ?2");
        self.one(sql, params![user_id, lot_id], lot_from_row)
    }

    fn insert_lot(&mut self, lot: &CreditLot) -> StoreResult<()> {
        let sql =
            concat!("INSERT INTO credit_lots (", lot_columns!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![
            lot.user_id,
            lot.id,
            lot.amount.normalize().to_string(),
            lot.remaining.normalize().to_string(),
            lot.priority,
            lot.category.as_str(),
            to_millis(lot.effective_at),
            lot.expires_at.map(to_millis),
            lot.source.as_str(),
            lot.reference,
        ])
        .map_err(SqliteError::from)?;
        Ok(())
    }

    fn update_lot(&mut self, lot: &CreditLot) -> StoreResult<()> {
        let sql = "UPDATE credit_lots SET remaining = ?3 WHERE user_id = ?1 AND id = ?2";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        // Normalized, so that a spent lot reads `0` and leaves the open lots' index.
        let remaining = lot.remaining.normalize().to_string();
        match stmt.execute(params![lot.user_id, lot.id, remaining]).map_err(SqliteError::from)? {
            1 => Ok(()),
            _ => Err(StoreError::unavailable("the lot to update is not in the database")),
        }
    }

    fn insert_allocations(&mut self, user_id: &str, entry_id: i64, allocations: &[Allocation]) -> StoreResult<()> {
        let sql = "INSERT INTO lot_allocations (user_id, entry_id, lot_id, seq, amount) VALUES (?1, ?2, ?3, ?4, ?5)";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        for (seq, allocation) in allocations.iter().enumerate() {
            let amount = allocation.amount.normalize().to_string();
            stmt.execute(params![user_id, entry_id, allocation.lot_id, seq as i64, amount])
                .map_err(SqliteError::from)?;
        }
        Ok(())
    }

    fn allocations(&mut self, user_id: &str, entry_id: i64) -> StoreResult<Vec<Allocation>> {
        let sql = "SELECT lot_id, amount FROM lot_allocations WHERE user_id = ?1 AND entry_id = ?2 ORDER BY seq";
        self.many(sql, params![user_id, entry_id], |row| {
            in_table("lot_allocations", row, |row| Ok(Allocation { lot_id: row.get(0)?, amount: parsed(row, 1)? }))
        })
    }

    fn all_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>> {
        let sql = concat!("SELECT ", lot_columns!(), " FROM credit_lots WHERE user_id = ?1 ORDER BY id");
        self.many(sql, [user_id], lot_from_row)
    }

    fn all_allocations(&mut self, user_id: &str) -> StoreResult<Vec<(i64, Allocation)>> {
        let sql = "SELECT entry_id, lot_id, amount FROM lot_allocations WHERE user_id = ?1 ORDER BY entry_id, seq";
        self.many(sql, [user_id], |row| {
            in_table("lot_allocations", row, |row| {
                Ok((row.get(0)?, Allocation { lot_id: row.get(1)?, amount: parsed(row, 2)? }))
            })
        })
    }

    fn all_holds(&mut self, user_id: &str) -> StoreResult<Vec<Hold>> {
        self.many("SELECT status, data FROM holds WHERE user_id = ?1 ORDER BY created_at, id", [user_id], hold_from_row)
    }

    fn append_event(&mut self, new: &NewEvent) -> StoreResult<Event> {
        let last = "SELECT max(sequence) FROM events WHERE user_id = ?1";
        let last: Option<i64> = self.one(last, [&new.user_id], |row| row.get(0))?.flatten();
        let event = Event {
            event_id: new.event_id.clone(),
            event_type: new.event_type,
            user_id: new.user_id.clone(),
            sequence: last.unwrap_or(0) + 1,
            occurred_at: new.occurred_at,
            payload: new.payload.clone(),
        };
        let sql = concat!("INSERT INTO events (", event_columns!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![
            event.event_id,
            event.event_type.as_str(),
            event.user_id,
            event.sequence,
            to_millis(event.occurred_at),
            event.payload.to_string(),
        ])
        .map_err(SqliteError::from)?;
        Ok(event)
    }

    fn events_after(&mut self, consumer: &str, limit: u32) -> StoreResult<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE id > coalesce((SELECT position FROM event_consumers WHERE consumer = ?1), 0) \
             ORDER BY id LIMIT ?2"
        );
        self.many(sql, params![consumer, limit], event_from_row)
    }

    fn ack_event(&mut self, consumer: &str, event_id: &str) -> StoreResult<bool> {
        let Some(id) = self.one("SELECT id FROM events WHERE event_id = ?1", [event_id], |row| row.get::<_, i64>(0))?
        else {
            return Ok(false);
        };
        let sql = "INSERT INTO event_consumers (consumer, position) VALUES (?1, ?2) \
                   ON CONFLICT (consumer) DO UPDATE SET position = excluded.position, failed_attempts = 0, \
                   next_attempt_at = NULL WHERE excluded.position > event_consumers.position";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![consumer, id]).map_err(SqliteError::from)?;
        Ok(true)
    }

    fn prune_events(&mut self, before: OffsetDateTime) -> StoreResult<u64> {
        let sql = "DELETE FROM events WHERE occurred_at < ?1 \
                   AND sequence < (SELECT max(sequence) FROM events newest WHERE newest.user_id = events.user_id)";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        Ok(stmt.execute([to_millis(before)]).map_err(SqliteError::from)? as u64)
    }

    fn user_events(&mut self, user_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE user_id = ?1 AND sequence > ?2 ORDER BY sequence LIMIT ?3"
        );
        self.many(sql, params![user_id, after, limit], event_from_row)
    }

    fn delivery(&mut self, consumer: &str) -> StoreResult<DeliveryState> {
        let sql = "SELECT failed_attempts, next_attempt_at, stopped_at FROM event_consumers WHERE consumer = ?1";
        let state = self.one(sql, [consumer], |row| {
            Ok(DeliveryState {
                failed_attempts: row.get(0)?,
                next_attempt_at: row.get::<_, Option<i64>>(1)?.map(from_millis),
                stopped_at: row.get::<_, Option<i64>>(2)?.map(from_millis),
            })
        })?;
        Ok(state.unwrap_or_default())
    }

    fn append_audit(&mut self, r: &NewAuditRecord) -> StoreResult<i64> {
        let sql = concat!(
            "INSERT INTO audit_log (",
            audit_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        );
        let json = |value: &Option<serde_json::Value>| value.as_ref().map(serde_json::Value::to_string);
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![
            r.user_id.as_deref().unwrap_or(""),
            r.actor,
            r.action,
            r.target,
            r.outcome.as_str(),
            r.reason,
            json(&r.before),
            json(&r.after),
            json(&r.error),
            r.request_id,
            to_millis(r.created_at),
        ])
        .map_err(SqliteError::from)?;
        Ok(self.conn.last_insert_rowid())
    }

    fn audit_records(&mut self, f: &AuditFilter, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        let sql = concat!(
            "SELECT id, ",
            audit_columns!(),
            " FROM audit_log WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR actor = ?2) \
             AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR outcome = ?4) AND id < ?5 ORDER BY id DESC LIMIT ?6"
        );
        let outcome = f.outcome.map(AuditOutcome::as_str);
        let before = before.unwrap_or(i64::MAX);
        self.many(sql, params![f.user_id, f.actor, f.action, outcome, before, limit], audit_from_row)
    }

    fn append_period(&mut self, p: &PeriodRecord) -> StoreResult<()> {
        let mut stmt = self.conn.prepare_cached(sql::INSERT_PERIOD).map_err(SqliteError::from)?;
        stmt.execute(params![
            p.user_id,
            p.payment_id,
            p.plan_code,
            p.kind.as_str(),
            to_millis(p.starts_at),
            to_millis(p.ends_at),
            p.weight(),
            p.monthly_micros,
            p.currency,
            p.network,
            p.provider,
            to_millis(p.created_at),
        ])
        .map_err(SqliteError::from)?;
        Ok(())
    }

    fn user_periods(&mut self, user_id: &str) -> StoreResult<Vec<PeriodRecord>> {
        self.many(sql::USER_PERIODS, [user_id], |row| {
            in_table("purchased_periods", row, |row| {
                Ok(PeriodRecord {
                    user_id: row.get(0)?,
                    payment_id: row.get(1)?,
                    plan_code: row.get(2)?,
                    kind: parsed(row, 3)?,
                    starts_at: from_millis(row.get(4)?),
                    ends_at: from_millis(row.get(5)?),
                    monthly_micros: row.get(7)?,
                    currency: row.get(8)?,
                    network: row.get(9)?,
                    provider: row.get(10)?,
                    created_at: from_millis(row.get(11)?),
                })
            })
        })
    }

    fn append_money(&mut self, m: &MoneyRecord) -> StoreResult<()> {
        let mut stmt = self.conn.prepare_cached(sql::INSERT_MONEY).map_err(SqliteError::from)?;
        stmt.execute(params![
            m.user_id,
            m.payment_id,
            m.kind.as_str(),
            m.micros,
            m.currency,
            m.provider,
            m.network,
            m.plan_code,
            m.package_code,
            to_millis(m.at),
        ])
        .map_err(SqliteError::from)?;
        Ok(())
    }

    fn user_money(&mut self, user_id: &str) -> StoreResult<Vec<(i64, MoneyRecord)>> {
        self.many(sql::USER_MONEY, [user_id], money_from_row)
    }

    fn segments_at(&mut self, at: OffsetDateTime) -> StoreResult<Vec<(Segment, i64)>> {
        self.many(sql::SEGMENTS_AT, [to_millis(at)], |row| {
            let micros: i64 = row.get(4)?;
            let segment = Segment {
                plan_code: row.get(0)?,
                currency: row.get(1)?,
                network: row.get(2)?,
                subscriptions: row.get::<_, i64>(3)?.max(0) as u64,
                mrr: analytics::from_micros(micros),
            };
            Ok((segment, micros))
        })
    }

    fn period_counts(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<(PeriodKind, u64)>> {
        self.many(sql::PERIOD_COUNTS, [to_millis(from), to_millis(to)], |row| {
            in_table("purchased_periods", row, |row| Ok((parsed(row, 0)?, row.get::<_, i64>(1)? as u64)))
        })
    }

    fn churned(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<(String, u64, i64)>> {
        self.many(sql::CHURNED, [to_millis(from), to_millis(to)], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)? as u64, row.get(2)?))
        })
    }

    fn money_buckets(
        &mut self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<MoneyBucket>> {
        self.many(sql::MONEY_BUCKETS, [bucket_ms, to_millis(from), to_millis(to)], |row| {
            in_table("money_movements", row, |row| {
                Ok(MoneyBucket {
                    start_ms: row.get(0)?,
                    currency: row.get(1)?,
                    kind: parsed(row, 2)?,
                    provider: row.get(3)?,
                    micros: row.get(4)?,
                    count: row.get::<_, i64>(5)? as u64,
                })
            })
        })
    }

    fn money_records(
        &mut self,
        f: &TransactionFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, MoneyRecord)>> {
        let params = params![
            f.status,
            f.provider,
            f.network,
            f.plan_code,
            f.from.map_or(i64::MIN, to_millis),
            f.to.map_or(i64::MAX, to_millis),
            f.min_amount.map_or(i64::MIN, analytics::to_micros),
            f.max_amount.map_or(i64::MAX, analytics::to_micros),
            before.unwrap_or(i64::MAX),
            limit,
        ];
        self.many(sql::MONEY_RECORDS, params, money_from_row)
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
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (chain_id, token, reference) DO UPDATE SET \
                   user_id = excluded.user_id, payment_id = excluded.payment_id, held_until = excluded.held_until \
                   WHERE crypto_references.held_until <= ?7";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let params =
            params![wide(chain_id), token, wide(reference), user_id, payment_id, to_millis(until), to_millis(now)];
        Ok(stmt.execute(params).map_err(SqliteError::from)? == 1)
    }

    fn reference_holder(
        &mut self,
        chain_id: u64,
        token: &str,
        reference: u64,
    ) -> StoreResult<Option<(String, String)>> {
        let sql =
            "SELECT user_id, payment_id FROM crypto_references WHERE chain_id = ?1 AND token = ?2 AND reference = ?3";
        self.one(sql, params![wide(chain_id), token, wide(reference)], |row| Ok((row.get(0)?, row.get(1)?)))
    }

    fn observation(
        &mut self,
        user_id: &str,
        chain_id: u64,
        tx_hash: &str,
        log_index: u64,
    ) -> StoreResult<Option<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = ?1 AND chain_id = ?2 AND tx_hash = ?3 AND log_index = ?4";
        self.one(sql, params![user_id, wide(chain_id), tx_hash, wide(log_index)], observation_from_row)
    }

    fn save_observation(&mut self, user_id: &str, stored: &StoredObservation) -> StoreResult<()> {
        let o = &stored.observation;
        let sql = "INSERT INTO crypto_observations (user_id, chain_id, tx_hash, log_index, payment_id, observation, \
                   seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (user_id, chain_id, tx_hash, log_index) \
                   DO UPDATE SET payment_id = excluded.payment_id, observation = excluded.observation";
        let json = serde_json::to_string(o).map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let params = params![
            user_id,
            wide(o.chain_id),
            o.tx_hash,
            wide(o.log_index),
            stored.payment_id,
            json,
            to_millis(stored.seen_at)
        ];
        stmt.execute(params).map_err(SqliteError::from)?;
        Ok(())
    }

    fn payment_observations(&mut self, user_id: &str, payment_id: &str) -> StoreResult<Vec<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = ?1 AND payment_id = ?2 ORDER BY seen_at, tx_hash, log_index";
        self.many(sql, params![user_id, payment_id], observation_from_row)
    }

    fn all_observations(&mut self, user_id: &str) -> StoreResult<Vec<StoredObservation>> {
        let sql = "SELECT payment_id, observation, seen_at FROM crypto_observations \
                   WHERE user_id = ?1 ORDER BY seen_at, tx_hash, log_index";
        self.many(sql, [user_id], observation_from_row)
    }

    fn all_references(&mut self) -> StoreResult<Vec<ReferenceClaim>> {
        let sql = "SELECT chain_id, token, reference, user_id, payment_id, held_until FROM crypto_references \
                   ORDER BY chain_id, token, reference";
        self.many(sql, [], |row| {
            Ok(ReferenceClaim {
                chain_id: row.get::<_, i64>(0)? as u64,
                token: row.get(1)?,
                reference: row.get::<_, i64>(2)? as u64,
                user_id: row.get(3)?,
                payment_id: row.get(4)?,
                held_until: from_millis(row.get(5)?),
            })
        })
    }

    fn all_chain_heads(&mut self) -> StoreResult<Vec<(u64, u64)>> {
        let sql = "SELECT chain_id, block_number FROM chain_heads ORDER BY chain_id";
        self.many(sql, [], |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)))
    }

    fn raise_chain_head(&mut self, chain_id: u64, block: u64) -> StoreResult<u64> {
        let sql = "INSERT INTO chain_heads (chain_id, block_number) VALUES (?1, ?2) ON CONFLICT (chain_id) \
                   DO UPDATE SET block_number = max(block_number, excluded.block_number) RETURNING block_number";
        let head: i64 = self.one(sql, params![wide(chain_id), wide(block)], |row| row.get(0))?.unwrap_or(0);
        Ok(head as u64)
    }

    fn chain_head(&mut self, chain_id: u64) -> StoreResult<Option<u64>> {
        let sql = "SELECT block_number FROM chain_heads WHERE chain_id = ?1";
        Ok(self.one(sql, [wide(chain_id)], |row| row.get::<_, i64>(0))?.map(|head| head as u64))
    }

    fn crypto_payments_to_check(&mut self, since: OffsetDateTime) -> StoreResult<Vec<(String, String)>> {
        let sql = "SELECT user_id, id FROM payments WHERE crypto_state IN ('pending', 'confirming', 'underpaid') \
                   OR (crypto_state IN ('succeeded', 'overpaid') AND updated_at >= ?1) ORDER BY created_at, id";
        self.many(sql, [to_millis(since)], |row| Ok((row.get(0)?, row.get(1)?)))
    }

    fn set_delivery(&mut self, consumer: &str, state: &DeliveryState) -> StoreResult<()> {
        let sql = "INSERT INTO event_consumers (consumer, position, failed_attempts, next_attempt_at, stopped_at) \
                   VALUES (?1, 0, ?2, ?3, ?4) ON CONFLICT (consumer) DO UPDATE SET \
                   failed_attempts = excluded.failed_attempts, next_attempt_at = excluded.next_attempt_at, \
                   stopped_at = excluded.stopped_at";
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        stmt.execute(params![
            consumer,
            state.failed_attempts,
            state.next_attempt_at.map(to_millis),
            state.stopped_at.map(to_millis)
        ])
        .map_err(SqliteError::from)?;
        Ok(())
    }
}

/// A money movement and its id, read by `money_columns!`.
fn money_from_row(row: &Row) -> rusqlite::Result<(i64, MoneyRecord)> {
    in_table("money_movements", row, |row| {
        let record = MoneyRecord {
            user_id: row.get(1)?,
            payment_id: row.get(2)?,
            kind: parsed(row, 3)?,
            micros: row.get(4)?,
            currency: row.get(5)?,
            provider: row.get(6)?,
            network: row.get(7)?,
            plan_code: row.get(8)?,
            package_code: row.get(9)?,
            at: from_millis(row.get(10)?),
        };
        Ok((row.get(0)?, record))
    })
}

fn audit_from_row(row: &Row) -> rusqlite::Result<AuditRecord> {
    in_table("audit_log", row, |row| {
        let json = |idx: usize| -> rusqlite::Result<Option<serde_json::Value>> {
            let text: Option<String> = row.get(idx)?;
            text.map(|text| serde_json::from_str(&text).map_err(|_| corrupt(idx))).transpose()
        };
        let user_id: String = row.get(1)?;
        Ok(AuditRecord {
            id: row.get(0)?,
            user_id: (!user_id.is_empty()).then_some(user_id),
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            outcome: parsed(row, 5)?,
            reason: row.get(6)?,
            before: json(7)?,
            after: json(8)?,
            error: json(9)?,
            request_id: row.get(10)?,
            created_at: from_millis(row.get(11)?),
        })
    })
}

fn observation_from_row(row: &Row) -> rusqlite::Result<StoredObservation> {
    in_table("crypto_observations", row, |row| {
        let json: String = row.get(1)?;
        Ok(StoredObservation {
            payment_id: row.get(0)?,
            observation: serde_json::from_str(&json).map_err(|e| conversion_error(1, e))?,
            seen_at: from_millis(row.get(2)?),
        })
    })
}

/// A chain id, block or log index as SQLite's integer (they are far below 2^63).
fn wide(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn event_from_row(row: &Row) -> rusqlite::Result<Event> {
    in_table("events", row, |row| {
        let payload: String = row.get(5)?;
        Ok(Event {
            event_id: row.get(0)?,
            event_type: parsed(row, 1)?,
            user_id: row.get(2)?,
            sequence: row.get(3)?,
            occurred_at: from_millis(row.get(4)?),
            payload: serde_json::from_str(&payload).map_err(|_| corrupt(5))?,
        })
    })
}

fn lot_from_row(row: &Row) -> rusqlite::Result<CreditLot> {
    in_table("credit_lots", row, |row| {
        Ok(CreditLot {
            user_id: row.get(0)?,
            id: row.get(1)?,
            amount: parsed(row, 2)?,
            remaining: parsed(row, 3)?,
            priority: row.get(4)?,
            category: parsed(row, 5)?,
            effective_at: from_millis(row.get(6)?),
            expires_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
            source: parsed(row, 8)?,
            reference: row.get(9)?,
        })
    })
}

/// A usage amount as SQLite's signed integer: bounded far below it by the input rules.
fn counted(amount: u64) -> StoreResult<i64> {
    i64::try_from(amount).map_err(|_| StoreError::unavailable("a usage amount past what the store holds"))
}

/// A usage amount or count: never negative.
fn amount(row: &Row, idx: usize) -> rusqlite::Result<u64> {
    u64::try_from(row.get::<_, i64>(idx)?).map_err(|_| corrupt(idx))
}

fn counter_from_row(row: &Row) -> rusqlite::Result<UsageCounter> {
    in_table("usage_counters", row, |row| {
        Ok(UsageCounter { metric: row.get(0)?, window: row.get(1)?, used: amount(row, 2)?, held: amount(row, 3)? })
    })
}

/// A hold from `status, data`: the status column is the one the queries select by, so
/// it is the one that counts.
fn hold_from_row(row: &Row) -> rusqlite::Result<Hold> {
    in_table("holds", row, |row| {
        let data: String = row.get(1)?;
        let hold: Hold = serde_json::from_str(&data).map_err(|e| conversion_error(1, e))?;
        Ok(Hold { status: parsed(row, 0)?, ..hold })
    })
}

fn usage_from_row(row: &Row) -> rusqlite::Result<NewUsage> {
    in_table("usage_events", row, |row| {
        let metadata: Option<String> = row.get(12)?;
        let metadata = metadata.map(|m| serde_json::from_str(&m)).transpose().map_err(|e| conversion_error(12, e))?;
        Ok(NewUsage {
            record: UsageRecord {
                id: row.get(0)?,
                user_id: row.get(1)?,
                metric: row.get(2)?,
                amount: amount(row, 3)?,
                model_id: row.get(4)?,
                chat_id: row.get(5)?,
                hold_id: row.get(6)?,
                at: from_millis(row.get(7)?),
                over_limit: row.get(10)?,
                overage_credits: parsed(row, 11)?,
                metadata,
                replayed: false,
            },
            period_window: row.get(8)?,
            day_window: row.get(9)?,
            idempotency_key: row.get(13)?,
            events: row.get(14)?,
            request_hash: row.get(15)?,
            created_at: from_millis(row.get(16)?),
        })
    })
}

impl SqliteTx<'_> {
    /// The row `sql` selects, if any, read by `from_row`.
    fn one<T>(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params,
        from_row: impl FnOnce(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        Ok(stmt.query_row(params, from_row).optional().map_err(SqliteError::from)?)
    }

    /// Every row `sql` selects, in its order, read by `from_row`.
    fn many<T>(
        &self,
        sql: &'static str,
        params: impl rusqlite::Params,
        from_row: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let rows = stmt.query_map(params, from_row).and_then(Iterator::collect);
        Ok(rows.map_err(SqliteError::from)?)
    }

    fn write_account(&self, sql: &str, a: &Account) -> StoreResult<()> {
        let subscription = a.subscription.as_ref().map(serde_json::to_string).transpose().map_err(SqliteError::from)?;
        let mut stmt = self.conn.prepare_cached(sql).map_err(SqliteError::from)?;
        let changed = stmt
            .execute(params![
                a.user_id,
                to_millis(a.created_at),
                a.credits.to_string(),
                a.free_trial_awarded,
                to_millis(a.freemium.anchor),
                to_millis(a.freemium.period_start),
                a.freemium.used,
                a.today.day.to_julian_day(),
                a.today.subscription,
                a.today.freemium,
                subscription,
                a.due_at().map(to_millis),
            ])
            .map_err(SqliteError::from)?;
        if changed != 1 {
            return Err(StoreError::unavailable("the account to update is not in the database"));
        }
        Ok(())
    }
}

fn account_from_row(row: &Row) -> rusqlite::Result<Account> {
    in_table("accounts", row, read_account)
}

fn read_account(row: &Row) -> rusqlite::Result<Account> {
    let subscription: Option<String> = row.get(10)?;
    Ok(Account {
        user_id: row.get(0)?,
        created_at: from_millis(row.get(1)?),
        credits: parsed(row, 2)?,
        free_trial_awarded: row.get(3)?,
        freemium: Allowance {
            anchor: from_millis(row.get(4)?),
            period_start: from_millis(row.get(5)?),
            used: row.get(6)?,
        },
        today: DayOps { day: julian_day(row, 7)?, subscription: row.get(8)?, freemium: row.get(9)? },
        subscription: subscription
            .map(|json| serde_json::from_str(&json).map_err(|e| conversion_error(10, e)))
            .transpose()?,
    })
}

fn entry_from_row(row: &Row) -> rusqlite::Result<LedgerEntry> {
    in_table("ledger", row, read_entry)
}

fn read_entry(row: &Row) -> rusqlite::Result<LedgerEntry> {
    let owner: Option<String> = row.get(8)?;
    let start: Option<i64> = row.get(9)?;
    let metadata: Option<String> = row.get(13)?;
    Ok(LedgerEntry {
        id: row.get(0)?,
        user_id: row.get(1)?,
        kind: parsed(row, 2)?,
        source: parsed_opt(row, 3)?,
        operation: row.get(4)?,
        credits_delta: parsed(row, 5)?,
        credits_balance_after: parsed(row, 6)?,
        ops_delta: row.get(7)?,
        allowance: owner.zip(start).map(|(owner, start)| AllowancePeriod { owner, start: from_millis(start) }),
        op_day: row
            .get::<_, Option<i32>>(10)?
            .map(|day| Date::from_julian_day(day).map_err(|e| conversion_error(10, e)))
            .transpose()?,
        idempotency_key: row.get(11)?,
        reference: row.get(12)?,
        metadata: metadata.map(|json| serde_json::from_str(&json).map_err(|e| conversion_error(13, e))).transpose()?,
        created_at: from_millis(row.get(14)?),
    })
}

fn payment_from_row(row: &Row) -> rusqlite::Result<Payment> {
    in_table("payments", row, read_payment)
}

fn read_payment(row: &Row) -> rusqlite::Result<Payment> {
    let payload: Option<String> = row.get(17)?;
    Ok(Payment {
        id: row.get(0)?,
        user_id: row.get(1)?,
        purpose: parsed(row, 2)?,
        plan_code: row.get(3)?,
        package_code: row.get(4)?,
        amount: parsed(row, 5)?,
        currency: row.get(6)?,
        credits: parsed_opt(row, 7)?,
        description: row.get(8)?,
        status: parsed(row, 9)?,
        provider_payment_id: row.get(10)?,
        provider_key: row.get(11)?,
        save_payment_method: row.get(12)?,
        return_url: row.get(13)?,
        confirmation_url: row.get(14)?,
        renewal_of: row.get(15)?,
        refund_id: row.get(16)?,
        payload: payload.map(|json| serde_json::from_str(&json).map_err(|e| conversion_error(17, e))).transpose()?,
        idempotency_key: row.get(18)?,
        created_at: from_millis(row.get(19)?),
        updated_at: from_millis(row.get(20)?),
        paid_at: row.get::<_, Option<i64>>(21)?.map(from_millis),
        refunded_amount: parsed(row, 22)?,
        paid_period: match (row.get::<_, Option<String>>(23)?, row.get::<_, Option<i64>>(24)?, row.get(25)?) {
            (Some(subscription_id), Some(start), Some(end)) => {
                Some(PaidPeriod { subscription_id, start: from_millis(start), end: from_millis(end) })
            }
            _ => None,
        },
        crypto: row
            .get::<_, Option<String>>(26)?
            .map(|json| serde_json::from_str(&json).map_err(|e| conversion_error(26, e)))
            .transpose()?,
    })
}

trait ParseColumn: Sized {
    fn parse_column(text: &str) -> Option<Self>;
}

impl ParseColumn for Decimal {
    fn parse_column(text: &str) -> Option<Self> {
        Decimal::from_str_exact(text).ok()
    }
}

/// Enums stored by their `as_str` names.
macro_rules! parse_column_by_name {
    ($($t:ty),*) => {$(
        impl ParseColumn for $t {
            fn parse_column(text: &str) -> Option<Self> {
                <$t>::from_str(text).ok()
            }
        }
    )*};
}

parse_column_by_name!(
    EntryKind,
    ChargeSource,
    Purpose,
    PaymentStatus,
    HoldStatus,
    LotCategory,
    LotSource,
    EventType,
    AuditOutcome,
    PeriodKind,
    MoneyKind
);

fn parsed<T: ParseColumn>(row: &Row, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    T::parse_column(&text).ok_or_else(|| corrupt(idx))
}

fn parsed_opt<T: ParseColumn>(row: &Row, idx: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|text| T::parse_column(&text).ok_or_else(|| corrupt(idx))).transpose()
}

fn julian_day(row: &Row, idx: usize) -> rusqlite::Result<Date> {
    Date::from_julian_day(row.get(idx)?).map_err(|e| conversion_error(idx, e))
}

/// A value that does not parse; [`in_table`] names its table and column.
fn corrupt(idx: usize) -> rusqlite::Error {
    conversion_error(idx, SqliteError::Unreadable { column: String::new() })
}

/// Reads a row of `table` with `read`; a value that does not read as its column's type
/// becomes [`SqliteError::Unreadable`] naming `table.column`, so the integrity audit can
/// report it and go on.
fn in_table<T>(table: &str, row: &Row, read: impl FnOnce(&Row) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    read(row).map_err(|error| match error {
        rusqlite::Error::FromSqlConversionFailure(idx, ..)
        | rusqlite::Error::InvalidColumnType(idx, ..)
        | rusqlite::Error::IntegralValueOutOfRange(idx, _) => {
            let name = row.as_ref().column_name(idx).unwrap_or("?");
            conversion_error(idx, SqliteError::Unreadable { column: format!("{table}.{name}") })
        }
        other => other,
    })
}

fn conversion_error(idx: usize, error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::time_util::from_millis;

    fn catalog() -> Catalog {
        Catalog::from_toml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml")).unwrap()
    }

    fn store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("store.sqlite3"), SqliteOptions::default()).unwrap()
    }

    fn account(user: &str) -> Account {
        Account::new(user, from_millis(1_767_225_600_000), &catalog())
    }

    /// Every write reads the open lots: their statement must run as prepared, not be
    /// prepared anew each time the cache hands it out (without the planner's stability
    /// guarantee SQLite did that, and it was a third of a charge).
    #[test]
    fn the_open_lots_query_runs_as_prepared_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(&dir));
        let conn = connect(Some(&dir.path().join("store.sqlite3")), &SqliteOptions::default()).unwrap();
        let lot = CreditLot {
            id: 1,
            user_id: "u".to_owned(),
            amount: Decimal::from(100),
            remaining: Decimal::from(100),
            priority: 0,
            category: LotCategory::Paid,
            effective_at: from_millis(1_767_225_600_000),
            expires_at: None,
            source: LotSource::Purchase,
            reference: None,
        };
        in_transaction(&conn, BEGIN_WRITE, |conn| Ok(SqliteTx::new(conn).insert_lot(&lot)?)).unwrap();
        for _ in 0..5 {
            let drawn = in_transaction(&conn, BEGIN_WRITE, |conn| {
                let mut tx = SqliteTx::new(conn);
                let mut open = tx.open_lots("u")?;
                open[0].remaining -= Decimal::ONE;
                tx.update_lot(&open[0])?;
                Ok(open[0].remaining)
            });
            assert!(drawn.unwrap() < Decimal::from(100));
        }
        let statement = conn.prepare_cached(OPEN_LOTS).unwrap();
        assert_eq!(statement.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    fn exists(store: &SqliteStore, user: &str) -> bool {
        store.read(|tx| Ok(tx.account(user)?)).unwrap().is_some()
    }

    type Work<'a> = Box<dyn FnMut(&mut dyn Transaction) -> Result<()> + Send + 'a>;

    fn sharing(dir: &tempfile::TempDir, shared_commits: bool) -> SqliteStore {
        let options = SqliteOptions { shared_commits, ..SqliteOptions::default() };
        SqliteStore::open(dir.path().join("store.sqlite3"), options).unwrap()
    }

    fn wait_until_queued(store: &SqliteStore, writers: usize) {
        while store.writer.queued() < writers {
            std::thread::yield_now();
        }
    }

    /// Writer `a` runs first and, inside its transaction, waits until the writers of
    /// `others` are queued behind it; then they run as the next group, in order. The
    /// results of all, `a`'s first.
    fn line_up(store: &SqliteStore, others: Vec<Work<'_>>) -> Vec<Result<()>> {
        let inside = std::sync::Barrier::new(2);
        let queued = others.len();
        std::thread::scope(|scope| {
            let first = scope.spawn(|| {
                store.write("a", |tx| {
                    tx.insert_account(&account("a"))?;
                    inside.wait();
                    wait_until_queued(store, queued);
                    Ok(())
                })
            });
            inside.wait();
            let mut rest = Vec::new();
            for other in others {
                rest.push(scope.spawn(move || store.write("x", other)));
                // One at a time, so that they queue in this order. (Once the last is
                // queued, `a` goes on and the queue drains: `a` waits for that one.)
                if rest.len() < queued {
                    wait_until_queued(store, rest.len());
                }
            }
            let mut results = vec![first.join().unwrap()];
            results.extend(rest.into_iter().map(|t| t.join().unwrap()));
            results
        })
    }

    fn inserting(user: &'static str) -> Work<'static> {
        Box::new(move |tx| Ok(tx.insert_account(&account(user))?))
    }

    #[test]
    fn writers_queued_behind_a_transaction_share_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, true);
        let results = line_up(&store, vec![inserting("b"), inserting("c"), inserting("d")]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(["a", "b", "c", "d"].iter().all(|u| exists(&store, u)));
        assert_eq!(store.commit_stats(), CommitStats { commits: 2, writes: 4 }, "a's, then one for b, c and d");
    }

    #[test]
    fn with_shared_commits_off_each_writer_commits_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, false);
        let results = line_up(&store, vec![inserting("b"), inserting("c")]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(store.commit_stats(), CommitStats { commits: 3, writes: 3 });
    }

    #[test]
    fn a_writer_alone_commits_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, true);
        for user in ["a", "b", "c"] {
            store.write(user, |tx| Ok(tx.insert_account(&account(user))?)).unwrap();
            // Visible to another connection: committed before the call returned.
            let other = Connection::open(dir.path().join("store.sqlite3")).unwrap();
            let found: i64 =
                other.query_row("SELECT count(*) FROM accounts WHERE user_id = ?1", [user], |r| r.get(0)).unwrap();
            assert_eq!(found, 1);
        }
        assert_eq!(store.commit_stats(), CommitStats { commits: 3, writes: 3 });
    }

    #[test]
    fn a_member_s_own_error_undoes_its_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, true);
        let refusing: Work<'static> = Box::new(|tx| {
            tx.insert_account(&account("b"))?;
            Err(BillingError::NoSubscription)
        });
        let results = line_up(&store, vec![refusing, inserting("c")]);
        assert_eq!(results, vec![Ok(()), Err(BillingError::NoSubscription), Ok(())]);
        assert!(exists(&store, "a") && !exists(&store, "b") && exists(&store, "c"));
        assert_eq!(store.commit_stats(), CommitStats { commits: 2, writes: 2 });
    }

    #[test]
    fn a_storage_failure_in_a_member_fails_every_member_of_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, true);
        let failing: Work<'static> = Box::new(|tx| {
            tx.insert_account(&account("c"))?;
            Err(BillingError::StorageFull)
        });
        let results = line_up(&store, vec![inserting("b"), failing, inserting("d")]);
        let full = Err(BillingError::StorageFull);
        assert_eq!(results, vec![Ok(()), full.clone(), full.clone(), full]);
        assert!(exists(&store, "a"), "a's group committed before");
        assert!(["b", "c", "d"].iter().all(|u| !exists(&store, u)), "nothing of the failed group remains");
        assert_eq!(store.commit_stats().commits, 1);
        store.write("e", |tx| Ok(tx.insert_account(&account("e"))?)).unwrap();
        assert!(exists(&store, "e"), "the next write opens a new transaction");
    }

    #[test]
    fn a_member_that_panics_leaves_the_group_and_the_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = sharing(&dir, true);
        let panicking: Work<'static> = Box::new(|tx| {
            tx.insert_account(&account("b"))?;
            panic!("a bug in the middle of a shared write");
        });
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| line_up(&store, vec![panicking, inserting("c")])));
        assert!(outcome.is_err(), "the panic reached its own caller");
        assert!(exists(&store, "a") && !exists(&store, "b") && exists(&store, "c"));
        assert_eq!(store.commit_stats(), CommitStats { commits: 2, writes: 2 });
    }

    #[test]
    fn an_error_inside_a_write_rolls_back_everything_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let result: Result<()> = store.write("a", |tx| {
            tx.insert_account(&account("a"))?;
            Err(BillingError::NoSubscription)
        });
        assert_eq!(result.unwrap_err(), BillingError::NoSubscription);
        assert!(!exists(&store, "a"));
    }

    #[test]
    fn a_panic_inside_a_write_rolls_back_and_the_store_stays_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store
                .write("a", |tx| -> Result<()> {
                    tx.insert_account(&account("a"))?;
                    panic!("a bug in the middle of a write");
                })
                .unwrap();
        }));
        assert!(panicked.is_err());
        assert!(!exists(&store, "a"), "the half-done write is gone");
        store.write("b", |tx| Ok(tx.insert_account(&account("b"))?)).unwrap();
        assert!(exists(&store, "b"), "the next write starts a fresh transaction");
    }

    #[test]
    fn the_ledger_refuses_a_second_entry_with_the_same_user_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let a = account("a");
        let entry = NewEntry::new(&a.user_id, EntryKind::Grant, a.created_at);
        let keyed =
            NewEntry { entry: LedgerEntry { idempotency_key: Some("k".into()), ..entry.entry.clone() }, ..entry };
        store.write("a", |tx| Ok(tx.append_entry(&keyed).map(drop)?)).unwrap();
        let again = store.write("a", |tx| Ok(tx.append_entry(&keyed).map(drop)?)).unwrap_err();
        assert_eq!(again.code(), "STORAGE_ERROR");
        assert!(again.to_string().contains("refused the write"), "{again}");
    }

    fn store_waiting(dir: &tempfile::TempDir, lock_timeout: Duration) -> SqliteStore {
        SqliteStore::open(dir.path().join("store.sqlite3"), SqliteOptions { lock_timeout, ..SqliteOptions::default() })
            .unwrap()
    }

    fn busy_wait(error: BillingError) -> u64 {
        match error {
            BillingError::Busy { waited_ms } => waited_ms,
            other => panic!("expected BUSY, got {other}"),
        }
    }

    #[test]
    fn time_queued_behind_this_process_s_writers_counts_toward_the_lock_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_waiting(&dir, Duration::from_millis(300));
        let held = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            // Another thread of this process writes for 1.5 s.
            scope.spawn(|| {
                store
                    .write("a", |_| {
                        held.wait();
                        std::thread::sleep(Duration::from_millis(1500));
                        Ok(())
                    })
                    .unwrap()
            });
            held.wait();
            let started = Instant::now();
            let result = store.write("b", |tx| Ok(tx.insert_account(&account("b"))?));
            let elapsed = started.elapsed();
            assert!(elapsed < Duration::from_millis(1000), "gave up at the deadline, after {elapsed:?}");
            let waited = busy_wait(result.unwrap_err());
            assert!((300..1000).contains(&waited), "waited {waited} ms");
        });
        assert!(!exists(&store, "b"), "nothing was written");
    }

    #[test]
    fn another_process_s_lock_is_busy_after_the_timeout_not_a_storage_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_waiting(&dir, Duration::from_millis(200));
        let other = Connection::open(dir.path().join("store.sqlite3")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = store.write("a", |tx| Ok(tx.insert_account(&account("a"))?)).unwrap_err();
        assert_eq!(error.code(), "BUSY");
        assert!(busy_wait(error) >= 200);
        assert_eq!(BillingError::Busy { waited_ms: 7 }.details()["retryable"], true);
        other.execute_batch("COMMIT").unwrap();
        store.write("a", |tx| Ok(tx.insert_account(&account("a"))?)).unwrap();
    }

    #[test]
    fn insert_or_replace_can_neither_rewrite_nor_erase_a_ledger_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let a = account("a");
        let mut entry = NewEntry::new(&a.user_id, EntryKind::Grant, a.created_at);
        entry.entry.idempotency_key = Some("k".into());
        entry.entry.credits_delta = Decimal::TEN;
        store.write("a", |tx| Ok(tx.append_entry(&entry).map(drop)?)).unwrap();
        let conn = Connection::open(dir.path().join("store.sqlite3")).unwrap();
        let rows = || -> Vec<(i64, String, Option<String>)> {
            let mut stmt = conn.prepare("SELECT id, credits_delta, idempotency_key FROM ledger").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
        };
        let before = rows();
        let replace = "INSERT OR REPLACE INTO ledger (id, user_id, kind, credits_delta, credits_balance_after, \
                       ops_delta, idempotency_key, created_at) VALUES (?1, 'a', 'grant', '0', '0', 0, ?2, 0)";
        for (id, key) in [(Some(1), None), (None, Some("k")), (Some(1), Some("other"))] {
            let err = conn.execute(replace, params![id, key]).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert_eq!(rows(), before, "the row is neither rewritten nor erased, and its key still stands");
    }

    #[test]
    fn opening_migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(store(&dir));
        let path = dir.path().join("store.sqlite3");
        let version = |conn: &Connection| conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(version(&conn), schema::LATEST as i64);
        drop(store(&dir));
        assert_eq!(version(&conn), schema::LATEST as i64, "reopening does not migrate again");
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
        assert_eq!(err.code(), "STORAGE_ERROR");
        assert!(err.to_string().contains("newer than this engine"), "{err}");
    }
}
