//! Payments through YooKassa, against the fake YooKassa server of `common::yookassa`:
//! real HTTP through the real client, a real SQLite file.

mod common;

use std::sync::Barrier;
use std::thread;

use billing_engine::webhook::{sign, SIGNATURE_HEADER};
use billing_engine::{Billing, EntryKind, PaymentStatus, Purchase, WebhookStatus, YooKassaConfig};
use common::yookassa::{deliver, paying_fixture, FakeYooKassa, SECRET_KEY, YOOKASSA_ADDR};
use common::{dec, Fixture, TestDb};

const USER: &str = "u1";

fn setup() -> (FakeYooKassa, Fixture) {
    setup_with(TestDb::new(), |_| {})
}

/// On a database that a second handle can open: for tests that look at the tables or
/// run a second worker.
fn setup_shared() -> (FakeYooKassa, Fixture) {
    setup_with(TestDb::shared(), |_| {})
}

fn setup_with(db: TestDb, adjust: impl FnOnce(&mut YooKassaConfig)) -> (FakeYooKassa, Fixture) {
    paying_fixture(db, USER, adjust)
}

fn provider_id(f: &Fixture, payment_id: &str) -> String {
    f.billing.payment(payment_id).unwrap().provider_payment_id.unwrap()
}

/// Buys `purchase` and has the user pay; returns the engine's payment id.
fn buy_and_pay(fake: &FakeYooKassa, f: &Fixture, purchase: Purchase, save_method: bool, key: &str) -> String {
    common::yookassa::buy_and_pay(fake, f, USER, purchase, save_method, key)
}

#[test]
fn a_paid_plan_activates_the_subscription_once_its_notification_arrives() {
    let (fake, f) = setup();
    let created = f.billing.create_payment(USER, Purchase::Plan("standard"), None, false, "buy-1", None).unwrap();
    assert!(created.confirmation_url.starts_with("https://yoomoney.test/"), "{created:?}");
    let sent = fake.payment(&created.yookassa_payment_id);
    assert_eq!(sent["amount"], serde_json::json!({"value": "699.00", "currency": "RUB"}));
    assert_eq!(sent["metadata"]["payment_id"], created.payment_id.as_str());
    assert_eq!(f.billing.state(USER).unwrap().plan_code, "FREE", "nothing changes before the money arrives");

    let again = f.billing.create_payment(USER, Purchase::Plan("standard"), None, false, "buy-1", None).unwrap();
    assert_eq!(again, created, "the same key returns the same payment");
    let conflict = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy-1", None).unwrap_err();
    assert_eq!(conflict.code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(fake.payments_created(), 1);

    fake.pay(&created.yookassa_payment_id);
    let body = fake.notification("payment.succeeded", &created.yookassa_payment_id);
    let outcome = deliver(&f.billing, &body).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Applied);
    assert_eq!(outcome.event, "payment.succeeded");
    assert_eq!(outcome.payment_id.as_deref(), Some(created.payment_id.as_str()));
    assert_eq!(deliver(&f.billing, &body).unwrap().status, WebhookStatus::Duplicate);

    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active), ("standard", true));
    assert_eq!(state.subscription_ops_remaining, Some(100));
    let activation = &f.billing.ledger(USER, 1, None).unwrap()[0];
    assert_eq!(activation.kind, EntryKind::SubscriptionActivated);
    assert_eq!(activation.reference.as_deref(), Some(created.payment_id.as_str()));

    let history = f.billing.payments(USER, 10).unwrap().results;
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].status.as_str(), history[0].amount), ("succeeded", dec("699.00")));
    assert!(history[0].paid_at.is_some());

    let busy = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy-2", None).unwrap_err();
    assert_eq!(busy.code(), "ACTIVE_SUBSCRIPTION");
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_paid_package_grants_its_credits_and_a_refund_takes_them_back() {
    let (fake, f) = setup();
    let payment_id = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "pack-1");
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
    let purchase = &f.billing.ledger(USER, 1, None).unwrap()[0];
    assert_eq!((purchase.kind, purchase.credits_delta), (EntryKind::CreditPurchase, dec("20")));
    assert_eq!(purchase.reference.as_deref(), Some(payment_id.as_str()));

    // The user spends most of it; the refund may take the balance below zero.
    for i in 0..12 {
        f.billing.charge(USER, "generation", &format!("gen-{i}"), None).unwrap();
    }
    let before_refund = f.billing.state(USER).unwrap().credits;
    let refunded = f.billing.refund_payment(&payment_id, None, None).unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(f.billing.state(USER).unwrap().credits, before_refund - dec("20"));
    assert!(f.billing.state(USER).unwrap().credits < dec("0"));

    let refund_id = &fake.refund_ids()[0];
    let outcome = deliver(&f.billing, &fake.refund_notification(refund_id)).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Duplicate, "the refund was applied once, from the API's answer");
    assert_eq!(f.billing.state(USER).unwrap().credits, before_refund - dec("20"));
    assert_eq!(f.billing.payments(USER, 10).unwrap().results[0].status, "refunded");
    assert!(f.billing.verify_integrity().unwrap().ok);
}

