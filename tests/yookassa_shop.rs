//! YooKassa as real shops run it: 54-FZ receipts with every payment, renewal and refund;
//! refunds and a payment's success applied in any order to the same end state; a period
//! renewed after a decline once another method is bound; revoked, wallet and SBP
//! methods; `paid_at` as YooKassa reports it. Against the shared fake YooKassa over real
//! HTTP, on every store of the conformance run.

mod common;

use std::sync::Barrier;
use std::thread;

use billing_engine::receipt::CustomerContact;
use billing_engine::{Billing, Catalog, EntryKind, PaymentStatus, Purchase, WebhookStatus};
use common::yookassa::{deliver, paying_fixture, FakeYooKassa};
use common::{dec, Fixture, TestDb};
use serde_json::{json, Value};

const USER: &str = "u1";

fn setup_with(db: TestDb, adjust: impl FnOnce(&mut billing_engine::YooKassaConfig)) -> (FakeYooKassa, Fixture) {
    paying_fixture(db, USER, adjust)
}

/// A shop that fiscalizes through YooKassa: the fake refuses a payment or refund
/// without a valid receipt, and the engine sends one.
fn setup_receipts() -> (FakeYooKassa, Fixture) {
    let (fake, f) = setup_with(TestDb::shared(), |config| {
        config.receipts = true;
        config.tax_system_code = Some(2);
    });
    fake.require_receipts(true);
    (fake, f)
}

