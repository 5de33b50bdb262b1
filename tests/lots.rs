//! Credit lots (issue 16): every path that gives credits makes a lot; spending draws in
//! the one burn order; a lot stops spending at the exact instant it expires, on every
//! read, and the next write records its expiry once; refunds give back what was drawn,
//! last first, and to an expired lot as the catalog says; grants can be voided; the
//! audit proves every remainder; threads never overdraw a lot.

mod common;

use std::sync::{Arc, Barrier};

use billing_engine::{Billing, BillingError, Catalog, Clock, CreditLot, EntryKind, GrantTerms, LotCategory, LotSource};
use common::{dec, Fixture};
use rust_decimal::Decimal;
use time::Duration;

/// The example tariffs with a trial that expires after 7 days and burns first.
fn catalog(refund_to_expired: &str) -> Catalog {
    let text = std::fs::read_to_string(common::tariffs_path()).unwrap();
    let text = text
        .replace("# expires_after_days = 14", "expires_after_days = 7")
        .replace("priority = 50                       # optional, the default: the trial", "priority = 10 # the trial")
        .replace("refund_to_expired = \"expire\"", &format!("refund_to_expired = \"{refund_to_expired}\""));
    Catalog::from_toml(&text).unwrap()
}

fn fixture(refund_to_expired: &str) -> Fixture {
    Fixture::with_catalog(catalog(refund_to_expired))
}

fn remainders(billing: &Billing, user: &str) -> Vec<(LotSource, String)> {
    let lots: Vec<CreditLot> = billing.credit_lots(user).unwrap();
    lots.iter().map(|lot| (lot.source, lot.remaining.to_string())).collect()
}

fn assert_audit_ok(billing: &Billing) {
    let report = billing.verify_integrity().unwrap();
    assert!(report.ok, "{:?}", report.mismatches);
}

fn kinds(billing: &Billing, user: &str) -> Vec<EntryKind> {
    billing.ledger(user, 100, None).unwrap().iter().map(|e| e.kind).collect()
}

/// A user on the free tier whose ops are spent, so charges take credits.
fn credits_user(f: &Fixture, user: &str) {
    f.billing.register_user(user, true).unwrap();
    for i in 0..3 {
        f.billing.charge(user, "assistant", &format!("{user}-free-{i}"), None).unwrap();
    }
    f.clock.advance(Duration::days(1)).unwrap();
    for i in 3..5 {
        f.billing.charge(user, "assistant", &format!("{user}-free-{i}"), None).unwrap();
    }
}

#[test]
fn charges_draw_in_the_burn_order_priority_then_expiry_then_category() {
    let f = fixture("expire");
    credits_user(&f, "ann");
    let now = f.clock.now();
    // The trial (priority 10, 7 days), a grant that expires in 3 days, and a paid grant.
    let soon = GrantTerms { expires_at: Some(now + Duration::days(3)), ..GrantTerms::default() };
    f.billing.grant_credits_on("ann", dec("4"), "g-soon", "promo", &soon).unwrap();
    let paid = GrantTerms { category: LotCategory::Paid, ..GrantTerms::default() };
    f.billing.grant_credits_on("ann", dec("5"), "g-paid", "goodwill", &paid).unwrap();
    let never = GrantTerms::default();
    f.billing.grant_credits_on("ann", dec("5"), "g-never", "promo", &never).unwrap();
    // 6 generations of 2: the trial's 10 first (priority 10), then the grant that
    // expires, then the promotional lot that never does, before the paid one.
    for i in 0..8 {
        f.billing.charge("ann", "generation", &format!("gen-{i}"), None).unwrap();
    }
    assert_eq!(
        remainders(&f.billing, "ann"),
        [
            (LotSource::FreeTrial, "0".into()),
            (LotSource::Grant, "0".into()),
            (LotSource::Grant, "5".into()),
            (LotSource::Grant, "3".into()),
        ],
        "trial, expiring grant and 1 of the never-expiring promotional one spent; paid untouched"
    );
    assert_audit_ok(&f.billing);
}

#[test]
fn a_lot_stops_spending_at_the_exact_instant_and_the_next_write_records_its_expiry_once() {
    let f = fixture("expire");
    credits_user(&f, "bob");
    let trial = f.billing.credit_lots("bob").unwrap()[0].clone();
    let expires_at = trial.expires_at.expect("the trial expires");
    assert_eq!(f.billing.state("bob").unwrap().credits_expiring[0].amount, dec("10"));

    f.clock.set_iso(&billing_engine::time_util::iso(expires_at - Duration::milliseconds(1))).unwrap();
    assert_eq!(f.billing.state("bob").unwrap().credits, dec("10"));
    f.clock.set_iso(&billing_engine::time_util::iso(expires_at)).unwrap();
    let state = f.billing.state("bob").unwrap();
    assert_eq!((state.credits, state.credits_expiring.len()), (dec("0"), 0), "gone at the instant, on a read");
    assert_eq!(kinds(&f.billing, "bob")[0], EntryKind::Charge, "a read writes nothing");
    let quote = f.billing.quote("bob", "generation").unwrap();
    assert!(!quote.allowed);

    let err = f.billing.charge("bob", "generation", "late", None).unwrap_err();
    assert_eq!((err.code(), err.details()["expired"].as_str()), ("NOT_ENOUGH_CREDITS", Some("10")), "it says why");
    f.billing.grant_credits("bob", dec("1"), "g", "goodwill").unwrap();
    f.billing.grant_credits("bob", dec("1"), "g2", "goodwill").unwrap();
    let expired: Vec<_> = f
        .billing
        .ledger("bob", 100, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EntryKind::CreditExpired)
        .collect();
    assert_eq!(expired.len(), 1, "recorded once, by the first write");
    assert_eq!((expired[0].credits_delta, expired[0].reference.clone()), (dec("-10"), Some(trial.id.to_string())));
    assert_eq!(f.billing.state("bob").unwrap().credits, dec("2"));
    assert_audit_ok(&f.billing);
}

