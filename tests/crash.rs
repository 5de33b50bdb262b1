//! Crashes: worker processes write to one database while a controller SIGKILLs them at
//! random and starts them again; afterwards the ledger must account for every call a
//! worker saw succeed, and for nothing it never tried.
//!
//! Each worker (three threads on one handle, so kills land inside shared commits too)
//! charges, refunds, grants, holds an operation and captures it, and tracks usage. It logs
//! a call's key *before* making it (the attempt) and again with its
//! result *after* it returns (the acknowledgement), each line fsynced. The check:
//! - every acknowledged key is in the ledger exactly once (a usage event's, in the usage
//!   events: its replay finds it);
//! - every keyed entry in the ledger has a logged attempt;
//! - `verify_integrity` is ok (balances, usage counters, holds) and no balance is negative;
//! - every acknowledged call, made again with its key, replays to the same result.
//!
//! The store under test is `BILLING_TEST_STORE` (see `common`). `tests/all.sh` runs it
//! for 30 s on SQLite and on PostgreSQL; a long run is
//! `BILLING_CRASH_SECONDS=600 cargo test --release --test crash -- --nocapture`
//! (`tests/crash.sh --minutes 10 [--postgres]`).
//!
//! Kills also land while a new database's schema is created, and while an older SQLite
//! file is upgraded.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use billing_engine::{Billing, UsageLabels, UsageRequest};
use common::{dec, TestDb};
use rust_decimal::Decimal;

const WORKERS: usize = 4;
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
const WORKER_ENV: &str = "BILLING_CRASH_WORKER";

fn run_for() -> Duration {
    let seconds = std::env::var("BILLING_CRASH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    Duration::from_secs(seconds)
}

/// A line of a worker's log: `attempt <kind> <key> <target>` before a call, `ack <kind>
/// <key> <target> <id> <balance>` after it returned.
fn log_line(log: &mut File, line: &str) {
    writeln!(log, "{line}").unwrap();
    log.sync_data().unwrap();
}

#[test]
fn workers_killed_at_random_lose_and_duplicate_nothing() {
    let db = TestDb::shared();
    let setup = Billing::open(&db.location, common::catalog()).unwrap();
    for user in USERS {
        // Credits only (free tier spent), enough for the whole run.
        setup.import_user(user, dec("100000000"), u32::MAX, None).unwrap();
    }
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut workers: Vec<(Child, u32)> = (0..WORKERS).map(|w| (spawn_worker(&db, logs.path(), w, 0), 0)).collect();
    let mut kills = 0;
    while started.elapsed() < run_for() {
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..300)));
        let w = fastrand::usize(0..WORKERS);
        let (child, generation) = &mut workers[w];
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        *generation += 1;
        *child = spawn_worker(&db, logs.path(), w, *generation);
    }
    for (child, _) in &mut workers {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let log = read_logs(logs.path());
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    let mut ledger = BTreeMap::new();
    for user in USERS {
        for entry in whole_ledger(&billing, user) {
            if let Some(key) = entry.idempotency_key.clone() {
                assert!(ledger.insert(key.clone(), entry).is_none(), "key {key} is in the ledger twice");
            }
        }
        assert!(billing.state(user).unwrap().credits >= Decimal::ZERO, "{user}'s balance went negative");
    }
    for (key, ack) in log.acks.iter().filter(|(_, ack)| ack.kind != "usage") {
        let entry = ledger.get(key).unwrap_or_else(|| panic!("acknowledged {key} is not in the ledger"));
        assert_eq!(entry.id, ack.id, "{key}");
        if let Some(balance) = ack.balance {
            assert_eq!(entry.credits_balance_after, balance, "{key}");
        }
    }
    for key in ledger.keys() {
        assert!(log.attempts.contains(key), "{key} is in the ledger but no worker tried it");
    }
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
    for (key, ack) in &log.acks {
        let (id, balance, replayed) = replay(&billing, key, ack);
        assert!(replayed, "{key} did not replay");
        assert_eq!(id, ack.id, "{key} replayed to another result");
        assert!(ack.balance.is_none() || balance == ack.balance, "{key} replayed to another balance");
    }
    println!(
        "crash run: {} s, {kills} kills, {} attempts, {} acknowledged, {} entries",
        run_for().as_secs(),
        log.attempts.len(),
        log.acks.len(),
        ledger.len()
    );
    assert!(kills > 0 && log.acks.len() > 100, "the run did too little to mean anything");
}

/// Every entry of `user`, page by page.
fn whole_ledger(billing: &Billing, user: &str) -> Vec<billing_engine::LedgerEntry> {
    let mut entries = Vec::new();
    loop {
        let page = billing.ledger(user, 500, entries.last().map(|e: &billing_engine::LedgerEntry| e.id)).unwrap();
        if page.is_empty() {
            return entries;
        }
        entries.extend(page);
    }
}

struct Ack {
    kind: String,
    target: String,
    id: i64,
    /// The balance the call returned; `-` in the log for a call that returns none.
    balance: Option<Decimal>,
}

