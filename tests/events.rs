//! The outbox of domain events (issue 17): each change writes its events in its own
//! transaction (and a refused one writes none); each user's events are numbered 1, 2, 3
//! … in commit order; consumers poll and acknowledge through cursors of their own that
//! only move forward and never skip an event, even when transactions commit out of the
//! order they started in (the PostgreSQL case); old events can be pruned; and HTTP
//! delivery signs by Standard Webhooks, retries with backoff, honours `Retry-After` and
//! stops at 410, against the fake receiver of `tests/fakes/event_receiver.py`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration as StdDuration, Instant};

use billing_engine::events::{Event, EventType, NewEvent};
use billing_engine::{
    BillingError, Clock, DeliveryOutcome, EventEndpoint, PaymentStatus, Purchase, Store, UsageRequest,
};
use common::yookassa::{paying_fixture, FakeYooKassa};
use common::{dec, Fixture, TestDb};
use serde_json::{json, Value};
use time::Duration;

const USER: &str = "u1";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The user's events, in sequence.
fn events_of(f: &Fixture, user: &str) -> Vec<Event> {
    f.billing.user_events(user, 0, 1000).unwrap()
}

fn types_of(events: &[Event], user: &str) -> Vec<EventType> {
    events.iter().filter(|e| e.user_id == user).map(|e| e.event_type).collect()
}

fn buy(fake: &FakeYooKassa, f: &Fixture, purchase: Purchase, save_method: bool, key: &str) -> String {
    common::yookassa::buy_and_pay(fake, f, USER, purchase, save_method, key)
}

#[test]
fn each_change_writes_its_events_with_the_documented_payloads() {
    let (fake, f) = paying_fixture(TestDb::new(), USER, |_| {});
    f.billing.grant_credits(USER, dec("5"), "grant-1", "support").unwrap();
    let package = buy(&fake, &f, Purchase::Package("credits_20"), false, "pack");
    let plan = buy(&fake, &f, Purchase::Plan("basic"), true, "plan");
    f.billing.set_autorenew(USER, true).unwrap();

    let events = events_of(&f, USER);
    use EventType::*;
    assert_eq!(
        types_of(&events, USER),
        [CreditsGranted, CreditsGranted, PaymentSucceeded, CreditsGranted, PaymentSucceeded, PlanChanged]
    );
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6]);
    let payload = |i: usize| -> &Value { &events[i].payload };
    assert_eq!(payload(0)["reason"], "free_trial");
    assert_eq!(payload(0)["amount"], "10");
    assert_eq!(payload(1)["reason"], "grant");
    assert_eq!(payload(1)["balance_after"], "15");
    assert_eq!(payload(2)["payment_id"], package.as_str());
    assert_eq!(payload(2)["amount"], "149.00");
    assert_eq!(payload(2)["currency"], "RUB");
    assert_eq!(payload(2)["purpose"], "package");
    assert_eq!(payload(3)["reason"], "credit_purchase");
    assert_eq!(payload(3)["reference"], package.as_str());
    assert_eq!(payload(3)["balance_after"], "35");
    assert_eq!(payload(5)["plan_code"], "basic");
    assert_eq!(payload(5)["reason"], "activated");
    let sub = f.billing.subscription_details(USER).unwrap();
    assert_eq!(payload(5)["expires_at"], json!(billing_engine::time_util::iso(sub.expires_at.unwrap())));
    // Every event is the object docs/EVENTS.md shows.
    let object = events[5].to_json();
    assert_eq!(object["type"], "plan.changed.v1");
    assert_eq!(object["user_id"], USER);
    assert_eq!(object["sequence"], 6);

    // The renewal, then a full refund of it: the plan is cut short.
    f.clock.set(sub.expires_at.unwrap() - Duration::hours(1));
    let report = f.billing.process_due().unwrap();
    assert_eq!(report.renewals_created, 1);
    let events = events_of(&f, USER);
    assert_eq!(types_of(&events, USER)[6..], [PaymentSucceeded, SubscriptionRenewed]);
    assert_eq!(events[7].payload["plan_code"], "basic");
    let renewal = events[6].payload["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(events[6].payload["purpose"], "renewal");
    assert_eq!(events[7].payload["payment_id"], renewal.as_str());

    // The renewal's period is refunded: the plan runs on to the end of the first.
    f.billing.refund_payment(&renewal, None, None).unwrap();
    let events = events_of(&f, USER);
    assert_eq!(types_of(&events, USER)[8..], [PaymentRefunded]);
    assert_eq!(events[8].payload["payment_id"], renewal.as_str());
    assert_eq!(events[8].payload["amount"], "299.00");
    assert_eq!(events[8].payload["refunded_total"], "299.00");
    assert_eq!(events[8].payload["credits_taken"], "0");

    // Then the first: no paid time is left, and the plan changes to none.
    f.billing.refund_payment(&plan, None, None).unwrap();
    let events = events_of(&f, USER);
    assert_eq!(types_of(&events, USER)[9..], [PaymentRefunded, PlanChanged]);
    assert_eq!(events[10].payload["plan_code"], Value::Null);
    assert_eq!(events[10].payload["reason"], "refunded");
    assert!(!f.billing.subscription_details(USER).unwrap().is_active);
    assert_eq!(f.billing.payment(&renewal).unwrap().status, PaymentStatus::Refunded);
}

