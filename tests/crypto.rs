//! Crypto (EVM) payments (issue 17, seed 004), against the fake indexer of
//! `common::indexer`: Alchemy's signed notifications and a node's JSON-RPC over real
//! HTTP. The seed's lifecycle end to end; duplicates, out-of-order notifications, a reorg
//! before and after crediting, underpayment, a forged signature, expiry and a failed
//! transaction; and 16 concurrent deliveries of one transfer crediting once.

mod common;

use std::sync::{Arc, Barrier};

use billing_engine::alchemy::AlchemyNotify;
use billing_engine::crypto::CryptoState;
use billing_engine::events::EventType;
use billing_engine::{AuditFilter, AuditOutcome, BillingError, Clock, CryptoCheckout, EntryKind, Purchase};
use common::indexer::{FakeIndexer, Notification, GATEWAY, SIGNING_KEY, USDT};
use common::{dec, Fixture};
use serde_json::json;
use time::Duration;

const USER: &str = "u1";

fn setup() -> (FakeIndexer, Fixture) {
    let indexer = FakeIndexer::start();
    let Fixture { db, clock, billing, yookassa } = Fixture::shared();
    let provider = Arc::new(AlchemyNotify::new(SIGNING_KEY).unwrap());
    let f = Fixture { db, clock, billing: billing.with_crypto(provider).unwrap(), yookassa };
    f.billing.register_user(USER, true).unwrap();
    (indexer, f)
}

fn deliver(f: &Fixture, notification: &Notification) -> billing_engine::Result<billing_engine::CryptoWebhookOutcome> {
    f.billing.handle_crypto_webhook(&notification.body, &notification.headers)
}

fn state(f: &Fixture, payment_id: &str) -> CryptoState {
    f.billing.payment(payment_id).unwrap().crypto.unwrap().state
}

fn reconcile(f: &Fixture, indexer: &FakeIndexer) -> billing_engine::CryptoReconcileReport {
    f.billing.reconcile_crypto(&|chain, tx| indexer.receipt(chain, tx)).unwrap()
}

fn event_types(f: &Fixture, user: &str) -> Vec<EventType> {
    f.billing.user_events(user, 0, 1000).unwrap().iter().map(|e| e.event_type).collect()
}

fn checkout(f: &Fixture, user: &str, purchase: Purchase<'_>, key: &str) -> CryptoCheckout {
    f.billing.create_crypto_payment(user, purchase, 1, key).unwrap()
}

#[test]
fn the_seed_004_lifecycle_checkout_transfer_confirmations_credit_plan_changed_then_a_reorg_reversal() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Plan("basic"), "buy-1");
    let reference = checkout.reference;
    assert!((1..10_000).contains(&reference));
    assert_eq!(checkout.amount, (3_990_000 + reference).to_string());
    assert_eq!(checkout.display_amount, dec(&format!("3.99{reference:04}")));
    assert_eq!((checkout.address.as_str(), checkout.token.as_str(), checkout.symbol.as_str()), (GATEWAY, USDT, "USDT"));
    assert_eq!(checkout.uri, format!("ethereum:{USDT}@1/transfer?address={GATEWAY}&uint256={}", checkout.amount));
    assert_eq!(checkout.expires_at, f.clock.now() + Duration::hours(1));
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Pending);
    let history = f.billing.payments(USER, 10).unwrap().results;
    assert_eq!(history[0].status, "pending");

    // The payer's transfer is mined: one confirmation of twelve.
    let mined = indexer.pay(&checkout.amount);
    let outcome = deliver(&f, &mined.notification).unwrap();
    assert_eq!(
        (outcome.transfers, outcome.applied, outcome.payments.clone()),
        (1, 1, vec![checkout.payment_id.clone()])
    );
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Confirming);
    assert!(!f.billing.subscription_details(USER).unwrap().is_active, "no credit below the threshold");

    // Eleven more blocks, seen by the worker through the node.
    indexer.mine(11);
    let report = reconcile(&f, &indexer);
    assert_eq!((report.checked, report.changed, report.errors), (1, 1, 0));
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Succeeded);
    assert!(f.billing.subscription_details(USER).unwrap().is_active);
    let payment = f.billing.payment(&checkout.payment_id).unwrap();
    let details = payment.crypto.clone().unwrap();
    assert_eq!((details.confirmations, details.received.to_string()), (12, checkout.amount.clone()));
    assert_eq!(details.tx_hash.as_deref(), Some(mined.tx_hash.as_str()));
    let credit_key = format!("crypto:1:{}:0", mined.tx_hash);
    assert_eq!(details.credited_by.as_deref(), Some(credit_key.as_str()));
    let activation =
        f.billing.ledger(USER, 10, None).unwrap().into_iter().find(|e| e.kind == EntryKind::SubscriptionActivated);
    assert_eq!(activation.unwrap().idempotency_key.as_deref(), Some(credit_key.as_str()), "keyed by the chain triple");

    // The quota service consumes plan.changed.v1.
    let events = f.poll_at_least("quota-service", event_types(&f, USER).len());
    let changed = events.iter().find(|e| e.event_type == EventType::PlanChanged).expect("plan.changed.v1");
    assert_eq!((changed.user_id.as_str(), &changed.payload["plan_code"]), (USER, &json!("basic")));
    let succeeded = events.iter().find(|e| e.event_type == EventType::PaymentSucceeded).unwrap();
    assert_eq!(succeeded.payload["crypto"]["tx_hash"], json!(mined.tx_hash));
    f.billing.ack_events("quota-service", &events.last().unwrap().event_id).unwrap();
    let history = f.billing.payments(USER, 10).unwrap().results;
    let shown = history[0].crypto.clone().unwrap();
    assert_eq!(
        (history[0].status.as_str(), shown.network.as_str(), shown.symbol.as_str()),
        ("succeeded", "Ethereum", "USDT")
    );
    assert_eq!(
        (shown.tx_hash.as_deref(), shown.amount.as_str()),
        (Some(mined.tx_hash.as_str()), checkout.amount.as_str())
    );
    assert_eq!(f.billing.billing_me(USER).unwrap().last_payment.as_ref(), history.first());

    // A reorg drops the credited transfer: the credit is reversed.
    let outcome = deliver(&f, &indexer.reorg(&mined.tx_hash)).unwrap();
    assert_eq!(outcome.applied, 1);
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Reorged);
    assert!(!f.billing.subscription_details(USER).unwrap().is_active, "the plan bought with it ends");
    let after: Vec<EventType> = f.poll_at_least("quota-service", 2).iter().map(|e| e.event_type).collect();
    assert_eq!(after, [EventType::PaymentReversed, EventType::PlanChanged]);
    assert_eq!(f.billing.payments(USER, 10).unwrap().results[0].status, "failed");
    assert!(f.billing.verify_integrity().unwrap().ok, "the ledger still proves every balance");
    // Seeing the reorg again changes nothing.
    assert_eq!(deliver(&f, &indexer.reorg(&mined.tx_hash)).unwrap().duplicates, 1);
}