const DELIVERY_ENV: &str = "BILLING_DELIVERY_WORKER";

/// One notification delivered by 16 threads in 4 processes (4 app servers, each with its
/// own handle): applied once, its credits granted once.
///
/// Mutations tried: PostgreSQL's lock statement without `FOR UPDATE`: several deliveries
/// see the payment pending and apply it. SQLite's `BEGIN IMMEDIATE` made `BEGIN
/// DEFERRED`: deliveries that read at once then fail to write (the read lock cannot be
/// upgraded), and a worker's delivery errs.
#[test]
fn the_same_notification_from_sixteen_threads_in_four_processes_is_applied_once() {
    let (fake, f) = setup_shared();
    let created = f.billing.create_payment(USER, Purchase::Package("credits_100"), None, false, "pack", None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let body_file =
        f.db.dir
            .as_ref()
            .map_or_else(std::env::temp_dir, |d| d.path().to_owned())
            .join(format!("notification-{}.json", created.payment_id));
    std::fs::write(&body_file, fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    let start_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 1500;
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "delivery_worker_process", "--include-ignored", "--nocapture", "--test-threads=1"])
                .env(DELIVERY_ENV, format!("{}|{}|{}|{start_at}", f.location(), fake.url(), body_file.display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        outcomes.extend(stdout.lines().filter_map(|line| line.split("outcome=").nth(1)).map(str::to_owned));
    }
    assert_eq!(outcomes.len(), 16);
    assert_eq!(outcomes.iter().filter(|o| *o == "applied").count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| o == "applied" || o == "duplicate"), "{outcomes:?}");
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("110"));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// Run by the four-process delivery test in child processes: 4 threads deliver at once.
#[test]
#[ignore = "a worker process of the delivery test, not a test of its own"]
fn delivery_worker_process() {
    let Ok(spec) = std::env::var(DELIVERY_ENV) else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let billing = Billing::open(parts[0], common::catalog()).unwrap();
    let billing = billing.with_yookassa(&common::yookassa::config_for(parts[1])).unwrap();
    let body = std::fs::read(parts[2]).unwrap();
    let start_at: u128 = parts[3].parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    std::thread::sleep(std::time::Duration::from_millis(start_at.saturating_sub(now) as u64));
    let barrier = Barrier::new(4);
    thread::scope(|s| {
        let running: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    deliver(&billing, &body).unwrap().status
                })
            })
            .collect();
        for status in running {
            println!("outcome={}", status.join().unwrap().as_str());
        }
    });
}

#[test]
fn the_same_notification_from_sixteen_threads_is_applied_once() {
    let (fake, f) = setup_shared();
    let created = f.billing.create_payment(USER, Purchase::Package("credits_100"), None, false, "pack", None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let body = fake.notification("payment.succeeded", &created.yookassa_payment_id);
    // Half share the fixture's handle, half open their own, as other workers would.
    let own: Vec<Billing> = (0..8).map(|_| f.reopen()).collect();
    let handles: Vec<&Billing> = own.iter().chain(std::iter::repeat_n(&f.billing, 8)).collect();
    let barrier = Barrier::new(handles.len());
    let outcomes: Vec<WebhookStatus> = thread::scope(|s| {
        let running: Vec<_> = handles
            .iter()
            .map(|billing| {
                s.spawn(|| {
                    barrier.wait();
                    deliver(billing, &body).unwrap().status
                })
            })
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied = outcomes.iter().filter(|s| **s == WebhookStatus::Applied).count();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|s| matches!(s, WebhookStatus::Applied | WebhookStatus::Duplicate)));
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("110"));
    let purchases =
        f.billing.ledger(USER, 50, None).unwrap().into_iter().filter(|e| e.kind == EntryKind::CreditPurchase);
    assert_eq!(purchases.count(), 1);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn forged_untrusted_unsigned_and_broken_notifications_change_nothing() {
    let (fake, f) = setup_with(TestDb::shared(), |config| config.webhook_secrets = vec!["whsec-1".into()]);
    let created = f.billing.create_payment(USER, Purchase::Package("credits_20"), None, false, "pack", None).unwrap();
    let pid = created.yookassa_payment_id;
    // The payment is still pending at YooKassa: a body claiming success is forged.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&fake.notification("payment.waiting_for_capture", &pid)).unwrap();
    forged["event"] = "payment.succeeded".into();
    forged["object"]["status"] = "succeeded".into();
    let forged = serde_json::to_vec(&forged).unwrap();
    let now = billing_engine::Clock::now(&*f.clock).unix_timestamp();
    let signed = |body: &[u8]| vec![(SIGNATURE_HEADER.to_owned(), sign("whsec-1", now, body))];

    let before = f.snapshot();
    type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        ("forged status", forged.clone(), Some(YOOKASSA_ADDR), signed(&forged)),
        ("untrusted sender", forged.clone(), Some("203.0.113.7"), signed(&forged)),
        ("no sender address", forged.clone(), None, signed(&forged)),
        (
            "bad signature",
            forged.clone(),
            Some(YOOKASSA_ADDR),
            vec![(SIGNATURE_HEADER.into(), sign("other", now, &forged))],
        ),
        ("no signature", forged.clone(), Some(YOOKASSA_ADDR), vec![]),
        ("truncated", forged[..forged.len() / 2].to_vec(), Some(YOOKASSA_ADDR), signed(&forged[..forged.len() / 2])),
        ("not JSON", b"<html>hello</html>".to_vec(), Some(YOOKASSA_ADDR), signed(b"<html>hello</html>")),
    ];
    for (case, body, addr, headers) in cases {
        let err = f.billing.handle_yookassa_webhook(&body, addr, &headers).unwrap_err();
        assert_eq!(err.code(), "INVALID_WEBHOOK", "{case}: {err}");
        assert!(!err.to_string().contains("whsec-1") && !err.to_string().contains(SECRET_KEY), "{case}: {err}");
    }
    assert_eq!(f.snapshot(), before, "a refused notification changes nothing");
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"));

    // The real one, signed, passes.
    fake.pay(&pid);
    let real = fake.notification("payment.succeeded", &pid);
    let outcome = f.billing.handle_yookassa_webhook(&real, Some(YOOKASSA_ADDR), &signed(&real)).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Applied);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
}

