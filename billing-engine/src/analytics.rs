//! What operators look at (seed 004's overview): MRR, ARPU, active subscriptions,
//! churn and revenue, read from an append-only record of purchased periods and money
//! movements that each change writes in its own transaction, never by scanning the
//! ledger. The formulas are here and in `docs/OVERVIEW.md`.
//!
//! **Purchased periods.** Each paid period a subscription gains is one row: its plan,
//! `[starts_at, ends_at)`, and its *monthly value* frozen when it was bought (a yearly
//! plan's price ÷ 12, a weekly one's × 52 / 12, a month's as it is; see
//! [`monthly_value`]). A period cut short (a refund, a reversal, an immediate
//! cancellation) is a second row of kind `cut` over the part taken back, with the value
//! and weight negated, so that the sum over the rows covering an instant is what was in
//! force then. Free plans, trials and credit packages make no period.
//!
//! **Money movements.** Each succeeded payment is a `gross` row, each refund a `refund`
//! row, each reversal a `reversal` row, each failed payment a `failed` row (with no
//! amount). Amounts are kept in micro-units (10⁻⁶ of the currency or token), so that the
//! database sums them exactly: every fiat amount and every catalog price fits them.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Micro-units per unit: analytics amounts are integers of 10⁻⁶.
const MICROS: i64 = 1_000_000;

