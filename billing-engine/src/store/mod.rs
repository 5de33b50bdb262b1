//! Persistence behind a trait, so a host can bring its own backend. [`SqliteStore`] is
//! the default; [`PostgresStore`] (feature `postgres`) serves several servers at once;
//! [`Database`] is whichever of them a location names.
//!
//! The database is the source of truth: the engine keeps no state between calls. Every
//! write is one [`Store::write`] about one user, which reads, decides and writes inside
//! a single transaction holding that user's lock, so concurrent calls cannot spend the
//! same credit twice, across threads, processes and servers. Jobs over many users
//! (renewals, the integrity audit) list the users in a read and then work user by user.
//!
//! `docs/STORE.md` is this contract written out for a host that writes a third backend.

// Column lists as macros, so every statement is one `&'static str` built at compile time;
// every backend names its columns alike.
macro_rules! account_columns {
    () => {
        "user_id, created_at, credits, free_trial_awarded, free_anchor, free_period_start, \
         free_used, day, day_subscription_ops, day_freemium_ops, subscription"
    };
}

macro_rules! entry_columns {
    () => {
        "id, user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta, \
         allowance_owner, allowance_start, op_day, idempotency_key, reference, metadata, created_at"
    };
}

macro_rules! usage_columns {
    () => {
        "id, user_id, metric, amount, model_id, chat_id, hold_id, at, period_window, day_window, over_limit, \
         overage_credits, metadata, idempotency_key, events, request_hash, created_at"
    };
}

macro_rules! lot_columns {
    () => {
        "user_id, id, amount, remaining, priority, category, effective_at, expires_at, source, reference"
    };
}

macro_rules! payment_columns {
    () => {
        "id, user_id, purpose, plan_code, package_code, amount, currency, credits, description, status, \
         provider_payment_id, provider_key, save_payment_method, return_url, confirmation_url, renewal_of, \
         refund_id, payload, idempotency_key, created_at, updated_at, paid_at, refunded_amount, \
         paid_subscription_id, paid_from, paid_until, crypto"
    };
}

macro_rules! event_columns {
    () => {
        "event_id, type, user_id, sequence, occurred_at, payload"
    };
}

macro_rules! audit_columns {
    () => {
        "user_id, actor, action, target, outcome, reason, before, after, error, request_id, created_at"
    };
}

mod analytics_sql;
mod database;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_schema;
mod schema;
mod sqlite;
mod sqlite_error;
mod sqlite_writer;

pub use database::{is_postgres_url, Database, LocalOptions};
#[cfg(feature = "postgres")]
pub use postgres::{CopyReport, PostgresOptions, PostgresStore};
pub use sqlite::{Durability, SqliteOptions, SqliteStore};
pub use sqlite_writer::CommitStats;

use crate::account::Account;
use crate::analytics::{MoneyBucket, MoneyRecord, PeriodKind, PeriodRecord, Segment, TransactionFilter};
use crate::audit::{AuditFilter, AuditRecord, NewAuditRecord};
use crate::crypto::{ReferenceClaim, StoredObservation};
use crate::error::{BillingError, Result};
use crate::events::{Event, NewEvent};
use crate::ledger::{LedgerEntry, NewEntry};
use crate::lots::{Allocation, CreditLot};
use crate::payment::{Payment, SavedMethod};
use crate::receipt::CustomerContact;
use crate::usage::{Hold, NewUsage, UsageCounter, UsageGroup, UsageRecord, UsageTotal};
use time::OffsetDateTime;

pub trait Store: Send + Sync {
    /// Runs `f` in one transaction that holds the lock of every user in `user_ids` from
    /// before its first read until it ends: no other write about those users, in this
    /// process or another, runs in between. Commits when `f` returns `Ok`; when `f`
    /// returns `Err` (or panics) nothing it wrote remains.
    ///
    /// `f` only touches the rows of those users, and may be run more than once: a store
    /// whose database aborts a transaction to resolve a conflict (a serialization
    /// failure, a deadlock) rolls back and runs `f` again, a bounded number of times
    /// within the lock timeout, and then fails with BUSY. Stores take the locks of many
    /// users in one order, so that two such writes never wait for each other for good.
    ///
    /// `f` and its result are `Send`: a store may run `f` on another of the process's
    /// threads (the SQLite store's combiner, which commits many threads' writes at once).
    fn write_many<T: Send>(
        &self,
        user_ids: &[&str],
        f: impl FnMut(&mut dyn Transaction) -> Result<T> + Send,
    ) -> Result<T>;

