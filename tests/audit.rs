//! The audit log (issue 17): every admin and payment operation, and every webhook's
//! outcome, leaves a record with the host's actor, request id and reason, before and
//! after where they apply; refusals are recorded as rejected with their code; the log
//! reads by filters, newest first, in pages; and the schema refuses to change it.

mod common;

use billing_engine::{
    AuditContext, AuditFilter, AuditOutcome, AuditRecord, BillingError, Clock, Purchase, WebhookStatus,
};
use common::yookassa::{deliver, paying_fixture};
use common::{dec, Fixture, TestDb};
use serde_json::json;

const USER: &str = "u1";

fn log(f: &Fixture, filter: AuditFilter) -> Vec<AuditRecord> {
    f.billing.audit_log(&filter, 100, None).unwrap()
}

fn of_action(f: &Fixture, action: &str) -> Vec<AuditRecord> {
    log(f, AuditFilter { action: Some(action.into()), ..AuditFilter::default() })
}

#[test]
fn an_admin_grant_is_recorded_with_the_hosts_actor_and_its_change() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    let admin = AuditContext::new("admin:alice", Some("req-42"), Some("ticket 7")).unwrap();
    let entry = admin.scope(|| f.billing.grant_credits(USER, dec("5"), "g1", "goodwill")).unwrap();
    admin.scope(|| f.billing.grant_credits(USER, dec("5"), "g1", "goodwill")).unwrap();

    let records = of_action(&f, "credits.grant");
    assert_eq!(records.len(), 2, "{records:?}");
    let (replay, grant) = (&records[0], &records[1]);
    assert!(replay.id > grant.id, "newest first");
    assert_eq!(grant.actor, "admin:alice");
    assert_eq!(grant.request_id.as_deref(), Some("req-42"));
    assert_eq!(grant.reason.as_deref(), Some("goodwill"), "the call's own reason wins over the context's");
    assert_eq!(grant.user_id.as_deref(), Some(USER));
    assert_eq!(grant.target, Some(entry.id.to_string()));
    assert_eq!(grant.outcome, AuditOutcome::Applied);
    assert_eq!(grant.before, Some(json!({ "credits": "10" })));
    assert_eq!(grant.after, Some(json!({ "credits": "15" })));
    assert_eq!(grant.created_at, f.clock.now());
    assert_eq!(replay.outcome, AuditOutcome::Unchanged);
    assert_eq!(replay.target, grant.target);

    // Outside a scope the actor is the engine itself.
    f.billing.grant_credits(USER, dec("1"), "g2", "promo").unwrap();
    assert_eq!(of_action(&f, "credits.grant")[0].actor, "system");
}

/// Bad input changes nothing, the log included: a refused call is the caller's to log,
/// with the typed error it got. Only refused webhooks are recorded (they come from
/// outside, and an operator needs to see them).
#[test]
fn a_refused_admin_call_changes_nothing_not_even_the_log() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    let admin = AuditContext::new("admin:alice", None, None).unwrap();
    let before = (f.billing.state(USER).unwrap(), log(&f, AuditFilter::default()));
    let error = admin.scope(|| f.billing.grant_credits(USER, dec("0"), "g1", "oops")).unwrap_err();
    assert!(matches!(error, BillingError::InvalidArgument { field: "amount", .. }));
    let error = admin.scope(|| f.billing.cancel_subscription(USER, true)).unwrap_err();
    assert!(matches!(error, BillingError::NoSubscription));
    let error = admin.scope(|| f.billing.void_grant(424_242, "v", "r")).unwrap_err();
    assert!(matches!(error, BillingError::GrantNotFound { .. }));
    assert_eq!((f.billing.state(USER).unwrap(), log(&f, AuditFilter::default())), before);
}

#[test]
fn subscription_changes_and_imports_keep_before_and_after() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    f.billing.activate_subscription(USER, "basic", "act").unwrap();
    let support = AuditContext::new("support:bob", Some("req-1"), Some("asked by phone")).unwrap();
    support.scope(|| f.billing.cancel_subscription(USER, true)).unwrap();
    f.billing.import_user("old-1", dec("7"), 2, None).unwrap();
    f.billing.import_user("old-1", dec("7"), 2, None).unwrap();

    let activated = &of_action(&f, "subscription.activate")[0];
    assert_eq!(activated.before, Some(serde_json::Value::Null));
    assert_eq!(activated.after.as_ref().unwrap()["plan_code"], "basic");
    let canceled = &of_action(&f, "subscription.cancel")[0];
    assert_eq!((canceled.actor.as_str(), canceled.reason.as_deref()), ("support:bob", Some("asked by phone")));
    assert_eq!(canceled.before.as_ref().unwrap()["canceled_at"], serde_json::Value::Null);
    assert_eq!(canceled.after.as_ref().unwrap()["canceled_at"], json!(billing_engine::time_util::iso(f.clock.now())));
    let imports = of_action(&f, "user.import");
    assert_eq!(imports.iter().map(|r| r.outcome).collect::<Vec<_>>(), [AuditOutcome::Unchanged, AuditOutcome::Applied]);
    assert_eq!(imports[1].after, Some(json!({ "credits": "7", "freemium_used": 2, "subscription": null })));
}

