//! Metered usage (seed 001): the windows a quota counts in, what a check allows, what
//! usage above a quota costs, and holds.
//!
//! Every metric is counted per window in a counter kept beside the account, updated in
//! the same transaction as the usage event or hold that moves it, so a check reads two
//! counters whatever the history's size:
//! - the **period** window: the allowance period of the plan in force (the active
//!   subscription's, else the free tier's), anchored and lazy like ops;
//! - the **day** window: the catalog's local day, for `daily_quotas`.
//!
//! A counter has `used` (usage events) and `held` (open holds). A hold counts until the
//! instant it expires: every read leaves expired holds out, and the next write for the
//! user records them as `hold_expired`.
//!
//! The rule of a check, for each metric requested: it fits when `used + held + requested`
//! stays within the plan's quota in both windows (a metric without a quota always fits).
//! What does not fit is refused with QUOTA_EXCEEDED under `quota_mode = "hard"`, unless
//! the plan prices that metric's overage and the credits cover it; under `"soft"` it is
//! allowed and reported as over the limit. Usage that already happened
//! ([`Billing::track_usage`](crate::Billing::track_usage)) is never refused.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, Duration, OffsetDateTime};

use crate::account::{local_day, next_local_midnight, Account, Allowance};
use crate::catalog::{Aggregation, Catalog, ChargeSource, Overage, Plan, QuotaMode};
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::{AllowancePeriod, FREEMIUM_OWNER};

/// How far ahead of the engine's clock a tracked `at` may be: clocks of hosts differ.
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);
/// The longest a hold may live.
pub const MAX_HOLD_TTL: Duration = Duration::days(7);
/// The most usage one event, check or hold may carry of one metric.
pub const MAX_USAGE_AMOUNT: u64 = 1_000_000_000_000_000;

/// One metric's use in one window, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounter {
    pub metric: String,
    /// The window's key: `p:<allowance owner>:<start ms>` or `d:<YYYY-MM-DD>`.
    pub window: String,
    pub used: u64,
    pub held: u64,
}

/// The two windows that held one instant, and the plan whose quotas apply in them.
#[derive(Debug, Clone)]
pub(crate) struct Windows<'c> {
    /// The instant the windows hold.
    pub at: OffsetDateTime,
    pub plan: &'c Plan,
    pub period: String,
    pub period_start: OffsetDateTime,
    pub period_resets_at: OffsetDateTime,
    pub day: String,
    pub day_resets_at: OffsetDateTime,
}

/// The windows that held `at` for this account: the period of the subscription active at
/// `at` (else of the free tier), and the local day of `at`. `account` is rolled forward.
pub(crate) fn windows_at<'c>(account: &Account, catalog: &'c Catalog, at: OffsetDateTime) -> Windows<'c> {
    let active_sub = account.subscription.as_ref().filter(|sub| sub.started_at <= at && at < sub.expires_at);
    let paid = active_sub.and_then(|sub| catalog.plan(&sub.plan_code).map(|plan| (sub, plan)));
    let (plan, owner, allowance, ends) = match paid {
        Some((sub, plan)) => (plan, sub.id.as_str(), &sub.ops, Some(sub.expires_at)),
        None => (catalog.free_plan(), FREEMIUM_OWNER, &account.freemium, None),
    };
    let period_start = allowance.period_start_at(at, plan.period_days);
    let period_resets_at = period_end(allowance, period_start, plan.period_days, ends);
    let day = local_day(at, catalog.timezone_offset);
    Windows {
        at,
        plan,
        period: period_window(&AllowancePeriod { owner: owner.to_owned(), start: period_start }),
        period_start,
        period_resets_at,
        day: day_window(day),
        day_resets_at: next_local_midnight(at, catalog.timezone_offset),
    }
}

/// When the period starting at `start` ends: its length, or earlier at a scheduled
/// restart of the allowance or at the end of the subscription.
fn period_end(allowance: &Allowance, start: OffsetDateTime, days: u32, ends: Option<OffsetDateTime>) -> OffsetDateTime {
    let mut end = start + Duration::days(i64::from(days));
    if allowance.anchor > start {
        end = end.min(allowance.anchor);
    }
    ends.map_or(end, |ends| end.min(ends))
}

pub(crate) fn period_window(period: &AllowancePeriod) -> String {
    format!("p:{}:{}", period.owner, crate::time_util::to_millis(period.start))
}

pub(crate) fn day_window(day: Date) -> String {
    format!("d:{day}")
}

/// The counters of one check or transaction: `used` and `held` per `(metric, window)`,
/// with the holds that expired by now already left out. A handful of rows (the metrics of
/// two windows), so a list searched in place, with no allocation per lookup.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters(Vec<UsageCounter>);

