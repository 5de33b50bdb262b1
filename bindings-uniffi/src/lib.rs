//! The engine for Kotlin and Swift through UniFFI proc-macros. It only translates: the
//! result types are the engine's own, derived as UniFFI records and enums by its `uniffi`
//! feature (money, times and JSON cross as strings), and each engine error becomes the
//! variant of [`BillingError`] for its code, with its fields. No rule lives here, and the
//! payment client is left out of the mobile library (the engine's `yookassa` feature).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use billing_engine as engine;
use billing_engine::{AuditFilter, AuditRecord, CreditLot, Event, GrantTerms, PaymentHistoryItem};
use billing_engine::{
    BillingMe, BillingState, Charge, Entitlement, Entitlements, Hold, IntegrityReport, LedgerEntry, PlanCard, Quote,
    Refund, SubscriptionDetails, SubscriptionPlan, UsageCheck, UsageGroup, UsageLabels, UsageRecord, UsageRequest,
    UsageSummary, UsageTotal,
};

/// Metric amounts as the engine takes them.
fn usage_map(usage: HashMap<String, u64>) -> BTreeMap<String, u64> {
    usage.into_iter().collect()
}

uniffi::setup_scaffolding!();

/// Every refusal of the engine: one variant per code of the engine's table (the code in
/// `SCREAMING_SNAKE_CASE` is the variant's name in `UpperCamelCase`), with its details.
/// Money and times are decimal and ISO 8601 strings. A message field is `reason`, since
/// `message` is every Kotlin exception's own.
#[derive(Debug, uniffi::Error)]
pub enum BillingError {
    NotEnoughCredits {
        required: String,
        available: String,
        expired: String,
    },
    DailyLimitReached {
        limit: u32,
        resets_at: String,
    },
    NoSubscription,
    InvalidPlan {
        plan_code: String,
        reason: String,
    },
    NoPaymentMethod,
    ActiveSubscription {
        plan_code: String,
        expires_at: String,
    },
    IdempotencyConflict {
        key: String,
    },
    InvalidCatalog {
        path: String,
        reason: String,
    },
    UnknownUser {
        user_id: String,
    },
    UnknownOperation {
        operation: String,
    },
    ChargeNotFound {
        charge_id: i64,
    },
    InvalidArgument {
        field: String,
        reason: String,
    },
    QuotaExceeded {
        metric: String,
        limit: u64,
        used: u64,
        held: u64,
        requested: u64,
        resets_at: String,
        window: String,
    },
    FeatureNotAvailable {
        feature: String,
        cheapest_plan: Option<String>,
    },
    UnknownMetric {
        metric: String,
    },
    HoldNotFound {
        hold_id: String,
    },
    GrantNotFound {
        lot_id: i64,
    },
    PaymentError {
        provider_code: String,
        description: String,
        retryable: bool,
    },
    InvalidWebhook {
        reason: String,
    },
    Busy {
        waited_ms: u64,
    },
    StorageFull,
    StorageError {
        reason: String,
    },
}

/// Kotlin and Swift build their messages from the fields; Rust shows the variant.
impl std::fmt::Display for BillingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for BillingError {}

impl From<engine::BillingError> for BillingError {
    fn from(error: engine::BillingError) -> Self {
        use engine::BillingError as E;
        let iso = engine::time_util::iso;
        match error {
            E::NotEnoughCredits { required, available, expired } => {
                let (required, available, expired) = (required.to_string(), available.to_string(), expired.to_string());
                Self::NotEnoughCredits { required, available, expired }
            }
            E::DailyLimitReached { limit, resets_at } => Self::DailyLimitReached { limit, resets_at: iso(resets_at) },
            E::NoSubscription => Self::NoSubscription,
            E::InvalidPlan { plan_code, reason } => Self::InvalidPlan { plan_code, reason: reason.to_owned() },
            E::NoPaymentMethod => Self::NoPaymentMethod,
            E::ActiveSubscription { plan_code, expires_at } => {
                Self::ActiveSubscription { plan_code, expires_at: iso(expires_at) }
            }
            E::IdempotencyConflict { key } => Self::IdempotencyConflict { key },
            E::InvalidCatalog { path, message } => Self::InvalidCatalog { path, reason: message },
            E::UnknownUser { user_id } => Self::UnknownUser { user_id },
            E::UnknownOperation { operation } => Self::UnknownOperation { operation },
            E::ChargeNotFound { charge_id } => Self::ChargeNotFound { charge_id },
            E::InvalidArgument { field, message } => Self::InvalidArgument { field: field.to_owned(), reason: message },
            E::QuotaExceeded { metric, limit, used, held, requested, resets_at, window } => Self::QuotaExceeded {
                metric,
                limit,
                used,
                held,
                requested,
                resets_at: iso(resets_at),
                window: window.to_owned(),
            },
            E::FeatureNotAvailable { feature, cheapest_plan } => Self::FeatureNotAvailable { feature, cheapest_plan },
            E::UnknownMetric { metric } => Self::UnknownMetric { metric },
            E::HoldNotFound { hold_id } => Self::HoldNotFound { hold_id },
            E::GrantNotFound { lot_id } => Self::GrantNotFound { lot_id },
            E::PaymentError { provider_code, description, retryable } => {
                Self::PaymentError { provider_code, description, retryable }
            }
            E::InvalidWebhook { reason } => Self::InvalidWebhook { reason },
            E::Busy { waited_ms } => Self::Busy { waited_ms },
            E::StorageFull => Self::StorageFull,
            // STORAGE_ERROR, and any code this binding does not know yet.
            other => Self::StorageError { reason: other.to_string() },
        }
    }
}

