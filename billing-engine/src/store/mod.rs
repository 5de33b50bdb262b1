//! Persistence behind a trait, so a host can bring its own backend.
//! [`SqliteStore`] is the default.
//!
//! The database is the source of truth: the engine keeps no state between calls. Every
//! write is one [`Store::write`] call that reads, decides and writes inside a single
//! transaction holding the store's write lock, which is what keeps concurrent charges
//! from spending the same credit twice, across threads and processes.

mod schema;
mod sqlite;
mod sqlite_error;

pub use sqlite::{Durability, SqliteOptions, SqliteStore};

use crate::account::Account;
use crate::error::Result;
use crate::ledger::{LedgerEntry, NewEntry};
use crate::payment::{Payment, SavedCard};
use time::OffsetDateTime;

pub trait Store: Send + Sync {
    /// Runs `f` in one transaction that holds the write lock from before its first read
    /// until it ends: no other writer, in this process or another, runs in between.
    /// Commits when `f` returns `Ok`; when `f` returns `Err` (or panics) nothing it
    /// wrote remains.
    fn write<T>(&self, f: impl FnOnce(&mut dyn Transaction) -> Result<T>) -> Result<T>;

    /// Runs `f` over one consistent snapshot. `f` only reads; it never blocks writers.
    fn read<T>(&self, f: impl FnOnce(&mut dyn Transaction) -> Result<T>) -> Result<T>;
}

/// What the engine reads and writes inside a [`Store`] transaction.
pub trait Transaction {
    /// The account of `user_id`, as last written.
    fn account(&mut self, user_id: &str) -> Result<Option<Account>>;

    /// Stores a new account; the user must not have one.
    fn insert_account(&mut self, account: &Account) -> Result<()>;

    /// Replaces the stored account of `account.user_id`.
    fn update_account(&mut self, account: &Account) -> Result<()>;

    /// Every user id with an account, ledger entries or payments, in order: what the
    /// integrity audit walks, so rows whose account is gone are found too.
    fn user_ids(&mut self) -> Result<Vec<String>>;

    /// Appends an entry and returns it with its id. Ids grow with every append. A second
    /// entry with the same `(user_id, idempotency_key)`, or a second refund of one
    /// charge, is refused.
    fn append_entry(&mut self, entry: &NewEntry) -> Result<LedgerEntry>;

    fn entry(&mut self, id: i64) -> Result<Option<LedgerEntry>>;

    /// The entry written with this key for this user, and the request fingerprint it was
    /// written with.
    fn entry_by_key(&mut self, user_id: &str, key: &str) -> Result<Option<(LedgerEntry, Option<String>)>>;

    /// The refund entry of the charge `charge_id`, if it was refunded.
    fn refund_of(&mut self, charge_id: i64) -> Result<Option<LedgerEntry>>;

    /// Up to `limit` entries of a user with ids below `before`, newest first.
    fn entries(&mut self, user_id: &str, before: Option<i64>, limit: u32) -> Result<Vec<LedgerEntry>>;

    /// All entries of a user, oldest first.
    fn all_entries(&mut self, user_id: &str) -> Result<Vec<LedgerEntry>>;

    /// Users whose subscription ends at or before `until` and has not been recorded as
    /// ended: the work of `process_due`.
    fn users_due(&mut self, until: OffsetDateTime) -> Result<Vec<String>>;

    /// Stores a new payment, with the fingerprint of the request that created it. A
    /// second payment with the same `(user_id, idempotency_key)`, or a second renewal of
    /// one period, is refused.
    fn insert_payment(&mut self, payment: &Payment, request_hash: Option<&str>) -> Result<()>;

    fn update_payment(&mut self, payment: &Payment) -> Result<()>;

    fn payment(&mut self, id: &str) -> Result<Option<Payment>>;

    fn payment_by_provider_id(&mut self, provider_payment_id: &str) -> Result<Option<Payment>>;

    /// The payment created with this key for this user, and its request fingerprint.
    fn payment_by_key(&mut self, user_id: &str, key: &str) -> Result<Option<(Payment, Option<String>)>>;

    fn renewal_payment(&mut self, period_key: &str) -> Result<Option<Payment>>;

    /// Renewals recorded but not yet accepted by the provider (status `new`).
    fn unsent_renewals(&mut self) -> Result<Vec<Payment>>;

    /// Up to `limit` of a user's payments the provider accepted (status other than
    /// `new`), newest first.
    fn payment_history(&mut self, user_id: &str, limit: u32) -> Result<Vec<Payment>>;

    /// All payments of a user, oldest first.
    fn all_payments(&mut self, user_id: &str) -> Result<Vec<Payment>>;

    fn saved_card(&mut self, user_id: &str) -> Result<Option<SavedCard>>;

    /// Saves or replaces the user's card.
    fn save_card(&mut self, user_id: &str, card: &SavedCard, now: OffsetDateTime) -> Result<()>;
}
