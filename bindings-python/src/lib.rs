//! `billing_engine._native`: the engine behind the Python package. It only translates:
//! Python arguments in; the engine's own result types out, as the classes its `python`
//! feature makes of them; engine errors to `NativeError(code, message, details_json)`,
//! which `billing_engine/__init__.py` raises as one exception class per code. No billing
//! rule lives here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use billing_engine::alchemy::AlchemyNotify;
use billing_engine::crypto::TxReceipt;
use billing_engine::input;
use billing_engine::ledger::AllowancePeriod;
use billing_engine::payment::CryptoHistory;
use billing_engine::receipt::CustomerContact;
use billing_engine::{
    AuditContext, AuditFilter, AuditRecord, CryptoCheckout, CryptoReconcileReport, CryptoWebhookOutcome,
    DeliveryReport, Event, EventEndpoint,
};
use billing_engine::{
    Billing, BillingError, BillingMe, BillingState, CardDetails, Catalog, Charge, ChargeRequest, Clock, CreatedPayment,
    DueReport, Durability, ImportedSubscription, IntegrityReport, LedgerEntry, LocalOptions, ManualClock, Mismatch,
    PaidPeriod, Payment, PaymentHistory, PaymentHistoryItem, PaymentMethodView, PlanCard, Purchase, Quote, Refund,
    SubscriptionDetails, SubscriptionPlan, SystemClock, WebhookOutcome, YooKassaConfig,
};
use billing_engine::{CreditLot, ExpiringCredits, GrantTerms};
use billing_engine::{CurrencyAmount, MoneyMovement, Overview, PaymentCount, RevenuePoint, Segment, TransactionFilter};
use billing_engine::{
    Entitlement, Entitlements, HeldUsage, Hold, MetricCheck, UsageAmount, UsageCheck, UsageGroup, UsageLabels,
    UsageRecord, UsageRequest, UsageSummary, UsageTotal,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

create_exception!(_native, NativeError, PyException, "An engine error: args are (code, message, details_json).");

use billing_engine::error::{ERROR_CODES, INTERNAL_ERROR};

fn native_error(error: &BillingError) -> PyErr {
    let details = Value::Object(error.details()).to_string();
    NativeError::new_err((error.code(), error.message(), details))
}

fn invalid(field: &'static str, message: impl Into<String>) -> PyErr {
    native_error(&BillingError::InvalidArgument { field, message: message.into() })
}

fn json<T: Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| NativeError::new_err((INTERNAL_ERROR, e.to_string(), "{}")))
}

/// Runs engine work with the GIL released, so other Python threads run meanwhile, and
/// turns a panic into an exception instead of letting it cross into the interpreter.
fn run<T, F>(py: Python<'_>, work: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> billing_engine::Result<T> + Send,
{
    match py.detach(|| catch_unwind(AssertUnwindSafe(work))) {
        Ok(result) => result.map_err(|e| native_error(&e)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the engine panicked".to_owned());
            Err(NativeError::new_err((INTERNAL_ERROR, format!("internal error: {message}"), "{}")))
        }
    }
}

#[pyclass(frozen, module = "billing_engine._native")]
struct NativeCatalog(Catalog);

#[pymethods]
impl NativeCatalog {
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: String) -> PyResult<Self> {
        run(py, || Catalog::from_toml(&text)).map(Self)
    }

    #[staticmethod]
    fn from_toml_file(py: Python<'_>, path: String) -> PyResult<Self> {
        run(py, || Catalog::from_toml_file(&path)).map(Self)
    }

    fn to_json(&self) -> PyResult<String> {
        json(&self.0)
    }
}

#[pyclass(frozen, module = "billing_engine._native")]
struct NativeClock(Arc<ManualClock>);

#[pymethods]
impl NativeClock {
    #[new]
    fn new(iso: &str) -> PyResult<Self> {
        ManualClock::parse(iso).map(|clock| Self(Arc::new(clock))).map_err(|e| native_error(&e))
    }