    /// [`write_many`](Self::write_many) for one user: what nearly every call does.
    fn write<T: Send>(&self, user_id: &str, f: impl FnMut(&mut dyn Transaction) -> Result<T> + Send) -> Result<T> {
        self.write_many(&[user_id], f)
    }

    /// Runs `f` over one consistent snapshot. `f` only reads; it never blocks writers.
    fn read<T>(&self, f: impl FnMut(&mut dyn Transaction) -> Result<T>) -> Result<T>;
}

/// What a store's own failures mean, whatever its database: the engine maps these to
/// [`BillingError`] and decides the domain (replays, conflicts of keys) itself, from
/// what it reads, never from a driver's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another transaction held what this one needs for longer than the store waits.
    /// Retryable.
    #[error("the store stayed locked for {waited_ms} ms")]
    Busy { waited_ms: u64 },
    /// A unique key or an append-only rule of the schema refused the write; `constraint`
    /// names it. The engine checks keys before writing, so this is a bug or a write from
    /// outside the engine.
    #[error("the schema refused the write ({constraint})")]
    Conflict { constraint: String },
    /// A stored value that does not read as its column's type; `column` is `table.column`.
    #[error("a value in `{column}` does not read")]
    Corrupt { column: String },
    /// The disk or the database has no room for the write.
    #[error("the store is out of space")]
    Full,
    /// The database cannot be reached or used; `reason` is fixed text, never a driver's
    /// message, which may carry stored values or credentials.
    #[error("{reason}")]
    Unavailable { reason: String },
}

impl StoreError {
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable { reason: reason.into() }
    }
}

impl From<StoreError> for BillingError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Busy { waited_ms } => BillingError::Busy { waited_ms },
            StoreError::Full => BillingError::StorageFull,
            StoreError::Corrupt { column } => BillingError::Unreadable { column },
            conflict @ StoreError::Conflict { .. } => BillingError::Storage { message: conflict.to_string() },
            StoreError::Unavailable { reason } => BillingError::Storage { message: reason },
        }
    }
}

pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// What the engine reads and writes inside a [`Store`] transaction.
pub trait Transaction {
    /// The account of `user_id`, as last written.
    fn account(&mut self, user_id: &str) -> StoreResult<Option<Account>>;

    /// Stores a new account; the user must not have one (else [`StoreError::Conflict`]).
    fn insert_account(&mut self, account: &Account) -> StoreResult<()>;

    /// Replaces the stored account of `account.user_id`, and stores
    /// [`Account::due_at`] beside it for [`users_due`](Self::users_due).
    fn update_account(&mut self, account: &Account) -> StoreResult<()>;

    /// Every user id with an account, ledger entries or payments, in order: what the
    /// integrity audit walks, so rows whose account is gone are found too.
    fn user_ids(&mut self) -> StoreResult<Vec<String>>;

    /// Appends an entry and returns it with its id. A user's ids grow with every
    /// append. A second entry with the same `(user_id, idempotency_key)`, or a second
    /// refund of one charge, is refused with [`StoreError::Conflict`]; a stored entry is
    /// never changed or removed.
    fn append_entry(&mut self, entry: &NewEntry) -> StoreResult<LedgerEntry>;

    fn entry(&mut self, id: i64) -> StoreResult<Option<LedgerEntry>>;

    /// The entry written with this key for this user, and the request fingerprint it was
    /// written with.
    fn entry_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(LedgerEntry, Option<String>)>>;

    /// The refund entry of the user's charge `charge_id`, if it was refunded.
    fn refund_of(&mut self, user_id: &str, charge_id: i64) -> StoreResult<Option<LedgerEntry>>;

    /// Up to `limit` entries of a user with ids below `before`, newest first.
    fn entries(&mut self, user_id: &str, before: Option<i64>, limit: u32) -> StoreResult<Vec<LedgerEntry>>;

    /// All entries of a user, oldest first.
    fn all_entries(&mut self, user_id: &str) -> StoreResult<Vec<LedgerEntry>>;

    /// Users whose stored [`Account::due_at`] is at or before `until`, soonest first. A
    /// query by time only: the engine decides, under the user's lock, what is due.
    fn users_due(&mut self, until: OffsetDateTime) -> StoreResult<Vec<String>>;

    /// Stores a new payment, with the fingerprint of the request that created it. A
    /// second payment with the same `(user_id, idempotency_key)`, or a second renewal of
    /// one period, is refused with [`StoreError::Conflict`].
    fn insert_payment(&mut self, payment: &Payment, request_hash: Option<&str>) -> StoreResult<()>;