#[test]
fn a_refund_gives_back_last_drawn_first_and_to_an_expired_lot_it_expires_at_once() {
    let f = fixture("expire");
    credits_user(&f, "cid");
    let paid = GrantTerms { category: LotCategory::Paid, ..GrantTerms::default() };
    f.billing.grant_credits_on("cid", dec("1"), "paid", "goodwill", &paid).unwrap();
    // 10 trial credits, then 1 paid: a charge of 2 after 4 takes the trial's last 2.
    for i in 0..4 {
        f.billing.charge("cid", "generation", &format!("c{i}"), None).unwrap();
    }
    let charge = f.billing.charge("cid", "generation", "c4", None).unwrap();
    assert_eq!(remainders(&f.billing, "cid"), [(LotSource::FreeTrial, "0".into()), (LotSource::Grant, "1".into())]);
    f.clock.advance(Duration::days(8)).unwrap();
    f.billing.refund_charge(charge.id, "refund", Some("model failed")).unwrap();
    assert_eq!(&kinds(&f.billing, "cid")[..2], [EntryKind::CreditExpired, EntryKind::Refund], "two entries");
    assert_eq!(f.billing.state("cid").unwrap().credits, dec("1"));
    assert_audit_ok(&f.billing);
}

#[test]
fn under_reissue_a_refund_to_an_expired_lot_becomes_a_new_promotional_lot() {
    let f = fixture("reissue");
    credits_user(&f, "dan");
    let charge = f.billing.charge("dan", "generation", "c", None).unwrap();
    f.clock.advance(Duration::days(8)).unwrap();
    f.billing.refund_charge(charge.id, "refund", None).unwrap();
    let lots = f.billing.credit_lots("dan").unwrap();
    let reissued = lots.iter().find(|lot| lot.source == LotSource::RefundReissue).expect("a reissued lot");
    assert_eq!((reissued.amount, reissued.category), (dec("2"), LotCategory::Promotional));
    assert_eq!(reissued.expires_at, Some(f.clock.now() + Duration::days(30)));
    assert_eq!(f.billing.state("dan").unwrap().credits, dec("2"));
    assert_audit_ok(&f.billing);
}

#[test]
fn a_voided_grant_forfeits_what_remains_once_and_other_lots_are_not_grants() {
    let f = fixture("expire");
    credits_user(&f, "eve");
    let grant = f.billing.grant_credits("eve", dec("6"), "g", "promo").unwrap();
    let voided = f.billing.void_grant(grant.id, "void", "sent by mistake").unwrap();
    assert_eq!((voided.kind, voided.credits_delta), (EntryKind::CreditVoided, dec("-6")));
    assert_eq!(f.billing.void_grant(grant.id, "void", "sent by mistake").unwrap(), voided, "a retry replays");
    let trial = f.billing.credit_lots("eve").unwrap()[0].id;
    for lot_id in [trial, 999_999] {
        let err = f.billing.void_grant(lot_id, &format!("v{lot_id}"), "no").unwrap_err();
        assert_eq!((err.code(), err.details()["lot_id"].as_i64()), ("GRANT_NOT_FOUND", Some(lot_id)));
    }
    assert_eq!(f.billing.state("eve").unwrap().credits, dec("10"));
    assert_audit_ok(&f.billing);
}

#[test]
fn grant_terms_are_checked_before_anything_is_written() {
    let f = fixture("expire");
    f.billing.register_user("fay", false).unwrap();
    let past = GrantTerms { expires_at: Some(f.clock.now()), ..GrantTerms::default() };
    let err = f.billing.grant_credits_on("fay", dec("1"), "g", "promo", &past).unwrap_err();
    assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("expires_at")));
    let priority = GrantTerms { priority: Some(101), ..GrantTerms::default() };
    let err = f.billing.grant_credits_on("fay", dec("1"), "g", "promo", &priority).unwrap_err();
    assert_eq!(err.details()["field"], "priority");
    assert!(f.billing.credit_lots("fay").unwrap().is_empty());
    assert!(f.billing.ledger("fay", 10, None).unwrap().is_empty());
}