    fn set(&self, iso: &str) -> PyResult<()> {
        self.0.set_iso(iso).map_err(|e| native_error(&e))
    }

    fn advance(&self, seconds: i64) -> PyResult<()> {
        self.0.advance(time::Duration::seconds(seconds)).map_err(|e| native_error(&e))
    }

    fn now(&self) -> String {
        billing_engine::time_util::iso(self.0.now())
    }
}

#[pyclass(frozen, module = "billing_engine._native")]
struct NativeYooKassaConfig(YooKassaConfig);

#[pymethods]
impl NativeYooKassaConfig {
    #[new]
    #[pyo3(signature = (shop_id, secret_key, api_url, return_url, webhook_secrets, trusted_networks, verify_by_fetch, timeout_s, retries, receipts, tax_system_code))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shop_id: String,
        secret_key: String,
        api_url: String,
        return_url: Option<String>,
        webhook_secrets: Vec<String>,
        trusted_networks: Option<Vec<String>>,
        verify_by_fetch: bool,
        timeout_s: f64,
        retries: u32,
        receipts: bool,
        tax_system_code: Option<u8>,
    ) -> PyResult<Self> {
        let timeout = Duration::try_from_secs_f64(timeout_s)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| invalid("timeout_s", format!("must be a positive number of seconds, got {timeout_s}")))?;
        let mut config = YooKassaConfig::new(shop_id, secret_key);
        config.api_url = api_url;
        config.return_url = return_url;
        config.webhook_secrets = webhook_secrets;
        config.trusted_networks = trusted_networks;
        config.verify_by_fetch = verify_by_fetch;
        config.timeout = timeout;
        config.retries = retries;
        config.receipts = receipts;
        config.tax_system_code = tax_system_code;
        Ok(Self(config))
    }

    /// The fields `YooKassaConfig::from_env` reads, as JSON for the Python dataclass.
    /// The secrets are in it: it never leaves the process.
    #[staticmethod]
    fn from_env_json() -> PyResult<String> {
        let c = YooKassaConfig::from_env().map_err(|e| native_error(&e))?;
        json(&serde_json::json!({
            "shop_id": c.shop_id,
            "secret_key": c.secret_key,
            "api_url": c.api_url,
            "return_url": c.return_url,
            "webhook_secrets": c.webhook_secrets,
            "trusted_networks": c.trusted_networks,
            "verify_by_fetch": c.verify_by_fetch,
            "timeout_s": c.timeout.as_secs_f64(),
            "retries": c.retries,
            "receipts": c.receipts,
            "tax_system_code": c.tax_system_code,
        }))
    }
}

#[pyclass(frozen, module = "billing_engine._native")]
struct NativeBilling(Billing);

fn durability(name: &str) -> PyResult<Durability> {
    match name {
        "full" => Ok(Durability::Full),
        "normal" => Ok(Durability::Normal),
        other => Err(invalid("durability", format!("expected `full` or `normal`, got `{other}`"))),
    }
}

#[pymethods]
impl NativeBilling {
    #[staticmethod]
    #[pyo3(signature = (location, catalog, clock, yookassa, durability_name, shared_commits, alchemy_signing_key))]
    #[allow(clippy::too_many_arguments)]
    fn open(
        py: Python<'_>,
        location: String,
        catalog: &NativeCatalog,
        clock: Option<&NativeClock>,
        yookassa: Option<&NativeYooKassaConfig>,
        durability_name: &str,
        shared_commits: bool,
        alchemy_signing_key: Option<String>,
    ) -> PyResult<Self> {
        let local = LocalOptions { durability: durability(durability_name)?, shared_commits };
        let clock: Arc<dyn Clock> = match clock {
            Some(clock) => clock.0.clone(),
            None => Arc::new(SystemClock),
        };
        let catalog = catalog.0.clone();
        let yookassa = yookassa.map(|config| config.0.clone());
        run(py, move || {
            let mut billing = Billing::open_with(&location, catalog, clock, local)?;
            if let Some(config) = yookassa {
                billing = billing.with_yookassa(&config)?;
            }
            if let Some(key) = alchemy_signing_key {
                billing = billing.with_crypto(Arc::new(AlchemyNotify::new(&key)?))?;
            }
            Ok(billing)
        })
        .map(Self)
    }

