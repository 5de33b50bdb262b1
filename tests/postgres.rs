//! The PostgreSQL store's own guarantees, beyond the conformance suite that every store
//! passes: the schema's append-only ledger and user-led keys, migration by many servers
//! at once, the per-user lock (its timeout, and that other users do not wait), a write
//! run again after a deadlock, TLS, the copy from SQLite, and errors that carry no
//! credentials. Runs against the server at `BILLING_TEST_POSTGRES`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use billing_engine::store::{PostgresOptions, PostgresStore, Store};
use billing_engine::{Billing, BillingError, Catalog, HoldStatus, SavedMethod, UsageRequest};
use common::{dec, TestDb};

fn catalog_waiting(lock_timeout_ms: u64) -> Catalog {
    let text = std::fs::read_to_string(common::tariffs_path()).unwrap();
    Catalog::from_toml(&text.replace("lock_timeout_ms = 30000", &format!("lock_timeout_ms = {lock_timeout_ms}")))
        .unwrap()
}

#[test]
fn the_ledger_refuses_update_delete_and_truncate_and_an_insert_cannot_overwrite() {
    let db = TestDb::postgres();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    billing.register_user("u", true).unwrap();
    let charge = billing.charge("u", "generation", "k", None).unwrap();
    let before = db.rows("ledger", "id");
    for sql in [
        "UPDATE ledger SET credits_delta = 5",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "INSERT INTO ledger (user_id, kind, credits_delta, credits_balance_after, ops_delta, idempotency_key, created_at) \
         VALUES ('u', 'grant', 1, 1, 0, 'k', 0) ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
         DO UPDATE SET credits_delta = 1",
    ] {
        let refusal = db.try_execute(sql).unwrap_err();
        assert!(refusal.contains("append-only"), "{sql}: {refusal}");
    }
    let duplicate = "INSERT INTO ledger (user_id, kind, credits_delta, credits_balance_after, ops_delta, \
                     idempotency_key, created_at) VALUES ('u', 'grant', 1, 1, 0, 'k', 0)";
    assert!(db.try_execute(duplicate).unwrap_err().contains("ledger_by_key"));
    let explicit_id = format!(
        "INSERT INTO ledger (id, user_id, kind, credits_delta, credits_balance_after, ops_delta, created_at) \
         VALUES ({}, 'u', 'grant', 1, 1, 0, 0)",
        charge.id
    );
    assert!(db.try_execute(&explicit_id).is_err(), "ids are the database's to give");
    assert_eq!(db.rows("ledger", "id"), before);
}

#[test]
fn every_table_of_user_data_leads_its_keys_with_user_id() {
    let db = TestDb::postgres();
    drop(Billing::open(&db.location, common::catalog()).unwrap());
    // The first column of every primary key and unique index, as a sharded
    // PostgreSQL (Citus) needs to place a user's rows together. The schema version, the
    // event consumers' cursors, the crypto references and the chain heads are no user's
    // data (reference tables in Citus).
    let sql = "SELECT t.relname, a.attname FROM pg_index i \
               JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] \
               WHERE n.nspname = current_schema() AND (i.indisprimary OR i.indisunique) \
               AND t.relname NOT IN ('billing_schema', 'event_consumers', 'crypto_references', 'chain_heads')";
    let keys: Vec<(String, String)> =
        db.client().query(sql, &[]).unwrap().iter().map(|row| (row.get(0), row.get(1))).collect();
    let tables: std::collections::BTreeSet<&str> = keys.iter().map(|(table, _)| table.as_str()).collect();
    assert_eq!(
        tables.into_iter().collect::<Vec<_>>(),
        [
            "accounts",
            "audit_log",
            "credit_lots",
            "crypto_observations",
            "customer_contacts",
            "events",
            "holds",
            "ledger",
            "lot_allocations",
            "money_movements",
            "payment_methods",
            "payments",
            "purchased_periods",
            "usage_counters",
            "usage_events",
            "user_locks"
        ]
    );
    for (table, column) in &keys {
        assert_eq!(column, "user_id", "a key of `{table}` leads with `{column}`");
    }
}

