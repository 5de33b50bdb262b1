//! [`Billing`]: the engine's public handle. Each call checks its input, then runs one
//! store transaction in which it loads the account, rolls it forward to now, applies one
//! rule from the domain modules and appends the ledger entry that records it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::account::Account;
use crate::audit::AuditOutcome;
use crate::catalog::{Catalog, Operation};
use crate::charge::{self, Charge, ChargeRequest, Quote, Refund};
use crate::clock::{Clock, SystemClock};
use crate::crypto::CryptoProvider;
use crate::error::{BillingError, Result};
use crate::events;
use crate::input;
use crate::ledger::{
    audit_account, audit_lots, audit_payments, audit_usage, AllowancePeriod, CancelReason, EntryKind, IntegrityReport,
    LedgerEntry, LotTerms, Mismatch, NewEntry, Request, FREEMIUM_OWNER,
};
use crate::lots::{GrantTerms, LotCategory, LotSource};
use crate::metrics::Metrics;
use crate::payment::PaymentHistoryItem;
use crate::plan_card::{self, PlanCard};
use crate::store::{Database, LocalOptions, Store, Transaction};
use crate::subscription::Subscription;
use crate::time_util;
use crate::views::{BillingMe, BillingState, SubscriptionDetails, SubscriptionPlan};

mod audit_log;
mod checkout;
mod credit_lots;
mod crypto_payments;
#[cfg(feature = "http")]
mod delivery;
mod metering;
mod notifications;
mod outbox;
mod overview;
mod renewals;

pub use checkout::Purchase;
pub use crypto_payments::{CryptoCheckout, CryptoReconcileReport, CryptoWebhookOutcome};
#[cfg(feature = "http")]
pub use delivery::{DeliveryOutcome, DeliveryReport, EventEndpoint};
pub use overview::{Granularity, MoneyMovement};

/// The billing engine over a [`Store`]. Cheap to share: wrap it in an `Arc` and use it
/// from every thread.
pub struct Billing<S: Store = Database> {
    store: S,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    payments: Option<checkout::PaymentSetup>,
    /// Where crypto transfers are heard of (`with_crypto`).
    crypto: Option<Arc<dyn CryptoProvider>>,
    /// What this handle counts for Prometheus (`metrics_text`).
    metrics: Arc<Metrics>,
}

/// A charge's input, checked: what [`Billing::charge_in`] runs.
struct CheckedCharge<'a> {
    user_id: &'a str,
    op: &'a Operation,
    idempotency_key: &'a str,
    request: Request<'a>,
}

/// The accounts one charge transaction works on: each read and rolled forward once,
/// changed in memory by every charge of its user, and written once at the end if a
/// charge changed it (a refused charge writes nothing, not even the roll-forward).
#[derive(Default)]
struct WorkingAccounts {
    /// Each account, and whether a charge changed it.
    accounts: HashMap<String, (Account, bool)>,
}

impl WorkingAccounts {
    /// The user's account, read by `load` the first time.
    fn get(
        &mut self,
        tx: &mut dyn Transaction,
        user_id: &str,
        load: impl FnOnce(&mut dyn Transaction) -> Result<Account>,
    ) -> Result<&mut Account> {
        if !self.accounts.contains_key(user_id) {
            let account = load(tx)?;
            self.accounts.insert(user_id.to_owned(), (account, false));
        }
        Ok(&mut self.accounts.get_mut(user_id).expect("inserted above").0)
    }

    fn changed(&mut self, user_id: &str) {
        if let Some((_, changed)) = self.accounts.get_mut(user_id) {
            *changed = true;
        }
    }

    fn save(&self, tx: &mut dyn Transaction) -> Result<()> {
        let changed = self.accounts.values().filter(|(_, changed)| *changed);
        changed.map(|(account, _)| account).try_for_each(|account| Ok(tx.update_account(account)?))
    }
}

/// A subscription carried over by [`Billing::import_user`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedSubscription {
    pub plan_code: String,
    /// When the paid period ends; `None` gives one full `duration_days` from now.
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub expires_at: Option<OffsetDateTime>,
}

