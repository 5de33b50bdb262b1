//! Fixtures shared by the integration tests: the example tariffs, a fresh database of
//! the store under test, and a manual clock.
//!
//! The store under test is `BILLING_TEST_STORE`: `sqlite` (a file in a fresh temporary
//! directory, the default), `memory` (SQLite's `:memory:`), or `postgres` (a schema of
//! its own in the server at `BILLING_TEST_POSTGRES`). The conformance suite (scenarios,
//! races, payments, the property test, plan cards) runs once per store on this one code.
#![allow(dead_code)]

pub mod indexer;
pub mod yookassa;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use billing_engine::{Billing, Catalog, Event, ManualClock, YooKassaConfig};
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

/// The store the tests run on.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    SqliteFile,
    SqliteMemory,
    /// The URL of a database to make schemas in.
    Postgres(String),
}

pub fn backend() -> Backend {
    match std::env::var("BILLING_TEST_STORE").as_deref() {
        Err(_) | Ok("sqlite") => Backend::SqliteFile,
        Ok("memory") => Backend::SqliteMemory,
        Ok("postgres") => Backend::Postgres(
            std::env::var("BILLING_TEST_POSTGRES").expect("BILLING_TEST_STORE=postgres needs BILLING_TEST_POSTGRES"),
        ),
        Ok(other) => panic!("unknown BILLING_TEST_STORE `{other}`: sqlite, memory or postgres"),
    }
}

/// A fresh, empty database of the store under test.
pub struct TestDb {
    /// What `Billing::open` takes: a file path, `:memory:`, or a PostgreSQL URL.
    pub location: String,
    /// The temporary directory of a SQLite file.
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL schema the database lives in.
    schema: Option<(String, String)>,
}

impl TestDb {
    /// A database of the store under test; under `memory`, one only this handle sees.
    pub fn new() -> Self {
        match backend() {
            Backend::SqliteMemory => Self { location: ":memory:".into(), dir: None, schema: None },
            other => Self::on(other),
        }
    }

    /// A database that a second handle, thread or process can open too: under `memory`,
    /// whose database no second connection can see, a file.
    pub fn shared() -> Self {
        match backend() {
            Backend::SqliteMemory => Self::on(Backend::SqliteFile),
            other => Self::on(other),
        }
    }

    /// A SQLite file, whatever the store under test.
    pub fn on_file() -> Self {
        Self::on(Backend::SqliteFile)
    }

    /// A database on the test PostgreSQL server, whatever the store under test: for the
    /// tests of the PostgreSQL store itself. Fails without `BILLING_TEST_POSTGRES`.
    pub fn postgres() -> Self {
        let url = std::env::var("BILLING_TEST_POSTGRES").expect("the PostgreSQL tests need BILLING_TEST_POSTGRES");
        Self::on(Backend::Postgres(url))
    }

    /// A client of the test server, in this database's schema.
    pub fn client(&self) -> postgres::Client {
        let (url, schema) = self.schema.as_ref().expect("a PostgreSQL database");
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        client.batch_execute(&format!("SET search_path = {schema}")).unwrap();
        client
    }

    fn on(backend: Backend) -> Self {
        match backend {
            Backend::SqliteFile | Backend::SqliteMemory => {
                let dir = tempfile::tempdir().unwrap();
                let location = dir.path().join("billing.sqlite3").to_str().unwrap().to_owned();
                Self { location, dir: Some(dir), schema: None }
            }
            Backend::Postgres(url) => {
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                postgres::Client::connect(&url, postgres::NoTls)
                    .expect("the test PostgreSQL server answers")
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .unwrap();
                let sep = if url.contains('?') { '&' } else { '?' };
                let location = format!("{url}{sep}options=-csearch_path%3D{schema}");
                Self { location, dir: None, schema: Some((url, schema)) }
            }
        }
    }

    pub fn is_shared(&self) -> bool {
        self.location != ":memory:"
    }

    /// Runs `sql` on the database from outside the engine (to tamper with it).
    pub fn execute(&self, sql: &str) {
        self.try_execute(sql).unwrap()
    }