#[test]
fn servers_that_open_a_new_database_at_once_migrate_it_once_and_a_newer_schema_is_refused() {
    let db = TestDb::postgres();
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..6).map(|_| scope.spawn(|| Billing::open(&db.location, common::catalog()).map(drop))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(opened.iter().all(Result::is_ok), "{opened:?}");
    assert_eq!(db.rows("billing_schema", "version"), ["(6)"], "the newest version, written once");
    db.execute("UPDATE billing_schema SET version = 99");
    let err = Billing::open(&db.location, common::catalog()).map(drop).unwrap_err();
    assert_eq!(err.code(), "STORAGE_ERROR");
    assert!(err.to_string().contains("newer than this engine"), "{err}");
}

/// Holds `user`'s row lock from another connection until the returned client's
/// transaction ends.
fn hold_user_lock(db: &TestDb, user: &str) -> postgres::Client {
    let mut holder = db.client();
    holder.batch_execute("BEGIN").unwrap();
    let locked = holder.query("SELECT 1 FROM user_locks WHERE user_id = $1 FOR UPDATE", &[&user]).unwrap();
    assert_eq!(locked.len(), 1);
    holder
}

#[test]
fn a_user_locked_past_the_timeout_is_busy_with_the_wait_and_other_users_do_not_wait() {
    let db = TestDb::postgres();
    let billing = Billing::open(&db.location, catalog_waiting(300)).unwrap();
    for user in ["held", "free"] {
        billing.import_user(user, dec("10"), u32::MAX, None).unwrap();
    }
    let before = db.rows("ledger", "id");
    let mut holder = hold_user_lock(&db, "held");

    let started = Instant::now();
    let err = billing.charge("held", "generation", "k", None).unwrap_err();
    let elapsed = started.elapsed();
    let BillingError::Busy { waited_ms } = err else { panic!("expected BUSY, got {err}") };
    assert!((300..1500).contains(&waited_ms) && elapsed < Duration::from_millis(1500), "{waited_ms} ms");
    assert_eq!(db.rows("ledger", "id"), before, "nothing was written");

    // Another user's write does not queue behind the held lock (it would be BUSY).
    billing.charge("free", "generation", "k", None).unwrap();

    holder.batch_execute("ROLLBACK").unwrap();
    assert!(!billing.charge("held", "generation", "k", None).unwrap().replayed);
    assert!(billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_lock_released_within_the_timeout_is_waited_for_not_an_error() {
    let db = TestDb::postgres();
    let billing = Billing::open(&db.location, catalog_waiting(5000)).unwrap();
    billing.import_user("u", dec("10"), u32::MAX, None).unwrap();
    let mut holder = hold_user_lock(&db, "u");
    std::thread::scope(|scope| {
        let charging = scope.spawn(|| billing.charge("u", "generation", "k", None));
        std::thread::sleep(Duration::from_millis(400));
        assert!(!charging.is_finished(), "the charge waits for the lock");
        holder.batch_execute("COMMIT").unwrap();
        assert_eq!(charging.join().unwrap().unwrap().credits_balance, dec("8"));
    });
}

#[test]
fn errors_opening_a_database_name_no_credentials() {
    let refused = Billing::open("postgresql://billing:s3cret-pw@127.0.0.1:1/billing", common::catalog()).map(drop);
    let err = refused.unwrap_err();
    assert_eq!(err.code(), "STORAGE_ERROR");
    let malformed = Billing::open("postgresql://billing:s3cret-pw@127.0.0.1:port/db", common::catalog()).map(drop);
    let bad_pool =
        Billing::open("postgresql://billing:s3cret-pw@127.0.0.1/db?pool_size=0", common::catalog()).map(drop);
    for err in [err, malformed.unwrap_err(), bad_pool.unwrap_err()] {
        let shown = format!("{err} {err:?} {:?}", err.details());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}

/// The migration command: a SQLite file with every kind of row (charges and a refund of
/// one, keys, a subscription) copied into PostgreSQL proves itself there, replays its
/// keys, and a second run copies nothing twice.
#[test]
fn copy_to_postgres_carries_a_sqlite_file_over_with_its_ids_keys_and_balances() {
    let file = TestDb::on_file();
    let source = Billing::open(&file.location, common::catalog()).unwrap();
    source.register_user("a", true).unwrap();
    let charge = source.charge("a", "generation", "gen-1", Some(serde_json::json!({"chat": 7}))).unwrap();
    source.refund_charge(charge.id, "refund-1", Some("model timeout")).unwrap();
    source.import_user("b", dec("12.5"), 2, None).unwrap();
    source.activate_subscription("b", "basic", "paid-outside").unwrap();
    source.charge("b", "generation", "gen-2", None).unwrap();
    // Metered usage comes along: events with their keys, counters and an open hold.
    let batch = [UsageRequest::new("tokens_input", 300), UsageRequest::new("requests", 1)];
    let tracked = source.track_usage_batch("a", &batch, "usage-1").unwrap();
    let hold = source.reserve("a", &BTreeMap::from([("tokens_input".to_owned(), 200)]), None, "hold-1", 600).unwrap();
    let states = |billing: &Billing| ["a", "b"].map(|user| billing.state(user).unwrap());
    let ledgers = |billing: &Billing| ["a", "b"].map(|user| billing.ledger(user, 100, None).unwrap());
    let events = |billing: &Billing| ["a", "b"].map(|user| billing.user_events(user, 0, 100).unwrap());
    let audit_log = |billing: &Billing| billing.audit_log(&Default::default(), 100, None).unwrap();
    let (before, entries) = (states(&source), ledgers(&source));
    let (outbox, audit) = (events(&source), audit_log(&source));
    let at = time::OffsetDateTime::now_utc();
    let overview = |billing: &Billing| billing.overview(Some(at), 30).unwrap();
    let counted = overview(&source);
    assert_eq!(counted.active_subscriptions, 1);
    assert_eq!(audit.len(), 3, "the catalog opened with, the import and the activation");
    drop(source);

    let target = TestDb::postgres();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_billing-engine"))
            .args(["copy-to-postgres", &file.location, &target.location, "--tariffs"])
            .arg(common::tariffs_path())
            .output()
            .unwrap()
    };
    let first = run();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(
        stdout.contains(
            "copied 2 users (8 ledger entries, 0 payments, 2 usage events, 1 overview rows) and 3 audit records"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("ok = true"), "{stdout}");

    let copied = Billing::open(&target.location, common::catalog()).unwrap();
    assert_eq!(states(&copied), before);
    assert_eq!(ledgers(&copied), entries, "the same entries, ids and all");
    assert_eq!((events(&copied), audit_log(&copied)), (outbox, audit), "the outbox and the audit log came along");
    assert_eq!(overview(&copied), counted, "b's period, activated by hand, counts there too");
    let replay = copied.charge("a", "generation", "gen-1", Some(serde_json::json!({"chat": 7}))).unwrap();
    assert!(replay.replayed && replay.id == charge.id, "a key replays after the move");
    let conflict = copied.charge("a", "generation", "gen-1", None).unwrap_err();
    assert_eq!(conflict.code(), "IDEMPOTENCY_CONFLICT", "the request fingerprint came along");
    let usage = copied.usage("a", "tokens_input").unwrap();
    assert_eq!((usage.used, usage.held), (300, 200), "counters and the open hold came along");
    let replayed = copied.track_usage_batch("a", &batch, "usage-1").unwrap();
    assert_eq!(
        replayed.iter().map(|r| (r.id, r.replayed)).collect::<Vec<_>>(),
        [(tracked[0].id, true), (tracked[1].id, true)]
    );
    let released = copied.release(&hold.id, "release-1").unwrap();
    assert_eq!((released.status, copied.usage("a", "tokens_input").unwrap().held), (HoldStatus::Released, 0));
    let later = copied.track_usage("a", &UsageRequest::new("requests", 1), "usage-2").unwrap();
    assert!(later.id > tracked[1].id, "new usage ids follow the copied ones");
    let next = copied.charge("a", "generation", "gen-3", None).unwrap();
    assert!(next.id > entries.iter().flatten().map(|e| e.id).max().unwrap(), "new ids follow the copied ones");

    let again = run();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success()
            && stdout.contains("copied 0 users")
            && stdout.contains("0 audit records; 2 users already there"),
        "{stdout}"
    );
    assert!(copied.verify_integrity().unwrap().ok);
}

/// `sslmode=require` speaks TLS and verifies the server: the server lets the role
/// `tls_only` in over TLS only, and its certificate is signed by the test CA
/// (`BILLING_TEST_POSTGRES_CA`), which is none of the web's public roots.
#[test]
fn sslmode_require_connects_over_tls_to_a_server_whose_certificate_it_trusts() {
    let ca = std::env::var("BILLING_TEST_POSTGRES_CA").expect("the TLS test needs BILLING_TEST_POSTGRES_CA");
    let db = TestDb::postgres();
    let tls_only = db.location.replacen("postgresql://billing@", "postgresql://tls_only@", 1);
    let open = |url: &str| Billing::open(url, common::catalog()).map(drop);

    assert_eq!(open(&tls_only).unwrap_err().code(), "STORAGE_ERROR", "plain TCP is refused for this role");
    let untrusted = open(&format!("{tls_only}&sslmode=require")).unwrap_err();
    assert_eq!(untrusted.code(), "STORAGE_ERROR", "the public roots do not vouch for the test CA");
    let missing = open(&format!("{tls_only}&sslmode=require&sslrootcert=/nonexistent.pem")).unwrap_err();
    assert_eq!((missing.code(), missing.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("location")));

    let billing = Billing::open(format!("{tls_only}&sslmode=require&sslrootcert={ca}"), common::catalog()).unwrap();
    billing.register_user("t", true).unwrap();
    assert!(!billing.charge("t", "generation", "k", None).unwrap().replayed);
    assert!(billing.verify_integrity().unwrap().ok);
}

/// A write the server aborts to break a deadlock (40P01) rolls back and runs again, and
/// the second run succeeds. The deadlock: another connection inserts the user's card row
/// and then waits for the user's lock, which the engine's write holds while it waits to
/// write that card row. The engine's write waited first, so the server aborts it.
#[test]
fn a_write_aborted_to_break_a_deadlock_runs_again_and_succeeds() {
    let db = TestDb::postgres();
    let store = PostgresStore::open(&db.location, PostgresOptions::default()).unwrap();
    store.write("u", |_| Ok(())).unwrap(); // the user's lock row exists from here on
    let card = SavedMethod {
        method_id: "pm-1".into(),
        method_type: "bank_card".into(),
        title: Some("Bank card *4444".into()),
        card_type: Some("Mir".into()),
        last4: Some("4444".into()),
        first6: None,
        expiry_month: None,
        expiry_year: None,
        saved_at: None,
    };
    let (inserted, card_row_taken) = std::sync::mpsc::channel();
    // Behind a mutex: a store's closure is `Send`, and a receiver is not shareable.
    let card_row_taken = std::sync::Mutex::new(card_row_taken);
    let mut runs = 0;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut other = db.client();
            other
                .batch_execute("BEGIN; INSERT INTO payment_methods (user_id, card, saved_at) VALUES ('u', '{}', 0)")
                .unwrap();
            inserted.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            // Waits for the engine's write, which waits for this insert.
            let _ = other.batch_execute("SELECT 1 FROM user_locks WHERE user_id = 'u' FOR UPDATE");
            other.batch_execute("ROLLBACK").unwrap();
        });
        store
            .write("u", |tx| {
                runs += 1;
                if runs == 1 {
                    card_row_taken.lock().unwrap().recv().unwrap();
                }
                Ok(tx.save_method("u", &card, time::OffsetDateTime::now_utc())?)
            })
            .unwrap();
    });
    assert_eq!(runs, 2, "aborted once, then run again");
    assert_eq!(store.read(|tx| Ok(tx.saved_method("u")?)).unwrap(), Some(card));
}

