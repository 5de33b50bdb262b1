//! What every fuzz target holds the engine to: no panic, every error a `BillingError`
//! with a code from the table, and a refused call changes no table.
#![allow(dead_code)]

use std::sync::Mutex;

use billing_engine::error::ERROR_CODES;
use billing_engine::{Billing, BillingError, Catalog};

pub const TARIFFS: &str = include_str!("../../examples/tariffs.toml");

/// A typed error: a code of the table, with a message and JSON details.
pub fn assert_typed(error: &BillingError) {
    let code = error.code();
    assert!(ERROR_CODES.iter().any(|c| c.code == code), "{code} is not in the table");
    assert!(!error.to_string().is_empty());
    let _ = error.details();
}

/// An INVALID_ARGUMENT naming `field`.
pub fn assert_invalid(error: &BillingError, field: &str) {
    assert_typed(error);
    assert_eq!(error.code(), "INVALID_ARGUMENT", "{error}");
    assert_eq!(error.details()["field"], field, "{error}");
}

/// A SQLite file for the target's process, with the connection that dumps it.
pub struct Db {
    pub billing: Billing,
    reader: Mutex<rusqlite::Connection>,
    _dir: tempfile::TempDir,
}

/// The tables a refused call must leave as they were.
const USER_TABLES: [&str; 17] = [
    "accounts",
    "ledger",
    "payments",
    "payment_methods",
    "customer_contacts",
    "usage_events",
    "usage_counters",
    "holds",
    "credit_lots",
    "lot_allocations",
    "events",
    "event_consumers",
    "crypto_references",
    "crypto_observations",
    "chain_heads",
    "purchased_periods",
    "money_movements",
];

impl Db {
    pub fn open(setup: impl FnOnce(Billing) -> Billing) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.sqlite3");
        let billing = setup(Billing::open(&path, Catalog::from_toml(TARIFFS).unwrap()).unwrap());
        let reader = Mutex::new(rusqlite::Connection::open(&path).unwrap());
        Self { billing, reader, _dir: dir }
    }

    /// Every row of every table of user data. (Not the audit log: it records refusals
    /// too, by design.)
    pub fn dump(&self) -> Vec<String> {
        let conn = self.reader.lock().unwrap();
        let mut rows = Vec::new();
        for table in USER_TABLES {
            let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY 1")).unwrap();
            let n = stmt.column_count();
            let mut query = stmt.query([]).unwrap();
            while let Some(row) = query.next().unwrap() {
                rows.push((0..n).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect::<Vec<_>>().join("|"));
            }
        }
        rows
    }

    /// Runs `call`; a refusal must be typed and leave every table as it was.
    pub fn refused_changes_nothing<T>(&self, call: impl FnOnce(&Billing) -> Result<T, BillingError>) -> Option<T> {
        let before = self.dump();
        match call(&self.billing) {
            Ok(value) => Some(value),
            Err(error) => {
                assert_typed(&error);
                assert_eq!(self.dump(), before, "refused with {error}, but a table changed");
                None
            }
        }
    }
}
