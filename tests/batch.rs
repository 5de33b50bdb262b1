//! `charge_batch`: many charges in one transaction, each with its own result. A refused
//! item is that item's error and writes nothing; a storage failure fails the batch and
//! writes nothing at all; keys replay per item; batches racing for one user's credits
//! spend each credit once; batches over the same users in opposite orders never wait
//! on each other for good.

mod common;

use std::sync::{Arc, Barrier};

use billing_engine::{Billing, BillingError, ChargeRequest, ChargeSource, EntryKind};
use common::{dec, Fixture, TestDb};
use rust_decimal::Decimal;
use serde_json::json;

fn request(user: &str, operation: &str, key: &str) -> ChargeRequest {
    ChargeRequest::new(user, operation, key)
}

/// A user whose charges all come from credits: `credits` of them.
fn paying_user(billing: &Billing, user: &str, credits: u32) {
    billing.import_user(user, Decimal::from(credits), u32::MAX, None).unwrap();
}

fn charges_of(billing: &Billing, user: &str) -> usize {
    billing.ledger(user, 1000, None).unwrap().iter().filter(|e| e.kind == EntryKind::Charge).count()
}

#[test]
fn each_request_gets_its_own_result_in_order_and_refusals_write_nothing() {
    let f = Fixture::new();
    paying_user(&f.billing, "ann", 5);
    paying_user(&f.billing, "bob", 1);
    let results = f
        .billing
        .charge_batch(&[
            request("ann", "generation", "a1"),
            request("bob", "generation", "b1"),
            request("ann", "no-such-operation", "a2"),
            request("ghost", "generation", "g1"),
            request("ann", "generation", ""),
            request("ann", "assistant", "a3"),
            request("bob", "assistant", "b2"),
        ])
        .unwrap();
    assert_eq!(results.len(), 7);
    let ann = results[0].as_ref().unwrap();
    assert_eq!((ann.user_id.as_str(), ann.credits_spent, ann.credits_balance), ("ann", dec("2"), dec("3")));
    assert!(matches!(results[1], Err(BillingError::NotEnoughCredits { .. })), "{:?}", results[1]);
    assert!(matches!(results[2], Err(BillingError::UnknownOperation { .. })), "{:?}", results[2]);
    assert!(matches!(results[3], Err(BillingError::UnknownUser { .. })), "{:?}", results[3]);
    assert!(
        matches!(results[4], Err(BillingError::InvalidArgument { field: "idempotency_key", .. })),
        "{:?}",
        results[4]
    );
    // Later items see the earlier items' writes: ann's balance went on from 3.
    assert_eq!(results[5].as_ref().unwrap().credits_balance, dec("2"));
    assert_eq!(results[6].as_ref().unwrap().credits_balance, dec("0"));

    assert_eq!(f.billing.state("ann").unwrap().credits, dec("2"));
    assert_eq!(f.billing.state("bob").unwrap().credits, dec("0"));
    assert_eq!((charges_of(&f.billing, "ann"), charges_of(&f.billing, "bob")), (2, 1));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn keys_replay_per_item_within_a_batch_and_across_calls() {
    let f = Fixture::new();
    paying_user(&f.billing, "ann", 10);
    let single = f.billing.charge("ann", "generation", "k0", None).unwrap();
    let with_metadata = ChargeRequest { metadata: Some(json!({"chat": "c1"})), ..request("ann", "generation", "k1") };
    let results = f
        .billing
        .charge_batch(&[
            request("ann", "generation", "k0"),
            with_metadata.clone(),
            with_metadata,
            request("ann", "assistant", "k1"),
        ])
        .unwrap();
    let replay_of_single = results[0].as_ref().unwrap();
    assert!(replay_of_single.replayed && replay_of_single.id == single.id);
    let (first, again) = (results[1].as_ref().unwrap(), results[2].as_ref().unwrap());
    assert!(!first.replayed && again.replayed && again.id == first.id);
    assert!(matches!(&results[3], Err(BillingError::IdempotencyConflict { key }) if key == "k1"));
    let replayed = f.billing.charge("ann", "generation", "k1", Some(json!({"chat": "c1"}))).unwrap();
    assert_eq!((replayed.replayed, replayed.id), (true, first.id));
    assert_eq!(f.billing.state("ann").unwrap().credits, dec("6"), "two charges of 2");
    assert_eq!(charges_of(&f.billing, "ann"), 2);
}

#[test]
fn a_storage_failure_fails_the_whole_batch_and_writes_nothing() {
    let f = Fixture::shared();
    paying_user(&f.billing, "ann", 10);
    paying_user(&f.billing, "broken", 10);
    // A stored value that no longer reads: reading the account is a storage failure.
    f.db.execute("UPDATE accounts SET subscription = '{\"not\": \"a subscription\"}' WHERE user_id = 'broken'");
    let before = f.snapshot();
    let error = f
        .billing
        .charge_batch(&[
            request("ann", "generation", "a1"),
            request("broken", "generation", "x1"),
            request("ann", "generation", "a2"),
        ])
        .unwrap_err();
    assert_eq!(error.code(), "STORAGE_ERROR");
    assert!(matches!(&error, BillingError::Unreadable { column } if column == "accounts.subscription"), "{error}");
    assert_eq!(f.snapshot(), before, "ann's charge before the failure is gone too");
    let results = f.billing.charge_batch(&[request("ann", "generation", "a1")]).unwrap();
    assert!(!results[0].as_ref().unwrap().replayed, "the key was never used");
}

#[test]
fn an_empty_batch_is_empty_and_an_oversized_one_is_refused_before_anything_runs() {
    let f = Fixture::shared();
    paying_user(&f.billing, "ann", 10);
    assert!(f.billing.charge_batch(&[]).unwrap().is_empty());
    let before = f.snapshot();
    let too_many: Vec<ChargeRequest> =
        (0..=billing_engine::input::MAX_BATCH).map(|i| request("ann", "generation", &format!("k{i}"))).collect();
    let error = f.billing.charge_batch(&too_many).unwrap_err();
    assert!(matches!(error, BillingError::InvalidArgument { field: "requests", .. }), "{error}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn batches_from_four_handles_racing_for_one_user_spend_each_credit_once() {
    const CHARGES: u32 = 40;
    let db = TestDb::shared();
    let setup = Billing::open(&db.location, common::catalog()).unwrap();
    paying_user(&setup, "racer", CHARGES * 2);
    paying_user(&setup, "bystander", 1000);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (location, barrier) = (db.location.clone(), barrier.clone());
            std::thread::spawn(move || {
                let billing = Billing::open(&location, common::catalog()).unwrap();
                barrier.wait();
                let mut succeeded = 0;
                for b in 0..5 {
                    let batch: Vec<ChargeRequest> = (0..6)
                        .map(|i| {
                            let user = if i % 3 == 2 { "bystander" } else { "racer" };
                            request(user, "generation", &format!("t{t}-b{b}-{i}"))
                        })
                        .collect();
                    for (i, result) in billing.charge_batch(&batch).unwrap().into_iter().enumerate() {
                        match result {
                            Ok(charge) if batch[i].user_id == "racer" => {
                                assert_eq!(charge.source, ChargeSource::Credits);
                                succeeded += 1;
                            }
                            Ok(_) => {}
                            Err(BillingError::NotEnoughCredits { .. }) if batch[i].user_id == "racer" => {}
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
                succeeded
            })
        })
        .collect();
    let succeeded: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(succeeded, CHARGES, "4 x 5 x 4 = 80 attempts for 40 charges' credits");
    assert_eq!(setup.state("racer").unwrap().credits, dec("0"));
    assert_eq!(charges_of(&setup, "racer"), CHARGES as usize);
    assert_eq!(setup.state("bystander").unwrap().credits, Decimal::from(1000 - 4 * 5 * 2 * 2));
    assert!(setup.verify_integrity().unwrap().ok);
}

#[test]
fn batches_over_the_same_users_in_opposite_orders_all_go_through() {
    let db = TestDb::shared();
    let setup = Billing::open(&db.location, common::catalog()).unwrap();
    let users: Vec<String> = (0..8).map(|u| format!("u{u}")).collect();
    for user in &users {
        paying_user(&setup, user, 10_000);
    }
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [false, true]
        .into_iter()
        .map(|reversed| {
            let (location, barrier, mut users) = (db.location.clone(), barrier.clone(), users.clone());
            if reversed {
                users.reverse();
            }
            std::thread::spawn(move || {
                let billing = Billing::open(&location, common::catalog()).unwrap();
                barrier.wait();
                for b in 0..20 {
                    let batch: Vec<ChargeRequest> =
                        users.iter().map(|u| request(u, "assistant", &format!("{reversed}-{b}"))).collect();
                    let results = billing.charge_batch(&batch).unwrap();
                    assert!(results.iter().all(Result::is_ok), "{results:?}");
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    for user in &users {
        assert_eq!(setup.state(user).unwrap().credits, dec("9960"), "40 charges of 1");
    }
    assert!(setup.verify_integrity().unwrap().ok);
}