impl Billing<Database> {
    /// Opens `location` with the system clock: a SQLite file (`":memory:"` for a private
    /// in-memory database), or a PostgreSQL database by its `postgresql://` URL (feature
    /// `postgres`; see [`PostgresStore`](crate::store::PostgresStore) for the URL).
    pub fn open(location: impl AsRef<Path>, catalog: Catalog) -> Result<Self> {
        Self::open_with_clock(location, catalog, Arc::new(SystemClock))
    }

    pub fn open_with_clock(location: impl AsRef<Path>, catalog: Catalog, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open_with(location, catalog, clock, LocalOptions::default())
    }

    /// Opens `location` with chosen SQLite options: a [`Durability`](crate::Durability) converts into them,
    /// with shared commits on. The catalog's `lock_timeout_ms` sets how long a writer
    /// waits for another writer.
    pub fn open_with(
        location: impl AsRef<Path>,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        local: impl Into<LocalOptions>,
    ) -> Result<Self> {
        let store = Database::open(location, catalog.lock_timeout, local.into())?;
        let billing = Self::new(store, catalog, clock);
        billing.record_catalog()?;
        Ok(billing)
    }
}

impl<S: Store> Billing<S> {
    pub fn new(store: S, catalog: Catalog, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            catalog: Arc::new(catalog),
            clock,
            payments: None,
            crypto: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    fn now(&self) -> OffsetDateTime {
        time_util::truncate(self.clock.now())
    }

    // ---- users ----

    /// Creates the user's account if it has none and awards the free trial if asked and
    /// never awarded before. Safe to call on every login.
    pub fn register_user(&self, user_id: &str, free_trial: bool) -> Result<BillingState> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.write(user_id, |tx| {
            let mut account = match self.existing_account(tx, user_id, now)? {
                Some(account) => account,
                None => {
                    let account = Account::new(user_id, now, &self.catalog);
                    tx.insert_account(&account)?;
                    account
                }
            };
            if free_trial && !account.free_trial_awarded {
                account.free_trial_awarded = true;
                let credits = self.catalog.free_trial_credits;
                if !credits.is_zero() {
                    let terms = LotTerms {
                        priority: self.catalog.free_trial_priority,
                        category: LotCategory::Promotional,
                        expires_at: self
                            .catalog
                            .free_trial_expires_after_days
                            .map(|days| now + Duration::days(days.into())),
                        source: LotSource::FreeTrial,
                    };
                    self.record(tx, &mut account, NewEntry::free_trial(user_id, credits, terms, now))?;
                }
                tx.update_account(&account)?;
            }
            self.state_in(tx, &account, now)
        })
    }

    /// Carries over a user of an earlier system (seed 000): keeps the credits, clamps the
    /// free-tier use to its limit, optionally keeps a paid subscription, and awards no
    /// free trial. A user who already has an account is left as is.
    pub fn import_user(
        &self,
        user_id: &str,
        credits: Decimal,
        freemium_used: u32,
        subscription: Option<ImportedSubscription>,
    ) -> Result<BillingState> {
        input::id("user_id", user_id)?;
        let credits = input::credits("credits", credits)?;
        if credits.is_sign_negative() && !credits.is_zero() {
            return Err(BillingError::invalid("credits", format!("must not be negative, got {credits}")));
        }
        let used = self.catalog.free_plan().ops_limit.map_or(freemium_used, |limit| freemium_used.min(limit));
        let used_delta = i32::try_from(used)
            .map_err(|_| BillingError::invalid("freemium_used", format!("at most {}, got {used}", i32::MAX)))?;
        let now = self.now();
        let subscription = subscription
            .map(|imported| {
                let plan = self.catalog.paid_plan(&imported.plan_code)?;
                match imported.expires_at {
                    Some(expires_at) if expires_at <= now => Err(BillingError::invalid(
                        "subscription.expires_at",
                        format!("{} is not in the future", time_util::iso(expires_at)),
                    )),
                    Some(expires_at) => Ok(Subscription::until(plan, now, time_util::truncate(expires_at))),
                    None => Ok(Subscription::start(plan, now)),
                }
            })
            .transpose()?;
        let audit = self.audit_record("user.import", Some(user_id));
        self.store.write(user_id, |tx| {
            if let Some(account) = self.existing_account(tx, user_id, now)? {
                tx.append_audit(&audit.clone().outcome(AuditOutcome::Unchanged))?;
                return self.state_in(tx, &account, now);
            }
            let mut account = Account::new(user_id, now, &self.catalog);
            account.free_trial_awarded = true;
            tx.insert_account(&account)?;
            if !credits.is_zero() {
                self.record(tx, &mut account, NewEntry::imported_credits(user_id, credits, now))?;
            }
            if used > 0 {
                let period = AllowancePeriod { owner: FREEMIUM_OWNER.to_owned(), start: account.freemium.period_start };
                self.record(tx, &mut account, NewEntry::imported_ops(user_id, period, used_delta, now))?;
            }
            if let Some(sub) = subscription.clone() {
                let entry = NewEntry::subscription(EntryKind::SubscriptionActivated, user_id, &sub, None, now);
                account.subscription = Some(sub);
                self.record(tx, &mut account, entry)?;
            }
            tx.update_account(&account)?;
            let imported = serde_json::json!({
                "credits": account.credits.to_string(),
                "freemium_used": used,
                "subscription": subscription_summary(&account),
            });
            tx.append_audit(&audit.clone().change(None, Some(imported)))?;
            self.state_in(tx, &account, now)
        })
    }

