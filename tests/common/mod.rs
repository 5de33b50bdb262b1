//! Fixtures shared by the integration tests: the example tariffs, a real SQLite file in
//! a fresh temporary directory, and a manual clock.
#![allow(dead_code)]

pub mod yookassa;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use billing_engine::{Billing, Catalog, ManualClock, YooKassaConfig};
use rust_decimal::Decimal;

pub const START: &str = "2026-01-01T12:00:00Z";

pub fn tariffs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tariffs.toml")
}

pub fn catalog() -> Catalog {
    Catalog::from_toml_file(tariffs_path()).expect("example tariffs are valid")
}

pub fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub billing: Billing,
    pub yookassa: Option<YooKassaConfig>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_catalog(catalog())
    }

    pub fn with_catalog(catalog: Catalog) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::parse(START).unwrap());
        let billing = Billing::open_with_clock(dir.path().join("billing.sqlite3"), catalog, clock.clone()).unwrap();
        Self { dir, clock, billing, yookassa: None }
    }

    /// A fixture whose engine takes payments through `config`.
    pub fn with_yookassa(config: YooKassaConfig) -> Self {
        let mut f = Self::new();
        f.billing = f.reopen_with(Some(&config));
        f.yookassa = Some(config);
        f
    }

    fn reopen_with(&self, config: Option<&YooKassaConfig>) -> Billing {
        let billing = Billing::open_with_clock(self.db_path(), catalog(), self.clock.clone()).unwrap();
        match config {
            Some(config) => billing.with_yookassa(config).unwrap(),
            None => billing,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("billing.sqlite3")
    }

    /// A second handle on the same file, as another worker process would open it.
    pub fn reopen(&self) -> Billing {
        self.reopen_with(self.yookassa.as_ref())
    }

    pub fn advance_days(&self, days: i64) {
        self.clock.advance(time::Duration::days(days)).unwrap();
    }

    pub fn advance_hours(&self, hours: i64) {
        self.clock.advance(time::Duration::hours(hours)).unwrap();
    }

    /// Every row of every table, to show a refused call changed nothing.
    pub fn snapshot(&self) -> Vec<Vec<String>> {
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            let mut stmt = conn.prepare(sql).unwrap();
            let n = stmt.column_count();
            stmt.query_map([], |row| {
                Ok((0..n).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect::<Vec<_>>().join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        };
        vec![
            rows("SELECT * FROM accounts ORDER BY user_id"),
            rows("SELECT * FROM ledger ORDER BY id"),
            rows("SELECT * FROM payments ORDER BY id"),
            rows("SELECT * FROM payment_methods ORDER BY user_id"),
        ]
    }
}