#[test]
fn payments_and_every_webhook_outcome_are_recorded() {
    let (fake, f) = paying_fixture(TestDb::new(), USER, |_| {});
    let created = f.billing.create_payment(USER, Purchase::Package("credits_20"), None, false, "pack", None).unwrap();
    f.billing.create_payment(USER, Purchase::Package("credits_20"), None, false, "pack", None).unwrap();
    fake.pay(&created.yookassa_payment_id);
    let body = fake.notification("payment.succeeded", &created.yookassa_payment_id);
    assert_eq!(deliver(&f.billing, &body).unwrap().status, WebhookStatus::Applied);
    assert_eq!(deliver(&f.billing, &body).unwrap().status, WebhookStatus::Duplicate);
    let forged = f.billing.handle_yookassa_webhook(&body, Some("203.0.113.9"), &[]).unwrap_err();
    assert!(matches!(forged, BillingError::InvalidWebhook { .. }));
    let admin = AuditContext::new("admin:alice", Some("req-9"), Some("customer asked")).unwrap();
    admin.scope(|| f.billing.refund_payment(&created.payment_id, None, None)).unwrap();

    let creates = of_action(&f, "payment.create");
    assert_eq!(creates.iter().map(|r| r.outcome).collect::<Vec<_>>(), [AuditOutcome::Unchanged, AuditOutcome::Applied]);
    assert_eq!(creates[1].target.as_deref(), Some(created.payment_id.as_str()));
    assert_eq!(creates[1].after.as_ref().unwrap()["amount"], "149.00");

    let webhooks = of_action(&f, "webhook.yookassa");
    let outcomes: Vec<AuditOutcome> = webhooks.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [AuditOutcome::Rejected, AuditOutcome::Unchanged, AuditOutcome::Applied]);
    assert_eq!(webhooks[2].target, Some(format!("payment.succeeded {}", created.payment_id)));
    assert_eq!(webhooks[2].user_id.as_deref(), Some(USER));
    assert_eq!(webhooks[2].after.as_ref().unwrap()["status"], "succeeded");
    assert_eq!(webhooks[0].error.as_ref().unwrap()["code"], "INVALID_WEBHOOK");

    let refund = &of_action(&f, "payment.refund")[0];
    assert_eq!((refund.actor.as_str(), refund.request_id.as_deref()), ("admin:alice", Some("req-9")));
    assert_eq!(refund.before.as_ref().unwrap()["refunded_amount"], "0");
    assert_eq!(refund.after.as_ref().unwrap()["refunded_amount"], "149.00");
    assert_eq!(refund.after.as_ref().unwrap()["status"], "refunded");
}

#[test]
fn the_log_pages_by_id_and_filters_by_every_field() {
    let f = Fixture::new();
    for user in ["a", "b"] {
        f.billing.register_user(user, true).unwrap();
        for i in 0..3 {
            f.billing.grant_credits(user, dec("1"), &format!("g{i}"), "promo").unwrap();
        }
    }
    let all = log(&f, AuditFilter::default());
    assert_eq!(all.len(), 7, "six grants and the catalog the engine opened with");
    assert_eq!(all[6].action, "catalog.load");
    let first = f.billing.audit_log(&AuditFilter::default(), 4, None).unwrap();
    let rest = f.billing.audit_log(&AuditFilter::default(), 4, Some(first[3].id)).unwrap();
    assert_eq!([first, rest].concat(), all);
    let of_b = log(&f, AuditFilter { user_id: Some("b".into()), ..AuditFilter::default() });
    assert_eq!(of_b.len(), 3);
    assert!(of_b.iter().all(|r| r.user_id.as_deref() == Some("b")));
    assert!(log(&f, AuditFilter { actor: Some("admin:x".into()), ..AuditFilter::default() }).is_empty());
    let error = f.billing.audit_log(&AuditFilter { user_id: Some(String::new()), ..AuditFilter::default() }, 10, None);
    assert!(matches!(error, Err(BillingError::InvalidArgument { field: "user_id", .. })));
}

#[test]
fn the_schema_refuses_to_change_or_delete_a_record() {
    let f = Fixture::shared();
    f.billing.register_user(USER, true).unwrap();
    f.billing.grant_credits(USER, dec("1"), "g", "promo").unwrap();
    let before = f.db.rows("audit_log", "id");
    for sql in ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"] {
        let refusal = f.db.try_execute(sql).unwrap_err();
        assert!(refusal.contains("append-only"), "{refusal}");
    }
    assert_eq!(f.db.rows("audit_log", "id"), before);
}

/// A catalog reload (a deploy of new tariffs) is recorded when an engine opens with a
/// catalog that differs from the last one recorded, with the prices before and after.
#[test]
fn opening_with_a_changed_catalog_records_the_reload() {
    let f = Fixture::shared();
    let loads = |billing: &billing_engine::Billing| {
        billing.audit_log(&AuditFilter { action: Some("catalog.load".into()), ..Default::default() }, 10, None).unwrap()
    };
    assert_eq!(loads(&f.billing).len(), 1, "the first open");
    drop(billing_engine::Billing::open(&f.db.location, common::catalog()).unwrap());
    assert_eq!(loads(&f.billing).len(), 1, "the same catalog again: nothing new");
    let text =
        std::fs::read_to_string(common::tariffs_path()).unwrap().replace(r#"price = "299.00""#, r#"price = "349.00""#);
    let changed =
        billing_engine::Billing::open(&f.db.location, billing_engine::Catalog::from_toml(&text).unwrap()).unwrap();
    let records = loads(&changed);
    assert_eq!(records.len(), 2);
    let price = |value: &Option<serde_json::Value>| value.as_ref().unwrap()["plans"][1]["price"].clone();
    assert_eq!((price(&records[0].before), price(&records[0].after)), (json!("299.00"), json!("349.00")));
    assert_eq!(records[0].actor, "system");
}
