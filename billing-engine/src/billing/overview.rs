//! The operators' numbers (issue 18, seed 004's overview): the records each change
//! writes for them, in its own transaction, and the reads of MRR, ARPU, churn, revenue
//! and transactions. The formulas are `analytics.rs`'s and `docs/OVERVIEW.md`'s.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use time::{Duration, OffsetDateTime};

use super::Billing;
use crate::analytics::{
    self, CurrencyAmount, MoneyKind, MoneyRecord, Overview, PaymentCount, PeriodKind, PeriodRecord, RevenuePoint,
    TransactionFilter,
};
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::{EntryKind, LedgerEntry};
use crate::payment::{Payment, PaymentStatus, Purpose};
use crate::store::{Store, Transaction};
use crate::time_util;

/// How [`Billing::revenue_series`] buckets its days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    /// Weeks starting on Monday (ISO).
    Week,
    /// Calendar months.
    Month,
}

impl std::str::FromStr for Granularity {
    type Err = BillingError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "day" => Ok(Self::Day),
            "week" => Ok(Self::Week),
            "month" => Ok(Self::Month),
            other => Err(BillingError::invalid("granularity", format!("day, week or month, got `{other}`"))),
        }
    }
}

/// One money movement, as the operators' transactions table shows it.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct MoneyMovement {
    /// Grows with every movement; pass the last one's as `before` for the next page.
    pub id: i64,
    pub user_id: String,
    pub payment_id: String,
    /// `gross` (a payment succeeded), `refund`, `reversal` or `failed`.
    pub status: String,
    pub amount: Decimal,
    pub currency: String,
    pub provider: String,
    pub network: Option<String>,
    pub plan_code: Option<String>,
    pub package_code: Option<String>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub at: OffsetDateTime,
}

const DAY_MS: i64 = 86_400_000;

impl<S: Store> Billing<S> {
    // ---- writing the records