    fn register_user(&self, py: Python<'_>, user_id: &str, free_trial: bool) -> PyResult<BillingState> {
        run(py, || self.0.register_user(user_id, free_trial))
    }

    #[pyo3(signature = (user_id, credits, freemium_used, subscription_json))]
    fn import_user(
        &self,
        py: Python<'_>,
        user_id: &str,
        credits: &str,
        freemium_used: u32,
        subscription_json: Option<&str>,
    ) -> PyResult<BillingState> {
        run(py, || {
            let credits = input::decimal("credits", credits)?;
            let subscription = input::json::<ImportedSubscription>("subscription", subscription_json)?;
            self.0.import_user(user_id, credits, freemium_used, subscription)
        })
    }

    fn state(&self, py: Python<'_>, user_id: &str) -> PyResult<BillingState> {
        run(py, || self.0.state(user_id))
    }

    fn quote(&self, py: Python<'_>, user_id: &str, operation: &str) -> PyResult<Quote> {
        run(py, || self.0.quote(user_id, operation))
    }

    #[pyo3(signature = (user_id, operation, idempotency_key, metadata_json))]
    fn charge(
        &self,
        py: Python<'_>,
        user_id: &str,
        operation: &str,
        idempotency_key: &str,
        metadata_json: Option<&str>,
    ) -> PyResult<Charge> {
        run(py, || {
            let metadata = input::json::<Value>("metadata", metadata_json)?;
            self.0.charge(user_id, operation, idempotency_key, metadata)
        })
    }

    /// Each request is `(user_id, operation, idempotency_key, metadata_json)`; each result
    /// a `Charge`, or the item's error as a `NativeError` (not raised).
    fn charge_batch(
        &self,
        py: Python<'_>,
        requests: Vec<(String, String, String, Option<String>)>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let results = run(py, || {
            let requests: Vec<_> = requests
                .into_iter()
                .map(|(user_id, operation, idempotency_key, metadata_json)| {
                    let metadata = input::json::<Value>("metadata", metadata_json.as_deref())?;
                    Ok(ChargeRequest { user_id, operation, idempotency_key, metadata })
                })
                .collect();
            self.0.charge_batch_built(&requests)
        })?;
        results
            .into_iter()
            .map(|result| match result {
                Ok(charge) => Ok(Py::new(py, charge)?.into_any()),
                Err(error) => Ok(native_error(&error).into_value(py).into_any()),
            })
            .collect()
    }

    fn check_usage(&self, py: Python<'_>, user_id: &str, usage: BTreeMap<String, u64>) -> PyResult<UsageCheck> {
        run(py, || self.0.check_usage(user_id, &usage))
    }

    fn require_usage(&self, py: Python<'_>, user_id: &str, usage: BTreeMap<String, u64>) -> PyResult<UsageCheck> {
        run(py, || self.0.require_usage(user_id, &usage))
    }

    /// `request_json` is one `UsageRequest` as JSON (`at` an RFC 3339 string).
    fn track_usage(
        &self,
        py: Python<'_>,
        user_id: &str,
        request_json: &str,
        idempotency_key: &str,
    ) -> PyResult<UsageRecord> {
        run(py, || {
            let request = input::json::<UsageRequest>("usage", Some(request_json))?.unwrap_or_else(|| unreachable!());
            self.0.track_usage(user_id, &request, idempotency_key)
        })
    }

    /// `records_json` is a JSON list of `UsageRequest`s.
    fn track_usage_batch(
        &self,
        py: Python<'_>,
        user_id: &str,
        records_json: &str,
        idempotency_key: &str,
    ) -> PyResult<Vec<UsageRecord>> {
        run(py, || {
            let records = input::json::<Vec<UsageRequest>>("records", Some(records_json))?.unwrap_or_default();
            self.0.track_usage_batch(user_id, &records, idempotency_key)
        })
    }

