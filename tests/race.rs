//! No interleaving spends a credit twice: a user has credits for exactly K charges and
//! many more attempts race for them, from threads sharing one `Billing`, from handles of
//! their own, and from OS processes (on PostgreSQL: two or more app servers, each with
//! its own pool) sharing one database. Exactly K succeed, every other attempt is
//! NOT_ENOUGH_CREDITS, the balance ends at 0 and the ledger proves it.
//!
//! The attempts start together (a barrier, or a shared start instant) so that they meet
//! inside the read-decide-write window. With the store's locking removed these tests
//! fail: SQLite's `BEGIN IMMEDIATE` made `BEGIN DEFERRED` (the closing note of issue 2),
//! and PostgreSQL's per-user `SELECT … FOR UPDATE` taken out (the note of issue 12).

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use billing_engine::{Billing, BillingError, ChargeSource};
use common::{dec, TestDb};

const K: u32 = 40;
const GENERATION_COST: u32 = 2;
const USER: &str = "racer";

/// A user who can pay exactly K generations, all from credits.
fn prepare(billing: &Billing) {
    let credits = rust_decimal::Decimal::from(K * GENERATION_COST);
    billing.import_user(USER, credits, u32::MAX, None).unwrap();
    assert_eq!(billing.quote(USER, "generation").unwrap().source, Some(ChargeSource::Credits));
}

/// Tries `attempts` charges; returns how many succeeded. Any refusal other than
/// NOT_ENOUGH_CREDITS fails the test.
fn charge_many(billing: &Billing, worker: &str, attempts: u32) -> u32 {
    let mut succeeded = 0;
    for i in 0..attempts {
        match billing.charge(USER, "generation", &format!("{worker}-{i}"), None) {
            Ok(charge) => {
                assert!(!charge.replayed);
                succeeded += 1;
            }
            Err(BillingError::NotEnoughCredits { .. }) => {}
            Err(other) => panic!("worker {worker}: unexpected error {other}"),
        }
    }
    succeeded
}

fn assert_spent_exactly_k(billing: &Billing, succeeded: u32) {
    assert_eq!(succeeded, K, "exactly K charges may succeed");
    assert_eq!(billing.state(USER).unwrap().credits, dec("0"));
    let charges = billing
        .ledger(USER, 1000, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == billing_engine::EntryKind::Charge)
        .count();
    assert_eq!(charges as u32, K);
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
}

/// Runs `work` on `threads` threads, each with its own handle on the database (its own
/// connections, no shared mutex), all released at once.
fn on_own_handles<T: Send + 'static>(
    location: &str,
    threads: usize,
    work: impl Fn(&Billing, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let (barrier, work) = (Arc::new(Barrier::new(threads)), Arc::new(work));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (location, barrier, work) = (location.to_owned(), barrier.clone(), work.clone());
            std::thread::spawn(move || {
                let billing = Billing::open(&location, common::catalog()).unwrap();
                barrier.wait();
                work(&billing, t)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn eight_threads_sharing_one_billing_spend_each_credit_once() {
    let db = TestDb::new();
    let billing = Arc::new(Billing::open(&db.location, common::catalog()).unwrap());
    prepare(&billing);
    let threads = 8;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (billing, barrier) = (billing.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                charge_many(&billing, &format!("t{t}"), K / 4)
            })
        })
        .collect();
    let succeeded = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_spent_exactly_k(&billing, succeeded);
}

#[test]
fn four_threads_each_with_its_own_handle_spend_each_credit_once() {
    // Separate handles have separate connections and no shared mutex: only the
    // database's lock keeps them apart, as between processes.
    let db = TestDb::shared();
    prepare(&Billing::open(&db.location, common::catalog()).unwrap());
    let succeeded =
        on_own_handles(&db.location, 4, |billing, t| charge_many(billing, &format!("h{t}"), K / 2)).into_iter().sum();
    assert_spent_exactly_k(&Billing::open(&db.location, common::catalog()).unwrap(), succeeded);
}

#[test]
fn one_key_sent_by_eight_threads_at_once_charges_once() {
    let db = TestDb::shared();
    prepare(&Billing::open(&db.location, common::catalog()).unwrap());
    let charges =
        on_own_handles(&db.location, 8, |billing, _| billing.charge(USER, "generation", "the-same-key", None).unwrap());
    assert_eq!(charges.iter().filter(|c| !c.replayed).count(), 1, "one original, seven replays");
    assert!(charges.iter().all(|c| c.id == charges[0].id && c.credits_balance == charges[0].credits_balance));
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    assert_eq!(billing.state(USER).unwrap().credits, rust_decimal::Decimal::from((K - 1) * GENERATION_COST));
    assert!(billing.verify_integrity().unwrap().ok);
}