#[test]
fn late_and_out_of_order_notifications_never_undo_a_final_state() {
    // Without the re-read, only the order rule protects the payment.
    let (fake, f) = setup_with(TestDb::new(), |config| config.verify_by_fetch = false);
    let created = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy", None).unwrap();
    let pid = created.yookassa_payment_id;
    fake.pay(&pid);
    let succeeded = fake.notification("payment.succeeded", &pid);
    fake.set_status(&pid, "canceled");
    let canceled = fake.notification("payment.canceled", &pid);
    fake.set_status(&pid, "waiting_for_capture");
    let held = fake.notification("payment.waiting_for_capture", &pid);

    assert_eq!(deliver(&f.billing, &succeeded).unwrap().status, WebhookStatus::Applied);
    assert_eq!(deliver(&f.billing, &held).unwrap().status, WebhookStatus::Ignored);
    assert_eq!(deliver(&f.billing, &canceled).unwrap().status, WebhookStatus::Ignored);
    assert_eq!(f.billing.payment(&created.payment_id).unwrap().status, PaymentStatus::Succeeded);
    assert!(f.billing.state(USER).unwrap().is_active);

    let other = br#"{"type":"notification","event":"payout.succeeded","object":{"id":"po-1","status":"succeeded"}}"#;
    assert_eq!(deliver(&f.billing, other).unwrap().status, WebhookStatus::Ignored);
    let unknown = String::from_utf8(succeeded).unwrap().replace(&pid, "2f999999-000f-5000-9000-1b68e7b15f3f");
    let unknown = unknown.replace(&created.payment_id, "not-ours");
    let outcome = deliver(&f.billing, unknown.as_bytes()).unwrap();
    assert_eq!((outcome.status, outcome.payment_id), (WebhookStatus::Ignored, None), "another system's payment");
}

#[test]
fn a_provider_failure_is_payment_error_and_the_retry_with_the_same_key_pays_once() {
    let (fake, f) = setup();
    fake.fail_next_creates(3); // the first attempt and both of the client's retries
    let err = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy", None).unwrap_err();
    assert_eq!(err.code(), "PAYMENT_ERROR");
    assert_eq!(err.details()["retryable"], true);
    assert!(!err.to_string().contains(SECRET_KEY));
    assert_eq!(f.billing.payments(USER, 10).unwrap().results, vec![], "an unsent payment is not in the history");

    let created = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy", None).unwrap();
    assert_eq!(fake.payments_created(), 1, "YooKassa created the payment once, whatever the 500s said");
    let posts = fake.requests().iter().filter(|r| *r == "POST /payments").count();
    assert_eq!(posts, 4, "three failed attempts, then one that got the first result");
    assert_eq!(f.billing.payment(&created.payment_id).unwrap().status, PaymentStatus::Pending);

    // Wrong credentials: refused for good, and the secret is not in the error.
    let (_wrong_fake, wrong) = setup_with(TestDb::new(), |config| config.secret_key = "wrong-secret".into());
    let err = wrong.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy", None).unwrap_err();
    assert_eq!(err.details()["provider_code"], "invalid_credentials");
    assert_eq!(err.details()["retryable"], false);
    assert!(!format!("{err:?}").contains("wrong-secret"));
}