/// A URL for `db` whose connections the server lists under `name`.
fn named(db: &TestDb, name: &str) -> String {
    format!("{}&application_name={name}", db.location)
}

/// Ends the server side of every connection named `name`, as a restart or an
/// administrator would; how many it ended.
fn terminate(db: &TestDb, name: &str, only_waiting: bool) -> usize {
    let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
               WHERE application_name = $1 AND (NOT $2 OR wait_event_type = 'Lock')";
    db.client().query(sql, &[&name, &only_waiting]).unwrap().len()
}

/// A commit the server refuses (here a deferred constraint trigger that fails at
/// COMMIT) is a clean STORAGE_ERROR, and nothing of the write remains.
#[test]
fn a_commit_the_server_refuses_is_a_storage_error_and_leaves_nothing() {
    let db = TestDb::postgres();
    let billing = Billing::open(&db.location, common::catalog()).unwrap();
    billing.import_user("u", dec("100"), u32::MAX, None).unwrap();
    db.execute(
        "CREATE FUNCTION refuse_assistant() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.operation = 'assistant' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON ledger DEFERRABLE INITIALLY DEFERRED
         FOR EACH ROW EXECUTE FUNCTION refuse_assistant();",
    );
    let before = (db.rows("ledger", "id"), db.rows("accounts", "user_id"));
    let err = billing.charge("u", "assistant", "k", None).unwrap_err();
    assert_eq!(err.code(), "STORAGE_ERROR", "{err}");
    assert!(!err.to_string().contains("refused at commit"), "no server text: {err}");
    assert_eq!((db.rows("ledger", "id"), db.rows("accounts", "user_id")), before);
    assert!(!billing.charge("u", "generation", "k2", None).unwrap().replayed, "the store goes on");
    assert!(billing.verify_integrity().unwrap().ok);
}