    /// Stores what a payment's life changes: its status, provider ids, payload, times,
    /// refunded amount and paid period. What it was created for stays as written.
    fn update_payment(&mut self, payment: &Payment) -> StoreResult<()>;

    fn payment(&mut self, id: &str) -> StoreResult<Option<Payment>>;

    fn payment_by_provider_id(&mut self, provider_payment_id: &str) -> StoreResult<Option<Payment>>;

    /// The payment created with this key for this user, and its request fingerprint.
    fn payment_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<Option<(Payment, Option<String>)>>;

    /// The user's renewal payment of the subscription period `period_key`, if any.
    fn renewal_payment(&mut self, user_id: &str, period_key: &str) -> StoreResult<Option<Payment>>;

    /// Claims the sending of a `new` payment to the provider until `until`, unless
    /// another call's claim runs past `now`; whether this call has it. A claim ends when
    /// it runs out, when the payment leaves `new`, or with [`end_sending`](Self::end_sending).
    fn claim_sending(&mut self, payment_id: &str, until: OffsetDateTime, now: OffsetDateTime) -> StoreResult<bool>;

    /// Ends the claim on sending the payment, so that the next call may send it.
    fn end_sending(&mut self, payment_id: &str) -> StoreResult<()>;

    /// Renewals recorded but not yet accepted by the provider (status `new`), oldest
    /// first.
    fn unsent_renewals(&mut self) -> StoreResult<Vec<Payment>>;

    /// Up to `limit` of a user's payments the provider accepted (status other than
    /// `new`), newest first, without card bindings (they buy nothing).
    fn payment_history(&mut self, user_id: &str, limit: u32) -> StoreResult<Vec<Payment>>;

    /// All payments of a user, oldest first.
    fn all_payments(&mut self, user_id: &str) -> StoreResult<Vec<Payment>>;

    fn saved_method(&mut self, user_id: &str) -> StoreResult<Option<SavedMethod>>;

    /// Saves or replaces the user's payment method.
    fn save_method(&mut self, user_id: &str, method: &SavedMethod, now: OffsetDateTime) -> StoreResult<()>;

    /// The user a saved method belongs to, with the method, by the provider's method id.
    fn saved_method_by_id(&mut self, method_id: &str) -> StoreResult<Option<(String, SavedMethod)>>;

    /// Forgets the user's saved method: it was revoked or is no longer active.
    fn forget_method(&mut self, user_id: &str) -> StoreResult<()>;

    /// Where the user's 54-FZ receipts go.
    fn customer_contact(&mut self, user_id: &str) -> StoreResult<Option<CustomerContact>>;

    /// Saves or replaces the user's receipt contact.
    fn set_customer_contact(
        &mut self,
        user_id: &str,
        contact: &CustomerContact,
        now: OffsetDateTime,
    ) -> StoreResult<()>;

    // ---- metered usage ----

    /// Appends a usage event and returns its id. A user's ids grow with every
    /// append. A keyed call stores its key, fingerprint and number of events on its first
    /// event only; a second event with the same `(user_id, idempotency_key)` is refused
    /// with [`StoreError::Conflict`]. A stored event is never changed or removed.
    fn append_usage(&mut self, usage: &NewUsage) -> StoreResult<i64>;

    /// The events of the call that wrote this key for this user: the keyed event and the
    /// user's events after it, in id order, as many as it records; and the fingerprint of
    /// the call's request. Empty when the key is new.
    fn usage_by_key(&mut self, user_id: &str, key: &str) -> StoreResult<(Vec<UsageRecord>, Option<String>)>;

    /// The user's counters, of every metric, in the windows `period` and `day`.
    fn usage_counters(&mut self, user_id: &str, period: &str, day: &str) -> StoreResult<Vec<UsageCounter>>;

    /// Adds `used` and `held` (either may be negative) to a counter, creating it at zero.
    fn add_usage(&mut self, user_id: &str, metric: &str, window: &str, used: i64, held: i64) -> StoreResult<()>;

    /// The user's usage of `metric` that happened in `[since, until)`, totalled per value
    /// of `group`'s column.
    fn usage_totals(
        &mut self,
        user_id: &str,
        metric: &str,
        group: UsageGroup,
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
    ) -> StoreResult<Vec<UsageTotal>>;

    /// All usage events of a user, oldest first, with the windows they count in.
    fn all_usage(&mut self, user_id: &str) -> StoreResult<Vec<NewUsage>>;