    /// Runs `sql` from outside the engine; the database's refusal as text.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        match &self.schema {
            Some(_) => {
                let result = self.client().batch_execute(sql);
                result.map_err(|e| e.as_db_error().map_or(e.to_string(), |db| db.message().to_owned()))
            }
            None => {
                assert!(self.is_shared(), "an in-memory database has no second connection: use TestDb::shared");
                rusqlite::Connection::open(&self.location).unwrap().execute_batch(sql).map_err(|e| e.to_string())
            }
        }
    }

    /// Every row of `table` as text, in `order`.
    pub fn rows(&self, table: &str, order: &str) -> Vec<String> {
        match &self.schema {
            Some(_) => {
                let sql = format!("SELECT t::text FROM {table} t ORDER BY {order}");
                self.client().query(&sql, &[]).unwrap().iter().map(|row| row.get(0)).collect()
            }
            None => {
                assert!(self.is_shared(), "an in-memory database has no second connection: use TestDb::shared");
                let conn = rusqlite::Connection::open(&self.location).unwrap();
                let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}")).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |row| {
                    Ok((0..n).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect::<Vec<_>>().join("|"))
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
        }
    }
}

pub struct Fixture {
    pub db: TestDb,
    pub clock: Arc<ManualClock>,
    pub billing: Billing,
    pub yookassa: Option<YooKassaConfig>,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_catalog(catalog())
    }

    pub fn with_catalog(catalog: Catalog) -> Self {
        Self::on(TestDb::new(), catalog)
    }

    /// A fixture on a database that a second handle can open (see [`TestDb::shared`]).
    pub fn shared() -> Self {
        Self::shared_with_catalog(catalog())
    }

    pub fn shared_with_catalog(catalog: Catalog) -> Self {
        Self::on(TestDb::shared(), catalog)
    }

    /// A fixture of the example tariffs on `db`.
    pub fn on_db(db: TestDb) -> Self {
        Self::on(db, catalog())
    }

    fn on(db: TestDb, catalog: Catalog) -> Self {
        let clock = Arc::new(ManualClock::parse(START).unwrap());
        let billing = Billing::open_with_clock(&db.location, catalog, clock.clone()).unwrap();
        Self { db, clock, billing, yookassa: None }
    }

    /// A fixture whose engine takes payments through `config`, on `db`.
    pub fn with_yookassa(db: TestDb, config: YooKassaConfig) -> Self {
        let Self { db, clock, billing, .. } = Self::on(db, catalog());
        Self { db, clock, billing: billing.with_yookassa(&config).unwrap(), yookassa: Some(config) }
    }

    /// Where the database is, for `Billing::open`.
    pub fn location(&self) -> &str {
        assert!(self.db.is_shared(), "an in-memory database has no second handle: use Fixture::shared");
        &self.db.location
    }

    /// A second handle on the same database, as another worker process would open it,
    /// with `catalog`.
    pub fn open_with(&self, catalog: Catalog) -> Billing {
        let billing = Billing::open_with_clock(self.location(), catalog, self.clock.clone()).unwrap();
        match &self.yookassa {
            Some(config) => billing.with_yookassa(config).unwrap(),
            None => billing,
        }
    }

    /// A second handle on the same database, as another worker process would open it.
    pub fn reopen(&self) -> Billing {
        self.open_with(catalog())
    }

    pub fn advance_days(&self, days: i64) {
        self.clock.advance(time::Duration::days(days)).unwrap();
    }

    pub fn advance_hours(&self, hours: i64) {
        self.clock.advance(time::Duration::hours(hours)).unwrap();
    }

    /// `consumer`'s pollable events, once at least `n` are (or after 30 s, so that the
    /// caller's assertion shows what there was). Polling never moves a cursor. On
    /// PostgreSQL an event is pollable once every transaction older than its own has
    /// ended on the whole server, so the tests running beside this one hold it back for a
    /// moment.
    pub fn poll_at_least(&self, consumer: &str, n: usize) -> Vec<Event> {
        let deadline = Instant::now() + StdDuration::from_secs(30);
        loop {
            let events = self.billing.poll_events(consumer, 1000).unwrap();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            thread::sleep(StdDuration::from_millis(10));
        }
    }

    /// Every row of every table, to show a refused call changed nothing.
    pub fn snapshot(&self) -> Vec<Vec<String>> {
        vec![
            self.db.rows("accounts", "user_id"),
            self.db.rows("ledger", "id"),
            self.db.rows("payments", "id"),
            self.db.rows("payment_methods", "user_id"),
            self.db.rows("customer_contacts", "user_id"),
            self.db.rows("events", "event_id"),
            self.db.rows("purchased_periods", "id"),
            self.db.rows("money_movements", "id"),
        ]
    }
}
