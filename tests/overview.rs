//! The operators' numbers (issue 18): a known history of subscriptions, a renewal, a
//! refund, a churned user, a returning one, a plan paid outside and a package, and the
//! overview checked against a hand calculation of every formula in `docs/OVERVIEW.md`.

mod common;

use billing_engine::{Clock, CurrencyAmount, Granularity, Purchase, TransactionFilter};
use common::yookassa::{buy_and_pay, paying_fixture, FakeYooKassa};
use common::{dec, Fixture, TestDb, START};
use rust_decimal::Decimal;
use time::{Duration, OffsetDateTime};

fn day(n: i64) -> OffsetDateTime {
    billing_engine::time_util::parse_iso(START).unwrap() + Duration::days(n)
}

/// The history, day by day (the example tariffs: basic 299.00 and standard 699.00 a
/// month, premium 7990.00 a year):
/// - day 0: u1 buys basic with a saved card (renewing); u2 premium; u3 standard;
///   u4 basic; u5 the 590.00 package;
/// - day 10: u4's payment is refunded in full: its period is cut;
/// - day 29: u1's renewal is charged: `[30, 60)`;
/// - day 30: u3's month ends: u3 churns;
/// - day 40: u6 gets basic paid outside the engine;
/// - day 45: u4 buys basic again: a return.
fn history() -> (FakeYooKassa, Fixture) {
    let (fake, f) = paying_fixture(TestDb::new(), "u1", |_| {});
    for user in ["u2", "u3", "u4", "u5", "u6"] {
        f.billing.register_user(user, true).unwrap();
    }
    buy_and_pay(&fake, &f, "u1", Purchase::Plan("basic"), true, "b1");
    f.billing.set_autorenew("u1", true).unwrap();
    buy_and_pay(&fake, &f, "u2", Purchase::Plan("premium"), false, "p2");
    buy_and_pay(&fake, &f, "u3", Purchase::Plan("standard"), false, "s3");
    let refunded = buy_and_pay(&fake, &f, "u4", Purchase::Plan("basic"), false, "b4");
    buy_and_pay(&fake, &f, "u5", Purchase::Package("credits_100"), false, "c5");
    f.clock.set(day(10));
    f.billing.refund_payment(&refunded, None, None).unwrap();
    f.clock.set(day(29));
    assert_eq!(f.billing.process_due().unwrap().renewals_created, 1);
    f.clock.set(day(30) + Duration::minutes(1));
    f.billing.process_due().unwrap();
    f.clock.set(day(40));
    f.billing.activate_subscription("u6", "basic", "outside").unwrap();
    f.clock.set(day(45));
    buy_and_pay(&fake, &f, "u4", Purchase::Plan("basic"), false, "b4-again");
    f.clock.set(day(50));
    (fake, f)
}

fn rub(amount: &str) -> Vec<CurrencyAmount> {
    vec![CurrencyAmount { currency: "RUB".into(), amount: dec(amount) }]
}

#[test]
fn the_overview_matches_a_hand_calculation_of_every_formula() {
    let (_fake, f) = history();
    let overview = f.billing.overview(None, 30).unwrap();
    assert_eq!((overview.at, overview.window_start), (day(50), day(20)));

    // In force at day 50: u1 basic (renewed), u2 premium, u4 basic (back), u6 basic
    // (outside). premium is yearly: 7990 / 12 = 665.833333 a month.
    let premium_monthly = (dec("7990.00") / Decimal::from(12)).round_dp(6);
    let mrr = dec("299.00") * Decimal::from(3) + premium_monthly;
    assert_eq!(overview.mrr, rub(&mrr.to_string()));
    assert_eq!((overview.paying_users, overview.active_subscriptions), (4, 4));
    assert_eq!(overview.arpu, rub(&(mrr / Decimal::from(4)).normalize().to_string()));
    let segments: Vec<(&str, u64, Decimal)> =
        overview.segments.iter().map(|s| (s.plan_code.as_str(), s.subscriptions, s.mrr)).collect();
    assert_eq!(segments, [("basic", 3, dec("897")), ("premium", 1, premium_monthly)]);

    // Bought in [20, 50): u1's renewal, u6's first plan, u4's return.
    assert_eq!((overview.new_subscriptions, overview.renewals, overview.reactivations), (1, 1, 1));
    // Paying at day 20: u1, u2, u3 (u4's period was cut at day 10). Not at day 50: u3.
    assert_eq!(overview.churned, 1);
    assert_eq!(overview.subscriber_churn, dec("0.333333"));
    let mrr_at_start = dec("299.00") + dec("699.00") + premium_monthly;
    let mrr_churn = (dec("699.00") / mrr_at_start).round_dp(6);
    assert_eq!(overview.mrr_churn, rub(&mrr_churn.to_string()));

    // Money in [20, 50): the renewal on day 29 and the return on day 45.
    let revenue: Vec<(String, Decimal, Decimal)> =
        overview.revenue.iter().map(|p| (p.start.clone(), p.gross, p.net)).collect();
    assert_eq!(
        revenue,
        [(day(29).date().to_string(), dec("299"), dec("299")), (day(45).date().to_string(), dec("299"), dec("299")),]
    );
    let payments: Vec<(&str, &str, u64)> =
        overview.payments.iter().map(|p| (p.status.as_str(), p.provider.as_str(), p.count)).collect();
    assert_eq!(payments, [("succeeded", "yookassa", 2)]);

    // Over the first 20 days: five payments and the refund. The window's first instant
    // is day 0, when the four plans were bought: u4, refunded on day 10, churned.
    let early = f.billing.overview(Some(day(20)), 20).unwrap();
    assert_eq!(early.new_subscriptions, 4);
    assert_eq!(early.mrr, rub(&mrr_at_start.to_string()));
    let gross = dec("299.00") * Decimal::from(2) + dec("7990.00") + dec("699.00") + dec("590.00");
    let first_day = &early.revenue[0];
    assert_eq!((first_day.gross, first_day.refunds), (gross, Decimal::ZERO));
    assert_eq!((early.revenue[1].refunds, early.revenue[1].net), (dec("299"), dec("-299")));
    assert_eq!((early.churned, early.subscriber_churn), (1, dec("0.25")));
    assert!(f.billing.verify_integrity().unwrap().ok);
}