#[test]
fn card_binding_saves_the_card_and_gives_the_ruble_back() {
    let (fake, f) = setup();
    assert!(!f.billing.payment_method(USER).unwrap().is_attached);
    let created = f.billing.start_card_binding(USER, Some("https://app.example/card"), None).unwrap();
    let sent = fake.payment(&created.yookassa_payment_id);
    assert_eq!((sent["amount"]["value"].as_str(), sent["capture"].as_bool()), (Some("1.00"), Some(false)));

    fake.pay(&created.yookassa_payment_id); // held, not charged
    let outcome = deliver(&f.billing, &fake.notification("payment.waiting_for_capture", &created.yookassa_payment_id));
    assert_eq!(outcome.unwrap().status, WebhookStatus::Applied);
    let cancel = format!("POST /payments/{}/cancel", created.yookassa_payment_id);
    assert!(fake.requests().contains(&cancel), "the hold is released");
    assert_eq!(fake.payment(&created.yookassa_payment_id)["status"], "canceled");
    assert_eq!(f.billing.payment(&created.payment_id).unwrap().status, PaymentStatus::Canceled);

    let method = f.billing.payment_method(USER).unwrap();
    assert_eq!(
        (method.is_attached, method.card_mask.as_deref(), method.card_brand.as_deref()),
        (true, Some("•••• 4444"), Some("MasterCard"))
    );
    assert!(f.billing.subscription_details(USER).unwrap().card_bound);
    assert!(f.billing.payments(USER, 10).unwrap().results.is_empty(), "a binding buys nothing: not in the history");
    let late = deliver(&f.billing, &fake.notification("payment.canceled", &created.yookassa_payment_id)).unwrap();
    assert_eq!(late.status, WebhookStatus::Duplicate);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"), "binding buys nothing");
}

/// A user on `basic` with a saved card and autorenew on, 12 hours before the period ends.
fn subscribed_with_autorenew(fake: &FakeYooKassa, f: &Fixture) {
    buy_and_pay(fake, f, Purchase::Plan("basic"), true, "buy");
    assert!(f.billing.payment_method(USER).unwrap().is_attached, "the card was saved with the purchase");
    assert!(f.billing.set_autorenew(USER, true).unwrap().autorenew_enabled);
    f.advance_days(29);
    f.advance_hours(12);
}

