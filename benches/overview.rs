//! `overview` at 1M users (issue 18), against the floor: the one SQL sum a hand-written
//! MRR report would run over the same rows. Run `python3 benches/compare.py` for the
//! ratio.
//!
//! The fixture is what a million users leave in the overview's records: one purchased
//! period each (monthly plans bought over the last 60 days, so about half are in force
//! now, and a tenth of those renewed), the churn of the half whose month is over, and a
//! payment each, written straight into the
//! engine's tables in one transaction (a million engine calls would take the benchmark's
//! time, and the records' shape is the engine's). Under `cargo test --benches` it runs
//! once on 10k users.

use std::path::Path;
use std::sync::Arc;

use billing_engine::{Billing, Catalog, SystemClock};
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};
use time::OffsetDateTime;

fn users() -> i64 {
    if std::env::args().any(|arg| arg == "--bench") {
        1_000_000
    } else {
        10_000
    }
}

fn catalog() -> Catalog {
    Catalog::from_toml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml")).unwrap()
}

/// A million users' periods and payments, in the engine's own tables.
fn fill(path: &Path, users: i64, now: OffsetDateTime) {
    let mut conn = Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut period = tx
            .prepare(
                "INSERT INTO purchased_periods (user_id, payment_id, plan_code, kind, starts_at, ends_at, weight, \
                 monthly_micros, currency, network, provider, created_at) VALUES (?1, ?2, 'basic', ?3, ?4, ?5, 1, \
                 299000000, 'RUB', NULL, 'yookassa', ?4)",
            )
            .unwrap();
        let mut churn = tx
            .prepare(
                "INSERT INTO purchased_periods (user_id, payment_id, plan_code, kind, starts_at, ends_at, weight, \
                 monthly_micros, currency, network, provider, created_at) VALUES (?1, ?2, 'basic', 'churn', ?3, ?3, 0, \
                 299000000, 'RUB', NULL, 'yookassa', ?3)",
            )
            .unwrap();
        let mut money = tx
            .prepare(
                "INSERT INTO money_movements (user_id, payment_id, kind, micros, currency, provider, network, \
                 plan_code, package_code, at) VALUES (?1, ?2, 'gross', 299000000, 'RUB', 'yookassa', NULL, 'basic', \
                 NULL, ?3)",
            )
            .unwrap();
        let now_ms = now.unix_timestamp() * 1000;
        let day = 86_400_000i64;
        for n in 0..users {
            let user = format!("user-{n}");
            let payment = format!("pay-{n}");
            let start = now_ms - (n * 7919 % 60) * day;
            let kind = if n % 10 == 0 { "renewal" } else { "new" };
            period.execute(params![user, payment, kind, start, start + 30 * day]).unwrap();
            if start + 30 * day <= now_ms {
                churn.execute(params![user, payment, start + 30 * day]).unwrap();
            }
            money.execute(params![user, payment, start]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn overview_at_scale(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overview.sqlite3");
    let now = OffsetDateTime::now_utc();
    let billing =
        Billing::open_with(&path, catalog(), Arc::new(SystemClock), billing_engine::Durability::Normal).unwrap();
    fill(&path, users(), now);
    let floor = Connection::open(&path).unwrap();
    let mut group = c.benchmark_group("overview");
    group.sample_size(10);
    group.bench_function("engine", |b| b.iter(|| billing.overview(Some(now), 30).unwrap()));
    group.bench_function("floor_mrr_sum", |b| {
        b.iter(|| {
            let at = now.unix_timestamp() * 1000;
            let sql = "SELECT SUM(monthly_micros) FROM purchased_periods WHERE starts_at <= ?1 AND ends_at > ?1";
            floor.query_row(sql, [at], |row| row.get::<_, i64>(0)).unwrap()
        })
    });
    group.finish();
    let overview = billing.overview(Some(now), 30).unwrap();
    assert!(overview.paying_users > 0 && overview.paying_users < users() as u64);
}

criterion_group!(benches, overview_at_scale);
criterion_main!(benches);