/// A connection that drops in the middle of a write (its backend terminated while the
/// write waits for the user's lock): the server rolled it back, so the write runs again
/// on a fresh connection and is applied once.
#[test]
fn a_write_whose_connection_drops_midway_runs_again_on_a_fresh_one() {
    let db = TestDb::postgres();
    let name = format!("drop_{}", std::process::id());
    let billing = Billing::open(named(&db, &name), catalog_waiting(10_000)).unwrap();
    billing.import_user("u", dec("100"), u32::MAX, None).unwrap();
    let mut holder = hold_user_lock(&db, "u");
    std::thread::scope(|scope| {
        let charging = scope.spawn(|| billing.charge("u", "generation", "k", None));
        let deadline = Instant::now() + Duration::from_secs(5);
        while terminate(&db, &name, true) == 0 {
            assert!(Instant::now() < deadline, "the write never waited for the lock");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        holder.batch_execute("COMMIT").unwrap();
        let charge = charging.join().unwrap().unwrap();
        assert_eq!(charge.credits_balance, dec("98"));
    });
    let charges: Vec<_> =
        billing.ledger("u", 10, None).unwrap().into_iter().filter(|e| e.operation.is_some()).collect();
    assert_eq!(charges.len(), 1, "applied once");
    assert!(billing.verify_integrity().unwrap().ok);
}

/// Every pooled connection ended at once, as a server restart ends them: the next calls
/// go on, each on a fresh connection, without an error.
#[test]
fn calls_go_on_after_every_pooled_connection_is_ended() {
    let db = TestDb::postgres();
    let name = format!("restart_{}", std::process::id());
    let billing = Billing::open(format!("{}&pool_size=4", named(&db, &name)), common::catalog()).unwrap();
    billing.import_user("u", dec("100"), u32::MAX, None).unwrap();
    // Four connections in the pool.
    std::thread::scope(|scope| {
        for t in 0..4 {
            let billing = &billing;
            scope.spawn(move || billing.charge("u", "generation", &format!("before-{t}"), None).unwrap());
        }
    });
    assert!(terminate(&db, &name, false) >= 1);
    for n in 0..8 {
        billing.charge("u", "generation", &format!("after-{n}"), None).unwrap();
        billing.state("u").unwrap();
    }
    assert_eq!(billing.state("u").unwrap().credits, dec("76"));
    assert!(billing.verify_integrity().unwrap().ok);
}

/// A crypto payment moved mid-way (a transfer seen, not yet confirmed) completes on
/// PostgreSQL: its transfers, its reference and the chain's head come along, so the
/// worker credits it there and a new checkout cannot take its reference. The overview's
/// record comes along too: a plan bought and paid before the move counts the same there,
/// and its money movement keeps its id.
#[test]
fn copy_to_postgres_carries_crypto_payments_their_transfers_references_and_the_overview() {
    use billing_engine::alchemy::AlchemyNotify;
    use billing_engine::store::SqliteStore;
    use common::indexer::{FakeIndexer, SIGNING_KEY};
    use std::sync::Arc;

    let indexer = FakeIndexer::start();
    let with_crypto =
        |billing: Billing| billing.with_crypto(Arc::new(AlchemyNotify::new(SIGNING_KEY).unwrap())).unwrap();
    let file = TestDb::on_file();
    let source = with_crypto(Billing::open(&file.location, common::catalog()).unwrap());
    source.register_user("a", true).unwrap();
    source.register_user("b", true).unwrap();
    let plan = source.create_crypto_payment("b", billing_engine::Purchase::Plan("basic"), 1, "k").unwrap();
    let paid = indexer.pay(&plan.amount);
    source.handle_crypto_webhook(&paid.notification.body, &paid.notification.headers).unwrap();
    indexer.mine(11);
    source.reconcile_crypto(&|chain, tx| indexer.receipt(chain, tx)).unwrap();
    let checkout = source.create_crypto_payment("a", billing_engine::Purchase::Package("credits_20"), 1, "k").unwrap();
    let mined = indexer.pay(&checkout.amount);
    source.handle_crypto_webhook(&mined.notification.body, &mined.notification.headers).unwrap();
    let at = time::OffsetDateTime::now_utc();
    let overview = |billing: &Billing| billing.overview(Some(at), 30).unwrap();
    let transactions = |billing: &Billing| billing.transactions(&Default::default(), 100, None).unwrap();
    let (counted, moved) = (overview(&source), transactions(&source));
    assert_eq!((counted.active_subscriptions, moved.len()), (1, 1), "b's plan is in force and paid");
    drop(source);

    let target = TestDb::postgres();
    let store = PostgresStore::open(&target.location, PostgresOptions::default()).unwrap();
    let report = store.copy_from(&SqliteStore::open(&file.location, Default::default()).unwrap()).unwrap();
    assert_eq!(report.overview_rows, 2, "b's period and its payment");
    let copied = with_crypto(Billing::open(&target.location, common::catalog()).unwrap());
    assert_eq!((overview(&copied), transactions(&copied)), (counted, moved.clone()), "the same numbers there");
    assert_eq!(copied.crypto_transfers(&checkout.payment_id).unwrap().len(), 1);
    indexer.mine(11);
    let report = copied.reconcile_crypto(&|chain, tx| indexer.receipt(chain, tx)).unwrap();
    assert_eq!((report.checked, report.errors), (2, 0), "a's open payment and b's recent one");
    assert_eq!(copied.state("a").unwrap().credits, dec("30"));
    let after = transactions(&copied);
    assert!(after.len() == 2 && after[0].id > moved[0].id, "new movements follow the copied ones: {after:?}");
    let held = store.read(|tx| Ok(tx.all_references()?)).unwrap();
    assert_eq!(held.len(), 2, "both references came along: {held:?}");
    assert!(held.iter().any(|r| r.reference == checkout.reference));
    assert!(copied.verify_integrity().unwrap().ok);
}