#[test]
fn autorenew_renews_each_period_once_under_concurrent_process_due() {
    let (fake, f) = setup_shared();
    subscribed_with_autorenew(&fake, &f);
    let expires = f.billing.state(USER).unwrap().expires_at.unwrap();
    for i in 0..3 {
        f.billing.charge(USER, "generation", &format!("g{i}"), None).unwrap();
    }

    // Cron on several machines: four workers with their own handles, started at once.
    let workers: Vec<Billing> = (0..4).map(|_| f.reopen()).collect();
    let barrier = Barrier::new(workers.len());
    let reports: Vec<_> = thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|billing| {
                s.spawn(|| {
                    barrier.wait();
                    billing.process_due().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created: u32 = reports.iter().map(|r| r.renewals_created).sum();
    assert_eq!(created, 1, "{reports:?}");
    assert_eq!(fake.payments_created(), 2, "the purchase and one renewal");
    let renewal = fake.payment(&fake_ids(&f)[0]);
    assert!(renewal.get("confirmation").is_none(), "a renewal charges the saved card: {renewal}");

    let state = f.billing.state(USER).unwrap();
    assert_eq!(state.expires_at.unwrap(), expires + time::Duration::days(30));
    assert_eq!(state.subscription_ops_used, Some(3), "the current period's ops run to its end");
    f.advance_days(1);
    assert_eq!(f.billing.state(USER).unwrap().subscription_ops_used, Some(0), "the paid period starts afresh");
    let again = f.billing.process_due().unwrap();
    assert_eq!((again.renewals_created, again.expired), (0, 0));
    assert_eq!(fake.payments_created(), 2);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// The provider ids of the user's payments, newest first.
fn fake_ids(f: &Fixture) -> Vec<String> {
    let history = f.billing.payments(USER, 10).unwrap().results;
    history.iter().map(|item| provider_id(f, &item.id)).collect()
}

#[test]
fn a_declined_renewal_lets_the_subscription_end_and_the_user_falls_back_to_free() {
    let (fake, f) = setup();
    subscribed_with_autorenew(&fake, &f);
    fake.decline_recurring(true);
    let report = f.billing.process_due().unwrap();
    assert_eq!((report.renewals_created, report.renewals_sent), (1, 1));
    let details = f.billing.subscription_details(USER).unwrap();
    assert!(details.is_active && !details.autorenew_enabled, "active to the end, no more attempts");
    assert_eq!(f.billing.payments(USER, 1).unwrap().results[0].status, "failed", "declined: seed 003's `failed`");

    f.advance_hours(13);
    let report = f.billing.process_due().unwrap();
    assert_eq!((report.renewals_created, report.expired), (0, 1));
    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active), ("FREE", false));
    assert_eq!(f.billing.ledger(USER, 1, None).unwrap()[0].kind, EntryKind::SubscriptionExpired);
    assert_eq!(f.billing.process_due().unwrap().expired, 0, "an end is recorded once");
    assert_eq!(fake.payments_created(), 2);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn refunding_a_plan_ends_the_subscription() {
    let (fake, f) = setup();
    let payment_id = buy_and_pay(&fake, &f, Purchase::Plan("basic"), false, "buy");
    assert!(f.billing.state(USER).unwrap().is_active);
    f.billing.refund_payment(&payment_id, None, None).unwrap();
    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active), ("FREE", false));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn payment_calls_check_their_input_first() {
    let (_fake, f) = setup_shared();
    let before = f.snapshot();
    let b = &f.billing;
    let cases = [
        (b.create_payment(USER, Purchase::Plan("FREE"), None, false, "k", None).unwrap_err(), "INVALID_PLAN"),
        (b.create_payment(USER, Purchase::Plan("gold"), None, false, "k", None).unwrap_err(), "INVALID_PLAN"),
        (b.create_payment(USER, Purchase::Package("nope"), None, false, "k", None).unwrap_err(), "INVALID_ARGUMENT"),
        (
            b.create_payment(USER, Purchase::Plan("basic"), Some("javascript:x"), false, "k", None).unwrap_err(),
            "INVALID_ARGUMENT",
        ),
        (b.create_payment(USER, Purchase::Plan("basic"), None, false, "", None).unwrap_err(), "INVALID_ARGUMENT"),
        (b.create_payment("ghost", Purchase::Plan("basic"), None, false, "k", None).unwrap_err(), "UNKNOWN_USER"),
        (b.set_autorenew(USER, true).unwrap_err(), "NO_SUBSCRIPTION"),
    ];
    for (err, code) in cases {
        assert_eq!(err.code(), code, "{err}");
    }
    assert_eq!(f.snapshot(), before);
    let no_provider = Fixture::new();
    no_provider.billing.register_user(USER, true).unwrap();
    let err = no_provider.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "k", None).unwrap_err();
    assert_eq!((err.code(), err.details()["provider_code"].as_str()), ("PAYMENT_ERROR", Some("not_configured")));
}

fn refund_entries(f: &Fixture) -> Vec<billing_engine::LedgerEntry> {
    let entries = f.billing.ledger(USER, 100, None).unwrap();
    entries.into_iter().filter(|e| e.kind == EntryKind::PurchaseRefund).collect()
}

#[test]
fn a_partial_refund_takes_back_credits_in_proportion_and_only_once() {
    let (fake, f) = setup();
    let payment_id = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "buy");
    let before = f.billing.state(USER).unwrap().credits;

    // 50.00 of 149.00: 20 × 50 / 149 = 6.71 credits, rounded down in the customer's favour.
    let partial = f.billing.refund_payment(&payment_id, Some(dec("50.00")), Some("refund-1")).unwrap();
    assert_eq!((partial.status, partial.refunded_amount), (PaymentStatus::Succeeded, dec("50.00")));
    assert_eq!(f.billing.state(USER).unwrap().credits, before - dec("6"));
    let again = f.billing.refund_payment(&payment_id, Some(dec("50.00")), Some("refund-1")).unwrap();
    assert_eq!(again.refunded_amount, dec("50.00"), "a retried call refunds once");
    assert_eq!(fake.refund_ids().len(), 1);
    let notified = deliver(&f.billing, &fake.refund_notification(&fake.refund_ids()[0])).unwrap();
    assert_eq!(notified.status, WebhookStatus::Duplicate, "the notification of the same refund");

    let err = f.billing.refund_payment(&payment_id, Some(dec("100.00")), Some("refund-2")).unwrap_err();
    assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("amount")), "99.00 is left");
    let err = f.billing.refund_payment(&payment_id, Some(dec("1.001")), Some("refund-2")).unwrap_err();
    assert_eq!(err.details()["field"], "amount", "money has two places");
    let err = f.billing.refund_payment(&payment_id, Some(dec("1.00")), None).unwrap_err();
    assert_eq!(err.details()["field"], "idempotency_key");

    // The rest, without an amount: the whole package is back, and the payment is refunded.
    let rest = f.billing.refund_payment(&payment_id, None, None).unwrap();
    assert_eq!((rest.status, rest.refunded_amount), (PaymentStatus::Refunded, dec("149.00")));
    assert_eq!(f.billing.state(USER).unwrap().credits, before - dec("20"));
    let taken: Vec<_> = refund_entries(&f).iter().map(|e| e.credits_delta).collect();
    assert_eq!(taken, [dec("-14"), dec("-6")], "newest first");
    let item = &f.billing.payments(USER, 10).unwrap().results[0];
    assert_eq!((item.status.as_str(), item.refunded_amount), ("refunded", dec("149.00")));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// Two purchases of the plan that raced (both created before either was paid): the