    fn usage(&self, py: Python<'_>, user_id: &str, metric: &str) -> PyResult<UsageSummary> {
        run(py, || self.0.usage(user_id, metric))
    }

    #[pyo3(signature = (user_id, metric, by, since, until))]
    fn usage_breakdown(
        &self,
        py: Python<'_>,
        user_id: &str,
        metric: &str,
        by: &str,
        since: Option<&str>,
        until: Option<&str>,
    ) -> PyResult<Vec<UsageTotal>> {
        run(py, || {
            let by = UsageGroup::parse(by)?;
            let since = since.map(|at| input::moment("since", at)).transpose()?;
            let until = until.map(|at| input::moment("until", at)).transpose()?;
            self.0.usage_breakdown(user_id, metric, by, since, until)
        })
    }

    #[pyo3(signature = (user_id, usage, operation, idempotency_key, ttl_s))]
    fn reserve(
        &self,
        py: Python<'_>,
        user_id: &str,
        usage: BTreeMap<String, u64>,
        operation: Option<&str>,
        idempotency_key: &str,
        ttl_s: u64,
    ) -> PyResult<Hold> {
        run(py, || self.0.reserve(user_id, &usage, operation, idempotency_key, ttl_s))
    }

    #[pyo3(signature = (hold_id, actual, model_id, chat_id, idempotency_key))]
    fn capture(
        &self,
        py: Python<'_>,
        hold_id: &str,
        actual: Option<BTreeMap<String, u64>>,
        model_id: Option<String>,
        chat_id: Option<String>,
        idempotency_key: &str,
    ) -> PyResult<Hold> {
        run(py, || self.0.capture(hold_id, actual.as_ref(), &UsageLabels { model_id, chat_id }, idempotency_key))
    }

    fn release(&self, py: Python<'_>, hold_id: &str, idempotency_key: &str) -> PyResult<Hold> {
        run(py, || self.0.release(hold_id, idempotency_key))
    }

    fn entitlements(&self, py: Python<'_>, user_id: &str) -> PyResult<Entitlements> {
        run(py, || self.0.entitlements(user_id))
    }

    fn has_feature(&self, py: Python<'_>, user_id: &str, feature: &str) -> PyResult<bool> {
        run(py, || self.0.has_feature(user_id, feature))
    }

    fn require_feature(&self, py: Python<'_>, user_id: &str, feature: &str) -> PyResult<Entitlement> {
        run(py, || self.0.require_feature(user_id, feature))
    }

    /// `count` charges of `user_id` in Rust, keyed `{prefix}{i}`, with the GIL released:
    /// the Rust call the Python `charge` wraps, for the benchmark to set them side by side.
    fn _charge_loop(&self, py: Python<'_>, user_id: &str, operation: &str, prefix: &str, count: u32) -> PyResult<()> {
        run(py, || {
            (0..count).try_for_each(|i| self.0.charge(user_id, operation, &format!("{prefix}{i}"), None).map(drop))
        })
    }

    #[pyo3(signature = (charge_id, idempotency_key, reason))]
    fn refund_charge(
        &self,
        py: Python<'_>,
        charge_id: i64,
        idempotency_key: &str,
        reason: Option<&str>,
    ) -> PyResult<Refund> {
        run(py, || self.0.refund_charge(charge_id, idempotency_key, reason))
    }

    /// `terms_json`: the lot's `GrantTerms` as JSON (`expires_at`, `priority`, `category`).
    #[pyo3(signature = (user_id, amount, idempotency_key, reason, terms_json))]
    fn grant_credits(
        &self,
        py: Python<'_>,
        user_id: &str,
        amount: &str,
        idempotency_key: &str,
        reason: &str,
        terms_json: &str,
    ) -> PyResult<LedgerEntry> {
        run(py, || {
            let amount = input::decimal("amount", amount)?;
            let terms = input::json::<GrantTerms>("terms", Some(terms_json))?.unwrap_or_default();
            self.0.grant_credits_on(user_id, amount, idempotency_key, reason, &terms)
        })
    }