    pub fn state(&self, user_id: &str) -> Result<BillingState> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            let view = self.read_view(tx, user_id, now)?;
            Ok(BillingState::new(&view.account, &view.open_lots, &self.catalog, now))
        })
    }

    /// The state of `account`, with its lots read in the same transaction.
    fn state_in(&self, tx: &mut dyn Transaction, account: &Account, now: OffsetDateTime) -> Result<BillingState> {
        let lots = tx.open_lots(&account.user_id)?;
        Ok(BillingState::new(account, &lots, &self.catalog, now))
    }

    // ---- charging ----

    /// What [`charge`](Self::charge) would do now, writing nothing.
    pub fn quote(&self, user_id: &str, operation: &str) -> Result<Quote> {
        input::id("user_id", user_id)?;
        let op = self.catalog.operation(operation)?;
        let (account, now) = self.read_account(user_id)?;
        Ok(charge::quote(&account, &self.catalog, op, now))
    }

    /// Charges one `operation` from the first source of the charge order that can pay.
    /// A refused charge writes nothing.
    pub fn charge(
        &self,
        user_id: &str,
        operation: &str,
        idempotency_key: &str,
        metadata: Option<Value>,
    ) -> Result<Charge> {
        let started = std::time::Instant::now();
        let charged = self.checked_charge(user_id, operation, idempotency_key, metadata.as_ref()).and_then(|charge| {
            let now = self.now();
            self.store.write(user_id, |tx| {
                let mut accounts = WorkingAccounts::default();
                let charged = self.charge_in(tx, &mut accounts, &charge, now)?;
                accounts.save(tx)?;
                Ok(charged)
            })
        });
        self.count_charge("charge", &charged, started);
        charged
    }

    /// Counts a charge's source, or its refusal's code, for `metrics_text`.
    fn count_charge(&self, call: &'static str, charged: &Result<Charge>, started: std::time::Instant) {
        match charged {
            Ok(charge) if !charge.replayed => {
                self.metrics.charged(charge.source.as_str(), started.elapsed().as_secs_f64())
            }
            Ok(_) => {}
            Err(refusal) => self.metrics.refused(call, refusal.code()),
        }
    }

    /// Many charges, of any users, in one transaction with one commit: each request is
    /// what [`charge`](Self::charge) takes, and gets what `charge` would return, in
    /// order. A refused or invalid request (NOT_ENOUGH_CREDITS, an idempotency conflict,
    /// an unknown operation) is that item's error and writes nothing; the others go on.
    /// A storage failure fails the whole batch, and nothing of it is written. Keys
    /// replay per item, within the batch too.
    pub fn charge_batch(&self, requests: &[ChargeRequest]) -> Result<Vec<Result<Charge>>> {
        self.charge_each(requests.iter().map(Ok))
    }

    /// [`charge_batch`](Self::charge_batch) for a binding that builds each request from
    /// its own types: a request it could not build (metadata that is not JSON) is an
    /// `Err`, which stays that item's result.
    pub fn charge_batch_built(&self, requests: &[Result<ChargeRequest>]) -> Result<Vec<Result<Charge>>> {
        self.charge_each(requests.iter().map(|r| r.as_ref().map_err(Clone::clone)))
    }

    fn charge_each<'r>(
        &self,
        requests: impl ExactSizeIterator<Item = Result<&'r ChargeRequest>>,
    ) -> Result<Vec<Result<Charge>>> {
        input::batch_size(requests.len())?;
        let started = std::time::Instant::now();
        let checked: Vec<Result<CheckedCharge<'_>>> = requests
            .map(|r| {
                r.and_then(|r| self.checked_charge(&r.user_id, &r.operation, &r.idempotency_key, r.metadata.as_ref()))
            })
            .collect();
        let valid: Vec<&CheckedCharge<'_>> = checked.iter().filter_map(|c| c.as_ref().ok()).collect();
        let users: Vec<&str> = valid.iter().map(|c| c.user_id).collect();
        let now = self.now();
        let charged = self.store.write_many(&users, |tx| {
            let mut accounts = WorkingAccounts::default();
            let mut results = Vec::with_capacity(valid.len());
            for charge in &valid {
                match self.charge_in(tx, &mut accounts, charge, now) {
                    Err(failure) if failure.is_storage_failure() => return Err(failure),
                    result => results.push(result),
                }
            }
            accounts.save(tx)?;
            Ok(results)
        })?;
        let mut charged = charged.into_iter();
        let results: Vec<Result<Charge>> = checked
            .into_iter()
            .map(|c| match c {
                Ok(_) => charged.next().expect("one result per valid request"),
                Err(invalid) => Err(invalid),
            })
            .collect();
        for result in &results {
            self.count_charge("charge_batch", result, started);
        }
        Ok(results)
    }

    /// A charge's input, checked before any store access.
    fn checked_charge<'a>(
        &'a self,
        user_id: &'a str,
        operation: &'a str,
        idempotency_key: &'a str,
        metadata: Option<&'a Value>,
    ) -> Result<CheckedCharge<'a>> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        input::metadata(metadata)?;
        let op = self.catalog.operation(operation)?;
        let request = Request { action: "charge", target: operation, amount: None, metadata };
        Ok(CheckedCharge { user_id, op, idempotency_key, request })
    }

    /// The one charge path, of [`charge`](Self::charge) and of each batch item. Every
    /// refusal comes before the charge writes anything, so an item refused inside a
    /// batch leaves nothing to undo.
    fn charge_in(
        &self,
        tx: &mut dyn Transaction,
        accounts: &mut WorkingAccounts,
        charge: &CheckedCharge<'_>,
        now: OffsetDateTime,
    ) -> Result<Charge> {
        let CheckedCharge { user_id, op, idempotency_key, request } = charge;
        if let Some(entry) = replay(tx, user_id, idempotency_key, request)? {
            return Ok(Charge::from_entry(&entry, true));
        }
        let account = accounts.get(tx, user_id, |tx| self.current_account(tx, user_id, now))?;
        let spend = charge::spend(account, &self.catalog, op, now).map_err(|refusal| match refusal {
            BillingError::NotEnoughCredits { required, available, .. } => {
                let expired = just_expired(tx, user_id, now).unwrap_or_default();
                BillingError::NotEnoughCredits { required, available, expired }
            }
            other => other,
        })?;
        let entry = NewEntry::charge(user_id, &op.code, &spend, request.metadata.cloned(), now);
        let entry = self.record(tx, account, entry.keyed(idempotency_key, request))?;
        accounts.changed(user_id);
        Ok(Charge::from_entry(&entry, false))
    }

    /// Gives a failed operation's charge back to the source it came from. Refunding a
    /// charge again, under any key, returns the first refund.
    pub fn refund_charge(&self, charge_id: i64, idempotency_key: &str, reason: Option<&str>) -> Result<Refund> {
        input::id("idempotency_key", idempotency_key)?;
        if let Some(reason) = reason {
            input::text("reason", reason)?;
        }
        let target = charge_id.to_string();
        let request = Request { action: "refund", target: &target, amount: None, metadata: None };
        let now = self.now();
        // A charge's user never changes, so it can be read before taking the user's lock.
        let owner = self.store.read(|tx| charge_entry(tx, charge_id))?.user_id;
        self.store.write(&owner, |tx| {
            let charge = charge_entry(tx, charge_id)?;
            if let Some(entry) = replay(tx, &charge.user_id, idempotency_key, &request)? {
                return Ok(Refund::from_entry(&entry, &charge, true));
            }
            if let Some(entry) = tx.refund_of(&charge.user_id, charge_id)? {
                return Ok(Refund::from_entry(&entry, &charge, true));
            }
            let mut account = self.current_account(tx, &charge.user_id, now)?;
            let back = charge::give_back(&account, &charge);
            let entry = NewEntry::refund(&charge, &back, reason, now).keyed(idempotency_key, &request);
            let entry = self.record(tx, &mut account, entry)?;
            tx.update_account(&account)?;
            Ok(Refund::from_entry(&entry, &charge, false))
        })
    }

    /// An admin grant (positive) or correction (negative) of credits. The balance may go
    /// below zero; charges from credits then wait until it is back above the cost. A
    /// grant is a promotional lot of default priority that never expires; see
    /// [`grant_credits_on`](Self::grant_credits_on) for other terms.
    pub fn grant_credits(
        &self,
        user_id: &str,
        amount: Decimal,
        idempotency_key: &str,
        reason: &str,
    ) -> Result<LedgerEntry> {
        self.grant_credits_on(user_id, amount, idempotency_key, reason, &GrantTerms::default())
    }

    /// [`grant_credits`](Self::grant_credits) whose lot has `terms`: an expiry, a
    /// priority in the burn order, a category.
    pub fn grant_credits_on(
        &self,
        user_id: &str,
        amount: Decimal,
        idempotency_key: &str,
        reason: &str,
        terms: &GrantTerms,
    ) -> Result<LedgerEntry> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        input::text("reason", reason)?;
        let amount = input::credits("amount", amount)?;
        if amount.is_zero() {
            return Err(BillingError::invalid("amount", "must not be zero"));
        }
        let now = self.now();
        let lot = terms.lot_terms(now)?;
        let terms_json = terms.fingerprint_json();
        let request = Request { action: "grant", target: "", amount: Some(amount), metadata: terms_json.as_ref() };
        let audit = self.audit_record("credits.grant", Some(user_id)).reason(reason);
        self.store.write(user_id, |tx| {
            if let Some(entry) = replay(tx, user_id, idempotency_key, &request)? {
                tx.append_audit(&audit.clone().replayed(&entry))?;
                return Ok(entry);
            }
            let mut account = self.current_account(tx, user_id, now)?;
            if account.credits.checked_add(amount).is_none_or(|balance| balance.abs() > input::MAX_AMOUNT) {
                let message = format!("would take the balance past {}", input::MAX_AMOUNT);
                return Err(BillingError::invalid("amount", message));
            }
            let before = account.credits;
            let entry = NewEntry::grant(user_id, amount, reason, lot.clone(), now).keyed(idempotency_key, &request);
            let entry = self.record(tx, &mut account, entry)?;
            tx.update_account(&account)?;
            tx.append_audit(&audit.clone().credits_moved(&entry, before))?;
            Ok(entry)
        })
    }

    // ---- subscriptions ----

    /// Starts a paid subscription for a payment settled outside the engine.
    pub fn activate_subscription(
        &self,
        user_id: &str,
        plan_code: &str,
        idempotency_key: &str,
    ) -> Result<SubscriptionDetails> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let plan = self.catalog.paid_plan(plan_code)?;
        let request = Request { action: "activate_subscription", target: plan_code, amount: None, metadata: None };
        let now = self.now();
        let audit = self.audit_record("subscription.activate", Some(user_id)).target(plan_code);
        self.store.write(user_id, |tx| {
            let replayed = replay(tx, user_id, idempotency_key, &request)?.is_some();
            let mut account = self.current_account(tx, user_id, now)?;
            if replayed {
                tx.append_audit(&audit.clone().outcome(AuditOutcome::Unchanged))?;
                return self.subscription_view(tx, &account, now);
            }
            let before = subscription_summary(&account);
            if let Some(active) = account.active_subscription(now) {
                return Err(BillingError::ActiveSubscription {
                    plan_code: active.plan_code.clone(),
                    expires_at: active.expires_at,
                });
            }
            let sub = Subscription::start(plan, now);
            let entry = NewEntry::subscription(EntryKind::SubscriptionActivated, user_id, &sub, None, now);
            account.subscription = Some(sub);
            self.record(tx, &mut account, entry.keyed(idempotency_key, &request))?;
            tx.update_account(&account)?;
            tx.append_audit(&audit.clone().change(Some(before), Some(subscription_summary(&account))))?;
            self.subscription_view(tx, &account, now)
        })
    }

    /// Stops renewal. Not immediate: the subscription stays active to the end of its paid
    /// period. Immediate: it ends now and the user is back on the free tier.
    pub fn cancel_subscription(&self, user_id: &str, immediate: bool) -> Result<SubscriptionDetails> {
        input::id("user_id", user_id)?;
        let now = self.now();
        let audit = self.audit_record("subscription.cancel", Some(user_id));
        self.store.write(user_id, |tx| {
            let mut account = self.current_account(tx, user_id, now)?;
            let before = subscription_summary(&account);
            let sub = account.active_subscription_mut(now).ok_or(BillingError::NoSubscription)?;
            let already_canceled = sub.canceled_at.is_some();
            if already_canceled && !immediate {
                tx.append_audit(&audit.clone().outcome(AuditOutcome::Unchanged))?;
                return self.subscription_view(tx, &account, now);
            }
            sub.cancel(now, immediate);
            let entry = NewEntry::subscription_canceled(user_id, sub, CancelReason::Requested, immediate, None, now);
            self.record(tx, &mut account, entry)?;
            tx.update_account(&account)?;
            tx.append_audit(&audit.clone().change(Some(before), Some(subscription_summary(&account))))?;
            self.subscription_view(tx, &account, now)
        })
    }

    /// Turns renewal of the active subscription on or off. Turning it on needs a saved
    /// card, and takes back a cancellation that has not taken effect yet.
    pub fn set_autorenew(&self, user_id: &str, enabled: bool) -> Result<SubscriptionDetails> {
        input::id("user_id", user_id)?;
        let now = self.now();
        let audit = self.audit_record("subscription.autorenew", Some(user_id));
        self.store.write(user_id, |tx| {
            let mut account = self.current_account(tx, user_id, now)?;
            let before = subscription_summary(&account);
            let card = tx.saved_method(user_id)?;
            let sub = account.active_subscription_mut(now).ok_or(BillingError::NoSubscription)?;
            if enabled && card.is_none() {
                return Err(BillingError::NoPaymentMethod);
            }
            sub.autorenew = enabled;
            if enabled {
                sub.canceled_at = None;
            }
            tx.update_account(&account)?;
            tx.append_audit(&audit.clone().change(Some(before), Some(subscription_summary(&account))))?;
            Ok(SubscriptionDetails::new(&account, &self.catalog, now, card.as_ref()))
        })
    }

    // ---- views ----

    pub fn billing_me(&self, user_id: &str) -> Result<BillingMe> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            let view = self.read_view(tx, user_id, now)?;
            let state = BillingState::new(&view.account, &view.open_lots, &self.catalog, now);
            let last_payment = tx.payment_history(user_id, 1)?.first().map(PaymentHistoryItem::from);
            Ok(BillingMe::new(&state, last_payment))
        })
    }

    pub fn subscription_details(&self, user_id: &str) -> Result<SubscriptionDetails> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            let account = self.account_view(tx, user_id, now)?;
            self.subscription_view(tx, &account, now)
        })
    }

    /// The pricing screen's card for every plan, in display order (see [`crate::plan_card`]).
    pub fn plan_cards(&self, user_id: &str) -> Result<Vec<PlanCard>> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            let account = self.account_view(tx, user_id, now)?;
            let card = tx.saved_method(user_id)?;
            Ok(plan_card::plan_cards(&self.catalog, &account, now, card.as_ref()))
        })
    }

    /// Every plan of the catalog, free tier included, in display order.
    pub fn plans(&self) -> Vec<SubscriptionPlan> {
        self.catalog.plans.iter().map(SubscriptionPlan::from).collect()
    }

    // ---- ledger ----

    /// A page of the user's ledger, newest first; pass the last entry's id as `before`
    /// for the next page.
    pub fn ledger(&self, user_id: &str, limit: u32, before: Option<i64>) -> Result<Vec<LedgerEntry>> {
        input::id("user_id", user_id)?;
        input::page_size(limit)?;
        self.store.read(|tx| {
            if tx.account(user_id)?.is_none() {
                return Err(BillingError::UnknownUser { user_id: user_id.to_owned() });
            }
            Ok(tx.entries(user_id, before, limit)?)
        })
    }

    /// Recomputes every user's balance and allowance use from the ledger alone and
    /// reports each difference from the stored accounts and payments. Ledger entries or
    /// payments whose account is gone, and stored values that no longer read (named by
    /// `table.column`), are reported too, and the check goes on with the next user.
    ///
    /// Each user is read in a snapshot of their own, so the audit never holds one
    /// transaction open over the whole database.
    pub fn verify_integrity(&self) -> Result<IntegrityReport> {
        let mut report = IntegrityReport { ok: true, users_checked: 0, entries_checked: 0, mismatches: Vec::new() };
        for user_id in self.store.read(|tx| Ok(tx.user_ids()?))? {
            report.users_checked += 1;
            match self.store.read(|tx| audit_user(tx, &user_id)) {
                Ok((mismatches, entries)) => {
                    report.mismatches.extend(mismatches);
                    report.entries_checked += entries;
                }
                Err(BillingError::Unreadable { column }) => report.mismatches.push(Mismatch {
                    user_id: user_id.clone(),
                    check: format!("unreadable:{column}"),
                    ledger: String::new(),
                    stored: "unreadable".to_owned(),
                }),
                Err(other) => return Err(other),
            }
        }
        report.ok = report.mismatches.is_empty();
        Ok(report)
    }

    // ---- helpers ----

    /// Applies `entry` to `account`, appends it with the balance it leaves, carries out
    /// what it does to the credit lots, and appends the events and the overview's
    /// records it causes: the one way the engine writes an entry, so its balance
    /// snapshot, the lots, the outbox and the overview are always right.
    fn record(&self, tx: &mut dyn Transaction, account: &mut Account, mut entry: NewEntry) -> Result<LedgerEntry> {
        let before = account.credits;
        account
            .apply(&entry.entry)
            .ok_or_else(|| BillingError::invalid("amount", "the balance would pass what a decimal holds"))?;
        entry.entry.credits_balance_after = account.credits;
        let stored = tx.append_entry(&entry)?;
        self.settle_lots(tx, account, &stored, &entry.lots, before)?;
        for event in events::from_entry(&stored) {
            tx.append_event(&event)?;
        }
        self.record_analytics(tx, &stored)?;
        Ok(stored)
    }

    fn subscription_view(
        &self,
        tx: &mut dyn Transaction,
        account: &Account,
        now: OffsetDateTime,
    ) -> Result<SubscriptionDetails> {
        let card = tx.saved_method(&account.user_id)?;
        Ok(SubscriptionDetails::new(account, &self.catalog, now, card.as_ref()))
    }

    /// The user's account for a write: rolled forward to `now`, with the holds that
    /// expired by then recorded as such.
    fn existing_account(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Account>> {
        let Some(mut account) = tx.account(user_id)? else { return Ok(None) };
        account.roll_forward(&self.catalog, now);
        self.expire_holds(tx, &mut account, now)?;
        self.expire_lots(tx, &mut account, now)?;
        Ok(Some(account))
    }

    /// The user's account for a write (see [`existing_account`](Self::existing_account));
    /// UNKNOWN_USER when there is none. A read uses [`account_view`](Self::account_view).
    fn current_account(&self, tx: &mut dyn Transaction, user_id: &str, now: OffsetDateTime) -> Result<Account> {
        self.existing_account(tx, user_id, now)?
            .ok_or_else(|| BillingError::UnknownUser { user_id: user_id.to_owned() })
    }

    fn read_account(&self, user_id: &str) -> Result<(Account, OffsetDateTime)> {
        input::id("user_id", user_id)?;
        let now = self.now();
        let account = self.store.read(|tx| self.account_view(tx, user_id, now))?;
        Ok((account, now))
    }
}