    fn all_usage_counters(&mut self, user_id: &str) -> StoreResult<Vec<UsageCounter>>;

    /// Stores a new hold; its id must be new (else [`StoreError::Conflict`]).
    fn insert_hold(&mut self, hold: &Hold) -> StoreResult<()>;

    /// Stores what settling a hold changes: its status and settlement.
    fn update_hold(&mut self, hold: &Hold) -> StoreResult<()>;

    fn hold(&mut self, hold_id: &str) -> StoreResult<Option<Hold>>;

    /// The user's open holds whose expiry is at or before `now`, soonest first.
    fn expired_holds(&mut self, user_id: &str, now: OffsetDateTime) -> StoreResult<Vec<Hold>>;

    /// All holds of a user, oldest first.
    fn all_holds(&mut self, user_id: &str) -> StoreResult<Vec<Hold>>;

    // ---- credit lots ----

    /// The user's lots with credits left, by id.
    fn open_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>>;

    /// One of the user's lots, spent or not.
    fn lot(&mut self, user_id: &str, lot_id: i64) -> StoreResult<Option<CreditLot>>;

    /// Stores a new lot; its id must be new for the user (else [`StoreError::Conflict`]).
    fn insert_lot(&mut self, lot: &CreditLot) -> StoreResult<()>;

    /// Stores a lot's new remainder; a missing lot is [`StoreError::Unavailable`].
    fn update_lot(&mut self, lot: &CreditLot) -> StoreResult<()>;

    /// Appends what entry `entry_id` drew from or gave back to each lot.
    fn insert_allocations(&mut self, user_id: &str, entry_id: i64, allocations: &[Allocation]) -> StoreResult<()>;

    /// What entry `entry_id` drew from or gave back to each lot, in the order written.
    fn allocations(&mut self, user_id: &str, entry_id: i64) -> StoreResult<Vec<Allocation>>;

    /// All lots of a user, by id.
    fn all_lots(&mut self, user_id: &str) -> StoreResult<Vec<CreditLot>>;

    /// All allocations of a user: `(entry id, allocation)`, by entry.
    fn all_allocations(&mut self, user_id: &str) -> StoreResult<Vec<(i64, Allocation)>>;

    // ---- the event outbox ----

    /// Appends an event as the user's next: its sequence is one past the user's last
    /// (the user's lock is held, so sequences follow the order the user's writes
    /// commit). An event is never changed.
    fn append_event(&mut self, event: &NewEvent) -> StoreResult<Event>;

    /// Up to `limit` events after `consumer`'s cursor (from the first stored, for a
    /// consumer not seen before), in an order that no event committed later can take a
    /// place in before them: an event whose transaction may still be followed by an
    /// earlier one is held back until it cannot. So a consumer that acknowledges what it
    /// got never skips an event, and each user's events come in sequence.
    fn events_after(&mut self, consumer: &str, limit: u32) -> StoreResult<Vec<Event>>;

    /// Moves `consumer`'s cursor to `event_id`, if that is forward of it. False when no
    /// such event is stored or [`events_after`](Self::events_after) cannot have returned
    /// it yet.
    fn ack_event(&mut self, consumer: &str, event_id: &str) -> StoreResult<bool>;

    /// Deletes the events that occurred before `before`, except each user's newest
    /// (which carries the user's sequence on); how many it deleted.
    fn prune_events(&mut self, before: OffsetDateTime) -> StoreResult<u64>;

    /// Up to `limit` of a user's stored events with sequences above `after`, in
    /// sequence: committed ones, whether or not a consumer could poll them yet.
    fn user_events(&mut self, user_id: &str, after: i64, limit: u32) -> StoreResult<Vec<Event>>;

    /// Where HTTP delivery to `consumer` stands (a default for a new one).
    fn delivery(&mut self, consumer: &str) -> StoreResult<DeliveryState>;

    fn set_delivery(&mut self, consumer: &str, state: &DeliveryState) -> StoreResult<()>;

    // ---- the audit log ----

    /// Appends a record and returns its id; ids grow with every append. A record is
    /// never changed or removed (the schema refuses it).
    fn append_audit(&mut self, record: &NewAuditRecord) -> StoreResult<i64>;

    /// Up to `limit` records that match `filter`, with ids below `before`, newest first.
    fn audit_records(&mut self, filter: &AuditFilter, before: Option<i64>, limit: u32)
        -> StoreResult<Vec<AuditRecord>>;

    // ---- crypto payments ----

