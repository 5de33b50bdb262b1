//! `charge` on PostgreSQL, in one run:
//! - against the floor: a bare `postgres` client doing the minimal charge transaction
//!   by hand (BEGIN, SELECT balance FOR UPDATE, INSERT ledger row, UPDATE, COMMIT), with
//!   prepared statements, on the same server;
//! - with 1, 2, 4 and 8 clients (threads sharing one `Billing`, a pool of 8) charging
//!   *different* users, which must scale, unlike SQLite's single writer;
//! - with the same clients all charging *one* user, which must serialize: the run checks
//!   that every acknowledged charge is in the ledger once and the balance is exact.
//!
//! Needs a server: `BILLING_TEST_POSTGRES` (a URL to make schemas in); `python3
//! benches/compare.py --postgres` starts a throwaway cluster for it. Under `cargo test`
//! it runs for a moment only, as a smoke test.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use billing_engine::{Billing, Catalog};
use postgres::{Client, NoTls, Statement};
use rust_decimal::Decimal;

const CLIENTS: [usize; 4] = [1, 2, 4, 8];
const START_CREDITS: i64 = 1_000_000_000_000;

fn benchmarking() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

fn run_for() -> Duration {
    if benchmarking() {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(100)
    }
}

/// A URL to a fresh schema of the server.
fn fresh_schema(server: &str, name: &str) -> String {
    let schema = format!("bench_{name}_{}", std::process::id());
    let mut client = Client::connect(server, NoTls).unwrap();
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
    let sep = if server.contains('?') { '&' } else { '?' };
    format!("{server}{sep}options=-csearch_path%3D{schema}&pool_size=8")
}

/// Runs `charge(client, n)` on `clients` threads for the run's duration; charges/s.
fn throughput<S: Sync>(clients: usize, state: &S, charge: impl Fn(&S, usize, u64) + Sync) -> f64 {
    let (stop, done, barrier) = (AtomicBool::new(false), AtomicU64::new(0), Barrier::new(clients + 1));
    let started = std::thread::scope(|scope| {
        for t in 0..clients {
            let (stop, done, barrier, charge) = (&stop, &done, &barrier, &charge);
            scope.spawn(move || {
                barrier.wait();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    charge(state, t, n);
                    n += 1;
                }
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        barrier.wait();
        let started = Instant::now();
        std::thread::sleep(run_for());
        stop.store(true, Ordering::Relaxed);
        started
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The floor: the least a correct credit charge can do on PostgreSQL, one connection
/// per client.
struct Floor {
    url: String,
}

impl Floor {
    fn new(server: &str) -> Self {
        let url = fresh_schema(server, "floor").replace("&pool_size=8", "");
        let mut client = Client::connect(&url, NoTls).unwrap();
        client
            .batch_execute(
                "CREATE TABLE balances (user_id TEXT PRIMARY KEY, credits NUMERIC NOT NULL);
                 CREATE TABLE ledger (id BIGINT GENERATED ALWAYS AS IDENTITY, user_id TEXT NOT NULL,
                     delta NUMERIC NOT NULL, balance_after NUMERIC NOT NULL, created_at BIGINT NOT NULL,
                     PRIMARY KEY (user_id, id));",
            )
            .unwrap();
        for t in 0..8 {
            client
                .execute("INSERT INTO balances VALUES ($1, $2)", &[&format!("u{t}"), &Decimal::from(START_CREDITS)])
                .unwrap();
        }
        Self { url }
    }

    fn throughput(&self, clients: usize) -> f64 {
        let connections: Vec<_> = (0..clients).map(|_| Mutex::new(FloorConnection::new(&self.url))).collect();
        throughput(clients, &connections, |connections, t, _| {
            connections[t].lock().unwrap().charge(&format!("u{t}"), Decimal::TWO);
        })
    }
}

/// A floor client with its statements prepared once, as the engine's pool does.
struct FloorConnection {
    client: Client,
    select: Statement,
    insert: Statement,
    update: Statement,
}

impl FloorConnection {
    fn new(url: &str) -> Self {
        let mut client = Client::connect(url, NoTls).unwrap();
        let select = client.prepare("SELECT credits FROM balances WHERE user_id = $1 FOR UPDATE").unwrap();
        let insert = client
            .prepare("INSERT INTO ledger (user_id, delta, balance_after, created_at) VALUES ($1, $2, $3, $4)")
            .unwrap();
        let update = client.prepare("UPDATE balances SET credits = $2 WHERE user_id = $1").unwrap();
        Self { client, select, insert, update }
    }

    fn charge(&mut self, user: &str, cost: Decimal) {
        let mut tx = self.client.transaction().unwrap();
        let balance: Decimal = tx.query_one(&self.select, &[&user]).unwrap().get(0);
        let after = balance - cost;
        tx.execute(&self.insert, &[&user, &-cost, &after, &0i64]).unwrap();
        tx.execute(&self.update, &[&user, &after]).unwrap();
        tx.commit().unwrap();
    }
}

fn engine(server: &str, name: &str) -> Billing {
    let catalog = Catalog::from_toml_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/tariffs.toml")).unwrap();
    let billing = Billing::open(fresh_schema(server, name), catalog).unwrap();
    for t in 0..8 {
        // Free tier used up, so every charge takes the credits path the floor takes too.
        billing.import_user(&format!("u{t}"), Decimal::from(START_CREDITS), u32::MAX, None).unwrap();
    }
    billing
}

fn main() {
    let server = std::env::var("BILLING_TEST_POSTGRES")
        .expect("the PostgreSQL benchmark needs a server: BILLING_TEST_POSTGRES, or run benches/compare.py --postgres");
    let floor = Floor::new(&server);
    let different = engine(&server, "different");
    let one = engine(&server, "one");
    let acknowledged = AtomicU64::new(0);

    println!("| clients | floor charges/s | engine, different users | engine / floor | engine scaling vs 1 client | engine, one user |");
    println!("|---|---|---|---|---|---|");
    let mut single = 0.0;
    for clients in CLIENTS {
        let floor_rate = floor.throughput(clients);
        let rate = throughput(clients, &different, |billing, t, n| {
            billing.charge(&format!("u{t}"), "generation", &format!("c{clients}-t{t}-{n}"), None).unwrap();
        });
        let one_user = throughput(clients, &one, |billing, t, n| {
            billing.charge("u0", "generation", &format!("c{clients}-t{t}-{n}"), None).unwrap();
            acknowledged.fetch_add(1, Ordering::Relaxed);
        });
        if clients == 1 {
            single = rate;
        }
        println!(
            "| {clients} | {floor_rate:.0} | {rate:.0} | {:.2}x | {:.2}x | {one_user:.0} |",
            rate / floor_rate,
            rate / single
        );
    }
    // One user's charges serialized: each acknowledged charge is in the ledger once and
    // the balance is exact.
    let charged = acknowledged.load(Ordering::Relaxed);
    let state = one.state("u0").unwrap();
    assert_eq!(state.credits, Decimal::from(START_CREDITS) - Decimal::from(charged * 2), "one user's balance is exact");
    let report = one.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
    println!("\none user: {charged} acknowledged charges, balance exact, verify_integrity ok");
}