type Result<T> = std::result::Result<T, BillingError>;

/// One request of [`BillingEngine::charge_batch`]: the arguments of `charge`.
#[derive(uniffi::Record)]
pub struct ChargeRequest {
    pub user_id: String,
    pub operation: String,
    pub idempotency_key: String,
    /// An optional JSON object kept with the ledger entry.
    pub metadata_json: Option<String>,
}

/// One answer of a batch: the charge, or the error `charge` would have thrown for it.
#[derive(uniffi::Enum)]
pub enum ChargeResult {
    Charged { charge: Charge },
    Refused { error: BillingError },
}

/// The engine's table of error codes, so a test can check that every code has its
/// variant. `INTERNAL_ERROR` is UniFFI's own panic exception here.
#[uniffi::export]
pub fn error_codes() -> Vec<String> {
    engine::error::ERROR_CODES.iter().map(|c| c.code.to_owned()).collect()
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
        engine::time_util::iso(engine::Clock::now(&*self.0))
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
        Ok(self.0.register_user(&user_id, free_trial)?)
    }

    pub fn state(&self, user_id: String) -> Result<BillingState> {
        Ok(self.0.state(&user_id)?)
    }

    pub fn billing_me(&self, user_id: String) -> Result<BillingMe> {
        Ok(self.0.billing_me(&user_id)?)
    }

    pub fn subscription_details(&self, user_id: String) -> Result<SubscriptionDetails> {
        Ok(self.0.subscription_details(&user_id)?)
    }

    pub fn plans(&self) -> Vec<SubscriptionPlan> {
        self.0.plans()
    }

    pub fn plan_cards(&self, user_id: String) -> Result<Vec<PlanCard>> {
        Ok(self.0.plan_cards(&user_id)?)
    }

    pub fn quote(&self, user_id: String, operation: String) -> Result<Quote> {
        Ok(self.0.quote(&user_id, &operation)?)
    }

    /// `metadata_json`: an optional JSON object kept with the ledger entry.
    pub fn charge(
        &self,
        user_id: String,
        operation: String,
        idempotency_key: String,
        metadata_json: Option<String>,
    ) -> Result<Charge> {
        let metadata = engine::input::json("metadata_json", metadata_json.as_deref())?;
        Ok(self.0.charge(&user_id, &operation, &idempotency_key, metadata)?)
    }

    /// Many charges, of any users, in one transaction with one commit: one result per
    /// request, in order. A refused request is its own `Refused` result and writes
    /// nothing; a storage failure throws, and nothing of the batch is written.
    pub fn charge_batch(&self, requests: Vec<ChargeRequest>) -> Result<Vec<ChargeResult>> {
        let requests: Vec<_> = requests
            .into_iter()
            .map(|r| {
                let metadata = engine::input::json("metadata_json", r.metadata_json.as_deref())?;
                let ChargeRequest { user_id, operation, idempotency_key, .. } = r;
                Ok(engine::ChargeRequest { user_id, operation, idempotency_key, metadata })
            })
            .collect();
        let results = self.0.charge_batch_built(&requests)?;
        Ok(results
            .into_iter()
            .map(|result| match result {
                Ok(charge) => ChargeResult::Charged { charge },
                Err(error) => ChargeResult::Refused { error: error.into() },
            })
            .collect())
    }

    pub fn refund_charge(&self, charge_id: i64, idempotency_key: String, reason: Option<String>) -> Result<Refund> {
        Ok(self.0.refund_charge(charge_id, &idempotency_key, reason.as_deref())?)
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
        Ok(self.0.grant_credits(&user_id, amount, &idempotency_key, &reason)?)
    }

    /// A grant whose lot has `terms`: an expiry, a priority in the burn order (0 first,
    /// 100 last), a category.
    pub fn grant_credits_on(
        &self,
        user_id: String,
        amount: String,
        idempotency_key: String,
        reason: String,
        terms: GrantTerms,
    ) -> Result<LedgerEntry> {
        let amount = engine::input::decimal("amount", &amount)?;
        Ok(self.0.grant_credits_on(&user_id, amount, &idempotency_key, &reason, &terms)?)
    }

    pub fn void_grant(&self, lot_id: i64, idempotency_key: String, reason: String) -> Result<LedgerEntry> {
        Ok(self.0.void_grant(lot_id, &idempotency_key, &reason)?)
    }

    pub fn credit_lots(&self, user_id: String) -> Result<Vec<CreditLot>> {
        Ok(self.0.credit_lots(&user_id)?)
    }

    pub fn activate_subscription(
        &self,
        user_id: String,
        plan_code: String,
        idempotency_key: String,
    ) -> Result<SubscriptionDetails> {
        Ok(self.0.activate_subscription(&user_id, &plan_code, &idempotency_key)?)
    }

    /// Newest first; pass the last entry's `id` as `before` for the next page.
    pub fn ledger(&self, user_id: String, limit: u32, before: Option<i64>) -> Result<Vec<LedgerEntry>> {
        Ok(self.0.ledger(&user_id, limit, before)?)
    }

    // ---- metered usage, holds and features

    pub fn check_usage(&self, user_id: String, usage: HashMap<String, u64>) -> Result<UsageCheck> {
        Ok(self.0.check_usage(&user_id, &usage_map(usage))?)
    }

    pub fn require_usage(&self, user_id: String, usage: HashMap<String, u64>) -> Result<UsageCheck> {
        Ok(self.0.require_usage(&user_id, &usage_map(usage))?)
    }

    pub fn track_usage(&self, user_id: String, usage: UsageRequest, idempotency_key: String) -> Result<UsageRecord> {
        Ok(self.0.track_usage(&user_id, &usage, &idempotency_key)?)
    }

    pub fn track_usage_batch(
        &self,
        user_id: String,
        records: Vec<UsageRequest>,
        idempotency_key: String,
    ) -> Result<Vec<UsageRecord>> {
        Ok(self.0.track_usage_batch(&user_id, &records, &idempotency_key)?)
    }

    pub fn usage(&self, user_id: String, metric: String) -> Result<UsageSummary> {
        Ok(self.0.usage(&user_id, &metric)?)
    }

    /// `since` and `until`: optional RFC 3339 times.
    pub fn usage_breakdown(
        &self,
        user_id: String,
        metric: String,
        by: UsageGroup,
        since: Option<String>,
        until: Option<String>,
    ) -> Result<Vec<UsageTotal>> {
        let since = since.map(|at| engine::input::moment("since", &at)).transpose()?;
        let until = until.map(|at| engine::input::moment("until", &at)).transpose()?;
        Ok(self.0.usage_breakdown(&user_id, &metric, by, since, until)?)
    }

    pub fn reserve(
        &self,
        user_id: String,
        usage: HashMap<String, u64>,
        operation: Option<String>,
        idempotency_key: String,
        ttl_s: u64,
    ) -> Result<Hold> {
        Ok(self.0.reserve(&user_id, &usage_map(usage), operation.as_deref(), &idempotency_key, ttl_s)?)
    }

    /// `labels`: the model and chat the capture's usage events are recorded with.
    pub fn capture(
        &self,
        hold_id: String,
        actual: Option<HashMap<String, u64>>,
        labels: UsageLabels,
        idempotency_key: String,
    ) -> Result<Hold> {
        Ok(self.0.capture(&hold_id, actual.map(usage_map).as_ref(), &labels, &idempotency_key)?)
    }

    pub fn release(&self, hold_id: String, idempotency_key: String) -> Result<Hold> {
        Ok(self.0.release(&hold_id, &idempotency_key)?)
    }

    pub fn entitlements(&self, user_id: String) -> Result<Entitlements> {
        Ok(self.0.entitlements(&user_id)?)
    }

    pub fn has_feature(&self, user_id: String, feature: String) -> Result<bool> {
        Ok(self.0.has_feature(&user_id, &feature)?)
    }

    pub fn require_feature(&self, user_id: String, feature: String) -> Result<Entitlement> {
        Ok(self.0.require_feature(&user_id, &feature)?)
    }

    pub fn verify_integrity(&self) -> Result<IntegrityReport> {
        Ok(self.0.verify_integrity()?)
    }

    // ---- read-only views of what the server side records

    /// The user's payments, newest first, with a crypto payment's network, token and
    /// transaction (seed 003's history, seed 004's `/me/history`).
    pub fn payments(&self, user_id: String, limit: u32) -> Result<Vec<PaymentHistoryItem>> {
        Ok(self.0.payments(&user_id, limit)?.results)
    }

    /// A page of the user's domain events in sequence, after `after_sequence` (0 from
    /// the first).
    pub fn user_events(&self, user_id: String, after_sequence: i64, limit: u32) -> Result<Vec<Event>> {
        Ok(self.0.user_events(&user_id, after_sequence, limit)?)
    }

    /// A page of the audit log, newest first, filtered by every field given.
    pub fn audit_log(&self, filter: AuditFilter, limit: u32, before: Option<i64>) -> Result<Vec<AuditRecord>> {
        Ok(self.0.audit_log(&filter, limit, before)?)
    }
}