impl Counters {
    pub fn new(counters: Vec<UsageCounter>) -> Self {
        Self(counters)
    }

    /// Adds stored counters not yet held; those held keep their value.
    pub fn insert_missing(&mut self, counters: Vec<UsageCounter>) {
        for counter in counters {
            if self.position(&counter.metric, &counter.window).is_none() {
                self.0.push(counter);
            }
        }
    }

    fn position(&self, metric: &str, window: &str) -> Option<usize> {
        self.0.iter().position(|c| c.metric == metric && c.window == window)
    }

    pub fn get(&self, metric: &str, window: &str) -> (u64, u64) {
        self.position(metric, window).map_or((0, 0), |i| (self.0[i].used, self.0[i].held))
    }

    /// Moves a counter by what an event (`used`) or a hold (`held`) adds or takes back.
    pub fn add(&mut self, metric: &str, window: &str, used: i64, held: i64) {
        let i = self.position(metric, window).unwrap_or_else(|| {
            let counter = UsageCounter { metric: metric.to_owned(), window: window.to_owned(), used: 0, held: 0 };
            self.0.push(counter);
            self.0.len() - 1
        });
        let counter = &mut self.0[i];
        counter.used = counter.used.saturating_add_signed(used);
        counter.held = counter.held.saturating_add_signed(held);
    }

    pub fn iter(&self) -> impl Iterator<Item = &UsageCounter> {
        self.0.iter()
    }
}

/// One metric of a [`UsageCheck`].
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct MetricCheck {
    pub metric: String,
    pub requested: u64,
    /// The plan's quota per period; `None` when unlimited.
    pub limit: Option<u64>,
    pub used: u64,
    pub held: u64,
    /// What is left of the period's quota before this request; `None` when unlimited.
    pub remaining: Option<u64>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub resets_at: OffsetDateTime,
    pub daily_limit: Option<u64>,
    pub daily_used: u64,
    pub daily_remaining: Option<u64>,
    /// The request would pass a quota (allowed anyway under a soft quota or as overage).
    pub over_limit: bool,
    /// Credits the part above the quota would cost, when the plan prices it.
    pub overage_credits: Decimal,
}

/// What [`Billing::check_usage`](crate::Billing::check_usage) found: whether the usage
/// fits now, and each metric's standing.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageCheck {
    pub allowed: bool,
    /// The error code a reservation would raise now (`QUOTA_EXCEEDED`), when not allowed.
    pub reason: Option<String>,
    pub metrics: Vec<MetricCheck>,
    /// Credits the overage of all metrics would cost.
    pub overage_credits: Decimal,
}

/// A checked request of usage: each metric at most once, each amount bounded.
pub(crate) fn checked_usage(catalog: &Catalog, usage: &BTreeMap<String, u64>) -> Result<()> {
    for (metric, amount) in usage {
        catalog.metric(metric)?;
        usage_amount(*amount)?;
    }
    Ok(())
}

pub(crate) fn usage_amount(amount: u64) -> Result<u64> {
    if amount > MAX_USAGE_AMOUNT {
        return Err(BillingError::invalid("amount", format!("at most {MAX_USAGE_AMOUNT}, got {amount}")));
    }
    Ok(amount)
}

/// The rule of the module docs: what `usage` would do now against `counters`, with
/// `credits` available for overage. Writes nothing.
pub(crate) fn check(
    windows: &Windows<'_>,
    counters: &Counters,
    usage: &BTreeMap<String, u64>,
    credits: Decimal,
) -> Result<(UsageCheck, Option<BillingError>)> {
    let plan = windows.plan;
    let mut metrics = Vec::with_capacity(usage.len());
    let mut refusal = None;
    let mut overage_credits = Decimal::ZERO;
    for (metric, &requested) in usage {
        let (used, held) = counters.get(metric, &windows.period);
        let (daily_used, daily_held) = counters.get(metric, &windows.day);
        let limit = plan.quotas.get(metric).copied();
        let daily_limit = plan.daily_quotas.get(metric).copied();
        let over = Excess::of(windows, counters, metric, requested);
        let over_limit = over.units() > 0;
        let price = overage_price(plan, metric);
        let cost = match price {
            Some(price) if over_limit => overage_cost(price.credits, price.per, over.units())?,
            _ => Decimal::ZERO,
        };
        overage_credits += cost;
        if over_limit && plan.quota_mode == QuotaMode::Hard && price.is_none() && refusal.is_none() {
            let (window, limit, used, held, resets_at) = if over.day > 0 {
                ("day", daily_limit, daily_used, daily_held, windows.day_resets_at)
            } else {
                ("period", limit, used, held, windows.period_resets_at)
            };
            refusal = Some(BillingError::QuotaExceeded {
                metric: metric.clone(),
                limit: limit.unwrap_or(0),
                used,
                held,
                requested,
                resets_at,
                window,
            });
        }
        metrics.push(MetricCheck {
            metric: metric.clone(),
            requested,
            limit,
            used,
            held,
            remaining: limit.map(|limit| limit.saturating_sub(used.saturating_add(held))),
            resets_at: windows.period_resets_at,
            daily_limit,
            daily_used,
            daily_remaining: daily_limit.map(|limit| limit.saturating_sub(daily_used.saturating_add(daily_held))),
            over_limit,
            overage_credits: cost,
        });
    }
    if refusal.is_none() && overage_credits > credits {
        refusal = Some(BillingError::NotEnoughCredits {
            required: overage_credits,
            available: credits,
            expired: Decimal::ZERO,
        });
    }
    let check = UsageCheck {
        allowed: refusal.is_none(),
        reason: refusal.as_ref().map(|r| r.code().to_owned()),
        metrics,
        overage_credits,
    };
    Ok((check, refusal))
}

