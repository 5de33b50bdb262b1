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

/// A charge refunded by 4 threads under 4 keys while 4 more replay the charge itself,
/// each thread with its own handle: one refund entry, which every refund call returns,
/// and every replay is the charge.
///
/// Mutations tried: SQLite's `BEGIN IMMEDIATE` made `BEGIN DEFERRED`, and PostgreSQL's
/// lock statement without `FOR UPDATE`. Either way two refunds decide at once, and the
/// second write is refused by the one-refund key: a refund call fails (STORAGE_ERROR,
/// SQLite also BUSY on the upgraded lock) instead of returning the first refund.
#[test]
fn a_charge_refunded_by_four_threads_while_four_replay_it_is_refunded_once() {
    let db = TestDb::shared();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    prepare(&billing);
    let charge = billing.charge(USER, "generation", "the-charge", None).unwrap();
    let outcomes = on_own_handles(&db.location, 8, move |billing, i| {
        if i % 2 == 0 {
            let refund = billing.refund_charge(charge.id, &format!("refund-{i}"), None).unwrap();
            (refund.id, refund.replayed)
        } else {
            let replay = billing.charge(USER, "generation", "the-charge", None).unwrap();
            assert_eq!((replay.id, replay.credits_balance), (charge.id, charge.credits_balance));
            (replay.id, replay.replayed)
        }
    });
    let refunds: Vec<_> = outcomes.iter().filter(|(id, _)| *id != charge.id).collect();
    assert_eq!(refunds.len(), 4);
    assert!(refunds.iter().all(|(id, _)| *id == refunds[0].0), "one refund entry: {refunds:?}");
    assert_eq!(refunds.iter().filter(|(_, replayed)| !replayed).count(), 1, "written once, then returned");
    assert_eq!(billing.state(USER).unwrap().credits, rust_decimal::Decimal::from(K * GENERATION_COST));
    assert!(billing.verify_integrity().unwrap().ok);
}

/// Grants and charges of one user at once, each thread with its own handle: no update
/// is lost. Each grant gives exactly
/// one charge's cost; every charge either takes it or is NOT_ENOUGH_CREDITS, and the
/// balance is the grants less the charges, as the ledger proves.
///
/// Mutations tried: SQLite's `BEGIN DEFERRED`, PostgreSQL without `FOR UPDATE`. A charge
/// and a grant then both start from the same balance and one overwrites the other: the
/// balance and the ledger disagree, or a write fails.
#[test]
fn grants_and_charges_of_one_user_at_once_lose_no_update() {
    let db = TestDb::shared();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    billing.import_user(USER, rust_decimal::Decimal::ZERO, u32::MAX, None).unwrap();
    let grants = 8;
    let outcomes = on_own_handles(&db.location, 24, |billing, i| {
        if i % 3 == 0 {
            let cost = rust_decimal::Decimal::from(GENERATION_COST);
            billing.grant_credits(USER, cost, &format!("grant-{i}"), "race").map(|_| "granted")
        } else {
            match billing.charge(USER, "generation", &format!("charge-{i}"), None) {
                Ok(_) => Ok("charged"),
                Err(BillingError::NotEnoughCredits { .. }) => Ok("refused"),
                Err(other) => Err(other),
            }
        }
    });
    let count = |what: &str| outcomes.iter().filter(|o| o.as_ref().ok() == Some(&what)).count() as u32;
    assert_eq!(count("granted"), grants, "{outcomes:?}");
    assert_eq!(count("charged") + count("refused"), 16, "{outcomes:?}");
    let left = (grants - count("charged")) * GENERATION_COST;
    assert_eq!(billing.state(USER).unwrap().credits, rust_decimal::Decimal::from(left));
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
}

/// Eight activations of a plan at once, under eight keys, each with its own handle: one
/// subscription, one
/// `subscription_activated` entry; every other call is ACTIVE_SUBSCRIPTION.
///
/// Mutations tried: SQLite's `BEGIN DEFERRED`, PostgreSQL without `FOR UPDATE`: several
/// activations see no subscription and each writes one.
#[test]
fn a_plan_activated_by_eight_threads_at_once_starts_one_subscription() {
    let db = TestDb::shared();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    billing.register_user(USER, false).unwrap();
    let outcomes = on_own_handles(&db.location, 8, |billing, i| {
        billing.activate_subscription(USER, "basic", &format!("paid-{i}")).map(drop).map_err(|e| e.code())
    });
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Ok(()) | Err("ACTIVE_SUBSCRIPTION"))), "{outcomes:?}");
    let activations = billing
        .ledger(USER, 100, None)
        .unwrap()
        .iter()
        .filter(|e| e.kind == billing_engine::EntryKind::SubscriptionActivated)
        .count();
    assert_eq!(activations, 1);
    assert!(billing.verify_integrity().unwrap().ok);
}
