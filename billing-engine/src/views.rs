//! Read models: the full [`BillingState`] and the seed 003 API shapes, built from an
//! account rolled forward to "now". Field names are the wire names.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::account::{next_local_midnight, Account};
use crate::catalog::{Catalog, ChargeSource, Plan};
use crate::lots::{CreditLot, ExpiringCredits};
use crate::payment::{PaymentHistoryItem, PaymentMethodView, SavedMethod};

/// Everything a client needs to show a user's billing at a glance. `None` means
/// unlimited or not applicable.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct BillingState {
    pub user_id: String,
    pub plan_code: String,
    pub plan_name: String,
    pub tier: String,
    /// Whether a paid subscription is active.
    pub is_active: bool,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub credits: Decimal,
    pub subscription_ops_limit: Option<u32>,
    pub subscription_ops_used: Option<u32>,
    pub subscription_ops_remaining: Option<u32>,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub subscription_ops_reset_at: Option<OffsetDateTime>,
    pub freemium_ops_limit: Option<u32>,
    pub freemium_ops_used: u32,
    pub freemium_ops_remaining: Option<u32>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub freemium_reset_at: OffsetDateTime,
    /// The current plan's daily cap on allowance ops.
    pub daily_limit: Option<u32>,
    pub used_today: u32,
    pub remaining_today: Option<u32>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub today_resets_at: OffsetDateTime,
    pub autorenew_enabled: bool,
    /// Credits of live lots that will expire, one item per lot, soonest first.
    pub credits_expiring: Vec<ExpiringCredits>,
}

impl BillingState {
    /// The state of `account`, whose lots with credits left are `lots`, at `now`.
    pub(crate) fn new(account: &Account, lots: &[CreditLot], catalog: &Catalog, now: OffsetDateTime) -> Self {
        let plan = account.current_plan(catalog, now);
        let active = account.active_subscription(now);
        let sub_plan = active.and_then(|sub| catalog.plan(&sub.plan_code));
        let free = catalog.free_plan();
        let today_source = if active.is_some() { ChargeSource::Subscription } else { ChargeSource::Freemium };
        let used_today = account.today.used(today_source);
        Self {
            user_id: account.user_id.clone(),
            plan_code: plan.code.clone(),
            plan_name: plan.name.clone(),
            tier: plan.tier.as_str().to_owned(),
            is_active: active.is_some(),
            expires_at: active.map(|sub| sub.expires_at),
            credits: account.credits,
            subscription_ops_limit: sub_plan.and_then(|p| p.ops_limit),
            subscription_ops_used: active.map(|sub| sub.ops.used),
            subscription_ops_remaining: active.zip(sub_plan).and_then(|(sub, p)| sub.ops.remaining(p.ops_limit)),
            subscription_ops_reset_at: active
                .zip(sub_plan)
                .map(|(sub, p)| sub.ops.resets_at(p.period_days))
                .filter(|reset| Some(*reset) < active.map(|sub| sub.expires_at)),
            freemium_ops_limit: free.ops_limit,
            freemium_ops_used: account.freemium.used,
            freemium_ops_remaining: account.freemium.remaining(free.ops_limit),
            freemium_reset_at: account.freemium.resets_at(free.period_days),
            daily_limit: plan.daily_limit,
            used_today,
            remaining_today: plan.daily_limit.map(|limit| limit.saturating_sub(used_today)),
            today_resets_at: next_local_midnight(now, catalog.timezone_offset),
            autorenew_enabled: active.is_some_and(|sub| sub.autorenew),
            credits_expiring: ExpiringCredits::of(lots, now),
        }
    }
}

/// Seed 003 `BillingMe` (`GET /billing/me/`).
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct BillingMe {
    pub plan_code: String,
    pub plan_name: String,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub is_active: bool,
    pub daily_photo_limit: Option<u32>,
    pub used_today: u32,
    pub remaining_today: Option<u32>,
    pub credits_expiring: Vec<ExpiringCredits>,
    /// The user's latest payment the provider accepted, with a crypto payment's network,
    /// token and transaction (seed 004's settings bundle).
    pub last_payment: Option<PaymentHistoryItem>,
}

impl BillingMe {
    pub(crate) fn new(state: &BillingState, last_payment: Option<PaymentHistoryItem>) -> Self {
        Self {
            plan_code: state.plan_code.clone(),
            plan_name: state.plan_name.clone(),
            expires_at: state.expires_at,
            is_active: state.is_active,
            daily_photo_limit: state.daily_limit,
            used_today: state.used_today,
            remaining_today: state.remaining_today,
            credits_expiring: state.credits_expiring.clone(),
            last_payment,
        }
    }
}

/// Seed 003 `SubscriptionDetails` (`GET /billing/subscription/`).
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct SubscriptionDetails {
    /// The tier: `free` or `pro`.
    pub plan: String,
    pub plan_display: String,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub is_active: bool,
    pub autorenew_available: bool,
    pub autorenew_enabled: bool,
    pub card_bound: bool,
    pub payment_method: PaymentMethodView,
}

impl SubscriptionDetails {
    pub(crate) fn new(account: &Account, catalog: &Catalog, now: OffsetDateTime, card: Option<&SavedMethod>) -> Self {
        let plan = account.current_plan(catalog, now);
        let active = account.active_subscription(now);
        let payment_method = PaymentMethodView::from(card);
        Self {
            plan: plan.tier.as_str().to_owned(),
            plan_display: plan.name.clone(),
            expires_at: active.map(|sub| sub.expires_at),
            is_active: active.is_some(),
            autorenew_available: active.is_some() && payment_method.is_attached,
            autorenew_enabled: active.is_some_and(|sub| sub.autorenew),
            card_bound: payment_method.is_attached,
            payment_method,
        }
    }
}

/// Seed 003 `SubscriptionPlan` (`GET /billing/plans/`); prices are JSON numbers there.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct SubscriptionPlan {
    pub code: String,
    pub display_name: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub price: Decimal,
    pub duration_days: u32,
    pub daily_photo_limit: Option<u32>,
    pub history_days: i32,
    pub ai_recognition: bool,
    pub advanced_stats: bool,
    pub priority_support: bool,
    pub features: Vec<String>,
    pub is_popular: bool,
    #[serde(
        with = "rust_decimal::serde::arbitrary_precision_option",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub old_price: Option<Decimal>,
}

impl From<&Plan> for SubscriptionPlan {
    fn from(plan: &Plan) -> Self {
        Self {
            code: plan.code.clone(),
            display_name: plan.name.clone(),
            price: plan.price,
            duration_days: plan.duration_days.unwrap_or(0),
            daily_photo_limit: plan.daily_limit,
            history_days: plan.history_days,
            ai_recognition: plan.has_feature("ai_recognition"),
            advanced_stats: plan.has_feature("advanced_stats"),
            priority_support: plan.has_feature("priority_support"),
            features: plan.features.clone(),
            is_popular: plan.is_popular,
            old_price: plan.old_price,
        }
    }
}