#[test]
fn duplicates_and_notifications_out_of_order_credit_each_payment_once_at_its_threshold() {
    let (indexer, f) = setup();
    f.billing.register_user("u2", true).unwrap();
    let first = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let second = checkout(&f, "u2", Purchase::Package("credits_20"), "b");
    let early = indexer.pay(&first.amount);
    indexer.mine(9);
    let late = indexer.pay(&second.amount);
    // The later block's notification comes first: it tells the engine the chain is 10
    // blocks past the first transfer, which it has not heard of yet.
    assert_eq!(deliver(&f, &late.notification).unwrap().applied, 1);
    assert_eq!(state(&f, &second.payment_id), CryptoState::Confirming);
    for _ in 0..2 {
        deliver(&f, &early.notification).unwrap();
    }
    assert_eq!(state(&f, &first.payment_id), CryptoState::Confirming, "11 of 12 confirmations");
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"));
    let outcome = deliver(&f, &early.notification).unwrap();
    assert_eq!(outcome.duplicates, 1, "a transfer seen just so is a duplicate");
    // A notification of any later block (here a stray transfer's) confirms it.
    let stray = indexer.pay("5");
    let outcome = deliver(&f, &stray.notification).unwrap();
    assert_eq!(outcome.unmatched, 1);
    assert!(outcome.payments.contains(&first.payment_id), "{outcome:?}");
    assert_eq!(state(&f, &first.payment_id), CryptoState::Succeeded);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
    for _ in 0..3 {
        deliver(&f, &early.notification).unwrap();
        reconcile(&f, &indexer);
    }
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"), "credited once");
    assert_eq!(event_types(&f, USER).iter().filter(|t| **t == EventType::PaymentSucceeded).count(), 1);
    assert_eq!(state(&f, &second.payment_id), CryptoState::Confirming);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn a_reorg_before_crediting_reverts_the_transfer_and_another_one_completes_the_payment() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let dropped = indexer.pay(&checkout.amount);
    deliver(&f, &dropped.notification).unwrap();
    deliver(&f, &indexer.reorg(&dropped.tx_hash)).unwrap();
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Pending);
    assert!(f.billing.ledger(USER, 10, None).unwrap().iter().all(|e| e.kind != EntryKind::CreditPurchase));
    let transfers = f.billing.crypto_transfers(&checkout.payment_id).unwrap();
    assert!(transfers[0].observation.removed, "the transfer is kept, as removed, with its raw payload");
    assert_eq!(transfers[0].observation.raw["log"]["removed"], json!(true));

    let mined = indexer.pay(&checkout.amount);
    indexer.mine(11);
    deliver(&f, &mined.notification).unwrap();
    reconcile(&f, &indexer);
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Succeeded);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
}

