//! `charge` on a SQLite file, against the floor: a bare rusqlite loop doing the minimal
//! charge transaction (BEGIN IMMEDIATE, SELECT balance, UPDATE, INSERT ledger row,
//! COMMIT) with the same pragmas. Run `python3 benches/compare.py` to get the ratios.
//!
//! Groups:
//! - `charge_full` / `charge_normal`: engine vs floor at `synchronous = FULL` (the
//!   engine's default) and `NORMAL` (where fsync no longer hides the CPU cost);
//! - `ledger_growth`: engine charge with 1k, 100k and 1M ledger rows already stored
//!   (and 10M with `BILLING_BENCH_LONG=1`);
//! - `charge_batch`: `charge_batch` of 1,000 requests at `NORMAL`, against the floor
//!   doing 100 and 1,000 charges per transaction, and the floor's 1,000 on the engine's
//!   own schema;
//! - `threads_full`: 8 threads charging 8 users at `FULL` through one handle, with
//!   shared commits and with one commit per charge. Reported per charge, so the ratio of
//!   the two is the throughput gained.
//!
//! - `metering`: `check_usage` and `track_usage` at `NORMAL` against the floor's charge
//!   in the same group;
//! - `usage_batch`: `track_usage_batch` of 1,000 records at `NORMAL` (goal 200k records/s);
//! - `check_growth`: `check_usage` with 1k and 10M usage events already stored.
//!
//! Under `cargo test --benches` every benchmark runs once on small fixtures.

use std::path::Path;
use std::sync::Arc;

use std::collections::BTreeMap;

use billing_engine::{Billing, Catalog, ChargeRequest, Durability, LocalOptions, SystemClock, UsageRequest};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
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
fn engine(path: &Path, local: impl Into<LocalOptions>) -> Billing {
    let billing = Billing::open_with(path, catalog(), Arc::new(SystemClock), local).unwrap();
    add_user(&billing, USER);
    billing
}

/// A user whose free tier is used up, so every charge takes the credits path the floor
/// takes too.
fn add_user(billing: &Billing, user: &str) {
    billing.import_user(user, Decimal::from(1_000_000_000_000i64), u32::MAX, None).unwrap();
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
        self.charges(1, cost);
    }

    /// `count` charges in one transaction.
    fn charges(&mut self, count: usize, cost: Decimal) {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        for _ in 0..count {
            Self::charge_in(&tx, cost);
        }
        tx.commit().unwrap();
    }

    fn charge_in(tx: &rusqlite::Transaction<'_>, cost: Decimal) {
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

/// Fills the ledger of the engine's file at `path` (closed) with `rows` entries spread
/// over 1000 users (a tenth of them the benchmarked user's), as fast as SQLite takes them:
/// without the WAL, in transactions of a million rows, and with the append-only trigger
/// (whose checks cost more than the insert) put back after.
fn prefill(path: &Path, rows: u64) {
    let mut conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let trigger: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'ledger_no_replace'", [], |r| r.get(0)).unwrap();
    conn.execute_batch("DROP TRIGGER ledger_no_replace").unwrap();
    let mut i = 0;
    while i < rows {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO ledger (user_id, kind, source, operation, credits_delta, credits_balance_after, \
                     ops_delta, idempotency_key, request_hash, created_at) \
                     VALUES (?1, 'grant', 'credits', NULL, '1', '1', 0, ?2, 'x', 0)",
                )
                .unwrap();
            for _ in 0..(rows - i).min(1_000_000) {
                let user = if i % 10 == 0 { USER.to_owned() } else { format!("user-{}", i % 1000) };
                insert.execute(params![user, format!("prefill-{i}")]).unwrap();
                i += 1;
            }
        }
        tx.commit().unwrap();
    }
    conn.execute_batch(&trigger).unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
}

const BATCH: usize = 1000;

