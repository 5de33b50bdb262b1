//! The engine for Kotlin and Swift through UniFFI proc-macros. It only translates: the
//! engine's types to UniFFI records (money as decimal strings, times as ISO 8601 UTC
//! strings), and every engine error to one `BillingError` carrying the contract's code.
//! The rules, plan cards included, live in `billing-engine`.

use std::sync::Arc;

use billing_engine as engine;
use billing_engine::time_util::iso;
use rust_decimal::Decimal;

uniffi::setup_scaffolding!();

/// Every refusal of the engine: `code` is the contract's stable code (`NOT_ENOUGH_CREDITS`,
/// ...), `details_json` its machine-readable details as a JSON object.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum BillingError {
    #[error("{code}: {reason}")]
    Failed { code: String, reason: String, details_json: String },
}

impl From<engine::BillingError> for BillingError {
    fn from(error: engine::BillingError) -> Self {
        Self::Failed {
            code: error.code().to_owned(),
            reason: error.to_string(),
            details_json: serde_json::Value::Object(error.details()).to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, BillingError>;

fn money(amount: Decimal) -> String {
    amount.to_string()
}

/// A clock that moves only when told to, for tests and demos.
#[derive(uniffi::Object)]
pub struct ManualClock(Arc<engine::ManualClock>);

#[uniffi::export]
impl ManualClock {
    /// `now`: an RFC 3339 time such as `2026-01-01T09:00:00Z`.
    #[uniffi::constructor]
    pub fn new(now: String) -> Result<Arc<Self>> {
        Ok(Arc::new(Self(Arc::new(engine::ManualClock::parse(&now)?))))
    }

    pub fn set(&self, now: String) -> Result<()> {
        Ok(self.0.set_iso(&now)?)
    }

    pub fn advance_seconds(&self, seconds: i64) -> Result<()> {
        Ok(self.0.advance(time::Duration::seconds(seconds))?)
    }

    pub fn now(&self) -> String {
        iso(engine::Clock::now(&*self.0))
    }
}

/// The engine over a local SQLite file. One object per file, shared by every thread.
#[derive(uniffi::Object)]
pub struct BillingEngine(engine::Billing);

#[uniffi::export]
impl BillingEngine {
    /// Opens (creating or migrating) the file at `path` with the tariffs in `tariffs_toml`.
    #[uniffi::constructor]
    pub fn open(path: String, tariffs_toml: String) -> Result<Arc<Self>> {
        let catalog = engine::Catalog::from_toml(&tariffs_toml)?;
        Ok(Arc::new(Self(engine::Billing::open(path, catalog)?)))
    }

    /// The same with a [`ManualClock`] instead of the system clock.
    #[uniffi::constructor]
    pub fn open_with_clock(path: String, tariffs_toml: String, clock: Arc<ManualClock>) -> Result<Arc<Self>> {
        let catalog = engine::Catalog::from_toml(&tariffs_toml)?;
        Ok(Arc::new(Self(engine::Billing::open_with_clock(path, catalog, clock.0.clone())?)))
    }

    pub fn register_user(&self, user_id: String, free_trial: bool) -> Result<BillingState> {
        Ok(self.0.register_user(&user_id, free_trial)?.into())
    }

    pub fn state(&self, user_id: String) -> Result<BillingState> {
        Ok(self.0.state(&user_id)?.into())
    }

    pub fn billing_me(&self, user_id: String) -> Result<BillingMe> {
        Ok(self.0.billing_me(&user_id)?.into())
    }

    pub fn subscription_details(&self, user_id: String) -> Result<SubscriptionDetails> {
        Ok(self.0.subscription_details(&user_id)?.into())
    }

    pub fn plans(&self) -> Vec<SubscriptionPlan> {
        self.0.plans().into_iter().map(Into::into).collect()
    }

    pub fn plan_cards(&self, user_id: String) -> Result<Vec<PlanCard>> {
        Ok(self.0.plan_cards(&user_id)?.into_iter().map(Into::into).collect())
    }

    pub fn quote(&self, user_id: String, operation: String) -> Result<Quote> {
        Ok(self.0.quote(&user_id, &operation)?.into())
    }

    /// `metadata_json`: an optional JSON value kept with the ledger entry.
    pub fn charge(
        &self,
        user_id: String,
        operation: String,
        idempotency_key: String,
        metadata_json: Option<String>,
    ) -> Result<Charge> {
        let metadata = engine::input::json("metadata_json", metadata_json.as_deref())?;
        Ok(self.0.charge(&user_id, &operation, &idempotency_key, metadata)?.into())
    }

    pub fn refund_charge(&self, charge_id: i64, idempotency_key: String, reason: Option<String>) -> Result<Refund> {
        Ok(self.0.refund_charge(charge_id, &idempotency_key, reason.as_deref())?.into())
    }

    /// An admin grant or correction; `amount` is a decimal string and may be negative.
    pub fn grant_credits(
        &self,
        user_id: String,
        amount: String,
        idempotency_key: String,
        reason: String,
    ) -> Result<LedgerEntry> {
        let amount = engine::input::decimal("amount", &amount)?;
        Ok(self.0.grant_credits(&user_id, amount, &idempotency_key, &reason)?.into())
    }

    pub fn activate_subscription(
        &self,
        user_id: String,
        plan_code: String,
        idempotency_key: String,
    ) -> Result<SubscriptionDetails> {
        Ok(self.0.activate_subscription(&user_id, &plan_code, &idempotency_key)?.into())
    }

    /// Newest first; pass the last entry's `id` as `before` for the next page.
    pub fn ledger(&self, user_id: String, limit: u32, before: Option<i64>) -> Result<Vec<LedgerEntry>> {
        Ok(self.0.ledger(&user_id, limit, before)?.into_iter().map(Into::into).collect())
    }

    pub fn verify_integrity(&self) -> Result<bool> {
        Ok(self.0.verify_integrity()?.ok)
    }
}

/// A user's billing at a glance; `None` means unlimited or not applicable.
#[derive(uniffi::Record)]
pub struct BillingState {
    pub user_id: String,
    pub plan_code: String,
    pub plan_name: String,
    pub tier: String,
    pub is_active: bool,
    pub expires_at: Option<String>,
    pub credits: String,
    pub subscription_ops_limit: Option<u32>,
    pub subscription_ops_used: Option<u32>,
    pub subscription_ops_remaining: Option<u32>,
    pub subscription_ops_reset_at: Option<String>,
    pub freemium_ops_limit: Option<u32>,
    pub freemium_ops_used: u32,
    pub freemium_ops_remaining: Option<u32>,
    pub freemium_reset_at: String,
    pub daily_limit: Option<u32>,
    pub used_today: u32,
    pub remaining_today: Option<u32>,
    pub today_resets_at: String,
    pub autorenew_enabled: bool,
}

impl From<engine::BillingState> for BillingState {
    fn from(s: engine::BillingState) -> Self {
        Self {
            user_id: s.user_id,
            plan_code: s.plan_code,
            plan_name: s.plan_name,
            tier: s.tier,
            is_active: s.is_active,
            expires_at: s.expires_at.map(iso),
            credits: money(s.credits),
            subscription_ops_limit: s.subscription_ops_limit,
            subscription_ops_used: s.subscription_ops_used,
            subscription_ops_remaining: s.subscription_ops_remaining,
            subscription_ops_reset_at: s.subscription_ops_reset_at.map(iso),
            freemium_ops_limit: s.freemium_ops_limit,
            freemium_ops_used: s.freemium_ops_used,
            freemium_ops_remaining: s.freemium_ops_remaining,
            freemium_reset_at: iso(s.freemium_reset_at),
            daily_limit: s.daily_limit,
            used_today: s.used_today,
            remaining_today: s.remaining_today,
            today_resets_at: iso(s.today_resets_at),
            autorenew_enabled: s.autorenew_enabled,
        }
    }
}

/// Seed 003 `BillingMe`.
#[derive(uniffi::Record)]
pub struct BillingMe {
    pub plan_code: String,
    pub plan_name: String,
    pub expires_at: Option<String>,
    pub is_active: bool,
    pub daily_photo_limit: Option<u32>,
    pub used_today: u32,
    pub remaining_today: Option<u32>,
}

impl From<engine::BillingMe> for BillingMe {
    fn from(m: engine::BillingMe) -> Self {
        Self {
            plan_code: m.plan_code,
            plan_name: m.plan_name,
            expires_at: m.expires_at.map(iso),
            is_active: m.is_active,
            daily_photo_limit: m.daily_photo_limit,
            used_today: m.used_today,
            remaining_today: m.remaining_today,
        }
    }
}

/// Seed 003 `PaymentMethod`.
#[derive(uniffi::Record)]
pub struct PaymentMethod {
    pub is_attached: bool,
    pub card_mask: Option<String>,
    pub card_brand: Option<String>,
}

impl From<engine::PaymentMethodView> for PaymentMethod {
    fn from(p: engine::PaymentMethodView) -> Self {
        Self { is_attached: p.is_attached, card_mask: p.card_mask, card_brand: p.card_brand }
    }
}

/// Seed 003 `SubscriptionDetails`.
#[derive(uniffi::Record)]
pub struct SubscriptionDetails {
    pub plan: String,
    pub plan_display: String,
    pub expires_at: Option<String>,
    pub is_active: bool,
    pub autorenew_available: bool,
    pub autorenew_enabled: bool,
    pub card_bound: bool,
    pub payment_method: PaymentMethod,
}

impl From<engine::SubscriptionDetails> for SubscriptionDetails {
    fn from(d: engine::SubscriptionDetails) -> Self {
        Self {
            plan: d.plan,
            plan_display: d.plan_display,
            expires_at: d.expires_at.map(iso),
            is_active: d.is_active,
            autorenew_available: d.autorenew_available,
            autorenew_enabled: d.autorenew_enabled,
            card_bound: d.card_bound,
            payment_method: d.payment_method.into(),
        }
    }
}

/// Seed 003 `SubscriptionPlan`.
#[derive(uniffi::Record)]
pub struct SubscriptionPlan {
    pub code: String,
    pub display_name: String,
    pub price: String,
    pub duration_days: u32,
    pub daily_photo_limit: Option<u32>,
    pub history_days: i32,
    pub ai_recognition: bool,
    pub advanced_stats: bool,
    pub priority_support: bool,
    pub features: Vec<String>,
    pub is_popular: bool,
    pub old_price: Option<String>,
}

impl From<engine::SubscriptionPlan> for SubscriptionPlan {
    fn from(p: engine::SubscriptionPlan) -> Self {
        Self {
            code: p.code,
            display_name: p.display_name,
            price: money(p.price),
            duration_days: p.duration_days,
            daily_photo_limit: p.daily_photo_limit,
            history_days: p.history_days,
            ai_recognition: p.ai_recognition,
            advanced_stats: p.advanced_stats,
            priority_support: p.priority_support,
            features: p.features,
            is_popular: p.is_popular,
            old_price: p.old_price.map(money),
        }
    }
}

/// What a plan card's button does (see `billing_engine::plan_card`).
#[derive(uniffi::Enum)]
pub enum CardAction {
    None,
    Select,
    ManageSubscription,
    EnableAutorenew,
    BindCard,
    Restore,
}

impl From<engine::CardAction> for CardAction {
    fn from(action: engine::CardAction) -> Self {
        match action {
            engine::CardAction::None => Self::None,
            engine::CardAction::Select => Self::Select,
            engine::CardAction::ManageSubscription => Self::ManageSubscription,
            engine::CardAction::EnableAutorenew => Self::EnableAutorenew,
            engine::CardAction::BindCard => Self::BindCard,
            engine::CardAction::Restore => Self::Restore,
        }
    }
}

/// What goes under a plan card's button.
#[derive(uniffi::Record)]
pub struct CardDetails {
    pub expires_at: String,
    pub expired: bool,
    pub autorenew_enabled: bool,
    pub payment_method: PaymentMethod,
    pub restore_price: Option<String>,
}

/// One plan card of the pricing screen; `label_key` names the button's text.
#[derive(uniffi::Record)]
pub struct PlanCard {
    pub plan_code: String,
    pub is_current: bool,
    pub disabled: bool,
    pub action: CardAction,
    pub label_key: String,
    pub details: Option<CardDetails>,
}

impl From<engine::PlanCard> for PlanCard {
    fn from(c: engine::PlanCard) -> Self {
        Self {
            plan_code: c.plan_code,
            is_current: c.is_current,
            disabled: c.disabled,
            action: c.action.into(),
            label_key: c.label_key,
            details: c.details.map(|d| CardDetails {
                expires_at: iso(d.expires_at),
                expired: d.expired,
                autorenew_enabled: d.autorenew_enabled,
                payment_method: d.payment_method.into(),
                restore_price: d.restore_price.map(money),
            }),
        }
    }
}

/// What a charge would do now; nothing is written.
#[derive(uniffi::Record)]
pub struct Quote {
    pub allowed: bool,
    /// `subscription`, `freemium` or `credits`.
    pub source: Option<String>,
    pub credits_cost: String,
    pub credits_after: String,
    pub reason_code: Option<String>,
}

impl From<engine::Quote> for Quote {
    fn from(q: engine::Quote) -> Self {
        Self {
            allowed: q.allowed,
            source: q.source.map(|s| s.as_str().to_owned()),
            credits_cost: money(q.credits_cost),
            credits_after: money(q.credits_after),
            reason_code: q.reason_code,
        }
    }
}

#[derive(uniffi::Record)]
pub struct Charge {
    pub id: i64,
    pub user_id: String,
    pub operation: String,
    pub source: String,
    pub credits_spent: String,
    pub credits_balance: String,
    pub replayed: bool,
}

impl From<engine::Charge> for Charge {
    fn from(c: engine::Charge) -> Self {
        Self {
            id: c.id,
            user_id: c.user_id,
            operation: c.operation,
            source: c.source.as_str().to_owned(),
            credits_spent: money(c.credits_spent),
            credits_balance: money(c.credits_balance),
            replayed: c.replayed,
        }
    }
}

#[derive(uniffi::Record)]
pub struct Refund {
    pub id: i64,
    pub charge_id: i64,
    pub source: String,
    pub credits_refunded: String,
    pub op_returned: bool,
    pub credits_balance: String,
    pub replayed: bool,
}

impl From<engine::Refund> for Refund {
    fn from(r: engine::Refund) -> Self {
        Self {
            id: r.id,
            charge_id: r.charge_id,
            source: r.source.as_str().to_owned(),
            credits_refunded: money(r.credits_refunded),
            op_returned: r.op_returned,
            credits_balance: money(r.credits_balance),
            replayed: r.replayed,
        }
    }
}

#[derive(uniffi::Record)]
pub struct LedgerEntry {
    pub id: i64,
    pub kind: String,
    pub source: Option<String>,
    pub operation: Option<String>,
    pub credits_delta: String,
    pub credits_balance_after: String,
    pub ops_delta: i32,
    pub idempotency_key: Option<String>,
    pub reference: Option<String>,
    pub metadata_json: Option<String>,
    pub created_at: String,
}

impl From<engine::LedgerEntry> for LedgerEntry {
    fn from(e: engine::LedgerEntry) -> Self {
        Self {
            id: e.id,
            kind: e.kind.as_str().to_owned(),
            source: e.source.map(|s| s.as_str().to_owned()),
            operation: e.operation,
            credits_delta: money(e.credits_delta),
            credits_balance_after: money(e.credits_balance_after),
            ops_delta: e.ops_delta,
            idempotency_key: e.idempotency_key,
            reference: e.reference,
            metadata_json: e.metadata.map(|m| m.to_string()),
            created_at: iso(e.created_at),
        }
    }
}