#[test]
fn a_declined_renewal_fails_the_payment_and_the_end_of_the_period_expires_the_plan() {
    let (fake, f) = paying_fixture(TestDb::new(), USER, |_| {});
    buy(&fake, &f, Purchase::Plan("basic"), true, "plan");
    f.billing.set_autorenew(USER, true).unwrap();
    let expires_at = f.billing.subscription_details(USER).unwrap().expires_at.unwrap();
    fake.decline_recurring(true);
    f.clock.set(expires_at - Duration::hours(1));
    f.billing.process_due().unwrap();
    f.clock.set(expires_at + Duration::minutes(1));
    assert_eq!(f.billing.process_due().unwrap().expired, 1);

    let events = events_of(&f, USER);
    use EventType::*;
    assert_eq!(
        types_of(&events, USER),
        [CreditsGranted, PaymentSucceeded, PlanChanged, PaymentFailed, SubscriptionExpired, PlanChanged]
    );
    assert_eq!(events[3].payload["purpose"], "renewal");
    assert_eq!(events[3].payload["status"], "failed");
    assert!(events[3].payload["reason"].is_string(), "{}", events[3].payload);
    assert_eq!(events[4].payload["plan_code"], "basic");
    assert_eq!(
        events[5].payload,
        json!({
            "plan_code": null,
            "subscription_id": events[4].payload["subscription_id"],
            "expires_at": null,
            "reason": "expired",
        })
    );
}

#[test]
fn credits_expire_and_usage_past_a_quota_make_one_event_each() {
    let text = std::fs::read_to_string(common::tariffs_path()).unwrap();
    let catalog =
        billing_engine::Catalog::from_toml(&text.replace("# expires_after_days = 14", "expires_after_days = 7"))
            .unwrap();
    let f = Fixture::with_catalog(catalog);
    f.billing.register_user(USER, true).unwrap();
    f.clock.advance(Duration::days(8)).unwrap();
    // A quota of 50 000 input tokens a period on the free plan: the second event crosses
    // it, the third is past it already.
    for (i, amount) in [30_000, 30_000, 5].into_iter().enumerate() {
        let usage = UsageRequest::new("tokens_input", amount);
        let record = f.billing.track_usage(USER, &usage, &format!("use-{i}")).unwrap();
        assert_eq!(record.over_limit, i > 0);
    }
    let events = events_of(&f, USER);
    use EventType::*;
    assert_eq!(types_of(&events, USER), [CreditsGranted, CreditsExpired, UsageOverLimit]);
    assert_eq!(events[1].payload["amount"], "10");
    assert_eq!(events[1].payload["balance_after"], "0");
    assert_eq!(events[2].payload["metric"], "tokens_input");
    assert_eq!(events[2].payload["amount"], 30_000);
}