fn charge_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("charge_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempfile::tempdir().unwrap();
    let billing = engine(&dir.path().join("engine.sqlite3"), Durability::Normal);
    let mut n = 0u64;
    group.bench_function("engine_1000", |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        n += 1;
                        ChargeRequest::new(USER, "generation", format!("k{n}"))
                    })
                    .collect::<Vec<_>>()
            },
            |batch| {
                let results = billing.charge_batch(&batch).unwrap();
                assert!(results.iter().all(Result::is_ok));
            },
            BatchSize::SmallInput,
        )
    });
    let mut floor = Floor::open(&dir.path().join("floor.sqlite3"), Durability::Normal);
    let cost = Decimal::from(2);
    group.bench_function("floor_100", |b| b.iter(|| (0..BATCH / 100).for_each(|_| floor.charges(100, cost))));
    group.bench_function("floor_1000", |b| b.iter(|| floor.charges(BATCH, cost)));
    // The floor again, on the engine's own schema: what SQLite alone costs for the rows
    // the engine keeps (three ledger indexes, the append-only trigger, the account row).
    let path = dir.path().join("schema_floor.sqlite3");
    drop(engine(&path, Durability::Normal));
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let mut m = 0u64;
    group.bench_function("floor_on_engine_schema_1000", |b| {
        b.iter(|| {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..BATCH {
                m += 1;
                schema_floor_charge(&conn, &format!("f{m}"));
            }
            conn.execute_batch("COMMIT").unwrap();
        })
    });
    group.finish();
}

/// The least a charge does on the engine's schema: look the key up, read the balance,
/// append the ledger row, write the balance back.
fn schema_floor_charge(conn: &Connection, key: &str) {
    let replayed = conn
        .prepare_cached("SELECT id FROM ledger WHERE user_id = ?1 AND idempotency_key = ?2")
        .unwrap()
        .exists(params![USER, key])
        .unwrap();
    assert!(!replayed);
    let balance: String = conn
        .prepare_cached("SELECT credits FROM accounts WHERE user_id = ?1")
        .unwrap()
        .query_row([USER], |r| r.get(0))
        .unwrap();
    let after = (balance.parse::<Decimal>().unwrap() - Decimal::TWO).to_string();
    conn.prepare_cached(
        "INSERT INTO ledger (user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta, \
         idempotency_key, request_hash, created_at) VALUES (?1, 'charge', 'credits', 'generation', '-2', ?2, 0, ?3, 'x', 0)",
    )
    .unwrap()
    .execute(params![USER, after, key])
    .unwrap();
    conn.prepare_cached("UPDATE accounts SET credits = ?2 WHERE user_id = ?1")
        .unwrap()
        .execute(params![USER, after])
        .unwrap();
}

const THREADS: usize = 8;

fn threads_full(c: &mut Criterion) {
    let mut group = c.benchmark_group("threads_full");
    for (name, shared_commits) in [("shared_commits", true), ("one_commit_each", false)] {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalOptions { durability: Durability::Full, shared_commits };
        let billing = engine(&dir.path().join("engine.sqlite3"), local);
        let users: Vec<String> = (0..THREADS).map(|t| format!("user-{t}")).collect();
        users.iter().for_each(|user| add_user(&billing, user));
        let mut round = 0u64;
        // Each iteration is one charge per thread; the time reported is per charge.
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                round += 1;
                let started = std::time::Instant::now();
                std::thread::scope(|scope| {
                    for user in &users {
                        let billing = &billing;
                        scope.spawn(move || {
                            for i in 0..iters {
                                billing.charge(user, "generation", &format!("r{round}-{i}"), None).unwrap();
                            }
                        });
                    }
                });
                started.elapsed() / THREADS as u32
            })
        });
        // How many writes a commit carried, for the README's note on group sizes. (Without
        // the `postgres` feature a SQLite store is the only kind.)
        #[allow(irrefutable_let_patterns)]
        if let billing_engine::store::Database::Sqlite(store) = billing.store() {
            let stats = store.commit_stats();
            eprintln!("{name}: {:.1} writes per commit", stats.writes as f64 / stats.commits.max(1) as f64);
        }
    }
    group.finish();
}