/// Buys `purchase`, has the user pay and delivers the success; returns the engine's and
/// YooKassa's ids.
fn buy_and_pay(fake: &FakeYooKassa, f: &Fixture, purchase: Purchase, save: bool, key: &str) -> (String, String) {
    let created = f.billing.create_payment(USER, purchase, None, save, key, None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let outcome = deliver(&f.billing, &fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    assert_eq!(outcome.status, WebhookStatus::Applied);
    (created.payment_id, created.yookassa_payment_id)
}

/// A user on `basic` with a saved card and autorenew on, 12 hours before the period ends.
fn subscribed_with_autorenew(fake: &FakeYooKassa, f: &Fixture) {
    buy_and_pay(fake, f, Purchase::Plan("basic"), true, "buy");
    assert!(f.billing.set_autorenew(USER, true).unwrap().autorenew_enabled);
    f.advance_days(29);
    f.advance_hours(12);
}

fn item(receipt: &Value) -> &Value {
    let items = receipt["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{receipt}");
    &items[0]
}

#[test]
fn a_shop_with_receipts_sends_a_valid_receipt_with_every_payment_renewal_and_refund() {
    let (fake, f) = setup_receipts();
    let before = f.snapshot();
    let no_contact = f.billing.create_payment(USER, Purchase::Plan("basic"), None, true, "buy", None).unwrap_err();
    assert_eq!(
        (no_contact.code(), no_contact.details()["field"].as_str()),
        ("INVALID_ARGUMENT", Some("customer_contact"))
    );
    let binding = f.billing.start_card_binding(USER, None, None).unwrap_err();
    assert_eq!(binding.details()["field"], "customer_contact");
    let bad = CustomerContact { email: Some("anna at example.ru".into()), phone: None };
    let bad_contact = f.billing.create_payment(USER, Purchase::Plan("basic"), None, true, "buy", Some(&bad));
    assert_eq!(bad_contact.unwrap_err().details()["field"], "email");
    assert_eq!(f.snapshot(), before, "a refused payment writes nothing");
    assert_eq!(fake.payments_created(), 0, "and sends nothing");

    // The contact given with the purchase goes on its receipt and is kept for later ones.
    let anna = CustomerContact { email: Some("anna@example.ru".into()), phone: None };
    let created = f.billing.create_payment(USER, Purchase::Plan("basic"), None, true, "buy", Some(&anna)).unwrap();
    assert_eq!(f.billing.customer_contact(USER).unwrap(), Some(anna.clone()));
    fake.pay(&created.yookassa_payment_id);
    deliver(&f.billing, &fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
    f.billing.set_autorenew(USER, true).unwrap();
    f.advance_days(29);
    f.advance_hours(12);
    assert_eq!(f.billing.process_due().unwrap().renewals_sent, 1);

    let phone = f.billing.set_customer_contact(USER, None, Some("+7 (900) 123-45-67")).unwrap();
    assert_eq!(phone.phone.as_deref(), Some("79001234567"));
    let (package, package_at_yookassa) = buy_and_pay(&fake, &f, Purchase::Package("credits_100"), false, "pack");
    f.billing.refund_payment(&package, Some(dec("100.00")), Some("part")).unwrap();

    let receipts = fake.receipts();
    let paths: Vec<&str> = receipts.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["/payments", "/payments", "/payments", "/refunds"], "each accepted by the fake's rules");
    let (purchase, renewal, pack, refund) = (&receipts[0].1, &receipts[1].1, &receipts[2].1, &receipts[3].1);
    assert_eq!(purchase["customer"], json!({"email": "anna@example.ru"}));
    assert_eq!(purchase["tax_system_code"], 2);
    assert_eq!(
        item(purchase),
        &json!({"description": "Basic plan", "quantity": "1", "amount": {"value": "299.00", "currency": "RUB"},
                "vat_code": 1, "payment_subject": "service", "payment_mode": "full_payment"})
    );
    assert_eq!(
        (item(renewal)["description"].as_str(), renewal["customer"]["email"].as_str()),
        (Some("Basic plan renewal"), Some("anna@example.ru"))
    );
    assert_eq!(pack["customer"], json!({"phone": "79001234567"}), "the contact set last");
    assert_eq!(item(pack)["payment_mode"], "full_prepayment", "the package's own receipt setting");
    assert_eq!(
        (item(refund)["amount"]["value"].as_str(), item(refund)["description"].as_str()),
        (Some("100.00"), Some("100 credits"))
    );
    assert_eq!(fake.payment(&package_at_yookassa)["receipt_registration"], "pending");
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn without_a_receipt_a_shop_with_receipts_on_is_refused_by_yookassa() {
    // The fake's check is real: the same shop with the engine's receipts off fails.
    let (fake, f) = setup_with(TestDb::new(), |_| {});
    fake.require_receipts(true);
    let err = f.billing.create_payment(USER, Purchase::Plan("basic"), None, false, "buy", None).unwrap_err();
    assert_eq!(err.code(), "PAYMENT_ERROR");
    assert!(err.to_string().contains("Receipt is missing or illegal"), "{err}");
}

#[test]
fn receipts_on_need_the_catalog_s_receipt_table() {
    let fake = FakeYooKassa::start();
    let mut config = fake.config();
    config.receipts = true;
    let catalog = Catalog::from_toml(
        "currency = \"RUB\"\ntimezone_offset = \"+03:00\"\n[operations]\ngeneration = { credits = 1 }\n\
         [[plans]]\ncode = \"FREE\"\ntier = \"free\"\nname = \"Free\"\nprice = \"0\"\n",
    )
    .unwrap();
    let billing = Billing::open(":memory:", catalog).unwrap();
    let err = billing.with_yookassa(&config).err().unwrap();
    assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("receipts")));
    config.tax_system_code = Some(7);
    let err = Billing::open(":memory:", common::catalog()).unwrap().with_yookassa(&config).err().unwrap();
    assert_eq!(err.details()["field"], "tax_system_code");
}

/// What a test can compare across runs: the payment, the balance and plan, and the
/// ledger's kinds and deltas.
fn end_state(f: &Fixture, payment_id: &str) -> (PaymentStatus, String, String, String, bool, Vec<(EntryKind, String)>) {
    let payment = f.billing.payment(payment_id).unwrap();
    let state = f.billing.state(USER).unwrap();
    let mut ledger: Vec<_> =
        f.billing.ledger(USER, 100, None).unwrap().into_iter().map(|e| (e.kind, e.credits_delta.to_string())).collect();
    ledger.reverse();
    (
        payment.status,
        payment.refunded_amount.to_string(),
        state.credits.to_string(),
        state.plan_code,
        state.is_active,
        ledger,
    )
}

/// Refunded in YooKassa's dashboard before the engine heard of the payment's success:
/// every order of the two notifications, each delivered twice, with and without the
/// verifying read, ends in the same state, the one the API reports.
#[test]
fn refunds_and_the_payment_s_success_in_any_order_end_in_the_same_state() {
    let cases = [
        (Purchase::Package("credits_20"), "50.00", "24", "succeeded"), // 10 + 20 - 6 (20 × 50 / 149 = 6.7)
        (Purchase::Package("credits_20"), "149.00", "10", "refunded"),
        (Purchase::Plan("basic"), "100.00", "10", "succeeded"), // a partial refund leaves the plan
        (Purchase::Plan("basic"), "299.00", "10", "refunded"),
    ];
    for (purchase, refunded, credits, status) in cases {
        let mut ends = Vec::new();
        for verify_by_fetch in [true, false] {
            for refund_first in [false, true] {
                let (fake, f) = setup_with(TestDb::new(), |config| config.verify_by_fetch = verify_by_fetch);
                let created = f.billing.create_payment(USER, purchase, None, false, "buy", None).unwrap();
                let at_yookassa = &created.yookassa_payment_id;
                fake.pay(at_yookassa);
                let succeeded = fake.notification("payment.succeeded", at_yookassa);
                let refund = fake.refund_notification(&fake.refund_in_dashboard(at_yookassa, refunded));
                let order = if refund_first { [&refund, &succeeded] } else { [&succeeded, &refund] };
                for body in order.into_iter().chain(order) {
                    let outcome = deliver(&f.billing, body).unwrap();
                    assert_ne!(
                        outcome.status,
                        WebhookStatus::Ignored,
                        "{purchase:?} {refunded} refund_first={refund_first}"
                    );
                }
                let end = end_state(&f, &created.payment_id);
                let label =
                    format!("{purchase:?} refunded {refunded}, refund first: {refund_first}, fetch: {verify_by_fetch}");
                assert_eq!((end.0.as_str(), end.1.as_str(), end.2.as_str()), (status, refunded, credits), "{label}");
                assert_eq!(end.4, matches!(purchase, Purchase::Plan(_)) && status == "succeeded", "{label}");
                assert!(f.billing.verify_integrity().unwrap().ok, "{label}");
                ends.push(end);
            }
        }
        assert!(ends.windows(2).all(|pair| pair[0] == pair[1]), "{purchase:?} {refunded}: {ends:#?}");
    }
}

#[test]
fn two_refunds_the_engine_hears_of_late_are_each_taken_back_once() {
    let (fake, f) = setup_with(TestDb::new(), |_| {});
    let (payment_id, at_yookassa) = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "buy");
    let first = fake.refund_in_dashboard(&at_yookassa, "50.00");
    let second = fake.refund_in_dashboard(&at_yookassa, "99.00");
    // The second's notification comes first: the API's total already counts both.
    assert_eq!(deliver(&f.billing, &fake.refund_notification(&second)).unwrap().status, WebhookStatus::Applied);
    assert_eq!(deliver(&f.billing, &fake.refund_notification(&first)).unwrap().status, WebhookStatus::Duplicate);
    let payment = f.billing.payment(&payment_id).unwrap();
    assert_eq!((payment.status, payment.refunded_amount), (PaymentStatus::Refunded, dec("149.00")));
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_declined_renewal_is_tried_again_once_another_method_is_bound() {
    let (fake, f) = setup_with(TestDb::shared(), |_| {});
    subscribed_with_autorenew(&fake, &f);
    let expires = f.billing.state(USER).unwrap().expires_at.unwrap();
    fake.decline_recurring(true);
    assert_eq!(f.billing.process_due().unwrap().renewals_sent, 1);
    assert!(!f.billing.subscription_details(USER).unwrap().autorenew_enabled, "declined: renewal is off");

    // Turning renewal back on with the declined card alone tries nothing again.
    f.billing.set_autorenew(USER, true).unwrap();
    assert_eq!(f.billing.process_due().unwrap().renewals_created, 0);

    // The user binds another card and turns renewal on: one more attempt for the period,
    // made once by four workers at once.
    fake.decline_recurring(false);
    f.advance_hours(1);
    let binding = f.billing.start_card_binding(USER, None, None).unwrap();
    fake.pay(&binding.yookassa_payment_id);
    deliver(&f.billing, &fake.notification("payment.waiting_for_capture", &binding.yookassa_payment_id)).unwrap();
    f.billing.set_autorenew(USER, true).unwrap();
    let workers: Vec<Billing> = (0..4).map(|_| f.reopen()).collect();
    let barrier = Barrier::new(workers.len());
    let created: u32 = thread::scope(|s| {
        let handles: Vec<_> = workers
            .iter()
            .map(|billing| {
                s.spawn(|| {
                    barrier.wait();
                    billing.process_due().unwrap().renewals_created
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(created, 1);
    let state = f.billing.state(USER).unwrap();
    assert_eq!((state.plan_code.as_str(), state.expires_at), ("basic", Some(expires + time::Duration::days(30))));
    let renewals: Vec<_> = fake.payment_objects().into_iter().filter(|p| p.get("confirmation").is_none()).collect();
    assert_eq!(renewals.len(), 2, "the declined attempt and the second one");
    let second = f.billing.payments(USER, 1).unwrap().results[0].id.clone();
    assert!(f.billing.payment(&second).unwrap().renewal_of.unwrap().ends_with("#2"));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_revoked_permission_detaches_the_method_and_turns_renewal_off() {
    let (fake, f) = setup_with(TestDb::new(), |_| {});
    subscribed_with_autorenew(&fake, &f);
    fake.decline_recurring_for("permission_revoked");
    assert_eq!(f.billing.process_due().unwrap().renewals_sent, 1);
    let method = f.billing.payment_method(USER).unwrap();
    assert!(!method.is_attached, "{method:?}");
    let details = f.billing.subscription_details(USER).unwrap();
    assert!(!details.autorenew_enabled && !details.card_bound);
    let again = f.billing.set_autorenew(USER, true).unwrap_err();
    assert_eq!(again.code(), "NO_PAYMENT_METHOD");
}

#[test]
fn payment_method_active_confirms_an_active_method_and_detaches_one_that_is_not() {
    for verify_by_fetch in [true, false] {
        let (fake, f) = setup_with(TestDb::new(), |config| config.verify_by_fetch = verify_by_fetch);
        let (_, at_yookassa) = buy_and_pay(&fake, &f, Purchase::Plan("basic"), true, "buy");
        let method_id = fake.payment(&at_yookassa)["payment_method"]["id"].as_str().unwrap().to_owned();
        f.billing.set_autorenew(USER, true).unwrap();
        let active = deliver(&f.billing, &fake.notification("payment_method.active", &method_id)).unwrap();
        assert_eq!(active.status, WebhookStatus::Duplicate, "the method as saved");
        assert!(f.billing.payment_method(USER).unwrap().is_attached);

        fake.set_method_status(&method_id, "inactive");
        let inactive = deliver(&f.billing, &fake.notification("payment_method.active", &method_id)).unwrap();
        assert_eq!(inactive.status, WebhookStatus::Applied);
        assert!(!f.billing.payment_method(USER).unwrap().is_attached);
        assert!(!f.billing.subscription_details(USER).unwrap().autorenew_enabled);
        let late = deliver(&f.billing, &fake.notification("payment_method.active", &method_id)).unwrap();
        assert_eq!(late.status, WebhookStatus::Ignored, "a method no longer saved");
    }
}

#[test]
fn a_saved_wallet_or_sbp_account_shows_its_own_type_and_title() {
    for (method_type, title) in [("yoo_money", "YooMoney wallet 410011758831136"), ("sbp", "SBP")] {
        let (fake, f) = setup_with(TestDb::new(), |_| {});
        let created = f.billing.create_payment(USER, Purchase::Plan("basic"), None, true, "buy", None).unwrap();
        fake.pay_with(&created.yookassa_payment_id, method_type);
        deliver(&f.billing, &fake.notification("payment.succeeded", &created.yookassa_payment_id)).unwrap();
        let method = f.billing.payment_method(USER).unwrap();
        assert!(method.is_attached);
        assert_eq!((method.method_type.as_deref(), method.title.as_deref()), (Some(method_type), Some(title)));
        assert_eq!((method.card_mask, method.card_brand), (None, None), "not an empty card");
    }
}

#[test]
fn paid_at_is_when_yookassa_captured_the_money() {
    let (fake, f) = setup_with(TestDb::new(), |_| {});
    f.advance_days(3); // the engine hears of it days later
    let (payment_id, _) = buy_and_pay(&fake, &f, Purchase::Package("credits_20"), false, "buy");
    let paid_at = f.billing.payment(&payment_id).unwrap().paid_at.unwrap();
    assert_eq!(billing_engine::time_util::iso(paid_at), "2026-01-01T12:01:00.000Z", "the fake's captured_at");
    assert_eq!(f.billing.payments(USER, 1).unwrap().results[0].paid_at, Some(paid_at));
}

/// Every sample of `tests/fixtures/yookassa/` (notification bodies written to the shapes
/// YooKassa's documentation publishes; each names its pages) goes through the webhook
/// path twice: first about an object this engine never created (`ignored`, with no call
/// to YooKassa), then about one it did, with the outcome and effects the sample expects.
/// With and without the verifying read.
#[test]
fn every_notification_sample_is_read_and_applied_as_it_expects() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/yookassa");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.retain(|path| path.extension().is_some_and(|ext| ext == "json"));
    names.sort();
    assert!(names.len() >= 10, "the corpus is in {}", dir.display());
    for verify_by_fetch in [true, false] {
        for path in &names {
            let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let label = format!("{} (fetch: {verify_by_fetch})", path.file_name().unwrap().to_string_lossy());
            check_sample(&sample, verify_by_fetch, &label);
        }
    }
}

fn check_sample(sample: &Value, verify_by_fetch: bool, label: &str) {
    let (fake, f) = setup_with(TestDb::new(), |config| config.verify_by_fetch = verify_by_fetch);
    let body = serde_json::to_vec(&sample["notification"]).unwrap();
    let unknown = deliver(&f.billing, &body).unwrap();
    assert_eq!((unknown.status, unknown.payment_id.as_deref()), (WebhookStatus::Ignored, None), "{label}");
    assert!(fake.requests().is_empty(), "{label}: no call about an object this engine never created");

    let setup = &sample["setup"];
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let mut payment_id = None;
    if let Some(create) = setup["create"].as_str() {
        fake.next_id(setup["id"].as_str().unwrap());
        let save = setup["save"].as_bool().unwrap_or(false);
        let created = match create {
            "binding" => f.billing.start_card_binding(USER, None, None),
            "basic" => f.billing.create_payment(USER, Purchase::Plan("basic"), None, save, "sample", None),
            package => f.billing.create_payment(USER, Purchase::Package(package), None, save, "sample", None),
        };
        payment_id = Some(created.unwrap().payment_id);
    }
    if let Some(bound) = setup["bind"].as_str() {
        fake.next_id(bound);
        f.billing.start_card_binding(USER, None, None).unwrap();
        fake.pay(bound);
        deliver(&f.billing, &fake.notification("payment.waiting_for_capture", bound)).unwrap();
        assert!(f.billing.payment_method(USER).unwrap().is_attached, "{label}");
    }
    // The API has the objects as the sample shows them: the notified one, or those listed.
    let kind_of = |event: &str| match event.split('.').next() {
        Some("refund") => "refunds",
        Some("payment_method") => "payment_methods",
        _ => "payments",
    };
    match sample["api"].as_array() {
        Some(objects) => objects.iter().for_each(|o| fake.put(o["kind"].as_str().unwrap(), &o["object"])),
        None => fake.put(kind_of(sample["notification"]["event"].as_str().unwrap()), &sample["notification"]["object"]),
    }

    let expect = &sample["expect"];
    let outcome = deliver(&f.billing, &body).unwrap();
    assert_eq!(format!("{:?}", outcome.status).to_lowercase(), expect["outcome"].as_str().unwrap(), "{label}");
    if let Some(payment_id) = &payment_id {
        let payment = f.billing.payment(payment_id).unwrap();
        if let Some(status) = text(&expect["payment_status"]) {
            assert_eq!(payment.status.as_str(), status, "{label}");
        }
        if let Some(paid_at) = text(&expect["paid_at"]) {
            assert_eq!(payment.paid_at, billing_engine::time_util::parse_iso(&paid_at), "{label}");
        }
        if let Some(refunded) = text(&expect["refunded_amount"]) {
            assert_eq!(payment.refunded_amount.to_string(), refunded, "{label}");
        }
    }
    let state = f.billing.state(USER).unwrap();
    if let Some(credits) = text(&expect["credits"]) {
        assert_eq!(state.credits.to_string(), credits, "{label}");
    }
    if let Some(plan) = text(&expect["plan_code"]) {
        assert_eq!(state.plan_code, plan, "{label}");
    }
    let method = f.billing.payment_method(USER).unwrap();
    if let Some(attached) = expect["method_attached"].as_bool() {
        assert_eq!(method.is_attached, attached, "{label}");
    }
    if let Some(method_type) = text(&expect["method_type"]) {
        assert_eq!(method.method_type, Some(method_type), "{label}");
        assert_eq!(method.title, text(&expect["method_title"]), "{label}");
        assert_eq!(method.card_mask, text(&expect["card_mask"]), "{label}");
    }
    assert_ne!(deliver(&f.billing, &body).unwrap().status, WebhookStatus::Applied, "{label}: applied once");
    assert!(f.billing.verify_integrity().unwrap().ok, "{label}");
}