#[test]
fn a_refused_or_replayed_write_writes_no_event() {
    let f = Fixture::new();
    f.billing.register_user(USER, true).unwrap();
    f.billing.grant_credits(USER, dec("5"), "grant", "support").unwrap();
    let before = events_of(&f, USER);
    // A replay of the same key, a conflicting one, a refused charge and a charge that
    // is not an event of its own all leave the outbox as it was.
    f.billing.grant_credits(USER, dec("5"), "grant", "support").unwrap();
    assert!(f.billing.grant_credits(USER, dec("6"), "grant", "support").is_err());
    f.billing.charge(USER, "assistant", "c1", None).unwrap();
    f.billing.register_user(USER, true).unwrap();
    assert_eq!(events_of(&f, USER), before);
}

#[test]
fn cursors_move_forward_per_consumer_and_acknowledge_only_stored_events() {
    let f = Fixture::new();
    for user in ["a", "b", "c"] {
        f.billing.register_user(user, true).unwrap();
        f.billing.grant_credits(user, dec("1"), "g", "support").unwrap();
    }
    let all = f.poll_at_least("test-reader", 6);
    let first = f.billing.poll_events("crm", 4).unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(f.billing.poll_events("crm", 4).unwrap(), first, "polling does not move the cursor");
    f.billing.ack_events("crm", &first[3].event_id).unwrap();
    let rest = f.billing.poll_events("crm", 100).unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!([&first[..], &rest[..]].concat(), all);
    // Backwards is no move; another consumer has its own cursor.
    f.billing.ack_events("crm", &first[0].event_id).unwrap();
    assert_eq!(f.billing.poll_events("crm", 100).unwrap(), rest);
    assert_eq!(f.billing.poll_events("quota-service", 100).unwrap().len(), 6);
    f.billing.ack_events("crm", &rest[1].event_id).unwrap();
    assert!(f.billing.poll_events("crm", 100).unwrap().is_empty());

    let unknown = f.billing.ack_events("crm", "evt_nope").unwrap_err();
    assert!(matches!(&unknown, BillingError::InvalidArgument { field: "up_to", .. }), "{unknown}");
    let bad = f.billing.poll_events("", 10).unwrap_err();
    assert!(matches!(&bad, BillingError::InvalidArgument { field: "consumer", .. }), "{bad}");
    let bad = f.billing.poll_events("crm", 0).unwrap_err();
    assert!(matches!(&bad, BillingError::InvalidArgument { field: "limit", .. }), "{bad}");
}

#[test]
fn pruning_keeps_each_users_newest_event_so_sequences_go_on() {
    let f = Fixture::new();
    f.billing.register_user("a", true).unwrap();
    f.billing.grant_credits("a", dec("1"), "g1", "support").unwrap();
    f.billing.register_user("b", true).unwrap();
    f.clock.advance(Duration::days(10)).unwrap();
    f.billing.grant_credits("a", dec("1"), "g2", "support").unwrap();
    f.billing.grant_credits("a", dec("1"), "g3", "support").unwrap();

    let deleted = f.billing.prune_events(f.clock.now() - Duration::days(1)).unwrap();
    assert_eq!(deleted, 2, "a's two old events; b's only event is b's newest");
    let sequences = |user| events_of(&f, user).iter().map(|e| e.sequence).collect::<Vec<_>>();
    assert_eq!((sequences("a"), sequences("b")), (vec![3, 4], vec![1]));
    assert_eq!(f.billing.prune_events(f.clock.now() + Duration::days(1)).unwrap(), 1);
    f.billing.grant_credits("a", dec("1"), "g4", "support").unwrap();
    assert_eq!(sequences("a"), [4, 5]);
}