/// second adds its period to the first instead of starting over. (Kills the mutants of
/// the same-plan guard in `payment::status_effects`.)
#[test]
fn a_plan_bought_twice_before_either_was_paid_adds_the_second_period() {
    let (fake, f) = setup();
    let first = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy-1", None).unwrap();
    let second = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy-2", None).unwrap();
    let mut ends = Vec::new();
    for created in [&first, &second] {
        fake.pay(&created.yookassa_payment_id);
        let body = fake.notification("payment.succeeded", &created.yookassa_payment_id);
        assert_eq!(deliver(&f.billing, &body).unwrap().status, WebhookStatus::Applied);
        ends.push(f.billing.state(USER).unwrap().expires_at.unwrap());
    }
    assert_eq!(ends[1], ends[0] + time::Duration::days(30), "the second period follows the first");
    let kinds: Vec<EntryKind> = f
        .billing
        .ledger(USER, 10, None)
        .unwrap()
        .iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EntryKind::SubscriptionActivated | EntryKind::SubscriptionRenewed))
        .collect();
    assert_eq!(kinds, [EntryKind::SubscriptionRenewed, EntryKind::SubscriptionActivated]);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// Two purchases of *different* plans that raced: the second, paid last, starts its own
/// subscription rather than adding to the first. (Kills the mutant that extends whatever
/// is active.)
#[test]
fn a_different_plan_paid_while_one_is_active_starts_its_own_subscription() {
    let (fake, f) = setup();
    let basic = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy-basic", None).unwrap();
    let standard =
        f.billing.create_payment(USER, Purchase::Plan("standard"), None, false, "buy-standard", None).unwrap();
    for created in [&basic, &standard] {
        fake.pay(&created.yookassa_payment_id);
        deliver(&f.billing, &fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    }
    let state = f.billing.state(USER).unwrap();
    assert_eq!(state.plan_code, "standard");
    let kinds: Vec<EntryKind> = f.billing.ledger(USER, 10, None).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| **k == EntryKind::SubscriptionActivated).count(), 2, "{kinds:?}");
    assert!(!kinds.contains(&EntryKind::SubscriptionRenewed));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// A renewal that succeeds only after its subscription was replaced (ended at once, and