/// What the audit log keeps of a user's subscription before and after a change.
fn subscription_summary(account: &Account) -> serde_json::Value {
    match &account.subscription {
        None => serde_json::Value::Null,
        Some(sub) => serde_json::json!({
            "plan_code": sub.plan_code,
            "subscription_id": sub.id,
            "expires_at": time_util::iso(sub.expires_at),
            "autorenew": sub.autorenew,
            "canceled_at": sub.canceled_at.map(time_util::iso),
        }),
    }
}

/// One user's audit: the mismatches found, and how many entries were read.
fn audit_user(tx: &mut dyn Transaction, user_id: &str) -> Result<(Vec<Mismatch>, u64)> {
    let entries = tx.all_entries(user_id)?;
    let payments = tx.all_payments(user_id)?;
    let Some(account) = tx.account(user_id)? else {
        let orphan = Mismatch {
            user_id: user_id.to_owned(),
            check: "account".to_owned(),
            ledger: format!("{} entries, {} payments", entries.len(), payments.len()),
            stored: "no account".to_owned(),
        };
        return Ok((vec![orphan], entries.len() as u64));
    };
    let mut mismatches = audit_account(&account, &entries);
    mismatches.extend(audit_payments(user_id, &payments, &entries));
    let usage = tx.all_usage(user_id)?;
    let holds = tx.all_holds(user_id)?;
    let counters = tx.all_usage_counters(user_id)?;
    mismatches.extend(audit_usage(user_id, &usage, &holds, &counters, &entries));
    mismatches.extend(audit_lots(user_id, &entries, &tx.all_lots(user_id)?, &tx.all_allocations(user_id)?));
    Ok((mismatches, entries.len() as u64))
}