#[test]
fn revenue_series_and_transactions_support_the_page() {
    let (_fake, f) = history();
    let months = f.billing.revenue_series(day(0), day(60), Granularity::Month).unwrap();
    let by_month: Vec<(String, Decimal)> = months.iter().map(|p| (p.start.clone(), p.net)).collect();
    let january = dec("299.00") * Decimal::from(2) + dec("7990.00") + dec("699.00") + dec("590.00") - dec("299.00");
    assert_eq!(by_month, [("2026-01-01".to_owned(), january + dec("299")), ("2026-02-01".to_owned(), dec("299"))]);
    assert!(f.billing.revenue_series(day(1), day(0), Granularity::Day).is_err());

    let all = f.billing.transactions(&TransactionFilter::default(), 100, None).unwrap();
    assert_eq!(all.len(), 8, "six payments, the renewal, the refund");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let refunds = TransactionFilter { status: Some("refund".into()), ..Default::default() };
    let refund = f.billing.transactions(&refunds, 100, None).unwrap();
    assert_eq!((refund.len(), refund[0].user_id.as_str(), refund[0].amount), (1, "u4", dec("299")));
    let big = TransactionFilter { min_amount: Some(dec("600")), ..Default::default() };
    let amounts: Vec<Decimal> = f.billing.transactions(&big, 100, None).unwrap().iter().map(|t| t.amount).collect();
    assert_eq!(amounts, [dec("699"), dec("7990")]);
    let window = TransactionFilter {
        from: Some(day(20)),
        to: Some(day(50)),
        plan_code: Some("basic".into()),
        ..Default::default()
    };
    assert_eq!(f.billing.transactions(&window, 100, None).unwrap().len(), 2);
    let page = f.billing.transactions(&TransactionFilter::default(), 3, Some(all[2].id)).unwrap();
    assert_eq!(page, all[3..6]);
}

#[test]
fn the_records_are_append_only() {
    let (_fake, f) = {
        let fake = FakeYooKassa::start();
        let f = Fixture::with_yookassa(TestDb::shared(), fake.config());
        f.billing.register_user("u1", true).unwrap();
        (fake, f)
    };
    f.billing.activate_subscription("u1", "basic", "k").unwrap();
    for sql in ["UPDATE purchased_periods SET monthly_micros = 0", "DELETE FROM purchased_periods"] {
        let refusal = f.db.try_execute(sql).unwrap_err();
        assert!(refusal.contains("append-only"), "{refusal}");
    }
    assert_eq!(f.billing.overview(None, 30).unwrap().mrr, rub("299"));
    let _ = f.clock.now();
}

#[test]
fn metrics_text_counts_charges_refusals_payments_webhooks_and_quota() {
    let (_fake, f) = history();
    f.billing.register_user("m", true).unwrap();
    for i in 0..3 {
        f.billing.charge("m", "generation", &format!("g{i}"), None).unwrap();
    }
    f.billing.charge("m", "generation", "g0", None).unwrap(); // a replay counts nothing
    let refused = f.billing.charge("ghost", "generation", "x", None).unwrap_err();
    assert_eq!(refused.code(), "UNKNOWN_USER");
    let usage = std::collections::BTreeMap::from([("requests".to_owned(), 1u64)]);
    f.billing.check_usage("m", &usage).unwrap();
    let text = f.billing.metrics_text();
    for line in [
        r#"billing_charges_total{source="freemium"} 3"#,
        r#"billing_refusals_total{call="charge",code="UNKNOWN_USER"} 1"#,
        r#"billing_payments_total{status="succeeded",provider="yookassa"} 7"#,
        r#"billing_payments_total{status="refunded",provider="yookassa"} 0"#,
        r#"billing_webhook_outcomes_total{provider="yookassa",outcome="applied"} 6"#,
        r#"billing_quota_checks_total{metric="requests",outcome="allowed"} 1"#,
        "billing_charge_seconds_count 3",
    ] {
        if line.ends_with(" 0") {
            assert!(!text.contains(line.trim_end_matches(" 0")), "{line} is not counted\n{text}");
        } else {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }
}
