//! `charge` on a SQLite file, against the floor: a bare rusqlite loop doing the minimal
//! charge transaction (BEGIN IMMEDIATE, SELECT balance, UPDATE, INSERT ledger row,
//! COMMIT) with the same pragmas. Run `python3 benches/compare.py` to get the ratios.
//!
//! Groups:
//! - `charge_full` / `charge_normal`: engine vs floor at `synchronous = FULL` (the
//!   engine's default) and `NORMAL` (where fsync no longer hides the CPU cost);
//! - `ledger_growth`: engine charge with 1k, 100k and 1M ledger rows already stored.
//!
//! Under `cargo test --benches` every benchmark runs once on small fixtures.

use std::path::Path;
use std::sync::Arc;

use billing_engine::{Billing, Catalog, Durability, SystemClock};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use rusqlite::{params, Connection, TransactionBehavior};
use rust_decimal::Decimal;

const USER: &str = "bench-user";

fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn catalog() -> Catalog {
    Catalog::from_toml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml")).unwrap()
}

/// The engine as a host opens it, through `Billing::open` (the store the location names).
fn engine(path: &Path, durability: Durability) -> Billing {
    let billing = Billing::open_with(path, catalog(), Arc::new(SystemClock), durability).unwrap();
    // Free tier used up, so every charge takes the credits path the floor takes too.
    billing.import_user(USER, Decimal::from(1_000_000_000_000i64), u32::MAX, None).unwrap();
    billing
}

/// The floor: the least a correct credit charge can do on SQLite.
struct Floor {
    conn: Connection,
}

impl Floor {
    fn open(path: &Path, durability: Durability) -> Self {
        let conn = Connection::open(path).unwrap();
        conn.busy_timeout(std::time::Duration::from_millis(5000)).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
        let synchronous = if durability == Durability::Full { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous).unwrap();
        conn.execute_batch(
            "CREATE TABLE balances (user_id TEXT PRIMARY KEY, credits TEXT NOT NULL) WITHOUT ROWID;
             CREATE TABLE ledger (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, delta TEXT NOT NULL,
                                  balance_after TEXT NOT NULL, created_at INTEGER NOT NULL);",
        )
        .unwrap();
        conn.execute("INSERT INTO balances VALUES (?1, '1000000000000')", [USER]).unwrap();
        Self { conn }
    }

    fn charge(&mut self, cost: Decimal) {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        let balance: String = tx
            .prepare_cached("SELECT credits FROM balances WHERE user_id = ?1")
            .unwrap()
            .query_row([USER], |r| r.get(0))
            .unwrap();
        let after = balance.parse::<Decimal>().unwrap() - cost;
        assert!(after >= Decimal::ZERO);
        tx.prepare_cached("UPDATE balances SET credits = ?2 WHERE user_id = ?1")
            .unwrap()
            .execute(params![USER, after.to_string()])
            .unwrap();
        tx.prepare_cached("INSERT INTO ledger (user_id, delta, balance_after, created_at) VALUES (?1, ?2, ?3, ?4)")
            .unwrap()
            .execute(params![USER, (-cost).to_string(), after.to_string(), 0])
            .unwrap();
        tx.commit().unwrap();
    }
}

fn charge_vs_floor(c: &mut Criterion) {
    for (group_name, durability) in [("charge_full", Durability::Full), ("charge_normal", Durability::Normal)] {
        let mut group = c.benchmark_group(group_name);
        let dir = tempfile::tempdir().unwrap();
        let billing = engine(&dir.path().join("engine.sqlite3"), durability);
        let mut n = 0u64;
        group.bench_function("engine", |b| {
            b.iter(|| {
                n += 1;
                billing.charge(USER, "generation", &format!("k{n}"), None).unwrap()
            })
        });
        let mut floor = Floor::open(&dir.path().join("floor.sqlite3"), durability);
        let cost = Decimal::from(2);
        group.bench_function("bare_sqlite", |b| b.iter(|| floor.charge(cost)));
        group.finish();
    }
}

/// Fills the ledger with `rows` entries spread over 1000 users (a tenth of them the
/// benchmarked user's), as fast as SQLite takes them.
fn prefill(path: &Path, rows: u64) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO ledger (user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta, \
                 idempotency_key, request_hash, created_at) VALUES (?1, 'grant', 'credits', NULL, '1', '1', 0, ?2, 'x', 0)",
            )
            .unwrap();
        for i in 0..rows {
            let user = if i % 10 == 0 { USER.to_owned() } else { format!("user-{}", i % 1000) };
            insert.execute(params![user, format!("prefill-{i}")]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn ledger_growth(c: &mut Criterion) {
    let sizes: &[u64] = if benchmarking() { &[1_000, 100_000, 1_000_000] } else { &[1_000] };
    let mut group = c.benchmark_group("ledger_growth");
    for &rows in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown.sqlite3");
        let billing = engine(&path, Durability::Normal);
        prefill(&path, rows);
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::new("engine", rows), &rows, |b, _| {
            b.iter_batched(
                || {
                    n += 1;
                    format!("k{n}")
                },
                |key| billing.charge(USER, "generation", &key, None).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = charge_vs_floor, ledger_growth
}
criterion_main!(benches);