/// a new one started) extends nothing: it paid for a period of the old one. (Kills the
/// mutant that drops the period check of a succeeded renewal.)
#[test]
fn a_renewal_that_succeeds_after_its_subscription_was_replaced_extends_nothing() {
    let (fake, f) = setup();
    subscribed_with_autorenew(&fake, &f);
    // The card is charged, but the answer is lost: the renewal stays to be sent again.
    fake.fail_next_creates(3); // the first attempt and both of the client's retries
    let report = f.billing.process_due().unwrap();
    assert_eq!((report.renewals_created, report.renewals_sent, report.failures), (1, 0, 1));
    f.billing.cancel_subscription(USER, true).unwrap();
    let replaced = f.billing.activate_subscription(USER, "basic", "paid-outside").unwrap();
    let expires = f.billing.state(USER).unwrap().expires_at.unwrap();

    assert_eq!(f.billing.process_due().unwrap().renewals_sent, 1, "sent again, and it had succeeded");
    let state = f.billing.state(USER).unwrap();
    assert_eq!(state.expires_at, Some(expires), "the new subscription is not extended");
    assert!(replaced.expires_at.is_some());
    let renewed = f.billing.ledger(USER, 20, None).unwrap().iter().any(|e| e.kind == EntryKind::SubscriptionRenewed);
    assert!(!renewed);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// 1.00 of 149.00 is 0.13 of a credit, rounded down to none: the refund is still an
/// entry against the package's credits, taking back 0. (Kills the mutant that records a
/// package refund's source only when it takes credits.)
#[test]
fn a_refund_too_small_to_take_back_a_credit_is_still_recorded_against_the_credits() {
    let (fake, f) = setup();
    let payment_id = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "buy");
    let before = f.billing.state(USER).unwrap().credits;
    f.billing.refund_payment(&payment_id, Some(dec("1.00")), Some("small")).unwrap();
    assert_eq!(f.billing.state(USER).unwrap().credits, before);
    let entries = refund_entries(&f);
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!((entry.source, entry.credits_delta), (Some(billing_engine::ChargeSource::Credits), dec("0")));
    assert_eq!(entry.metadata.as_ref().unwrap()["amount"], "1.00");
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_refund_of_more_than_is_left_is_capped_and_the_ledger_says_so() {
    // The API counts more refunded than the payment's amount (a garbled answer): the
    // engine takes back what is left, once, and the entry says what was reported.
    let (fake, f) = setup_with(TestDb::new(), |config| config.verify_by_fetch = false);
    let payment_id = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "buy");
    f.billing.refund_payment(&payment_id, Some(dec("100.00")), Some("r1")).unwrap();
    let provider_id = provider_id(&f, &payment_id);
    let refund_id = fake.refund_in_dashboard(&provider_id, "49.00");
    fake.patch(&provider_id, serde_json::json!({"refunded_amount": {"value": "200.00", "currency": "RUB"}}));
    let outcome = deliver(&f.billing, &fake.refund_notification(&refund_id)).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Applied);
    let payment = f.billing.payment(&payment_id).unwrap();
    assert_eq!((payment.status, payment.refunded_amount), (PaymentStatus::Refunded, dec("149.00")));
    let capped = &refund_entries(&f)[0];
    let metadata = capped.metadata.as_ref().unwrap();
    assert_eq!((metadata["amount"].as_str(), metadata["capped_from"].as_str()), (Some("49.00"), Some("100.00")));
    assert_eq!(metadata["refund_id"].as_str(), Some(refund_id.as_str()));
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"), "the trial's 10: all 20 went back once");
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_plan_ends_only_when_its_whole_payment_is_refunded() {
    let (fake, f) = setup();
    let payment_id = buy_and_pay(&fake, &f, Purchase::Plan("basic"), false, "buy");
    f.billing.refund_payment(&payment_id, Some(dec("100.00")), Some("part")).unwrap();
    assert!(f.billing.state(USER).unwrap().is_active, "a partial refund leaves the subscription");
    let entry = &refund_entries(&f)[0];
    assert_eq!((entry.source, entry.credits_delta), (None, dec("0")));
    f.billing.refund_payment(&payment_id, None, None).unwrap();
    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active), ("FREE", false));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn refunding_last_month_s_plan_payment_leaves_this_month_s_subscription_alone() {
    let (fake, f) = setup();
    let old = buy_and_pay(&fake, &f, Purchase::Plan("basic"), false, "january");
    f.advance_days(31);
    assert!(!f.billing.state(USER).unwrap().is_active, "january's period is over");
    buy_and_pay(&fake, &f, Purchase::Plan("basic"), false, "february");
    let february = f.billing.state(USER).unwrap();

    let refunded = f.billing.refund_payment(&old, None, None).unwrap();
    assert_eq!(refunded.status, PaymentStatus::Refunded);
    assert_eq!(f.billing.state(USER).unwrap(), february, "a past period's refund changes no subscription");
    let entry = &refund_entries(&f)[0];
    assert_eq!((entry.source, entry.reference.as_deref()), (None, Some(old.as_str())));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_worker_without_a_provider_leaves_auto_renewals_due_for_one_that_has_one() {
    let (fake, f) = setup_shared();
    subscribed_with_autorenew(&fake, &f);
    let expires = f.billing.state(USER).unwrap().expires_at.unwrap();
    let cron = Billing::open_with_clock(f.location(), common::catalog(), f.clock.clone()).unwrap();

    let report = cron.process_due().unwrap();
    assert_eq!((report.renewals_skipped, report.renewals_created, report.expired), (1, 0, 0));
    f.advance_days(1); // past the end: still not ended by a worker that could not renew
    let report = cron.process_due().unwrap();
    assert_eq!((report.renewals_skipped, report.expired), (1, 0));
    let last = &f.billing.ledger(USER, 1, None).unwrap()[0];
    assert_ne!(last.kind, EntryKind::SubscriptionExpired, "nothing recorded an end");

    let report = f.billing.process_due().unwrap();
    assert_eq!((report.renewals_created, report.renewals_sent, report.expired), (1, 1, 0));
    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.expires_at), ("basic", Some(expires + time::Duration::days(30))));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn verify_integrity_checks_renewal_payments_too() {
    let (fake, f) = setup_shared();
    subscribed_with_autorenew(&fake, &f);
    assert_eq!(f.billing.process_due().unwrap().renewals_sent, 1);
    assert!(f.billing.verify_integrity().unwrap().ok);
    f.db.execute("UPDATE payments SET paid_until = paid_until + 86400000 WHERE purpose = 'renewal'");
    let report = f.billing.verify_integrity().unwrap();
    assert!(report.mismatches.iter().any(|m| m.check.starts_with("subscription_paid@")), "{:?}", report.mismatches);
    f.db.execute("UPDATE payments SET status = 'canceled' WHERE purpose = 'renewal'");
    let report = f.billing.verify_integrity().unwrap();
    assert!(report.mismatches.iter().any(|m| m.check.starts_with("renewal_declined@")), "{:?}", report.mismatches);
}