/// Two writers: `a` appends its event and holds its transaction open while `b` appends
/// and commits. On PostgreSQL `b`'s event gets the later id but commits first; a
/// consumer that took it and acknowledged it would skip `a`'s for good. On SQLite `b`
/// waits for `a` (one writer), and the same assertions hold.
#[test]
fn an_event_committed_out_of_id_order_is_never_skipped() {
    let db = TestDb::shared();
    let f = Fixture::on_db(db);
    let store = f.billing.store();
    let event = |user: &str| NewEvent {
        event_id: format!("evt_{user}"),
        event_type: EventType::CreditsGranted,
        user_id: user.to_owned(),
        occurred_at: f.clock.now(),
        payload: json!({}),
    };
    let event = &event;
    let mut seen = Vec::new();
    thread::scope(|s| {
        let (wrote, wrote_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let a = s.spawn(move || {
            store
                .write("a", move |tx| {
                    tx.append_event(&event("a"))?;
                    let _ = wrote.send(());
                    let _ = go_rx.recv_timeout(StdDuration::from_secs(10));
                    Ok(())
                })
                .unwrap()
        });
        wrote_rx.recv().unwrap();
        let (b_done, b_done_rx) = mpsc::channel();
        let b = s.spawn(move || {
            store.write("b", |tx| tx.append_event(&event("b")).map_err(Into::into)).unwrap();
            let _ = b_done.send(());
        });
        // PostgreSQL commits `b` now; SQLite makes it wait for `a`.
        let _ = b_done_rx.recv_timeout(StdDuration::from_millis(500));
        let polled = f.billing.poll_events("consumer", 10).unwrap();
        if let Some(last) = polled.last() {
            f.billing.ack_events("consumer", &last.event_id).unwrap();
        }
        seen.extend(polled.into_iter().map(|e| e.event_id));
        go.send(()).unwrap();
        a.join().unwrap();
        b.join().unwrap();
    });
    // Both have committed: polling and acknowledging on, the consumer gets each once.
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while seen.len() < 2 && Instant::now() < deadline {
        let polled = f.billing.poll_events("consumer", 10).unwrap();
        if let Some(last) = polled.last() {
            f.billing.ack_events("consumer", &last.event_id).unwrap();
        }
        seen.extend(polled.into_iter().map(|e| e.event_id));
        thread::sleep(StdDuration::from_millis(10));
    }
    seen.sort();
    assert_eq!(seen, ["evt_a", "evt_b"], "each event once, none skipped");
}

/// The fake receiver: a consumer's endpoint that checks Standard Webhooks signatures.
struct Receiver {
    url: String,
    agent: ureq::Agent,
    process: Child,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Receiver {
    fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fakes/event_receiver.py");
        let mut process = Command::new("python3")
            .arg(&script)
            .arg(SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the fake receiver");
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "the receiver printed `{url}`");
        Self { url, agent: ureq::Agent::config_builder().http_status_as_error(false).build().into(), process }
    }

    fn control(&self, path: &str) -> String {
        self.url.replace("/hooks", &format!("/_control{path}"))
    }

    fn answer(&self, answers: Value) {
        self.agent.post(&self.control("/answers")).send_json(json!({ "answers": answers })).unwrap();
    }

    fn attempts(&self) -> Vec<Value> {
        self.agent.get(&self.control("/attempts")).call().unwrap().body_mut().read_json().unwrap()
    }
}

#[test]
fn delivery_posts_signed_events_in_order_and_retries_by_the_schedule() {
    let receiver = Receiver::start();
    let f = Fixture::new();
    for user in ["a", "b"] {
        f.billing.register_user(user, true).unwrap();
    }
    f.billing.grant_credits("a", dec("3"), "g", "support").unwrap();
    let events = f.poll_at_least("test-reader", 3);
    let endpoint = EventEndpoint::new(&receiver.url, SECRET).unwrap();

    // The first attempt fails: nothing is acknowledged, and the next waits 5 s.
    receiver.answer(json!([{ "status": 503 }]));
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.delivered, report.failed_attempts), (DeliveryOutcome::Retrying, 0, 1));
    assert_eq!(report.next_attempt_at, Some(f.clock.now() + Duration::seconds(5)));
    assert_eq!(report.last_error.as_deref(), Some("HTTP 503"));
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!(report.outcome, DeliveryOutcome::Waiting, "before the wait is over nothing is sent");
    assert_eq!(receiver.attempts().len(), 1);

    // A second failure with Retry-After longer than the schedule's 5 minutes.
    f.clock.advance(Duration::seconds(5)).unwrap();
    receiver.answer(json!([{ "status": 429, "retry_after": "3600" }]));
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.failed_attempts), (DeliveryOutcome::Retrying, 2));
    assert_eq!(report.next_attempt_at, Some(f.clock.now() + Duration::hours(1)));

    f.clock.advance(Duration::hours(1)).unwrap();
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.delivered, report.failed_attempts), (DeliveryOutcome::Delivered, 3, 0));

    let attempts = receiver.attempts();
    assert!(attempts.iter().all(|a| a["verified"] == true), "{attempts:?}");
    let first_id = events[0].event_id.as_str();
    let ids: Vec<&str> = attempts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first_id, first_id, first_id, &events[1].event_id, &events[2].event_id]);
    assert_eq!(attempts[4]["event"], events[2].to_json());
    let stamps: Vec<i64> = attempts.iter().map(|a| a["timestamp"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(stamps[0] + 5, stamps[1], "each attempt is signed for its own time");

    // Up to date: nothing is sent again. A new event goes out on the next call.
    assert_eq!(f.billing.deliver_events(&endpoint, 100).unwrap().delivered, 0);
    f.billing.grant_credits("b", dec("1"), "g", "support").unwrap();
    f.poll_at_least("test-reader", 4);
    assert_eq!(f.billing.deliver_events(&endpoint, 100).unwrap().delivered, 1);
    assert_eq!(receiver.attempts().len(), 6);
}

#[test]
fn gone_stops_delivery_until_it_is_resumed() {
    let receiver = Receiver::start();
    let f = Fixture::new();
    f.billing.register_user("a", true).unwrap();
    f.billing.grant_credits("a", dec("3"), "g", "support").unwrap();
    f.poll_at_least("test-reader", 2);
    let endpoint = EventEndpoint::new(&receiver.url, SECRET).unwrap();
    receiver.answer(json!([{ "status": 204 }, { "status": 410 }]));
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.delivered), (DeliveryOutcome::Stopped, 1));
    f.clock.advance(Duration::days(2)).unwrap();
    assert_eq!(f.billing.deliver_events(&endpoint, 100).unwrap().outcome, DeliveryOutcome::Stopped);
    assert_eq!(receiver.attempts().len(), 2);

    f.billing.resume_delivery(&endpoint.consumer).unwrap();
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.delivered), (DeliveryOutcome::Delivered, 1));
    let ids: Vec<Value> = receiver.attempts().iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids[1], ids[2], "the event refused with 410 is the one sent after resuming");
}

#[test]
fn a_wrong_secret_is_refused_by_the_receiver_and_retried() {
    let receiver = Receiver::start();
    let f = Fixture::new();
    f.billing.register_user("a", true).unwrap();
    f.poll_at_least("test-reader", 1);
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let endpoint = EventEndpoint::new(&receiver.url, other).unwrap();
    let report = f.billing.deliver_events(&endpoint, 100).unwrap();
    assert_eq!((report.outcome, report.last_error.as_deref()), (DeliveryOutcome::Retrying, Some("HTTP 400")));
    assert_eq!(receiver.attempts()[0]["verified"], false);
}