/// An amount as micro-units, rounded half away from zero at the 6th place.
pub fn to_micros(amount: Decimal) -> i64 {
    (amount * Decimal::from(MICROS)).round().to_i64().unwrap_or(if amount.is_sign_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

pub fn from_micros(micros: i64) -> Decimal {
    Decimal::new(micros, 6).normalize()
}

/// A plan's monthly value: its price over its period, as a month. A period of 28 to 31
/// days is a month; 365 or 366 days a year (÷ 12); 7 days a week (× 52 / 12); any
/// other length counts by its days (× 30 / days).
pub fn monthly_value(price: Decimal, duration_days: u32) -> Decimal {
    match duration_days {
        28..=31 => price,
        365 | 366 => price / Decimal::from(12),
        7 => price * Decimal::from(52) / Decimal::from(12),
        days => price * Decimal::from(30) / Decimal::from(days.max(1)),
    }
    .round_dp(6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    /// The user's first paid period.
    New,
    /// A period added to a running subscription.
    Renewal,
    /// A new subscription of a user who had one before.
    Reactivation,
    /// The part of a period taken back.
    Cut,
    /// A subscription ended with nobody paying on (it expired, was canceled at once or
    /// refunded away): weight 0, the monthly value it took, at the instant it ended.
    Churn,
}

stored_names!(PeriodKind {
    New => "new",
    Renewal => "renewal",
    Reactivation => "reactivation",
    Cut => "cut",
    Churn => "churn",
});

/// One row of purchased periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub user_id: String,
    /// The payment that bought it; `None` for one paid outside the engine.
    pub payment_id: Option<String>,
    pub plan_code: String,
    pub kind: PeriodKind,
    #[serde(with = "crate::time_util::serde_iso")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub ends_at: OffsetDateTime,
    /// Micro-units of `currency` a month, negative for a cut.
    pub monthly_micros: i64,
    pub currency: String,
    /// The crypto network's name, for a period paid on chain.
    pub network: Option<String>,
    /// `yookassa`, `crypto` or `outside`.
    pub provider: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub created_at: OffsetDateTime,
}

impl PeriodRecord {
    /// +1 for a period, −1 for a cut, 0 for a churn: the sum over rows covering an
    /// instant counts the periods in force.
    pub fn weight(&self) -> i64 {
        match self.kind {
            PeriodKind::Cut => -1,
            PeriodKind::Churn => 0,
            _ => 1,
        }
    }

    /// The row that takes back `[from, ends_at)` of this period.
    pub fn cut_from(&self, from: OffsetDateTime, now: OffsetDateTime) -> Self {
        Self {
            kind: PeriodKind::Cut,
            starts_at: from.max(self.starts_at),
            monthly_micros: -self.monthly_micros,
            created_at: now,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoneyKind {
    Gross,
    Refund,
    Reversal,
    Failed,
}

stored_names!(MoneyKind { Gross => "gross", Refund => "refund", Reversal => "reversal", Failed => "failed" });

/// One money movement of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyRecord {
    pub user_id: String,
    pub payment_id: String,
    pub kind: MoneyKind,
    pub micros: i64,
    pub currency: String,
    pub provider: String,
    pub network: Option<String>,
    pub plan_code: Option<String>,
    pub package_code: Option<String>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub at: OffsetDateTime,
}

/// The rows that take back, from `from`, what `periods` (a user's rows) still have in
/// force: for each period, the part from `from` (or its start) to where an earlier cut
/// of it begins (or its end). A period's cuts are the rows of kind `cut` of its payment
/// and plan that start inside it.
pub fn cuts(periods: &[PeriodRecord], from: OffsetDateTime, now: OffsetDateTime) -> Vec<PeriodRecord> {
    let of_period = |period: &PeriodRecord, cut: &PeriodRecord| {
        cut.kind == PeriodKind::Cut
            && (&cut.payment_id, &cut.plan_code) == (&period.payment_id, &period.plan_code)
            && period.starts_at <= cut.starts_at
            && cut.starts_at < period.ends_at
    };
    periods
        .iter()
        .filter(|period| period.kind != PeriodKind::Cut)
        .filter_map(|period| {
            let in_force_until = periods
                .iter()
                .filter(|cut| of_period(period, cut))
                .map(|cut| cut.starts_at)
                .min()
                .unwrap_or(period.ends_at);
            let start = from.max(period.starts_at);
            (start < in_force_until).then(|| PeriodRecord { ends_at: in_force_until, ..period.cut_from(start, now) })
        })
        .collect()
}

/// The monthly value `periods` (a user's rows) have in force at `at`, and the currency
/// and plan of the row that brings it.
pub fn in_force(periods: &[PeriodRecord], at: OffsetDateTime) -> Option<(i64, &PeriodRecord)> {
    let covering: Vec<&PeriodRecord> = periods.iter().filter(|p| p.starts_at <= at && at < p.ends_at).collect();
    let weight: i64 = covering.iter().map(|p| p.weight()).sum();
    let value: i64 = covering.iter().map(|p| p.monthly_micros).sum();
    let row = covering.into_iter().find(|p| p.weight() > 0)?;
    (weight > 0).then_some((value, row))
}

/// The `churn` row of a subscription whose paid time ended at `ended_at` (the user's rows
/// written before): none when nothing was in force just before, or when that end is
/// marked already.
pub fn churn(periods: &[PeriodRecord], ended_at: OffsetDateTime) -> Option<PeriodRecord> {
    let marked = periods.iter().any(|p| p.kind == PeriodKind::Churn && p.created_at == ended_at);
    let (value, row) = in_force(periods, ended_at - time::Duration::milliseconds(1))?;
    (!marked).then(|| PeriodRecord {
        kind: PeriodKind::Churn,
        starts_at: ended_at,
        ends_at: ended_at,
        monthly_micros: value,
        created_at: ended_at,
        ..row.clone()
    })
}

/// An amount of one currency or token.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct CurrencyAmount {
    pub currency: String,
    pub amount: Decimal,
}

/// The periods in force at an instant, of one plan, currency and network.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Segment {
    pub plan_code: String,
    pub currency: String,
    pub network: Option<String>,
    pub subscriptions: u64,
    pub mrr: Decimal,
}

/// One bucket of money movements, as the store sums them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyBucket {
    /// Unix milliseconds where the bucket starts.
    pub start_ms: i64,
    pub currency: String,
    pub kind: MoneyKind,
    pub provider: String,
    pub micros: i64,
    pub count: u64,
}

/// Which money movements [`transactions`](crate::Billing::transactions) lists: all that
/// match every field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct TransactionFilter {
    /// `gross` (succeeded), `refund`, `reversal` or `failed`.
    pub status: Option<String>,
    /// `yookassa`, `crypto` or `outside`.
    pub provider: Option<String>,
    pub network: Option<String>,
    pub plan_code: Option<String>,
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub to: Option<OffsetDateTime>,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
}

/// One day (or week, or month) of money, of one currency.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct RevenuePoint {
    /// The first day of the bucket, `YYYY-MM-DD` (UTC).
    pub start: String,
    pub currency: String,
    /// What succeeded payments brought.
    pub gross: Decimal,
    /// What refunds and reversals took back.
    pub refunds: Decimal,
    /// `gross - refunds`.
    pub net: Decimal,
}