#[test]
fn an_underpayment_waits_and_a_top_up_with_the_reference_completes_it() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let reference: u128 = checkout.reference.into();
    let amount: u128 = checkout.amount.parse().unwrap();
    // An exchange took a 1 USDT fee: the reference digits still match.
    let short = indexer.pay(&(amount - 1_000_000).to_string());
    indexer.mine(11);
    deliver(&f, &short.notification).unwrap();
    reconcile(&f, &indexer);
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Underpaid);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"), "an underpayment is not credited");
    assert_eq!(f.billing.payments(USER, 10).unwrap().results[0].crypto.clone().unwrap().state, "underpaid");

    let top_up = indexer.pay(&(1_000_000 + reference).to_string());
    indexer.mine(11);
    deliver(&f, &top_up.notification).unwrap();
    reconcile(&f, &indexer);
    let details = f.billing.payment(&checkout.payment_id).unwrap().crypto.unwrap();
    assert_eq!(details.state, CryptoState::Overpaid, "the reference came twice");
    assert_eq!(details.received, amount + reference);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
}

#[test]
fn a_forged_signature_is_refused_recorded_and_changes_nothing() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let mined = indexer.pay(&checkout.amount);
    let before = (f.db.rows("crypto_observations", "tx_hash"), f.db.rows("chain_heads", "chain_id"));
    for forged in [indexer.forged(&mined.tx_hash), Notification { headers: vec![], ..mined.notification.clone() }] {
        let error = deliver(&f, &forged).unwrap_err();
        assert!(matches!(error, BillingError::InvalidWebhook { .. }), "{error}");
    }
    assert_eq!((f.db.rows("crypto_observations", "tx_hash"), f.db.rows("chain_heads", "chain_id")), before);
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Pending);
    let rejected = f
        .billing
        .audit_log(&AuditFilter { action: Some("webhook.crypto".into()), ..Default::default() }, 10, None)
        .unwrap();
    assert_eq!(rejected.iter().map(|r| r.outcome).collect::<Vec<_>>(), [AuditOutcome::Rejected; 2]);
    assert_eq!(rejected[0].error.as_ref().unwrap()["code"], "INVALID_WEBHOOK");
}

#[test]
fn the_worker_expires_unpaid_payments_and_fails_reverted_transactions() {
    let (indexer, f) = setup();
    let unpaid = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let reverted = checkout(&f, USER, Purchase::Package("credits_20"), "b");
    let mined = indexer.transfer(json!({
        "chain_id": 1, "token": USDT, "to": GATEWAY, "amount": reverted.amount, "failed": true,
    }));
    deliver(&f, &mined.notification).unwrap();
    f.clock.advance(Duration::minutes(61)).unwrap();
    let report = reconcile(&f, &indexer);
    assert_eq!((report.checked, report.changed), (2, 2));
    assert_eq!(
        (state(&f, &unpaid.payment_id), state(&f, &reverted.payment_id)),
        (CryptoState::Expired, CryptoState::Failed)
    );
    let statuses: Vec<String> =
        f.billing.payments(USER, 10).unwrap().results.iter().map(|p| p.status.clone()).collect();
    assert_eq!(statuses, ["failed", "canceled"]);
    assert_eq!(event_types(&f, USER)[1..], [EventType::PaymentFailed, EventType::PaymentFailed]);
    assert_eq!(reconcile(&f, &indexer).checked, 0, "nothing is left to check");
}

#[test]
fn transfers_no_payment_holds_are_kept_as_unmatched() {
    let (indexer, f) = setup();
    checkout(&f, USER, Purchase::Package("credits_20"), "a");
    // A reference nobody holds, and a token the catalog does not price in.
    let stray = indexer.pay("1990000");
    let other = indexer
        .transfer(json!({ "chain_id": 1, "token": format!("0x{}", "ee".repeat(20)), "to": GATEWAY, "amount": "5" }));
    for mined in [&stray, &other] {
        let outcome = deliver(&f, &mined.notification).unwrap();
        assert_eq!((outcome.unmatched, outcome.applied), (1, 0));
    }
    assert_eq!(f.db.rows("crypto_observations", "tx_hash").len(), 2, "both kept for review");
}

