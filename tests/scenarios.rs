//! The billing model end to end on a real SQLite file: seed 000's scenarios, resets,
//! daily limits, idempotency, refunds, subscriptions, views and the integrity audit.

mod common;

use billing_engine::{BillingError, ChargeSource, EntryKind, ImportedSubscription};
use common::{dec, Fixture};
use serde_json::json;

fn charge_source(f: &Fixture, user: &str, key: &str) -> Result<ChargeSource, BillingError> {
    f.billing.charge(user, "generation", key, None).map(|c| c.source)
}

#[test]
fn scenario_a_free_user_spends_freemium_within_daily_limit_then_credits() {
    let f = Fixture::new();
    let state = f.billing.register_user("alice", true).unwrap();
    assert_eq!((state.plan_code.as_str(), state.credits), ("FREE", dec("10")));
    assert_eq!((state.freemium_ops_limit, state.daily_limit, state.remaining_today), (Some(5), Some(3), Some(3)));

    for i in 0..3 {
        assert_eq!(charge_source(&f, "alice", &format!("a{i}")).unwrap(), ChargeSource::Freemium);
    }
    // An allowance charge moves zero credits, never "-0", in the ledger and on replay.
    let replay = f.billing.charge("alice", "generation", "a0", None).unwrap();
    assert_eq!((replay.replayed, replay.credits_spent.to_string()), (true, "0".to_owned()));
    assert_eq!(f.billing.ledger("alice", 1, None).unwrap()[0].credits_delta.to_string(), "0");
    // The free tier's daily limit stops the allowance; credits still pay.
    let quote = f.billing.quote("alice", "generation").unwrap();
    assert_eq!(
        (quote.allowed, quote.source, quote.credits_cost, quote.credits_after),
        (true, Some(ChargeSource::Credits), dec("2"), dec("8"))
    );
    let charge = f.billing.charge("alice", "generation", "a3", None).unwrap();
    assert_eq!(
        (charge.source, charge.credits_spent, charge.credits_balance),
        (ChargeSource::Credits, dec("2"), dec("8"))
    );
    let assistant = f.billing.charge("alice", "assistant", "a4", None).unwrap();
    assert_eq!((assistant.credits_spent, assistant.credits_balance), (dec("1"), dec("7")));

    let state = f.billing.state("alice").unwrap();
    assert_eq!((state.freemium_ops_used, state.used_today, state.remaining_today), (3, 3, Some(0)));

    f.advance_days(1);
    assert_eq!(f.billing.state("alice").unwrap().remaining_today, Some(3));
    assert_eq!(charge_source(&f, "alice", "b0").unwrap(), ChargeSource::Freemium);
    assert_eq!(charge_source(&f, "alice", "b1").unwrap(), ChargeSource::Freemium);
    // Five freemium ops in the period are used up: credits pay though the day has room.
    assert_eq!(charge_source(&f, "alice", "b2").unwrap(), ChargeSource::Credits);
    assert_eq!(f.billing.state("alice").unwrap().freemium_ops_remaining, Some(0));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn scenario_b_subscriber_uses_plan_ops_then_freemium_then_credits() {
    let f = Fixture::new();
    f.billing.register_user("bob", true).unwrap();
    let details = f.billing.activate_subscription("bob", "basic", "pay-1").unwrap();
    assert_eq!((details.plan.as_str(), details.is_active, details.plan_display.as_str()), ("pro", true, "Basic"));

    for i in 0..30 {
        assert_eq!(charge_source(&f, "bob", &format!("s{i}")).unwrap(), ChargeSource::Subscription, "charge {i}");
    }
    let state = f.billing.state("bob").unwrap();
    assert_eq!(
        (state.subscription_ops_used, state.subscription_ops_remaining, state.credits),
        (Some(30), Some(0), dec("10"))
    );
    assert_eq!((state.plan_code.as_str(), state.daily_limit, state.remaining_today), ("basic", None, None));
    assert_eq!(charge_source(&f, "bob", "f0").unwrap(), ChargeSource::Freemium);
    assert_eq!(charge_source(&f, "bob", "f1").unwrap(), ChargeSource::Freemium);
    assert_eq!(charge_source(&f, "bob", "f2").unwrap(), ChargeSource::Freemium);
    assert_eq!(charge_source(&f, "bob", "c0").unwrap(), ChargeSource::Credits);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn scenario_c_nothing_left_is_refused_and_writes_nothing() {
    let f = Fixture::shared();
    f.billing.register_user("carol", false).unwrap();
    for i in 0..3 {
        f.billing.charge("carol", "assistant", &format!("k{i}"), None).unwrap();
    }
    // Freemium has ops left, but today's are spent and there are no credits.
    let err = f.billing.charge("carol", "assistant", "k3", None).unwrap_err();
    assert_eq!(err.code(), "DAILY_LIMIT_REACHED");
    f.advance_days(1);
    f.billing.charge("carol", "assistant", "k4", None).unwrap();
    f.billing.charge("carol", "assistant", "k5", None).unwrap();

    let before = f.snapshot();
    let quote = f.billing.quote("carol", "generation").unwrap();
    assert_eq!((quote.allowed, quote.source, quote.reason_code.as_deref()), (false, None, Some("NOT_ENOUGH_CREDITS")));
    let err = f.billing.charge("carol", "generation", "k6", None).unwrap_err();
    assert_eq!(err, BillingError::NotEnoughCredits { required: dec("2"), available: dec("0"), expired: dec("0") });
    assert_eq!(err.details()["required"], json!("2"));
    assert_eq!(f.snapshot(), before, "a refused charge writes nothing");
    // The refused key was not used up: the same key succeeds once there is money.
    f.billing.grant_credits("carol", dec("5"), "topup", "support").unwrap();
    assert_eq!(f.billing.charge("carol", "generation", "k6", None).unwrap().credits_balance, dec("3"));
}

#[test]
fn allowances_reset_on_anchored_periods_without_drift() {
    let f = Fixture::new();
    f.billing.register_user("u", false).unwrap();
    let anchor = f.billing.state("u").unwrap().freemium_reset_at;
    f.billing.charge("u", "assistant", "k0", None).unwrap();

    // Read late, well inside the third period: the period is still anchored at registration.
    f.advance_days(75);
    let state = f.billing.state("u").unwrap();
    assert_eq!(state.freemium_ops_used, 0);
    assert_eq!(state.freemium_reset_at, anchor + time::Duration::days(60));
    f.billing.charge("u", "assistant", "k1", None).unwrap();
    f.advance_days(15); // day 90: exactly the start of the fourth period
    let state = f.billing.state("u").unwrap();
    assert_eq!((state.freemium_ops_used, state.freemium_reset_at), (0, anchor + time::Duration::days(90)));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn yearly_plan_resets_ops_every_period_until_it_expires() {
    let f = Fixture::new();
    f.billing.register_user("y", false).unwrap();
    f.billing.activate_subscription("y", "premium", "pay").unwrap();
    for i in 0..300 {
        f.billing.charge("y", "assistant", &format!("m0-{i}"), None).unwrap();
    }
    assert_eq!(charge_source(&f, "y", "over").unwrap(), ChargeSource::Freemium);
    f.advance_days(30);
    let state = f.billing.state("y").unwrap();
    assert_eq!((state.subscription_ops_used, state.subscription_ops_remaining), (Some(0), Some(300)));
    assert_eq!(charge_source(&f, "y", "m1").unwrap(), ChargeSource::Subscription);
    f.advance_days(365 - 30);
    let state = f.billing.state("y").unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active, state.subscription_ops_used), ("FREE", false, None));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn daily_limit_rolls_over_at_midnight_in_the_catalog_offset() {
    let f = Fixture::new();
    f.clock.set_iso("2026-03-10T20:30:00Z").unwrap(); // 23:30 in +03:00
    f.billing.register_user("d", false).unwrap();
    for i in 0..3 {
        f.billing.charge("d", "assistant", &format!("k{i}"), None).unwrap();
    }
    let err = f.billing.charge("d", "assistant", "k3", None).unwrap_err();
    let BillingError::DailyLimitReached { limit, resets_at } = err else {
        panic!("expected DAILY_LIMIT_REACHED, got {err:?}")
    };
    assert_eq!(limit, 3);
    assert_eq!(billing_engine::time_util::iso(resets_at), "2026-03-10T21:00:00.000Z");
    f.clock.set_iso("2026-03-10T20:59:59Z").unwrap();
    assert_eq!(f.billing.charge("d", "assistant", "k3", None).unwrap_err().code(), "DAILY_LIMIT_REACHED");
    // 00:00 local, still 21:00 UTC "yesterday": a new day.
    f.clock.set_iso("2026-03-10T21:00:00Z").unwrap();
    assert_eq!(f.billing.state("d").unwrap().used_today, 0);
    assert_eq!(charge_source(&f, "d", "k3").unwrap(), ChargeSource::Freemium);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn idempotent_replay_returns_the_original_and_conflict_is_refused() {
    let f = Fixture::shared();
    f.billing.register_user("i", true).unwrap();
    f.billing.grant_credits("i", dec("100"), "g", "test").unwrap();
    let meta = Some(json!({"request": 7}));
    // Spend freemium first so the keyed charge comes from credits.
    for n in 0..3 {
        f.billing.charge("i", "assistant", &format!("pre{n}"), None).unwrap();
    }
    let first = f.billing.charge("i", "generation", "key-1", meta.clone()).unwrap();
    assert!(!first.replayed);
    let before = f.snapshot();
    let again = f.billing.charge("i", "generation", "key-1", meta.clone()).unwrap();
    assert_eq!(again, billing_engine::Charge { replayed: true, ..first.clone() });
    assert_eq!(f.snapshot(), before, "a replay writes nothing");

    for conflicting in [
        f.billing.charge("i", "assistant", "key-1", meta.clone()),
        f.billing.charge("i", "generation", "key-1", Some(json!({"request": 8}))),
    ] {
        assert_eq!(conflicting.unwrap_err(), BillingError::IdempotencyConflict { key: "key-1".into() });
    }
    assert_eq!(f.billing.grant_credits("i", dec("1"), "key-1", "x").unwrap_err().code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(f.snapshot(), before);
    // Keys are per user: another user may use the same key.
    f.billing.register_user("j", true).unwrap();
    assert!(!f.billing.charge("j", "generation", "key-1", meta).unwrap().replayed);
    // Replays hold across handles on the same file, as across processes.
    assert!(f.reopen().charge("i", "generation", "key-1", Some(json!({"request": 7}))).unwrap().replayed);
}

#[test]
fn refunds_return_credits_and_ops_to_their_source_once() {
    let f = Fixture::shared();
    f.billing.register_user("r", true).unwrap();
    let free = f.billing.charge("r", "generation", "c1", None).unwrap();
    assert_eq!(free.source, ChargeSource::Freemium);
    for n in 0..2 {
        f.billing.charge("r", "assistant", &format!("fill{n}"), None).unwrap();
    }
    let paid = f.billing.charge("r", "generation", "c2", None).unwrap();
    assert_eq!((paid.source, paid.credits_balance), (ChargeSource::Credits, dec("8")));

    let refund = f.billing.refund_charge(paid.id, "rf-paid", Some("generation failed")).unwrap();
    assert_eq!((refund.credits_refunded, refund.credits_balance, refund.replayed), (dec("2"), dec("10"), false));
    let refund = f.billing.refund_charge(free.id, "rf-free", None).unwrap();
    assert!(refund.op_returned);
    let state = f.billing.state("r").unwrap();
    assert_eq!((state.credits, state.freemium_ops_used, state.used_today), (dec("10"), 2, 2));

    // Refunding again, under the same or another key, gives the first refund back.
    let before = f.snapshot();
    assert!(f.billing.refund_charge(paid.id, "rf-paid", None).unwrap().replayed);
    assert!(f.billing.refund_charge(paid.id, "rf-other", None).unwrap().replayed);
    assert_eq!(f.snapshot(), before);
    assert_eq!(
        f.billing.refund_charge(999, "nope", None).unwrap_err(),
        BillingError::ChargeNotFound { charge_id: 999 }
    );
    let grant = f.billing.grant_credits("r", dec("1"), "g1", "bonus").unwrap();
    assert_eq!(f.billing.refund_charge(grant.id, "nope", None).unwrap_err().code(), "CHARGE_NOT_FOUND");

    // An op from a finished period is not given back to the new one.
    let old = f.billing.charge("r", "assistant", "c3", None).unwrap();
    assert_eq!(old.source, ChargeSource::Freemium);
    f.advance_days(30);
    let refund = f.billing.refund_charge(old.id, "rf-old", None).unwrap();
    assert!(!refund.op_returned);
    assert_eq!(f.billing.state("r").unwrap().freemium_ops_used, 0);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn subscriptions_activate_cancel_expire_and_refuse_what_they_must() {
    let f = Fixture::new();
    f.billing.register_user("s", false).unwrap();
    assert_eq!(f.billing.cancel_subscription("s", false).unwrap_err(), BillingError::NoSubscription);
    assert_eq!(f.billing.set_autorenew("s", false).unwrap_err(), BillingError::NoSubscription);
    for bad in ["FREE", "gold"] {
        assert_eq!(f.billing.activate_subscription("s", bad, "k").unwrap_err().code(), "INVALID_PLAN");
    }

    f.billing.activate_subscription("s", "standard", "pay-1").unwrap();
    // Same key, same plan: a replay. Another key while active: refused.
    assert!(f.billing.activate_subscription("s", "standard", "pay-1").unwrap().is_active);
    assert_eq!(f.billing.activate_subscription("s", "basic", "pay-1").unwrap_err().code(), "IDEMPOTENCY_CONFLICT");
    assert_eq!(f.billing.activate_subscription("s", "basic", "pay-2").unwrap_err().code(), "ACTIVE_SUBSCRIPTION");
    assert_eq!(f.billing.set_autorenew("s", true).unwrap_err(), BillingError::NoPaymentMethod);
    assert!(!f.billing.set_autorenew("s", false).unwrap().autorenew_enabled);

    let details = f.billing.cancel_subscription("s", false).unwrap();
    assert!(details.is_active, "stays active to the end of the paid period");
    f.advance_days(29);
    assert_eq!(f.billing.state("s").unwrap().plan_code, "standard");
    f.advance_days(1);
    let state = f.billing.state("s").unwrap();
    assert_eq!((state.plan_code.as_str(), state.is_active, state.tier.as_str()), ("FREE", false, "free"));

    f.billing.activate_subscription("s", "basic", "pay-3").unwrap();
    f.billing.charge("s", "assistant", "op", None).unwrap();
    let details = f.billing.cancel_subscription("s", true).unwrap();
    assert!(!details.is_active);
    // Reactivated at the same instant: a fresh allowance, not the canceled one's.
    f.billing.activate_subscription("s", "basic", "pay-4").unwrap();
    assert_eq!(f.billing.state("s").unwrap().subscription_ops_used, Some(0));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn import_user_keeps_credits_and_clamps_freemium_use() {
    let f = Fixture::new();
    let state = f.billing.import_user("old", dec("37"), 9, None).unwrap();
    assert_eq!((state.credits, state.freemium_ops_used, state.freemium_ops_remaining), (dec("37"), 5, Some(0)));
    // Imported users keep their balance instead of a trial, and a re-run changes nothing.
    assert_eq!(f.billing.register_user("old", true).unwrap().credits, dec("37"));
    assert_eq!(f.billing.import_user("old", dec("1000"), 0, None).unwrap().credits, dec("37"));

    let sub = ImportedSubscription {
        plan_code: "basic".into(),
        expires_at: billing_engine::time_util::parse_iso("2026-01-20T00:00:00Z"),
    };
    let state = f.billing.import_user("subscriber", dec("0"), 0, Some(sub)).unwrap();
    assert_eq!((state.plan_code.as_str(), state.subscription_ops_used), ("basic", Some(0)));
    assert_eq!(billing_engine::time_util::iso(state.expires_at.unwrap()), "2026-01-20T00:00:00.000Z");
    let past = ImportedSubscription {
        plan_code: "basic".into(),
        expires_at: billing_engine::time_util::parse_iso("2025-01-01T00:00:00Z"),
    };
    assert_eq!(f.billing.import_user("late", dec("0"), 0, Some(past)).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(f.billing.import_user("neg", dec("-1"), 0, None).unwrap_err().code(), "INVALID_ARGUMENT");
    assert!(f.billing.state("late").is_err());
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn free_trial_is_awarded_once_per_user_ever() {
    let f = Fixture::shared();
    assert_eq!(f.billing.register_user("t", false).unwrap().credits, dec("0"));
    assert_eq!(f.billing.register_user("t", true).unwrap().credits, dec("10"));
    assert_eq!(f.billing.register_user("t", true).unwrap().credits, dec("10"));
    assert_eq!(f.reopen().register_user("t", true).unwrap().credits, dec("10"));
    let kinds: Vec<_> = f.billing.ledger("t", 50, None).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![EntryKind::FreeTrial]);
}

#[test]
fn ledger_pages_newest_first_and_state_survives_reopening() {
    let f = Fixture::shared();
    f.billing.register_user("l", true).unwrap();
    f.billing.grant_credits("l", dec("20"), "g", "promo").unwrap();
    for i in 0..7 {
        f.billing.charge("l", "assistant", &format!("k{i}"), Some(json!({"n": i}))).unwrap();
    }
    let first = f.billing.ledger("l", 4, None).unwrap();
    let second = f.billing.ledger("l", 4, Some(first.last().unwrap().id)).unwrap();
    let third = f.billing.ledger("l", 4, Some(second.last().unwrap().id)).unwrap();
    let ids: Vec<i64> = first.iter().chain(&second).chain(&third).map(|e| e.id).collect();
    assert_eq!(ids.len(), 9);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first, no overlap: {ids:?}");
    assert_eq!(first[0].metadata, Some(json!({"n": 6})));
    assert_eq!(third.last().unwrap().kind, EntryKind::FreeTrial);
    let grant = first.iter().chain(&second).chain(&third).find(|e| e.kind == EntryKind::Grant).unwrap();
    assert_eq!((grant.credits_delta, grant.credits_balance_after), (dec("20"), dec("30")));
    assert_eq!(grant.metadata, Some(json!({"reason": "promo"})));

    let state = f.billing.state("l").unwrap();
    let reopened = f.reopen();
    drop(f.billing);
    assert_eq!(reopened.state("l").unwrap(), state);
    assert_eq!(reopened.ledger("l", 50, None).unwrap().len(), 9);
    assert!(reopened.verify_integrity().unwrap().ok);
}

#[test]
fn bad_input_is_a_typed_error_naming_the_field_and_changes_nothing() {
    let f = Fixture::shared();
    f.billing.register_user("u", true).unwrap();
    let before = f.snapshot();
    let long = "x".repeat(129);
    let cases: Vec<(Result<(), BillingError>, &str, &str)> = vec![
        (f.billing.register_user("", true).map(drop), "INVALID_ARGUMENT", "user_id"),
        (f.billing.register_user(&long, true).map(drop), "INVALID_ARGUMENT", "user_id"),
        (f.billing.register_user("a\nb", true).map(drop), "INVALID_ARGUMENT", "user_id"),
        (f.billing.charge("u", "generation", "", None).map(drop), "INVALID_ARGUMENT", "idempotency_key"),
        (f.billing.charge("u", "generation", "k", Some(json!([1]))).map(drop), "INVALID_ARGUMENT", "metadata"),
        (f.billing.charge("u", "teleport", "k", None).map(drop), "UNKNOWN_OPERATION", "operation"),
        (f.billing.charge("nobody", "generation", "k", None).map(drop), "UNKNOWN_USER", "user_id"),
        (f.billing.grant_credits("u", dec("0"), "k", "r").map(drop), "INVALID_ARGUMENT", "amount"),
        (f.billing.grant_credits("u", dec("1"), "k", " ").map(drop), "INVALID_ARGUMENT", "reason"),
        (f.billing.ledger("u", 0, None).map(drop), "INVALID_ARGUMENT", "limit"),
        (f.billing.state("nobody").map(drop), "UNKNOWN_USER", "user_id"),
    ];
    for (result, code, field) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        let named =
            err.details().get("field").or(err.details().get("operation")).or(err.details().get("user_id")).is_some();
        assert!(named && (err.to_string().contains(field) || code != "INVALID_ARGUMENT"), "{err} should name {field}");
    }
    assert_eq!(f.snapshot(), before);
}

#[test]
fn verify_integrity_catches_a_balance_changed_outside_the_ledger() {
    let f = Fixture::shared();
    f.billing.register_user("v", true).unwrap();
    f.billing.charge("v", "generation", "k", None).unwrap();
    assert!(f.billing.verify_integrity().unwrap().ok);
    f.db.execute("UPDATE accounts SET credits = '999', free_used = 4 WHERE user_id = 'v'");
    let report = f.billing.verify_integrity().unwrap();
    assert!(!report.ok);
    let checks: Vec<_> =
        report.mismatches.iter().map(|m| (m.check.as_str(), m.ledger.as_str(), m.stored.as_str())).collect();
    assert_eq!(checks, vec![("credits", "10", "999"), ("freemium_ops_used", "1", "4")]);
    // The ledger itself refuses to be rewritten.
    let before = f.db.rows("ledger", "id");
    let refusal = f.db.try_execute("UPDATE ledger SET credits_delta = '5'").unwrap_err();
    assert!(refusal.contains("append-only"), "{refusal}");
    let refusal = f.db.try_execute("DELETE FROM ledger").unwrap_err();
    assert!(refusal.contains("append-only"), "{refusal}");
    assert_eq!(f.db.rows("ledger", "id"), before);
}

#[test]
fn views_have_the_seed_003_shapes() {
    let f = Fixture::new();
    f.billing.register_user("w", true).unwrap();
    let me = serde_json::to_value(f.billing.billing_me("w").unwrap()).unwrap();
    assert_eq!(
        me,
        json!({"plan_code": "FREE", "plan_name": "Free", "expires_at": null, "is_active": false,
        "daily_photo_limit": 3, "used_today": 0, "remaining_today": 3, "credits_expiring": [],
        "last_payment": null})
    );
    f.billing.activate_subscription("w", "standard", "p").unwrap();
    let details = serde_json::to_value(f.billing.subscription_details("w").unwrap()).unwrap();
    assert_eq!(
        details,
        json!({"plan": "pro", "plan_display": "Standard", "expires_at": "2026-01-31T12:00:00.000Z",
        "is_active": true, "autorenew_available": false, "autorenew_enabled": false, "card_bound": false,
        "payment_method": {"is_attached": false, "card_mask": null, "card_brand": null, "method_type": null, "title": null}})
    );
    let plans = serde_json::to_value(f.billing.plans()).unwrap();
    let codes: Vec<_> = plans.as_array().unwrap().iter().map(|p| p["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["FREE", "basic", "standard", "premium"]);
    assert_eq!(plans[2]["price"].to_string(), "699.00");
    assert_eq!(plans[2]["old_price"].to_string(), "899.00");
    assert_eq!((plans[2]["advanced_stats"].as_bool(), plans[1]["advanced_stats"].as_bool()), (Some(true), Some(false)));
    assert_eq!(plans[0]["history_days"], json!(7));
}

#[test]
fn import_into_an_unlimited_free_tier_refuses_a_use_count_it_cannot_record() {
    let text = std::fs::read_to_string(common::tariffs_path()).unwrap().replace("ops_limit = 5 ", "# unlimited ");
    let f = Fixture::with_catalog(billing_engine::Catalog::from_toml(&text).unwrap());
    assert_eq!(f.billing.catalog().free_plan().ops_limit, None);
    let err = f.billing.import_user("huge", dec("1"), u32::MAX, None).unwrap_err();
    assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("freemium_used")));
    assert!(f.billing.state("huge").is_err(), "nothing was written");
    assert_eq!(f.billing.import_user("ok", dec("1"), 12, None).unwrap().freemium_ops_used, 12);
    assert!(f.billing.verify_integrity().unwrap().ok);
}