    fn void_grant(&self, py: Python<'_>, lot_id: i64, idempotency_key: &str, reason: &str) -> PyResult<LedgerEntry> {
        run(py, || self.0.void_grant(lot_id, idempotency_key, reason))
    }

    fn credit_lots(&self, py: Python<'_>, user_id: &str) -> PyResult<Vec<CreditLot>> {
        run(py, || self.0.credit_lots(user_id))
    }

    fn activate_subscription(
        &self,
        py: Python<'_>,
        user_id: &str,
        plan_code: &str,
        idempotency_key: &str,
    ) -> PyResult<SubscriptionDetails> {
        run(py, || self.0.activate_subscription(user_id, plan_code, idempotency_key))
    }

    fn cancel_subscription(&self, py: Python<'_>, user_id: &str, immediate: bool) -> PyResult<SubscriptionDetails> {
        run(py, || self.0.cancel_subscription(user_id, immediate))
    }

    fn set_autorenew(&self, py: Python<'_>, user_id: &str, enabled: bool) -> PyResult<SubscriptionDetails> {
        run(py, || self.0.set_autorenew(user_id, enabled))
    }

    #[pyo3(signature = (user_id, plan_code, package_code, return_url, save_payment_method, idempotency_key, customer_email, customer_phone))]
    #[allow(clippy::too_many_arguments)]
    fn create_payment(
        &self,
        py: Python<'_>,
        user_id: &str,
        plan_code: Option<&str>,
        package_code: Option<&str>,
        return_url: Option<&str>,
        save_payment_method: bool,
        idempotency_key: &str,
        customer_email: Option<&str>,
        customer_phone: Option<&str>,
    ) -> PyResult<CreatedPayment> {
        let purchase = match (plan_code, package_code) {
            (Some(plan), None) => Purchase::Plan(plan),
            (None, Some(package)) => Purchase::Package(package),
            _ => return Err(invalid("plan_code", "give exactly one of plan_code and package_code")),
        };
        run(py, || {
            let contact = match (customer_email, customer_phone) {
                (None, None) => None,
                (email, phone) => Some(CustomerContact::new(email, phone)?),
            };
            self.0.create_payment(user_id, purchase, return_url, save_payment_method, idempotency_key, contact.as_ref())
        })
    }