#[test]
fn checkout_refuses_what_it_cannot_sell_and_replays_by_key() {
    let (_indexer, f) = setup();
    let first = checkout(&f, USER, Purchase::Plan("basic"), "k");
    assert_eq!(checkout(&f, USER, Purchase::Plan("basic"), "k"), first, "a repeat is the same checkout");
    let conflict = f.billing.create_crypto_payment(USER, Purchase::Package("credits_20"), 1, "k").unwrap_err();
    assert_eq!(conflict.code(), "IDEMPOTENCY_CONFLICT");
    let cases = [
        (f.billing.create_crypto_payment(USER, Purchase::Plan("basic"), 137, "x1"), "chain_id"),
        (f.billing.create_crypto_payment(USER, Purchase::Package("credits_100"), 1, "x2"), "chain_id"),
        (f.billing.create_crypto_payment(USER, Purchase::Package("credits_20"), 56, "x3"), "chain_id"),
        (f.billing.create_crypto_payment(USER, Purchase::Package("nope"), 1, "x4"), "package_code"),
        (f.billing.create_crypto_payment("", Purchase::Package("credits_20"), 1, "x5"), "user_id"),
    ];
    for (result, field) in cases {
        match result {
            Err(BillingError::InvalidArgument { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Each open payment has a reference of its own.
    let references: std::collections::BTreeSet<u64> =
        (0..50).map(|i| checkout(&f, USER, Purchase::Package("credits_20"), &format!("p{i}")).reference).collect();
    assert_eq!(references.len(), 50);
}

/// Sixteen deliveries of one confirmed transfer at once, from threads with connections
/// of their own: the user's lock orders them, the first credits, the rest find the
/// transfer seen. The ledger key of the chain triple backs it.
#[test]
fn sixteen_concurrent_deliveries_of_one_transfer_credit_once() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let mined = indexer.pay(&checkout.amount);
    indexer.mine(20);
    // A later block is known before the race (a stray transfer's notification tells
    // it): the first delivery credits at once.
    deliver(&f, &indexer.pay("5").notification).unwrap();
    let barrier = Barrier::new(16);
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    let billing = second_handle(&f);
                    barrier.wait();
                    billing.handle_crypto_webhook(&mined.notification.body, &mined.notification.headers)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let applied: u32 = outcomes.iter().map(|o| o.as_ref().unwrap().applied).sum();
    assert_eq!(applied, 1, "{outcomes:?}");
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
    let purchases =
        f.billing.ledger(USER, 100, None).unwrap().into_iter().filter(|e| e.kind == EntryKind::CreditPurchase);
    assert_eq!(purchases.count(), 1);
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// Another engine on the fixture's database, as another server would open it.
fn second_handle(f: &Fixture) -> billing_engine::Billing {
    let billing = billing_engine::Billing::open_with_clock(&f.db.location, common::catalog(), f.clock.clone()).unwrap();
    billing.with_crypto(Arc::new(AlchemyNotify::new(SIGNING_KEY).unwrap())).unwrap()
}

#[test]
fn an_operator_refund_on_chain_takes_back_what_the_payment_bought_once() {
    let (indexer, f) = setup();
    let checkout = checkout(&f, USER, Purchase::Package("credits_20"), "a");
    let mined = indexer.pay(&checkout.amount);
    indexer.mine(11);
    deliver(&f, &mined.notification).unwrap();
    reconcile(&f, &indexer);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("30"));
    let refund_tx = format!("0x{}", "ab".repeat(32));
    let early = checkout_refund_refusal(&f);
    assert!(matches!(early, BillingError::InvalidArgument { field: "payment_id", .. }), "{early}");
    let bad = f.billing.refund_crypto_payment(&checkout.payment_id, "0xnope").unwrap_err();
    assert!(matches!(bad, BillingError::InvalidArgument { field: "tx_hash", .. }), "{bad}");

    let refunded = f.billing.refund_crypto_payment(&checkout.payment_id, &refund_tx).unwrap();
    assert_eq!(refunded.crypto.as_ref().unwrap().state, CryptoState::Refunded);
    assert_eq!(refunded.refund_id.as_deref(), Some(refund_tx.as_str()));
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"), "the package's credits went back");
    assert_eq!(f.billing.refund_crypto_payment(&checkout.payment_id, &refund_tx).unwrap(), refunded, "once");
    let history = f.billing.payments(USER, 10).unwrap().results;
    assert_eq!(history.iter().find(|p| p.id == checkout.payment_id).unwrap().status, "refunded");
    assert_eq!(event_types(&f, USER).last(), Some(&EventType::PaymentRefunded));
    // A reorg seen after the refund changes nothing more.
    deliver(&f, &indexer.reorg(&mined.tx_hash)).unwrap();
    assert_eq!(state(&f, &checkout.payment_id), CryptoState::Refunded);
    assert_eq!(f.billing.state(USER).unwrap().credits, dec("10"));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

/// A payment not yet credited cannot be refunded: there is nothing to take back.
fn checkout_refund_refusal(f: &Fixture) -> BillingError {
    let pending = checkout(f, USER, Purchase::Package("credits_20"), "pending");
    f.billing.refund_crypto_payment(&pending.payment_id, &format!("0x{}", "cd".repeat(32))).unwrap_err()
}