    /// What a stored ledger entry adds to the overview's records: the period a
    /// subscription gained, a cut of time taken back, a refund or a reversal.
    pub(super) fn record_analytics(&self, tx: &mut dyn Transaction, entry: &LedgerEntry) -> Result<()> {
        let meta = entry.metadata.as_ref();
        let at = entry.created_at;
        match entry.kind {
            EntryKind::SubscriptionActivated | EntryKind::SubscriptionRenewed => {
                let period = self.purchased_period(tx, entry)?;
                if let Some(period) = period {
                    tx.append_period(&period)?;
                }
            }
            EntryKind::SubscriptionCanceled if meta.is_some_and(|m| m["immediate"] == serde_json::json!(true)) => {
                self.cut_periods(tx, &entry.user_id, at, at)?;
            }
            EntryKind::SubscriptionExpired => {
                let ended = meta.and_then(|m| m["expires_at"].as_str()).and_then(time_util::parse_iso).unwrap_or(at);
                self.mark_churn(tx, &entry.user_id, ended)?;
            }
            EntryKind::PurchaseRefund => {
                if let Some(end) =
                    meta.and_then(|m| m["subscription_expires_at"].as_str()).and_then(time_util::parse_iso)
                {
                    self.cut_periods(tx, &entry.user_id, end, at)?;
                }
                let payment = entry.reference.as_deref().map(|id| tx.payment(id)).transpose()?.flatten();
                let amount = meta.and_then(|m| m["amount"].as_str()).and_then(|a| a.parse::<Decimal>().ok());
                if let (Some(payment), Some(amount)) = (payment, amount) {
                    let kind = match meta.and_then(|m| m["reason"].as_str()) {
                        Some("reorg") => MoneyKind::Reversal,
                        _ => MoneyKind::Refund,
                    };
                    tx.append_money(&money(&payment, kind, amount, at))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The period a subscription entry records: bought by its payment (the monthly value
    /// of what it paid), or outside the engine (the plan's price).
    fn purchased_period(&self, tx: &mut dyn Transaction, entry: &LedgerEntry) -> Result<Option<PeriodRecord>> {
        let meta = entry.metadata.clone().unwrap_or_default();
        let (Some(plan), Some(ends_at)) = (
            meta["plan_code"].as_str().and_then(|code| self.catalog.plan(code)),
            meta["expires_at"].as_str().and_then(time_util::parse_iso),
        ) else {
            return Ok(None);
        };
        let days = plan.duration_days.unwrap_or(30);
        let starts_at = match entry.kind {
            EntryKind::SubscriptionRenewed => ends_at - Duration::days(days.into()),
            _ => entry.created_at,
        };
        let payment = entry.reference.as_deref().map(|id| tx.payment(id)).transpose()?.flatten();
        let (price, currency, network, provider) = match &payment {
            Some(Payment { crypto: Some(crypto), .. }) => {
                let price = crypto.amount - u128::from(crypto.reference);
                let tokens = crate::crypto::token_amount(price, crypto.decimals);
                (tokens, crypto.symbol.clone(), Some(crypto.network.clone()), "crypto")
            }
            Some(payment) => (payment.amount, payment.currency.clone(), None, "yookassa"),
            None => (plan.price, self.catalog.currency.clone(), None, "outside"),
        };
        let kind = match entry.kind {
            EntryKind::SubscriptionRenewed => PeriodKind::Renewal,
            _ if tx.user_periods(&entry.user_id)?.iter().any(|p| p.kind != PeriodKind::Cut) => PeriodKind::Reactivation,
            _ => PeriodKind::New,
        };
        Ok(Some(PeriodRecord {
            user_id: entry.user_id.clone(),
            payment_id: payment.map(|p| p.id),
            plan_code: plan.code.clone(),
            kind,
            starts_at,
            ends_at,
            monthly_micros: analytics::to_micros(analytics::monthly_value(price, days)),
            currency,
            network,
            provider: provider.to_owned(),
            created_at: entry.created_at,
        }))
    }

    /// Takes back, from `from`, what the user's periods still have in force.
    fn cut_periods(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        from: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<()> {
        let periods = tx.user_periods(user_id)?;
        let cuts = analytics::cuts(&periods, from, now);
        for cut in &cuts {
            tx.append_period(cut)?;
        }
        // Nothing in force from the cut on: the user churned then.
        let after: Vec<PeriodRecord> = periods.into_iter().chain(cuts).collect();
        if from <= now && analytics::in_force(&after, from).is_none() {
            self.mark_churn(tx, user_id, from)?;
        }
        Ok(())
    }

    /// Marks, once, that the user's paid time ended at `ended_at` with nothing after it.
    fn mark_churn(&self, tx: &mut dyn Transaction, user_id: &str, ended_at: OffsetDateTime) -> Result<()> {
        let periods = tx.user_periods(user_id)?;
        if analytics::in_force(&periods, ended_at).is_some() {
            return Ok(());
        }
        if let Some(churn) = analytics::churn(&periods, ended_at) {
            tx.append_period(&churn)?;
        }
        Ok(())
    }

    /// A payment that reached its status: a `gross` or a `failed` money movement, and its
    /// count in `metrics_text` (counted as the transaction writes it: a write the store
    /// runs again after a conflict may count twice).
    pub(super) fn record_payment_outcome(
        &self,
        tx: &mut dyn Transaction,
        payment: &Payment,
        now: OffsetDateTime,
    ) -> Result<()> {
        let kind = match payment.status {
            _ if payment.purpose == Purpose::CardBinding => return Ok(()),
            PaymentStatus::Succeeded => MoneyKind::Gross,
            PaymentStatus::Canceled => MoneyKind::Failed,
            _ => return Ok(()),
        };
        let amount = if kind == MoneyKind::Gross { payment.amount } else { Decimal::ZERO };
        let record = money(payment, kind, amount, now);
        self.metrics.payment(payment.history_status(), provider_of(payment));
        Ok(tx.append_money(&record)?)
    }

    /// The Prometheus exposition (OpenMetrics text) of what this handle counted since it
    /// opened: charges by source, refusals by call and code, payments by outcome and
    /// provider, webhook outcomes, charge durations (the wait for the user's lock
    /// included) and writes that found the store busy, holds, and quota checks.
    pub fn metrics_text(&self) -> String {
        self.metrics.text()
    }

    /// Counts a notification's outcome for `metrics_text`.
    pub(super) fn count_webhook<T>(
        &self,
        provider: &'static str,
        result: &Result<T>,
        outcome: impl Fn(&T) -> &'static str,
    ) {
        match result {
            Ok(value) => self.metrics.webhook(provider, outcome(value)),
            Err(BillingError::InvalidWebhook { .. }) => self.metrics.webhook(provider, "rejected"),
            Err(_) => self.metrics.webhook(provider, "failed"),
        }
    }

    // ---- reading them

    /// The overview at `at` (now when `None`) over the `window_days` before it (1 to
    /// 366): MRR, ARPU, active subscriptions and their segments, the periods bought, the
    /// churn, revenue per day and payment counts. Every number comes from the periods and
    /// money records: sums over what is in force at two instants and over the window,
    /// never a scan of the ledger.
    pub fn overview(&self, at: Option<OffsetDateTime>, window_days: u32) -> Result<Overview> {
        if !(1..=366).contains(&window_days) {
            return Err(BillingError::invalid("window_days", format!("1 to 366, got {window_days}")));
        }
        let at = at.unwrap_or_else(|| self.now());
        let start = at - Duration::days(window_days.into());
        self.store.read(|tx| {
            // One subscription at most is in force per user (a second plan is refused while
            // one is active), so the subscriptions in force count the paying users.
            let segments = tx.segments_at(at)?;
            let segments_before = tx.segments_at(start)?;
            let paying = count_by_currency(&segments);
            let paying_before = count_by_currency(&segments_before);
            let mrr_before = sum_by_currency(segments_before.iter().map(|(s, m)| (s.currency.as_str(), *m)));
            let mrr = sum_by_currency(segments.iter().map(|(s, micros)| (s.currency.as_str(), *micros)));
            let counts: BTreeMap<PeriodKind, u64> = tx.period_counts(start, at)?.into_iter().collect();
            let churned = tx.churned(start, at)?;
            let buckets = tx.money_buckets(start, at, DAY_MS)?;
            Ok(Overview {
                at,
                window_start: start,
                arpu: mrr
                    .iter()
                    .filter_map(|(currency, micros)| {
                        let users = paying.iter().find(|(c, _)| c == currency).map_or(0, |(_, n)| *n);
                        (users > 0).then(|| amount(currency, analytics::from_micros(*micros) / Decimal::from(users)))
                    })
                    .collect(),
                mrr: mrr.iter().map(|(currency, micros)| amount(currency, analytics::from_micros(*micros))).collect(),
                paying_users: paying.iter().map(|(_, n)| n).sum(),
                active_subscriptions: segments.iter().map(|(s, _)| s.subscriptions).sum(),
                segments: segments.into_iter().map(|(segment, _)| segment).collect(),
                new_subscriptions: counts.get(&PeriodKind::New).copied().unwrap_or(0),
                renewals: counts.get(&PeriodKind::Renewal).copied().unwrap_or(0),
                reactivations: counts.get(&PeriodKind::Reactivation).copied().unwrap_or(0),
                churned: churned.iter().map(|(_, users, _)| users).sum(),
                subscriber_churn: ratio(
                    churned.iter().map(|(_, n, _)| n).sum(),
                    paying_before.iter().map(|(_, n)| n).sum(),
                ),
                mrr_churn: churned
                    .iter()
                    .filter_map(|(currency, _, lost)| {
                        let before = mrr_before.get(currency.as_str()).copied().filter(|m| *m > 0)?;
                        Some(amount(currency, (Decimal::from(*lost) / Decimal::from(before)).round_dp(6)))
                    })
                    .collect(),
                revenue: revenue_points(&buckets, |ms| time_util::from_millis(ms).date()),
                payments: payment_counts(&buckets),
            })
        })
    }

    /// Gross, refunds and net per day, week or month and currency, over `[from, to)`.
    pub fn revenue_series(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        granularity: Granularity,
    ) -> Result<Vec<RevenuePoint>> {
        if to <= from || to - from > Duration::days(3660) {
            return Err(BillingError::invalid("to", "after `from`, and at most ten years after it"));
        }
        let buckets = self.store.read(|tx| Ok(tx.money_buckets(from, to, DAY_MS)?))?;
        Ok(revenue_points(&buckets, |ms| {
            let day = time_util::from_millis(ms).date();
            match granularity {
                Granularity::Day => day,
                Granularity::Week => day - Duration::days(day.weekday().number_days_from_monday().into()),
                Granularity::Month => day.replace_day(1).expect("every month has a first day"),
            }
        }))
    }

    /// A page of money movements, newest first, matching every field of `filter`; pass
    /// the last one's `id` as `before` for the next page.
    pub fn transactions(
        &self,
        filter: &TransactionFilter,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<MoneyMovement>> {
        input::page_size(limit)?;
        for (field, value) in [
            ("status", &filter.status),
            ("provider", &filter.provider),
            ("network", &filter.network),
            ("plan_code", &filter.plan_code),
        ] {
            if let Some(value) = value {
                input::id(field, value)?;
            }
        }
        let rows = self.store.read(|tx| Ok(tx.money_records(filter, before, limit)?))?;
        Ok(rows
            .into_iter()
            .map(|(id, m)| MoneyMovement {
                id,
                user_id: m.user_id,
                payment_id: m.payment_id,
                status: m.kind.as_str().to_owned(),
                amount: analytics::from_micros(m.micros),
                currency: m.currency,
                provider: m.provider,
                network: m.network,
                plan_code: m.plan_code,
                package_code: m.package_code,
                at: m.at,
            })
            .collect())
    }
}

/// A payment's money movement of `kind`.
/// The provider a payment went through, as money records and metrics name it.
fn provider_of(payment: &Payment) -> &'static str {
    if payment.crypto.is_some() {
        "crypto"
    } else {
        "yookassa"
    }
}

fn money(payment: &Payment, kind: MoneyKind, amount: Decimal, at: OffsetDateTime) -> MoneyRecord {
    MoneyRecord {
        user_id: payment.user_id.clone(),
        payment_id: payment.id.clone(),
        kind,
        micros: analytics::to_micros(amount),
        currency: payment.currency.clone(),
        provider: provider_of(payment).to_owned(),
        network: payment.crypto.as_ref().map(|c| c.network.clone()),
        plan_code: payment.plan_code.clone(),
        package_code: payment.package_code.clone(),
        at,
    }
}

fn amount(currency: &str, amount: Decimal) -> CurrencyAmount {
    CurrencyAmount { currency: currency.to_owned(), amount: amount.normalize() }
}

/// Per currency, the subscriptions in force in `segments`.
fn count_by_currency(segments: &[(analytics::Segment, i64)]) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (segment, _) in segments {
        *counts.entry(segment.currency.clone()).or_default() += segment.subscriptions;
    }
    counts.into_iter().collect()
}

fn sum_by_currency<'a>(rows: impl Iterator<Item = (&'a str, i64)>) -> BTreeMap<String, i64> {
    let mut sums = BTreeMap::new();
    for (currency, micros) in rows {
        *sums.entry(currency.to_owned()).or_insert(0) += micros;
    }
    sums
}

/// `part ÷ whole`, to 6 places; 0 when the whole is 0.
fn ratio(part: u64, whole: u64) -> Decimal {
    if whole == 0 {
        return Decimal::ZERO;
    }
    (Decimal::from(part) / Decimal::from(whole)).round_dp(6).normalize()
}

/// Money buckets as revenue points, regrouped by `bucket_of` each bucket's start.
fn revenue_points(buckets: &[analytics::MoneyBucket], bucket_of: impl Fn(i64) -> time::Date) -> Vec<RevenuePoint> {
    let mut points: BTreeMap<(time::Date, String), (i64, i64)> = BTreeMap::new();
    for bucket in buckets {
        let (gross, refunds) = points.entry((bucket_of(bucket.start_ms), bucket.currency.clone())).or_default();
        match bucket.kind {
            MoneyKind::Gross => *gross += bucket.micros,
            MoneyKind::Refund | MoneyKind::Reversal => *refunds += bucket.micros,
            MoneyKind::Failed => {}
        }
    }
    points
        .into_iter()
        .map(|((day, currency), (gross, refunds))| RevenuePoint {
            start: day.to_string(),
            currency,
            gross: analytics::from_micros(gross),
            refunds: analytics::from_micros(refunds),
            net: analytics::from_micros(gross - refunds),
        })
        .collect()
}

/// Per outcome and provider: how many payments ended so in the buckets.
fn payment_counts(buckets: &[analytics::MoneyBucket]) -> Vec<PaymentCount> {
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for bucket in buckets {
        let status = match bucket.kind {
            MoneyKind::Gross => "succeeded",
            MoneyKind::Failed => "failed",
            MoneyKind::Refund => "refunded",
            MoneyKind::Reversal => "reversed",
        };
        *counts.entry((status, bucket.provider.as_str())).or_default() += bucket.count;
    }
    counts
        .into_iter()
        .map(|((status, provider), count)| PaymentCount {
            status: status.to_owned(),
            provider: provider.to_owned(),
            count,
        })
        .collect()
}