    #[pyo3(signature = (user_id, email, phone))]
    fn set_customer_contact(
        &self,
        py: Python<'_>,
        user_id: &str,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> PyResult<CustomerContact> {
        run(py, || self.0.set_customer_contact(user_id, email, phone))
    }

    fn customer_contact(&self, py: Python<'_>, user_id: &str) -> PyResult<Option<CustomerContact>> {
        run(py, || self.0.customer_contact(user_id))
    }

    #[pyo3(signature = (user_id, return_url, idempotency_key))]
    fn start_card_binding(
        &self,
        py: Python<'_>,
        user_id: &str,
        return_url: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> PyResult<CreatedPayment> {
        run(py, || self.0.start_card_binding(user_id, return_url, idempotency_key))
    }

    #[pyo3(signature = (payment_id, amount, idempotency_key))]
    fn refund_payment(
        &self,
        py: Python<'_>,
        payment_id: &str,
        amount: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> PyResult<Payment> {
        run(py, || {
            let amount = amount.map(|amount| input::decimal("amount", amount)).transpose()?;
            self.0.refund_payment(payment_id, amount, idempotency_key)
        })
    }

    #[pyo3(signature = (body, remote_addr, headers))]
    fn handle_yookassa_webhook(
        &self,
        py: Python<'_>,
        body: &[u8],
        remote_addr: Option<&str>,
        headers: Vec<(String, String)>,
    ) -> PyResult<WebhookOutcome> {
        run(py, || self.0.handle_yookassa_webhook(body, remote_addr, &headers))
    }

    fn process_due(&self, py: Python<'_>) -> PyResult<DueReport> {
        run(py, || self.0.process_due())
    }

    fn billing_me(&self, py: Python<'_>, user_id: &str) -> PyResult<BillingMe> {
        run(py, || self.0.billing_me(user_id))
    }

    fn subscription_details(&self, py: Python<'_>, user_id: &str) -> PyResult<SubscriptionDetails> {
        run(py, || self.0.subscription_details(user_id))
    }

    fn plans(&self, py: Python<'_>) -> PyResult<Vec<SubscriptionPlan>> {
        run(py, || Ok(self.0.plans()))
    }

    fn plan_cards(&self, py: Python<'_>, user_id: &str) -> PyResult<Vec<PlanCard>> {
        run(py, || self.0.plan_cards(user_id))
    }

    fn payment_method(&self, py: Python<'_>, user_id: &str) -> PyResult<PaymentMethodView> {
        run(py, || self.0.payment_method(user_id))
    }

    fn payments(&self, py: Python<'_>, user_id: &str, limit: u32) -> PyResult<PaymentHistory> {
        run(py, || self.0.payments(user_id, limit))
    }

    fn payment(&self, py: Python<'_>, payment_id: &str) -> PyResult<Payment> {
        run(py, || self.0.payment(payment_id))
    }

    #[pyo3(signature = (user_id, limit, before))]
    fn ledger(&self, py: Python<'_>, user_id: &str, limit: u32, before: Option<i64>) -> PyResult<Vec<LedgerEntry>> {
        run(py, || self.0.ledger(user_id, limit, before))
    }

    fn verify_integrity(&self, py: Python<'_>) -> PyResult<IntegrityReport> {
        run(py, || self.0.verify_integrity())
    }

    // ---- crypto payments

    #[pyo3(signature = (user_id, plan_code, package_code, chain_id, idempotency_key))]
    fn create_crypto_payment(
        &self,
        py: Python<'_>,
        user_id: &str,
        plan_code: Option<&str>,
        package_code: Option<&str>,
        chain_id: u64,
        idempotency_key: &str,
    ) -> PyResult<CryptoCheckout> {
        let purchase = match (plan_code, package_code) {
            (Some(plan), None) => Purchase::Plan(plan),
            (None, Some(package)) => Purchase::Package(package),
            _ => return Err(invalid("plan_code", "give exactly one of plan_code and package_code")),
        };
        run(py, || self.0.create_crypto_payment(user_id, purchase, chain_id, idempotency_key))
    }

    fn handle_crypto_webhook(
        &self,
        py: Python<'_>,
        body: &[u8],
        headers: Vec<(String, String)>,
    ) -> PyResult<CryptoWebhookOutcome> {
        run(py, || self.0.handle_crypto_webhook(body, &headers))
    }

    /// `fetch(chain_id, tx_hash)` answers `None` or `(block_number, block_hash,
    /// confirmations, failed)`; an exception it raises counts as a transaction the worker
    /// could not read.
    fn reconcile_crypto(&self, py: Python<'_>, fetch: Py<PyAny>) -> PyResult<CryptoReconcileReport> {
        let read = move |chain_id: u64, tx_hash: &str| -> billing_engine::Result<Option<TxReceipt>> {
            Python::attach(|py| {
                let answer = fetch
                    .call1(py, (chain_id, tx_hash))
                    .and_then(|answer| answer.extract::<Option<(u64, Option<String>, u32, bool)>>(py));
                answer.map_err(|error| BillingError::InvalidArgument { field: "fetch", message: error.to_string() })
            })
            .map(|receipt| {
                receipt.map(|(block_number, block_hash, confirmations, failed)| TxReceipt {
                    block_number,
                    block_hash,
                    confirmations,
                    failed,
                })
            })
        };
        run(py, || self.0.reconcile_crypto(&read))
    }

    fn refund_crypto_payment(&self, py: Python<'_>, payment_id: &str, tx_hash: &str) -> PyResult<Payment> {
        run(py, || self.0.refund_crypto_payment(payment_id, tx_hash))
    }

    /// The transfers of a crypto payment, as JSON.
    fn crypto_transfers_json(&self, py: Python<'_>, payment_id: &str) -> PyResult<String> {
        let transfers = run(py, || self.0.crypto_transfers(payment_id))?;
        json(&transfers)
    }

    // ---- the outbox of events

    fn poll_events(&self, py: Python<'_>, consumer: &str, limit: u32) -> PyResult<Vec<Event>> {
        run(py, || self.0.poll_events(consumer, limit))
    }

    fn ack_events(&self, py: Python<'_>, consumer: &str, up_to: &str) -> PyResult<()> {
        run(py, || self.0.ack_events(consumer, up_to))
    }

    fn prune_events(&self, py: Python<'_>, before: &str) -> PyResult<u64> {
        run(py, || self.0.prune_events(input::moment("before", before)?))
    }

    fn user_events(&self, py: Python<'_>, user_id: &str, after_sequence: i64, limit: u32) -> PyResult<Vec<Event>> {
        run(py, || self.0.user_events(user_id, after_sequence, limit))
    }

    #[pyo3(signature = (endpoint_url, secret, consumer, limit, timeout_s))]
    fn deliver_events(
        &self,
        py: Python<'_>,
        endpoint_url: &str,
        secret: &str,
        consumer: String,
        limit: u32,
        timeout_s: f64,
    ) -> PyResult<DeliveryReport> {
        let timeout = Duration::try_from_secs_f64(timeout_s)
            .ok()
            .filter(|t| !t.is_zero())
            .ok_or_else(|| invalid("timeout_s", format!("must be a positive number of seconds, got {timeout_s}")))?;
        run(py, || {
            let endpoint = EventEndpoint { consumer, timeout, ..EventEndpoint::new(endpoint_url, secret)? };
            self.0.deliver_events(&endpoint, limit)
        })
    }

    fn resume_delivery(&self, py: Python<'_>, consumer: &str) -> PyResult<()> {
        run(py, || self.0.resume_delivery(consumer))
    }

    // ---- the operators' overview

    #[pyo3(signature = (at, window_days))]
    fn overview(&self, py: Python<'_>, at: Option<&str>, window_days: u32) -> PyResult<Overview> {
        run(py, || {
            let at = at.map(|at| input::moment("at", at)).transpose()?;
            self.0.overview(at, window_days)
        })
    }

    fn revenue_series(&self, py: Python<'_>, from: &str, to: &str, granularity: &str) -> PyResult<Vec<RevenuePoint>> {
        run(py, || {
            let (from, to) = (input::moment("from", from)?, input::moment("to", to)?);
            self.0.revenue_series(from, to, granularity.parse()?)
        })
    }

    /// `filter_json` is a `TransactionFilter` as JSON (times RFC 3339, amounts decimal strings).
    fn transactions(
        &self,
        py: Python<'_>,
        filter_json: &str,
        limit: u32,
        before: Option<i64>,
    ) -> PyResult<Vec<MoneyMovement>> {
        run(py, || {
            let filter = input::json::<TransactionFilter>("filter", Some(filter_json))?.unwrap_or_default();
            self.0.transactions(&filter, limit, before)
        })
    }

    fn metrics_text(&self) -> String {
        self.0.metrics_text()
    }

    // ---- the audit log

    #[pyo3(signature = (user_id, actor, action, outcome, limit, before))]
    #[allow(clippy::too_many_arguments)]
    fn audit_log(
        &self,
        py: Python<'_>,
        user_id: Option<String>,
        actor: Option<String>,
        action: Option<String>,
        outcome: Option<&str>,
        limit: u32,
        before: Option<i64>,
    ) -> PyResult<Vec<AuditRecord>> {
        let outcome = outcome
            .map(|name| name.parse().map_err(|()| invalid("outcome", "applied, unchanged or rejected")))
            .transpose()?;
        let filter = AuditFilter { user_id, actor, action, outcome };
        run(py, || self.0.audit_log(&filter, limit, before))
    }
}

/// Calls `call(*args)` with the audit context `actor`, `request_id`, `reason`: every
/// record the call writes names them (the package keeps the context per task).
#[pyfunction]
#[pyo3(signature = (actor, request_id, reason, call, args))]
fn in_audit_context<'py>(
    actor: &str,
    request_id: Option<&str>,
    reason: Option<&str>,
    call: &Bound<'py, PyAny>,
    args: &Bound<'py, pyo3::types::PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let context = AuditContext::new(actor, request_id, reason).map_err(|e| native_error(&e))?;
    context.scope(|| call.call1(args))
}

/// Panics inside the engine's call wrapper; the test suite checks that Python gets an
/// exception and the interpreter goes on.
#[pyfunction]
fn _panic_for_test(py: Python<'_>) -> PyResult<()> {
    run(py, || -> billing_engine::Result<()> { panic!("a deliberate panic") })
}

// The engine holds no Python objects and locks its own state, so it runs without the
// GIL on a free-threaded CPython too.
#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add("INTERNAL_ERROR", INTERNAL_ERROR)?;
    // The one table of codes, so the package's exception classes can be checked against it.
    let codes: Vec<(&str, u16, bool)> = ERROR_CODES.iter().map(|c| (c.code, c.http_status, c.retryable)).collect();
    m.add("ERROR_CODES", codes)?;
    m.add_class::<NativeCatalog>()?;
    m.add_class::<NativeClock>()?;
    m.add_class::<NativeYooKassaConfig>()?;
    m.add_class::<NativeBilling>()?;
    // The engine's result types, as its `python` feature defines them.
    m.add_class::<AllowancePeriod>()?;
    m.add_class::<BillingMe>()?;
    m.add_class::<BillingState>()?;
    m.add_class::<CardDetails>()?;
    m.add_class::<Charge>()?;
    m.add_class::<CreatedPayment>()?;
    m.add_class::<DueReport>()?;
    m.add_class::<IntegrityReport>()?;
    m.add_class::<LedgerEntry>()?;
    m.add_class::<Mismatch>()?;
    m.add_class::<PaidPeriod>()?;
    m.add_class::<Payment>()?;
    m.add_class::<PaymentHistory>()?;
    m.add_class::<PaymentHistoryItem>()?;
    m.add_class::<PaymentMethodView>()?;
    m.add_class::<PlanCard>()?;
    m.add_class::<Quote>()?;
    m.add_class::<Refund>()?;
    m.add_class::<SubscriptionDetails>()?;
    m.add_class::<SubscriptionPlan>()?;
    m.add_class::<WebhookOutcome>()?;
    m.add_class::<CreditLot>()?;
    m.add_class::<CustomerContact>()?;
    m.add_class::<ExpiringCredits>()?;
    m.add_class::<Entitlement>()?;
    m.add_class::<Entitlements>()?;
    m.add_class::<HeldUsage>()?;
    m.add_class::<Hold>()?;
    m.add_class::<MetricCheck>()?;
    m.add_class::<UsageAmount>()?;
    m.add_class::<UsageCheck>()?;
    m.add_class::<UsageRecord>()?;
    m.add_class::<UsageSummary>()?;
    m.add_class::<UsageTotal>()?;
    m.add_class::<AuditRecord>()?;
    m.add_class::<CryptoCheckout>()?;
    m.add_class::<CryptoHistory>()?;
    m.add_class::<CryptoReconcileReport>()?;
    m.add_class::<CryptoWebhookOutcome>()?;
    m.add_class::<DeliveryReport>()?;
    m.add_class::<Event>()?;
    m.add_class::<CurrencyAmount>()?;
    m.add_class::<MoneyMovement>()?;
    m.add_class::<Overview>()?;
    m.add_class::<PaymentCount>()?;
    m.add_class::<RevenuePoint>()?;
    m.add_class::<Segment>()?;
    m.add_function(wrap_pyfunction!(in_audit_context, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    m.add_function(wrap_pyfunction!(billing_engine::_restore, m)?)?;
    Ok(())
}