#[test]
fn a_debt_is_paid_first_from_the_next_lot() {
    let f = fixture("expire");
    f.billing.register_user("gus", false).unwrap();
    f.billing.grant_credits("gus", dec("2"), "g1", "promo").unwrap();
    f.billing.grant_credits("gus", dec("-5"), "fix", "correction").unwrap();
    assert_eq!(f.billing.state("gus").unwrap().credits, dec("-3"));
    f.billing.grant_credits("gus", dec("10"), "g2", "promo").unwrap();
    assert_eq!(remainders(&f.billing, "gus"), [(LotSource::Grant, "0".into()), (LotSource::Grant, "7".into())]);
    assert_audit_ok(&f.billing);
}

#[test]
fn the_audit_finds_a_lot_changed_outside_the_engine() {
    let f = Fixture::shared_with_catalog(catalog("expire"));
    f.billing.register_user("hal", true).unwrap();
    assert_audit_ok(&f.billing);
    f.db.execute("UPDATE credit_lots SET remaining = 4 WHERE user_id = 'hal'");
    let report = f.billing.verify_integrity().unwrap();
    let checks: Vec<&str> = report.mismatches.iter().map(|m| m.check.as_str()).collect();
    assert!(checks.iter().any(|c| c.starts_with("lot@")) && checks.contains(&"lots_balance"), "{checks:?}");
}

/// 8 threads, each with its own handle, spend 2 credits at a time from one user's 4 lots
/// of 5: exactly 10 charges go through, no lot is overdrawn, and the audit holds.
///
/// Mutation tried: SQLite's `BEGIN IMMEDIATE` as `BEGIN DEFERRED`: two charges read the
/// same lots and the second write fails, or a lot goes below zero; the test fails.
#[test]
fn eight_threads_spending_across_lots_never_overdraw_one() {
    let f = Fixture::shared_with_catalog(catalog("expire"));
    f.billing.import_user("ivy", Decimal::ZERO, u32::MAX, None).unwrap();
    for (i, priority) in [10u8, 20, 30, 40].into_iter().enumerate() {
        let terms = GrantTerms { priority: Some(priority), ..GrantTerms::default() };
        f.billing.grant_credits_on("ivy", dec("5"), &format!("lot-{i}"), "promo", &terms).unwrap();
    }
    let barrier = Arc::new(Barrier::new(8));
    let location = f.location().to_owned();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (barrier, location, clock) = (barrier.clone(), location.clone(), f.clock.clone());
            std::thread::spawn(move || {
                let billing = Billing::open_with_clock(&location, catalog("expire"), clock).unwrap();
                barrier.wait();
                let mut charged = 0;
                for i in 0..4 {
                    match billing.charge("ivy", "generation", &format!("t{t}-{i}"), None) {
                        Ok(_) => charged += 1,
                        Err(BillingError::NotEnoughCredits { .. }) => {}
                        Err(other) => panic!("{other}"),
                    }
                }
                charged
            })
        })
        .collect();
    let charged: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(charged, 10);
    assert!(f.billing.credit_lots("ivy").unwrap().iter().all(|lot| lot.remaining == Decimal::ZERO));
    assert_audit_ok(&f.billing);
}

/// A paid grant (the lot a purchase makes, by the same path) given at the instant a
/// trial lot expires, while other threads write to the same user: the expiry takes the
/// trial lot's own remainder and never the new lot.
#[test]
fn a_new_lot_racing_an_expiry_is_never_touched_by_it() {
    let f = Fixture::shared_with_catalog(catalog("expire"));
    f.billing.register_user("jo", true).unwrap();
    let trial = f.billing.credit_lots("jo").unwrap()[0].clone();
    f.clock.set_iso(&billing_engine::time_util::iso(trial.expires_at.unwrap())).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let location = f.location().to_owned();
    let clock = f.clock.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (barrier, location, clock) = (barrier.clone(), location.clone(), clock.clone());
            std::thread::spawn(move || {
                let billing = Billing::open_with_clock(&location, catalog("expire"), clock).unwrap();
                barrier.wait();
                let paid = GrantTerms { category: LotCategory::Paid, ..GrantTerms::default() };
                billing.grant_credits_on("jo", dec("3"), &format!("buy-{t}"), "purchase", &paid).unwrap();
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let expired: Vec<_> =
        f.billing.ledger("jo", 100, None).unwrap().into_iter().filter(|e| e.kind == EntryKind::CreditExpired).collect();
    assert_eq!(expired.len(), 1);
    assert_eq!((expired[0].credits_delta, expired[0].reference.clone()), (dec("-10"), Some(trial.id.to_string())));
    let paid: Vec<_> =
        f.billing.credit_lots("jo").unwrap().into_iter().filter(|l| l.category == LotCategory::Paid).collect();
    assert_eq!(paid.len(), 4);
    assert!(paid.iter().all(|lot| lot.remaining == dec("3")), "{paid:?}");
    assert_eq!(f.billing.state("jo").unwrap().credits, dec("12"));
    assert_audit_ok(&f.billing);
}