struct Log {
    attempts: BTreeSet<String>,
    acks: BTreeMap<String, Ack>,
}

/// Every worker's log. A line a kill cut short (no newline yet) was never acknowledged
/// to anyone, so it is left out.
fn read_logs(dir: &Path) -> Log {
    let mut log = Log { attempts: BTreeSet::new(), acks: BTreeMap::new() };
    for file in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        let complete = text.rsplit_once('\n').map_or("", |(lines, _)| lines);
        for line in complete.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["attempt", _, key, _] => {
                    log.attempts.insert((*key).to_owned());
                }
                ["ack", kind, key, target, id, balance] => {
                    let ack = Ack {
                        kind: (*kind).to_owned(),
                        target: (*target).to_owned(),
                        id: id.parse().unwrap(),
                        balance: (*balance != "-").then(|| balance.parse().unwrap()),
                    };
                    log.acks.insert((*key).to_owned(), ack);
                }
                _ => panic!("a malformed log line: {line}"),
            }
        }
    }
    log
}

/// Makes an acknowledged call again with its key: (entry or event id, balance after if
/// the call returns one, replayed).
fn replay(billing: &Billing, key: &str, ack: &Ack) -> (i64, Option<Decimal>, bool) {
    match ack.kind.as_str() {
        "charge" => {
            let charge = billing.charge(&ack.target, "generation", key, None).unwrap();
            (charge.id, Some(charge.credits_balance), charge.replayed)
        }
        "refund" => {
            let refund = billing.refund_charge(ack.target.parse().unwrap(), key, None).unwrap();
            (refund.id, Some(refund.credits_balance), refund.replayed)
        }
        "grant" => {
            // A grant has no `replayed` flag: a replay is the same entry, a new one a new id.
            let entry = billing.grant_credits(&ack.target, dec("5"), key, "crash test").unwrap();
            (entry.id, Some(entry.credits_balance_after), entry.id == ack.id)
        }
        "reserve" => {
            let hold = billing.reserve(&ack.target, &BTreeMap::new(), Some("generation"), key, 600).unwrap();
            (hold.placed_entry_id, None, hold.replayed)
        }
        "capture" => {
            let hold = billing.capture(&ack.target, None, &UsageLabels::default(), key).unwrap();
            (hold.settled_entry_id.unwrap_or_default(), None, hold.replayed)
        }
        "usage" => {
            let record = billing.track_usage(&ack.target, &usage_event(), key).unwrap();
            (record.id, None, record.replayed)
        }
        other => panic!("unknown call {other}"),
    }
}

/// The usage event every worker tracks: past the free tier's quota soon, and recorded all
/// the same.
fn usage_event() -> UsageRequest {
    UsageRequest::new("tokens_output", 7)
}

fn spawn_worker(db: &TestDb, logs: &Path, worker: usize, generation: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_worker_process", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(WORKER_ENV, format!("{}|{}|{worker}|{generation}", db.location, logs.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Run by the crash test in child processes: charges, refunds of its own acknowledged
/// charges, grants, holds and their captures, and usage, on the shared users, until it
/// is killed.
#[test]
#[ignore = "a worker process of the crash test, not a test of its own"]
fn crash_worker_process() {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (location, logs, generation) = (parts[0], PathBuf::from(parts[1]), parts[3]);
    let worker: usize = parts[2].parse().unwrap();
    let billing = Billing::open(location, common::catalog()).unwrap();
    // Threads of one handle, so that kills land inside commits the threads share.
    std::thread::scope(|scope| {
        for thread in 0..THREADS_PER_WORKER {
            let (billing, logs) = (&billing, &logs);
            scope.spawn(move || work(billing, logs, worker, thread, generation));
        }
    });
}

const THREADS_PER_WORKER: usize = 3;

/// One thread of a worker: charges, refunds of its own charges, grants, holds captured
/// at once, and usage, forever.
fn work(billing: &Billing, logs: &Path, worker: usize, thread: usize, generation: &str) {
    let mut log = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(logs.join(format!("worker-{worker}-t{thread}-g{generation}.log")))
        .unwrap();
    let mut charged = Vec::new();
    for n in 0u64.. {
        let user = USERS[(n as usize + worker + thread) % USERS.len()];
        let key = format!("w{worker}-t{thread}-g{generation}-{n}");
        match n % 10 {
            // A refund of a charge this thread saw succeed.
            3 | 7 if !charged.is_empty() => {
                let charge_id: i64 = charged.swap_remove(0);
                log_line(&mut log, &format!("attempt refund {key} {charge_id}"));
                let refund = billing.refund_charge(charge_id, &key, None).unwrap();
                assert!(!refund.replayed);
                log_line(&mut log, &format!("ack refund {key} {charge_id} {} {}", refund.id, refund.credits_balance));
            }
            1 => {
                // A hold of one operation, captured: two keyed ledger entries.
                log_line(&mut log, &format!("attempt reserve {key} {user}"));
                let hold = billing.reserve(user, &BTreeMap::new(), Some("generation"), &key, 600).unwrap();
                assert!(!hold.replayed);
                log_line(&mut log, &format!("ack reserve {key} {user} {} -", hold.placed_entry_id));
                let capture_key = format!("{key}-capture");
                log_line(&mut log, &format!("attempt capture {capture_key} {}", hold.id));
                let captured = billing.capture(&hold.id, None, &UsageLabels::default(), &capture_key).unwrap();
                let entry = captured.settled_entry_id.unwrap();
                log_line(&mut log, &format!("ack capture {capture_key} {} {entry} -", hold.id));
            }
            9 => {
                log_line(&mut log, &format!("attempt usage {key} {user}"));
                let record = billing.track_usage(user, &usage_event(), &key).unwrap();
                assert!(!record.replayed);
                log_line(&mut log, &format!("ack usage {key} {user} {} -", record.id));
            }
            5 => {
                log_line(&mut log, &format!("attempt grant {key} {user}"));
                let entry = billing.grant_credits(user, dec("5"), &key, "crash test").unwrap();
                log_line(&mut log, &format!("ack grant {key} {user} {} {}", entry.id, entry.credits_balance_after));
            }
            _ => {
                log_line(&mut log, &format!("attempt charge {key} {user}"));
                let charge = billing.charge(user, "generation", &key, None).unwrap();
                assert!(!charge.replayed);
                log_line(&mut log, &format!("ack charge {key} {user} {} {}", charge.id, charge.credits_balance));
                charged.push(charge.id);
            }
        }
    }
}

/// Opens `location` in a child process and kills it after `delay`: a server that dies
/// while it creates or upgrades the schema.
fn open_and_kill(location: &str, delay: Duration) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "open_worker_process", "--include-ignored", "--nocapture", "--test-threads=1"])
        .env(OPEN_ENV, location)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
}