/// The credits of the user's lots whose expiry was recorded at `now`: by this very call,
/// which found them expired. A refused charge says so, since its balance just fell.
fn just_expired(tx: &mut dyn Transaction, user_id: &str, now: OffsetDateTime) -> Result<Decimal> {
    let recent = tx.entries(user_id, None, 50)?;
    let expired = recent.iter().take_while(|e| e.created_at == now).filter(|e| e.kind == EntryKind::CreditExpired);
    Ok(expired.map(|e| -e.credits_delta).sum())
}

/// The charge `charge_id`; CHARGE_NOT_FOUND when there is no such charge.
fn charge_entry(tx: &mut dyn Transaction, charge_id: i64) -> Result<LedgerEntry> {
    tx.entry(charge_id)?
        .filter(|entry| entry.kind == EntryKind::Charge)
        .ok_or(BillingError::ChargeNotFound { charge_id })
}

/// The entry an earlier call with this key wrote, if the request is the same; a
/// different request under the key is IDEMPOTENCY_CONFLICT.
fn replay(tx: &mut dyn Transaction, user_id: &str, key: &str, request: &Request) -> Result<Option<LedgerEntry>> {
    match tx.entry_by_key(user_id, key)? {
        None => Ok(None),
        Some((entry, Some(hash))) if hash == request.fingerprint() => Ok(Some(entry)),
        Some(_) => Err(BillingError::IdempotencyConflict { key: key.to_owned() }),
    }
}