fn ledger_growth(c: &mut Criterion) {
    let long = std::env::var_os("BILLING_BENCH_LONG").is_some();
    let sizes: &[u64] = match (benchmarking(), long) {
        (false, _) => &[1_000],
        (true, false) => &[1_000, 100_000, 1_000_000],
        (true, true) => &[1_000, 100_000, 1_000_000, 10_000_000],
    };
    let mut group = c.benchmark_group("ledger_growth");
    for &rows in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown.sqlite3");
        // Filled when the benchmark runs, not when a filter skips it.
        let mut grown = None;
        let mut n = 0u64;
        group.bench_with_input(BenchmarkId::new("engine", rows), &rows, |b, _| {
            let billing = grown.get_or_insert_with(|| {
                drop(engine(&path, Durability::Normal));
                prefill(&path, rows);
                Billing::open_with(&path, catalog(), Arc::new(SystemClock), Durability::Normal).unwrap()
            });
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

/// One metric of a check, as seed 001 checks before a model call.
fn one_check() -> BTreeMap<String, u64> {
    BTreeMap::from([("requests".to_owned(), 1), ("tokens_input".to_owned(), 1200)])
}

fn metering(c: &mut Criterion) {
    let mut group = c.benchmark_group("metering");
    let dir = tempfile::tempdir().unwrap();
    let billing = engine(&dir.path().join("engine.sqlite3"), Durability::Normal);
    let check = one_check();
    group.bench_function("check_usage", |b| b.iter(|| billing.check_usage(USER, &check).unwrap()));
    let mut n = 0u64;
    // tokens_output past the free plan's quota is recorded all the same: the same path.
    let usage = UsageRequest::new("tokens_output", 150);
    group.bench_function("track_usage", |b| {
        b.iter(|| {
            n += 1;
            billing.track_usage(USER, &usage, &format!("u{n}")).unwrap()
        })
    });
    let mut floor = Floor::open(&dir.path().join("floor.sqlite3"), Durability::Normal);
    group.bench_function("floor_charge", |b| b.iter(|| floor.charge(Decimal::from(2))));
    group.finish();
}

fn usage_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    let dir = tempfile::tempdir().unwrap();
    let billing = engine(&dir.path().join("engine.sqlite3"), Durability::Normal);
    let records: Vec<UsageRequest> = (0..BATCH)
        .map(|i| UsageRequest { model_id: Some(format!("model-{}", i % 3)), ..UsageRequest::new("tokens_output", 100) })
        .collect();
    let mut n = 0u64;
    group.bench_function("track_usage_batch_1000", |b| {
        b.iter(|| {
            n += 1;
            billing.track_usage_batch(USER, &records, &format!("b{n}")).unwrap()
        })
    });
    group.finish();
}

/// Adds usage events of the benchmarked user to the engine's file at `path` (closed),
/// up to `events`, in the period of the one it holds, with the counter that adds them up:
/// what years of history would leave. As fast as SQLite takes them, as `prefill` does.
fn prefill_usage(path: &Path, events: u64) {
    let mut conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let (period, day, at): (String, String, i64) = conn
        .query_row("SELECT period_window, day_window, at FROM usage_events LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    let mut stored = 1;
    while stored < events {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO usage_events (user_id, metric, amount, model_id, at, period_window, day_window, \
                     over_limit, overage_credits, created_at) VALUES (?1, 'tokens_input', 1, 'm', ?2, ?3, ?4, 0, '0', ?2)",
                )
                .unwrap();
            for _ in 0..(events - stored).min(1_000_000) {
                insert.execute(params![USER, at, period, day]).unwrap();
                stored += 1;
            }
        }
        tx.commit().unwrap();
    }
    conn.execute(
        "UPDATE usage_counters SET used = ?1 WHERE user_id = ?2 AND metric = 'tokens_input'",
        params![events as i64, USER],
    )
    .unwrap();
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())).unwrap();
}

fn check_growth(c: &mut Criterion) {
    let sizes: &[u64] = if benchmarking() { &[1_000, 10_000_000] } else { &[1_000] };
    let mut group = c.benchmark_group("check_growth");
    let check = one_check();
    for &events in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grown.sqlite3");
        // Filled when the benchmark runs, not when a filter skips it.
        let mut grown = None;
        group.bench_with_input(BenchmarkId::new("check_usage", events), &events, |b, _| {
            let billing = grown.get_or_insert_with(|| {
                let first = engine(&path, Durability::Normal);
                first.track_usage(USER, &UsageRequest::new("tokens_input", 1), "first").unwrap();
                drop(first);
                prefill_usage(&path, events);
                let billing = Billing::open_with(&path, catalog(), Arc::new(SystemClock), Durability::Normal).unwrap();
                let used = billing.usage(USER, "tokens_input").unwrap().used;
                assert_eq!(used, events, "the prefilled history counts");
                billing
            });
            b.iter(|| billing.check_usage(USER, &check).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4)).warm_up_time(std::time::Duration::from_secs(1));
    targets = charge_vs_floor, charge_batch, threads_full, ledger_growth, metering, usage_batch, check_growth
}
criterion_main!(benches);