/// How much of a request of one metric lands above the plan's quota, in each window.
#[derive(Debug, Clone, Copy)]
struct Excess {
    period: u64,
    day: u64,
}

impl Excess {
    /// `requested` of `metric` against what `counters` hold as used and held.
    fn of(windows: &Windows<'_>, counters: &Counters, metric: &str, requested: u64) -> Self {
        let in_window = |limit: Option<&u64>, window: &str| {
            let (used, held) = counters.get(metric, window);
            excess(limit.copied(), used.saturating_add(held), requested)
        };
        Self {
            period: in_window(windows.plan.quotas.get(metric), &windows.period),
            day: in_window(windows.plan.daily_quotas.get(metric), &windows.day),
        }
    }

    /// The units above a quota: what overage prices.
    fn units(self) -> u64 {
        self.period.max(self.day)
    }
}

/// How much of `requested` lands above `limit`, given `taken` already counted.
fn excess(limit: Option<u64>, taken: u64, requested: u64) -> u64 {
    match limit {
        Some(limit) => taken.saturating_add(requested).saturating_sub(limit.max(taken)).min(requested),
        None => 0,
    }
}

/// The plan's price of usage above its quota of `metric`: only a hard quota prices it
/// (a soft one lets it through for free).
fn overage_price<'p>(plan: &'p Plan, metric: &str) -> Option<&'p Overage> {
    plan.overage.get(metric).filter(|_| plan.quota_mode == QuotaMode::Hard)
}

/// `credits` per `per` units for `units`, proportionally, rounded up to the credit scale
/// so that overage is never given away by rounding.
pub(crate) fn overage_cost(credits: Decimal, per: u64, units: u64) -> Result<Decimal> {
    let cost = credits
        .checked_mul(Decimal::from(units))
        .and_then(|total| total.checked_div(Decimal::from(per)))
        .ok_or_else(|| BillingError::invalid("amount", "the overage is too large to price"))?;
    Ok(cost.round_dp_with_strategy(input::CREDIT_DECIMALS, RoundingStrategy::AwayFromZero).normalize())
}

/// The cost of the overage of usage tracked past a quota: the units above the period
/// and day quotas of a metric the plan prices. `counters` are before the usage.
pub(crate) fn tracked_overage(
    windows: &Windows<'_>,
    counters: &Counters,
    metric: &str,
    amount: u64,
) -> Result<Decimal> {
    match overage_price(windows.plan, metric) {
        Some(price) => match Excess::of(windows, counters, metric, amount).units() {
            0 => Ok(Decimal::ZERO),
            units => overage_cost(price.credits, price.per, units),
        },
        None => Ok(Decimal::ZERO),
    }
}

/// Whether usage crossed a quota: what `counters` hold (after it) passes a limit in
/// either window.
pub(crate) fn is_over_limit(windows: &Windows<'_>, counters: &Counters, metric: &str) -> bool {
    let over = |limit: Option<&u64>, window: &str| {
        let (used, held) = counters.get(metric, window);
        limit.is_some_and(|&limit| used.saturating_add(held) > limit)
    };
    over(windows.plan.quotas.get(metric), &windows.period) || over(windows.plan.daily_quotas.get(metric), &windows.day)
}