/// How many payments ended one way, by one provider, in a window.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct PaymentCount {
    /// `succeeded`, `failed`, `refunded` (a refund) or `reversed`.
    pub status: String,
    pub provider: String,
    pub count: u64,
}

/// The operators' overview at an instant, over the window before it.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Overview {
    #[serde(with = "crate::time_util::serde_iso")]
    pub at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub window_start: OffsetDateTime,
    /// Monthly recurring revenue per currency: the monthly values of the periods in
    /// force at `at`.
    pub mrr: Vec<CurrencyAmount>,
    /// MRR ÷ paying users, per currency.
    pub arpu: Vec<CurrencyAmount>,
    /// Users with a paid period in force at `at`.
    pub paying_users: u64,
    pub active_subscriptions: u64,
    /// Active subscriptions and their MRR per plan, currency and network.
    pub segments: Vec<Segment>,
    /// Periods bought in the window: first subscriptions, renewals, returns.
    pub new_subscriptions: u64,
    pub renewals: u64,
    pub reactivations: u64,
    /// Users paying at the window's start and not at `at`.
    pub churned: u64,
    /// `churned ÷ paying users at the window's start` (0 when none paid then).
    pub subscriber_churn: Decimal,
    /// Per currency: the churned users' MRR at the window's start ÷ the MRR then.
    pub mrr_churn: Vec<CurrencyAmount>,
    /// Per day of the window and currency: gross, refunds and net.
    pub revenue: Vec<RevenuePoint>,
    /// Payments that ended in the window, per outcome and provider.
    pub payments: Vec<PaymentCount>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(kind: PeriodKind, from: i64, to: i64, micros: i64) -> PeriodRecord {
        let day = |n: i64| time::macros::datetime!(2026-01-01 00:00 UTC) + time::Duration::days(n);
        PeriodRecord {
            user_id: "u".into(),
            payment_id: Some("p".into()),
            plan_code: "basic".into(),
            kind,
            starts_at: day(from),
            ends_at: day(to),
            monthly_micros: micros,
            currency: "RUB".into(),
            network: None,
            provider: "yookassa".into(),
            created_at: day(from),
        }
    }

    #[test]
    fn a_second_cut_takes_back_only_what_the_first_left_and_churn_is_marked_once() {
        let day = |n: i64| time::macros::datetime!(2026-01-01 00:00 UTC) + time::Duration::days(n);
        let mut rows = vec![period(PeriodKind::New, 0, 30, 299)];
        let first = cuts(&rows, day(20), day(5));
        assert_eq!((first[0].starts_at, first[0].ends_at, first[0].monthly_micros), (day(20), day(30), -299));
        rows.extend(first);
        let second = cuts(&rows, day(10), day(10));
        assert_eq!((second[0].starts_at, second[0].ends_at), (day(10), day(20)), "not again over [20, 30)");
        rows.extend(second);
        assert_eq!(in_force(&rows, day(9)).map(|(v, _)| v), Some(299));
        assert!(in_force(&rows, day(10)).is_none() && in_force(&rows, day(25)).is_none());
        let churn_row = churn(&rows, day(10)).unwrap();
        assert_eq!((churn_row.kind, churn_row.weight(), churn_row.monthly_micros), (PeriodKind::Churn, 0, 299));
        rows.push(churn_row);
        assert_eq!(churn(&rows, day(10)), None, "marked once");
        assert!(cuts(&rows, day(5), day(12)).iter().all(|c| c.ends_at == day(10)));
    }

    #[test]
    fn a_periods_monthly_value_follows_its_length() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(monthly_value(d("299.00"), 30), d("299.00"));
        assert_eq!(monthly_value(d("2990.00"), 365), d("249.166667"));
        assert_eq!(monthly_value(d("120"), 7), d("520"));
        assert_eq!(monthly_value(d("100"), 90), d("33.333333"));
        assert_eq!((to_micros(d("249.166667")), from_micros(249_166_667)), (249_166_667, d("249.166667")));
        assert_eq!(to_micros(d("-3.5")), -3_500_000);
    }
}