#[test]
fn a_notification_about_a_payment_of_ours_that_yookassa_does_not_have_is_invalid_for_good() {
    let (fake, f) = setup_shared();
    // The create request fails: the payment is ours, recorded, but has no provider id.
    fake.fail_next_creates(3);
    let err = f.billing.create_payment(USER, Purchase::Package("credits_20"), None, false, "buy", None).unwrap_err();
    assert_eq!(err.code(), "PAYMENT_ERROR");
    let ours = f.billing.payments(USER, 10).unwrap();
    assert!(ours.results.is_empty(), "a payment never accepted is not in the history");
    let sent = &fake.payment_objects()[0];
    let payment_id = sent["metadata"]["payment_id"].as_str().unwrap();
    let before = f.snapshot();
    let missing = "2f999999-000f-5000-9000-1b68e7b15f3f";
    let forged = serde_json::json!({"type": "notification", "event": "payment.succeeded", "object": {
        "id": missing, "status": "succeeded", "amount": {"value": "149.00", "currency": "RUB"},
        "metadata": {"payment_id": payment_id}}});
    let err = deliver(&f.billing, &serde_json::to_vec(&forged).unwrap()).unwrap_err();
    assert_eq!(err.code(), "INVALID_WEBHOOK", "404 on the verifying read of our payment: {err}");
    assert!(fake.requests().contains(&format!("GET /payments/{missing}")));
    let garbled = serde_json::to_string(&forged).unwrap().replace(missing, "../../payments/x");
    assert_eq!(deliver(&f.billing, garbled.as_bytes()).unwrap_err().code(), "INVALID_WEBHOOK");
    assert_eq!(f.snapshot(), before);
}

/// A test shop and a live shop posting to one URL, or a payment made elsewhere: nothing
/// the engine created, so `ignored`, with no call to YooKassa, and YooKassa stops sending.
#[test]
fn notifications_about_payments_this_engine_never_created_are_ignored_without_a_fetch() {
    let (fake, f) = setup_shared();
    let created = f.billing.create_payment(USER, Purchase::Package("credits_20"), None, false, "buy", None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let real = String::from_utf8(fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    let before = f.snapshot();
    let requests_before = fake.requests().len();
    let elsewhere = "2f999999-000f-5000-9000-1b68e7b15f3f";
    let refund = format!(
        r#"{{"type":"notification","event":"refund.succeeded","object":{{"id":"{elsewhere}","payment_id":"{elsewhere}","status":"succeeded","amount":{{"value":"149.00","currency":"RUB"}}}}}}"#
    );
    let method = format!(
        r#"{{"type":"notification","event":"payment_method.active","object":{{"id":"{elsewhere}","type":"bank_card","saved":true,"status":"active"}}}}"#
    );
    for body in [
        real.replace(&created.yookassa_payment_id, elsewhere), // another shop's payment (its metadata names ours)
        refund,                                                // a refund of a payment made elsewhere
        method,                                                // a method this engine never saved
    ] {
        let outcome = deliver(&f.billing, body.as_bytes()).unwrap();
        assert_eq!((outcome.status, outcome.payment_id), (WebhookStatus::Ignored, None), "{body}");
    }
    assert_eq!(fake.requests().len(), requests_before, "no call to YooKassa");
    assert_eq!(f.snapshot(), before);
}

/// Twenty clicks of "pay" at once, one key: the key is claimed in the store before the
/// provider is called, so one call sends the payment and the others wait for its answer.
///
/// Mutation tried: `send` without `claim_sending` (each call that finds the payment
/// `new` sends it): several `POST /payments` reach the provider.
#[test]
fn concurrent_calls_with_one_key_send_the_payment_to_the_provider_once() {
    let (fake, f) = setup();
    fake.fail("/payments", 20, 0, 0.3); // a slow provider: every create answers late
    let barrier = Barrier::new(20);
    let created: Vec<_> = thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "click", None).unwrap()
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    });
    let sent = fake.requests().iter().filter(|r| r.as_str() == "POST /payments").count();
    assert_eq!(sent, 1, "one call reached the provider");
    assert!(created.windows(2).all(|pair| pair[0] == pair[1]), "every call answers with the one payment");
    assert_eq!(fake.payments_created(), 1);
}

#[test]
fn a_binding_under_a_key_holds_one_ruble_however_often_it_is_started() {
    let (fake, f) = setup();
    let first = f.billing.start_card_binding(USER, None, Some("bind-1")).unwrap();
    for _ in 0..5 {
        assert_eq!(f.billing.start_card_binding(USER, None, Some("bind-1")).unwrap(), first);
    }
    assert_eq!(fake.payments_created(), 1);
    let other_url = f.billing.start_card_binding(USER, Some("https://app.example/other"), Some("bind-1"));
    assert_eq!(other_url.unwrap_err().code(), "IDEMPOTENCY_CONFLICT");
    f.billing.start_card_binding(USER, None, None).unwrap();
    assert_eq!(fake.payments_created(), 2, "without a key, each call is a binding of its own");
}