    /// Gives `reference` of the token `(chain_id, token)` to the user's payment until
    /// `until`, unless another payment holds it past `now`; whether it did. A
    /// reference is a key of its own across users: no two open payments share one.
    #[allow(clippy::too_many_arguments)]
    fn claim_reference(
        &mut self,
        chain_id: u64,
        token: &str,
        reference: u64,
        user_id: &str,
        payment_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> StoreResult<bool>;

    /// The user and payment that took `reference` last, whether it still holds it or not.
    fn reference_holder(&mut self, chain_id: u64, token: &str, reference: u64)
        -> StoreResult<Option<(String, String)>>;

    /// A transfer as stored for `user_id` (`""` for one no payment holds).
    fn observation(
        &mut self,
        user_id: &str,
        chain_id: u64,
        tx_hash: &str,
        log_index: u64,
    ) -> StoreResult<Option<StoredObservation>>;

    /// Saves or replaces a transfer for `user_id`.
    fn save_observation(&mut self, user_id: &str, stored: &StoredObservation) -> StoreResult<()>;

    /// The transfers matched to one of the user's payments, as first seen.
    fn payment_observations(&mut self, user_id: &str, payment_id: &str) -> StoreResult<Vec<StoredObservation>>;

    /// Raises the highest block seen on a chain to `block` if that is higher; the
    /// highest after.
    fn raise_chain_head(&mut self, chain_id: u64, block: u64) -> StoreResult<u64>;

    fn chain_head(&mut self, chain_id: u64) -> StoreResult<Option<u64>>;

    /// Every transfer stored for `user_id` (`""`: those no payment holds), as first seen.
    fn all_observations(&mut self, user_id: &str) -> StoreResult<Vec<StoredObservation>>;

    /// Every reference taken, and every chain's highest block seen: for the copy.
    fn all_references(&mut self) -> StoreResult<Vec<ReferenceClaim>>;

    fn all_chain_heads(&mut self) -> StoreResult<Vec<(u64, u64)>>;

    // ---- the overview's records (`crate::analytics`) ----

    /// Appends a purchased period (or a cut of one). Never changed or removed.
    fn append_period(&mut self, period: &PeriodRecord) -> StoreResult<()>;

    /// Every period row of a user, as written.
    fn user_periods(&mut self, user_id: &str) -> StoreResult<Vec<PeriodRecord>>;

    /// Appends a money movement. Never changed or removed.
    fn append_money(&mut self, money: &MoneyRecord) -> StoreResult<()>;

    /// Every money movement of a user, oldest first, with its id.
    fn user_money(&mut self, user_id: &str) -> StoreResult<Vec<(i64, MoneyRecord)>>;

    /// The periods in force at `at`, summed per plan, currency and network (monthly
    /// values in micro-units in `Segment::mrr`'s place are converted by the caller).
    fn segments_at(&mut self, at: OffsetDateTime) -> StoreResult<Vec<(Segment, i64)>>;

    /// Per kind, the periods bought in `[from, to)`.
    fn period_counts(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<(PeriodKind, u64)>>;

    /// Per currency, the subscriptions that ended in `(from, to]` with nobody paying on
    /// (the `churn` rows), and the monthly value they took (micro-units).
    fn churned(&mut self, from: OffsetDateTime, to: OffsetDateTime) -> StoreResult<Vec<(String, u64, i64)>>;

    /// Money movements in `[from, to)`, summed per bucket of `bucket_ms`, currency, kind
    /// and provider.
    fn money_buckets(
        &mut self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<MoneyBucket>>;

    /// Up to `limit` money movements matching `filter` with ids below `before`, newest
    /// first, with their ids.
    fn money_records(
        &mut self,
        filter: &TransactionFilter,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, MoneyRecord)>>;

    /// The crypto payments a transfer can still move (pending, confirming, underpaid),
    /// and the credited ones updated at or after `since` (a reorg can still reverse
    /// them): `(user_id, payment_id)`, oldest first.
    fn crypto_payments_to_check(&mut self, since: OffsetDateTime) -> StoreResult<Vec<(String, String)>>;
}

/// Where HTTP delivery of the outbox to one endpoint stands, beside its cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// Failed attempts at the event after the cursor, since the last success.
    pub failed_attempts: u32,
    /// No attempt before this: the backoff after a failure, or the endpoint's
    /// `Retry-After`.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The endpoint answered 410 Gone: nothing more is sent until delivery is resumed.
    pub stopped_at: Option<OffsetDateTime>,
}