const OPEN_ENV: &str = "BILLING_CRASH_OPEN";

/// The database opens, is at the current schema, and works: a user, a charge, an audit.
fn assert_opens_and_works(location: &str) {
    let billing = Billing::open(location, common::catalog()).unwrap();
    billing.register_user("after-crash", true).unwrap();
    assert!(!billing.charge("after-crash", "generation", "k", None).unwrap().replayed);
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
}

/// A kill at any moment of the first open of a new database leaves one that the next
/// open finishes: the schema is created in one transaction, or not at all.
#[test]
fn a_server_killed_while_it_creates_the_schema_leaves_a_database_the_next_one_opens() {
    for attempt in 0..25u64 {
        let db = TestDb::shared();
        // From before the process has started to after it has surely finished.
        open_and_kill(&db.location, Duration::from_millis(attempt * 3));
        assert_opens_and_works(&db.location);
    }
}

/// Run by the crash tests in child processes: opens a database, and waits to be killed.
#[test]
#[ignore = "a worker process of the crash tests, not a test of its own"]
fn open_worker_process() {
    let Ok(location) = std::env::var(OPEN_ENV) else { return };
    let _billing = Billing::open(&location, common::catalog()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// A SQLite file written by the engine at schema version 1 (its first release): three
/// users with charges, a refund, a grant and a subscription.
const SCHEMA_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/schema-v1.sqlite3");

/// A copy of the version 1 file, and its balances as version 1 stored them.
fn old_file() -> (tempfile::TempDir, String, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    std::fs::copy(SCHEMA_V1, &path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), 1);
    let mut stmt = conn.prepare("SELECT user_id, credits FROM accounts ORDER BY user_id").unwrap();
    let balances = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    (dir, path.to_str().unwrap().to_owned(), balances)
}

fn assert_upgraded_with(path: &str, balances: &[(String, String)]) {
    assert_opens_and_works(path);
    let billing = Billing::open(path, common::catalog()).unwrap();
    for (user, credits) in balances {
        assert_eq!(billing.state(user).unwrap().credits, dec(credits), "{user}");
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    assert_eq!(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)).unwrap(), NEWEST_SCHEMA);
}

/// The SQLite schema's newest version (`store::schema`): 8 since the overview's records.
const NEWEST_SCHEMA: i64 = 8;

#[test]
fn a_file_of_the_first_schema_upgrades_with_its_ledger_and_balances_intact() {
    let (_dir, path, balances) = old_file();
    assert_eq!(balances.len(), 3);
    assert_upgraded_with(&path, &balances);
}

/// A kill at any moment of an upgrade leaves the old version or the new one, never a
/// half-upgraded file: each upgrade runs in the write transaction that opens the file.
#[test]
fn a_server_killed_while_it_upgrades_an_older_file_leaves_one_the_next_one_upgrades() {
    for attempt in 0..25u64 {
        let (_dir, path, balances) = old_file();
        open_and_kill(&path, Duration::from_millis(attempt * 3));
        assert_upgraded_with(&path, &balances);
    }
}