const WORKER_ENV: &str = "BILLING_RACE_WORKER";

#[test]
fn four_processes_sharing_one_database_spend_each_credit_once() {
    let db = TestDb::shared();
    prepare(&Billing::open(&db.location, common::catalog()).unwrap());
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_millis(1500);
    let children: Vec<_> = (0..4)
        .map(|p| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "race_worker_process", "--include-ignored", "--nocapture", "--test-threads=1"])
                .env(WORKER_ENV, format!("{}|p{p}|{}|{}", db.location, K / 2, start_at.as_millis()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>();
    let mut succeeded = 0;
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "worker failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        let line = stdout.lines().find_map(|l| l.split("succeeded=").nth(1)).expect("worker reports its count");
        succeeded += line.trim().parse::<u32>().unwrap();
    }
    assert_spent_exactly_k(&Billing::open(&db.location, common::catalog()).unwrap(), succeeded);
}

const HAMMER_ENV: &str = "BILLING_HAMMER_WORKER";
const HAMMER_PROCESSES: usize = 16;
const HAMMER_THREADS: usize = 4;
const HAMMER_CHARGES: usize = 20;

/// 16 processes of 4 threads write to one database at once. At the default lock timeout none
/// of them ever sees BUSY or a storage error: a wait for the lock is not a failure, and
/// the time a thread queues behind its own process's writers counts toward the timeout.
#[test]
fn sixteen_processes_of_four_threads_never_see_a_busy_store_at_the_default_timeout() {
    let db = TestDb::shared();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    let without_setting = std::fs::read_to_string(common::tariffs_path()).unwrap().replace("lock_timeout_ms", "# ");
    let default = billing_engine::Catalog::from_toml(&without_setting).unwrap().lock_timeout;
    assert_eq!((billing.catalog().lock_timeout, default), (Duration::from_secs(30), Duration::from_secs(30)));
    for p in 0..HAMMER_PROCESSES {
        billing.import_user(&format!("p{p}"), rust_decimal::Decimal::from(1000), u32::MAX, None).unwrap();
    }
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_millis(2000);
    let children: Vec<_> = (0..HAMMER_PROCESSES)
        .map(|p| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "hammer_worker_process", "--include-ignored", "--nocapture", "--test-threads=1"])
                .env(HAMMER_ENV, format!("{}|p{p}|{}", db.location, start_at.as_millis()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "worker failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(stdout.contains(&format!("charged={}", HAMMER_THREADS * HAMMER_CHARGES)), "{stdout}");
    }
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
    // Each import wrote two entries (credits, free-tier use); every charge wrote one.
    assert_eq!(report.entries_checked as usize, HAMMER_PROCESSES * (2 + HAMMER_THREADS * HAMMER_CHARGES));
}

/// Run by the hammer test in child processes: 4 threads share this process's `Billing`.
#[test]
#[ignore = "a worker process of the hammer test, not a test of its own"]
fn hammer_worker_process() {
    let Ok(spec) = std::env::var(HAMMER_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (location, user, start_at) = (parts[0], parts[1].to_owned(), parts[2].parse::<u128>().unwrap());
    let billing = Arc::new(Billing::open(location, common::catalog()).unwrap());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    std::thread::sleep(Duration::from_millis(start_at.saturating_sub(now) as u64));
    let threads: Vec<_> = (0..HAMMER_THREADS)
        .map(|t| {
            let (billing, user) = (billing.clone(), user.clone());
            std::thread::spawn(move || {
                for i in 0..HAMMER_CHARGES {
                    billing.charge(&user, "generation", &format!("t{t}-{i}"), None).unwrap();
                }
                HAMMER_CHARGES
            })
        })
        .collect();
    let charged: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    println!("charged={charged}");
}

/// Run by `four_processes_sharing_one_database_spend_each_credit_once` in child processes.
#[test]
#[ignore = "a worker process of the multi-process race test, not a test of its own"]
fn race_worker_process() {
    let Ok(spec) = std::env::var(WORKER_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let (location, worker, attempts, start_at) =
        (parts[0], parts[1], parts[2].parse().unwrap(), parts[3].parse::<u128>().unwrap());
    let billing = Billing::open(location, common::catalog()).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    std::thread::sleep(Duration::from_millis(start_at.saturating_sub(now) as u64));
    println!("succeeded={}", charge_many(&billing, worker, attempts));
}