/// One usage event to track: what [`Billing::track_usage`](crate::Billing::track_usage) takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageRequest {
    pub metric: String,
    pub amount: u64,
    pub model_id: Option<String>,
    pub chat_id: Option<String>,
    /// A JSON object kept with the event.
    pub metadata: Option<Value>,
    /// When the usage happened; `None` is now. It counts in the windows that held it.
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub at: Option<OffsetDateTime>,
}

impl UsageRequest {
    pub fn new(metric: impl Into<String>, amount: u64) -> Self {
        Self { metric: metric.into(), amount, model_id: None, chat_id: None, metadata: None, at: None }
    }

    /// Adds this event to the fingerprint of the call that tracks it: every field, in
    /// order, so two calls with one key replay only if they asked the same.
    pub(crate) fn fingerprint_into(&self, fingerprint: &mut crate::ledger::Fingerprint) {
        fingerprint.part(Some(&self.metric));
        fingerprint.part(Some(&self.amount.to_string()));
        fingerprint.part(self.model_id.as_deref());
        fingerprint.part(self.chat_id.as_deref());
        fingerprint.json(self.metadata.as_ref());
        fingerprint.part(self.at.map(crate::time_util::iso).as_deref());
    }

    /// The input rules of one event: a known metric, an amount its aggregation allows
    /// (exactly 1 for `count`), bounded ids and metadata, and an `at` not in the future.
    pub(crate) fn check(&self, catalog: &Catalog, now: OffsetDateTime) -> Result<()> {
        let metric = catalog.metric(&self.metric)?;
        usage_amount(self.amount)?;
        if metric.aggregation == Aggregation::Count && self.amount != 1 {
            return Err(BillingError::invalid(
                "amount",
                format!("`{}` counts events: 1, got {}", self.metric, self.amount),
            ));
        }
        UsageLabels { model_id: self.model_id.clone(), chat_id: self.chat_id.clone() }.check()?;
        input::metadata(self.metadata.as_ref())?;
        if let Some(at) = self.at {
            if at > now + MAX_FUTURE_SKEW {
                let message = format!("{} is more than 5 minutes ahead", crate::time_util::iso(at));
                return Err(BillingError::invalid("at", message));
            }
        }
        Ok(())
    }
}

/// What a capture's usage events are labelled with, for breakdowns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageLabels {
    pub model_id: Option<String>,
    pub chat_id: Option<String>,
}

impl UsageLabels {
    pub(crate) fn check(&self) -> Result<()> {
        if let Some(model_id) = &self.model_id {
            input::id("model_id", model_id)?;
        }
        if let Some(chat_id) = &self.chat_id {
            input::id("chat_id", chat_id)?;
        }
        Ok(())
    }
}

/// A usage event as stored: append-only, counted in its windows.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageRecord {
    pub id: i64,
    pub user_id: String,
    pub metric: String,
    pub amount: u64,
    pub model_id: Option<String>,
    pub chat_id: Option<String>,
    /// The hold whose capture recorded it, if any.
    pub hold_id: Option<String>,
    pub metadata: Option<Value>,
    /// When the usage happened, which decided its windows.
    #[serde(with = "crate::time_util::serde_iso")]
    pub at: OffsetDateTime,
    /// The usage took the metric past a quota; the next check refuses.
    pub over_limit: bool,
    /// Credits its overage was charged (the ledger's `overage` entry).
    pub overage_credits: Decimal,
    pub replayed: bool,
}

/// A usage event before the store gives it an id, with the windows it counts in.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUsage {
    pub record: UsageRecord,
    pub period_window: String,
    pub day_window: String,
    /// The key of the call that recorded it, on the call's first event only; with the
    /// number of events the call recorded and its request's fingerprint.
    pub idempotency_key: Option<String>,
    pub events: Option<u32>,
    pub request_hash: Option<String>,
    /// When the engine recorded it.
    pub created_at: OffsetDateTime,
}

/// A metric's standing in the current period, in seed 001's `GET /usage/{metric}` shape.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageSummary {
    pub metric: String,
    pub unit: String,
    pub used: u64,
    pub held: u64,
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub period_start: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub resets_at: OffsetDateTime,
}

/// What [`Billing::usage_breakdown`](crate::Billing::usage_breakdown) groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum UsageGroup {
    ModelId,
    ChatId,
}

impl UsageGroup {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ModelId => "model_id",
            Self::ChatId => "chat_id",
        }
    }

    /// `model_id` or `chat_id`; anything else is INVALID_ARGUMENT `by`.
    pub fn parse(name: &str) -> Result<Self> {
        [Self::ModelId, Self::ChatId]
            .into_iter()
            .find(|group| group.as_str() == name)
            .ok_or_else(|| BillingError::invalid("by", format!("expected model_id or chat_id, got `{name}`")))
    }
}

/// One group's total of a breakdown; `key` is `None` for usage tracked without one.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageTotal {
    pub key: Option<String>,
    pub amount: u64,
    pub events: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum HoldStatus {
    Open,
    Captured,
    Released,
    Expired,
}

impl HoldStatus {
    const ALL: [HoldStatus; 4] = [Self::Open, Self::Captured, Self::Released, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Captured => "captured",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }
}

impl std::str::FromStr for HoldStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|status| status.as_str() == s).ok_or(())
    }
}

/// Usage one hold reserves of one metric, in the windows it was placed in.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct HeldUsage {
    pub metric: String,
    pub amount: u64,
    pub period_window: String,
    pub day_window: String,
}

/// A reservation of quota, an operation's op or credits, and overage credits, made before
/// work whose cost is known only afterwards; captured, released or expired once.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Hold {
    pub id: String,
    pub user_id: String,
    pub status: HoldStatus,
    pub usage: Vec<HeldUsage>,
    pub operation: Option<String>,
    /// Where the operation's op or credits were drawn from.
    pub source: Option<ChargeSource>,
    /// Credits drawn when placed: the operation's cost and the overage reserved.
    pub credits_held: Decimal,
    pub overage_held: Decimal,
    /// The `hold_placed` ledger entry.
    pub placed_entry_id: i64,
    #[serde(with = "crate::time_util::serde_iso")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub settled_at: Option<OffsetDateTime>,
    /// The usage a capture recorded.
    pub captured: Vec<UsageAmount>,
    /// The overage a capture charged, beyond what was held or from what was held.
    pub overage_charged: Decimal,
    /// Credits a capture could not charge (`capture_overrun = "cap"`).
    pub shortfall: Decimal,
    /// The ledger entry that settled it.
    pub settled_entry_id: Option<i64>,
    /// Captured after it had expired (and given back its draw): the capture drew again.
    #[serde(default)]
    pub captured_late: bool,
    #[serde(default)]
    pub replayed: bool,
}

impl Hold {
    /// Counts against quotas and holds credits at `now`: open and not yet expired.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.status == HoldStatus::Open && now < self.expires_at
    }
}

#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct UsageAmount {
    pub metric: String,
    pub amount: u64,
}

/// A hold's time to live, bounded.
pub(crate) fn hold_ttl(seconds: u64) -> Result<Duration> {
    let ttl = Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX));
    if seconds == 0 || ttl > MAX_HOLD_TTL {
        return Err(BillingError::invalid(
            "ttl_s",
            format!("expected 1 to {} seconds, got {seconds}", MAX_HOLD_TTL.whole_seconds()),
        ));
    }
    Ok(ttl)
}

/// Every feature of the catalog with its value for a user, and how long the values hold.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Entitlements {
    pub plan_code: String,
    pub features: Vec<Entitlement>,
    /// The values hold until this instant at least (the end of the subscription in
    /// force), unless a payment or cancellation changes the plan first.
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub valid_until: Option<OffsetDateTime>,
}

#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Entitlement {
    pub name: String,
    /// `flag` or `limit`.
    pub kind: String,
    /// For a flag: whether the plan has it.
    pub enabled: bool,
    /// For a limit: the plan's number.
    pub limit: Option<u64>,
}

/// The cheapest plan with a flag `feature` on, or with a limit above zero.
pub(crate) fn cheapest_plan_with<'c>(catalog: &'c Catalog, feature: &str) -> Option<&'c Plan> {
    let has = |plan: &&Plan| plan.has_feature(feature) || plan.feature_limits.get(feature).is_some_and(|&l| l > 0);
    catalog.plans.iter().filter(has).min_by(|a, b| a.price.cmp(&b.price).then(a.display_order.cmp(&b.display_order)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_is_the_part_above_the_limit_of_what_is_requested() {
        assert_eq!(excess(None, 100, 5), 0);
        assert_eq!(excess(Some(10), 4, 6), 0, "exactly at the limit fits");
        assert_eq!(excess(Some(10), 4, 7), 1);
        assert_eq!(excess(Some(10), 12, 3), 3, "already over: all of it is above");
    }

    #[test]
    fn overage_rounds_up_to_the_credit_scale() {
        let one = Decimal::ONE;
        assert_eq!(overage_cost(one, 1000, 1500).unwrap().to_string(), "1.5");
        assert_eq!(overage_cost(one, 3, 1).unwrap().to_string(), "0.333334");
        assert_eq!(overage_cost(one, 1000, 0).unwrap().to_string(), "0");
    }
}
