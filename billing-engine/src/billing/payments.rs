//! The payment half of [`Billing`]: creating payments at the provider, applying what the
//! provider reports (in answers and in notifications) exactly once, card binding and
//! automatic renewal.
//!
//! Provider calls never run inside a store transaction, so a slow provider never holds
//! the write lock. A payment is therefore written in steps: recorded as `new` with the
//! idempotence key it will be sent with, sent, then updated from the provider's answer.
//! A crash or failure between the steps leaves a `new` payment that the next attempt
//! sends again with the same key, which the provider answers with the first result.

use std::sync::Arc;

use rust_decimal::Decimal;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::{credits_entry, Billing};
use crate::account::Account;
use crate::catalog::ChargeSource;
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::{negate, EntryKind, NewEntry, Request};
use crate::payment::{
    CreatedPayment, DueReport, Payment, PaymentHistory, PaymentHistoryItem, PaymentMethodView, PaymentStatus, Purpose,
};
use crate::provider::{PayWith, PaymentProvider, PaymentRequest, ProviderError, ProviderPayment, ProviderRefund};
use crate::store::{Store, Transaction};
use crate::subscription::Subscription;
use crate::time_util;
use crate::webhook::{self, Notification, WebhookChecks, WebhookOutcome, WebhookStatus};
use crate::yookassa::{self, YooKassaConfig};

/// How long before a subscription ends `process_due` charges the saved card, so the
/// next period is paid before the current one runs out.
pub const RENEWAL_LEAD: Duration = Duration::days(1);

/// What a binding payment holds: 1 unit of the catalog's currency.
const BINDING_AMOUNT: Decimal = Decimal::ONE;

pub(super) struct PaymentSetup {
    provider: Arc<dyn PaymentProvider>,
    checks: WebhookChecks,
    return_url: Option<String>,
}

/// What a payment created by [`Billing::create_payment`] buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase<'a> {
    Plan(&'a str),
    Package(&'a str),
}

impl<S: Store> Billing<S> {
    /// Takes payments through YooKassa.
    pub fn with_yookassa(self, config: &YooKassaConfig) -> Result<Self> {
        let (client, checks) = config.build()?;
        Ok(self.with_provider(Arc::new(client), checks, config.return_url.clone()))
    }

    /// Takes payments through any [`PaymentProvider`]; notifications are still read in
    /// YooKassa's format by [`handle_yookassa_webhook`](Self::handle_yookassa_webhook).
    pub fn with_provider(
        mut self,
        provider: Arc<dyn PaymentProvider>,
        checks: WebhookChecks,
        return_url: Option<String>,
    ) -> Self {
        self.payments = Some(PaymentSetup { provider, checks, return_url });
        self
    }

    fn setup(&self) -> Result<&PaymentSetup> {
        self.payments.as_ref().ok_or_else(|| ProviderError::NotConfigured.into())
    }

    // ---- creating payments ----

    /// Creates a payment for a paid plan or a credit package and returns where to send
    /// the user to pay. Idempotent by key: a repeat returns the same payment, and a
    /// repeat after a failure sends the same attempt again instead of creating another.
    pub fn create_payment(
        &self,
        user_id: &str,
        purchase: Purchase<'_>,
        return_url: Option<&str>,
        save_payment_method: bool,
        idempotency_key: &str,
    ) -> Result<CreatedPayment> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let setup = self.setup()?;
        let return_url = self.return_url(setup, return_url)?;
        let now = self.now();
        let mut payment = match purchase {
            Purchase::Plan(code) => {
                let plan = self.catalog.paid_plan(code)?;
                let mut payment =
                    self.new_payment(user_id, Purpose::Plan, plan.price, format!("{} plan", plan.name), now);
                payment.plan_code = Some(plan.code.clone());
                payment
            }
            Purchase::Package(code) => {
                let package = self.catalog.package(code).ok_or_else(|| {
                    BillingError::invalid("package_code", format!("`{code}` is not a package of the catalog"))
                })?;
                let mut payment = self.new_payment(
                    user_id,
                    Purpose::Package,
                    package.price,
                    format!("{} credits", package.credits),
                    now,
                );
                payment.package_code = Some(package.code.clone());
                payment.credits = Some(package.credits);
                payment
            }
        };
        payment.save_payment_method = save_payment_method;
        payment.return_url = Some(return_url.clone());
        payment.idempotency_key = Some(idempotency_key.to_owned());
        let target = format!(
            "{}:{}:{return_url}:{save_payment_method}",
            payment.purpose.as_str(),
            payment.plan_code.as_deref().or(payment.package_code.as_deref()).unwrap_or_default()
        );
        let fingerprint =
            Request { action: "create_payment", target: &target, amount: Some(payment.amount), metadata: None }
                .fingerprint();
        let payment = self.store.write(|tx| {
            if let Some((earlier, hash)) = tx.payment_by_key(user_id, idempotency_key)? {
                if hash.as_deref() != Some(fingerprint.as_str()) {
                    return Err(BillingError::IdempotencyConflict { key: idempotency_key.to_owned() });
                }
                return Ok(earlier);
            }
            let account = self.current_account(tx, user_id, now)?;
            if payment.purpose == Purpose::Plan {
                refuse_if_subscribed(&account, now)?;
            }
            tx.insert_payment(&payment, Some(&fingerprint))?;
            Ok(payment)
        })?;
        let payment = self.send(setup, payment, PayWith::Redirect { return_url }, true)?;
        created(&payment)
    }

    /// Starts saving the user's card: a 1 RUB payment held at `waiting_for_capture` and
    /// then canceled, so no money is kept. The card is saved when the provider reports
    /// the hold (see [`handle_yookassa_webhook`](Self::handle_yookassa_webhook)).
    pub fn start_card_binding(&self, user_id: &str, return_url: Option<&str>) -> Result<CreatedPayment> {
        input::id("user_id", user_id)?;
        let setup = self.setup()?;
        let return_url = self.return_url(setup, return_url)?;
        let now = self.now();
        let mut payment = self.new_payment(user_id, Purpose::CardBinding, BINDING_AMOUNT, "Card binding".into(), now);
        payment.save_payment_method = true;
        payment.return_url = Some(return_url.clone());
        let payment = self.store.write(|tx| {
            self.current_account(tx, user_id, now)?;
            tx.insert_payment(&payment, None)?;
            Ok(payment)
        })?;
        let payment = self.send(setup, payment, PayWith::Redirect { return_url }, false)?;
        created(&payment)
    }

    /// Refunds a succeeded payment (an admin action): the whole of what is left when
    /// `amount` is `None`, else `amount`, which needs an `idempotency_key` so that a
    /// retried call refunds once. What the refund takes back is applied when the
    /// provider confirms it, in the answer or in `refund.succeeded` (see
    /// [`Payment::credits_taken_back`] and [`Subscription::take_back`]).
    pub fn refund_payment(
        &self,
        payment_id: &str,
        amount: Option<Decimal>,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        input::id("payment_id", payment_id)?;
        if let Some(key) = idempotency_key {
            input::id("idempotency_key", key)?;
        }
        if let Some(amount) = amount {
            input::money("amount", amount)?;
        }
        let setup = self.setup()?;
        let payment = self.store.read(|tx| tx.payment(payment_id))?.ok_or_else(|| unknown_payment(payment_id))?;
        if payment.status == PaymentStatus::Refunded && amount.is_none() {
            return Ok(payment);
        }
        let (PaymentStatus::Succeeded, Some(provider_id)) = (payment.status, payment.provider_payment_id.as_deref())
        else {
            return Err(BillingError::invalid(
                "payment_id",
                format!("payment {payment_id} is {}; only a succeeded payment can be refunded", payment.status),
            ));
        };
        let left = payment.refundable();
        let (amount, key) = match (amount, idempotency_key) {
            (None, _) => (left, format!("{}-refund-{}", payment.id, payment.refunded_amount.normalize())),
            (Some(_), None) => {
                return Err(BillingError::invalid("idempotency_key", "is required for a partial refund"))
            }
            (Some(amount), Some(_)) if amount > left => {
                return Err(BillingError::invalid(
                    "amount",
                    format!("{amount} is more than the {left} {} left to refund", payment.currency),
                ))
            }
            (Some(amount), Some(key)) => {
                let request = Request { action: "refund_payment", target: key, amount: None, metadata: None };
                (amount, format!("{}-refund-{}", payment.id, &request.fingerprint()[..24]))
            }
        };
        let refund = setup.provider.create_refund(provider_id, amount, &payment.currency, &key)?;
        if !refund.succeeded() {
            return Ok(payment);
        }
        let (_, recorded) = self.record_refund(&refund)?;
        recorded.ok_or_else(|| unknown_payment(&payment.id))
    }

    fn return_url(&self, setup: &PaymentSetup, given: Option<&str>) -> Result<String> {
        let url = given.map(str::to_owned).or_else(|| setup.return_url.clone()).ok_or_else(|| {
            BillingError::invalid("return_url", "is required: pass one or set a default in the provider config")
        })?;
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
            return Err(BillingError::invalid("return_url", format!("expected an http(s) URL, got `{url}`")));
        }
        Ok(url)
    }

    fn new_payment(
        &self,
        user_id: &str,
        purpose: Purpose,
        amount: Decimal,
        description: String,
        now: OffsetDateTime,
    ) -> Payment {
        Payment {
            id: uuid::Uuid::new_v4().simple().to_string(),
            user_id: user_id.to_owned(),
            purpose,
            plan_code: None,
            package_code: None,
            amount,
            currency: self.catalog.currency.clone(),
            credits: None,
            description,
            status: PaymentStatus::New,
            provider_payment_id: None,
            provider_key: uuid::Uuid::new_v4().to_string(),
            save_payment_method: false,
            return_url: None,
            confirmation_url: None,
            renewal_of: None,
            refund_id: None,
            refunded_amount: Decimal::ZERO,
            paid_period: None,
            payload: None,
            idempotency_key: None,
            created_at: now,
            updated_at: now,
            paid_at: None,
        }
    }

    /// Sends a `new` payment to the provider with its stored key and records the answer;
    /// a payment already sent is returned as it is.
    fn send(&self, setup: &PaymentSetup, payment: Payment, pay_with: PayWith, capture: bool) -> Result<Payment> {
        if payment.status != PaymentStatus::New {
            return Ok(payment);
        }
        let request = PaymentRequest {
            amount: payment.amount,
            currency: payment.currency.clone(),
            description: payment.description.clone(),
            capture,
            save_payment_method: payment.save_payment_method,
            pay_with,
            metadata: payment.provider_metadata(),
        };
        match setup.provider.create_payment(&request, &payment.provider_key) {
            Ok(object) => Ok(self.record_payment_state(&payment.id, &object)?.1),
            Err(error) => {
                if !error.is_retryable() {
                    self.store.write(|tx| self.after_refusal(tx, &payment.id))?;
                }
                Err(error.into())
            }
        }
    }

    /// The provider refused an attempt. The same key would only repeat the refusal, so
    /// the next attempt gets a new one; a refused renewal counts as declined.
    fn after_refusal(&self, tx: &mut dyn Transaction, payment_id: &str) -> Result<()> {
        let Some(mut payment) = tx.payment(payment_id)? else { return Ok(()) };
        if payment.status != PaymentStatus::New {
            return Ok(());
        }
        let now = self.now();
        payment.updated_at = now;
        if payment.purpose == Purpose::Renewal {
            payment.status = PaymentStatus::Canceled;
            self.apply_effects(tx, &mut payment, now)?;
        } else {
            payment.provider_key = uuid::Uuid::new_v4().to_string();
        }
        tx.update_payment(&payment)
    }

    // ---- applying what the provider reports ----

    /// Records the provider's view of one of our payments, in one transaction.
    fn record_payment_state(&self, payment_id: &str, object: &ProviderPayment) -> Result<(WebhookStatus, Payment)> {
        let now = self.now();
        self.store.write(|tx| {
            let mut payment = tx.payment(payment_id)?.ok_or_else(|| unknown_payment(payment_id))?;
            let status = self.apply_payment_state(tx, &mut payment, object, now)?;
            Ok((status, payment))
        })
    }

    /// Moves `payment` to the status the provider reports, if that is a step forward, and
    /// applies what reaching it means. This is the only place a payment's status changes
    /// after it was sent, so each effect happens once.
    fn apply_payment_state(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        object: &ProviderPayment,
        now: OffsetDateTime,
    ) -> Result<WebhookStatus> {
        let newly_linked = payment.provider_payment_id.is_none();
        if newly_linked {
            payment.provider_payment_id = Some(object.id.clone());
            payment.confirmation_url = object.confirmation_url.clone();
        }
        if !payment.status.can_become(object.status) {
            if newly_linked {
                tx.update_payment(payment)?;
            }
            return Ok(if object.status == payment.status { WebhookStatus::Duplicate } else { WebhookStatus::Ignored });
        }
        payment.status = object.status;
        payment.payload = Some(object.raw.clone());
        payment.updated_at = now;
        if object.status == PaymentStatus::Succeeded {
            payment.paid_at = Some(now);
        }
        if let Some(card) = object.saved_card.as_ref().filter(|_| payment.save_payment_method) {
            tx.save_card(&payment.user_id, card, now)?;
        }
        self.apply_effects(tx, payment, now)?;
        tx.update_payment(payment)?;
        Ok(WebhookStatus::Applied)
    }

    /// What a payment reaching its current status does to the account. The rules of
    /// purchases, renewals and declines live here.
    fn apply_effects(&self, tx: &mut dyn Transaction, payment: &mut Payment, now: OffsetDateTime) -> Result<()> {
        match (payment.purpose, payment.status) {
            (Purpose::Package, PaymentStatus::Succeeded) => {
                let credits = payment.credits.unwrap_or_default();
                let mut account = self.current_account(tx, &payment.user_id, now)?;
                account.credits += credits;
                tx.append_entry(&payment_entry(&account, EntryKind::CreditPurchase, credits, payment, now))?;
                tx.update_account(&account)
            }
            (Purpose::Plan, PaymentStatus::Succeeded) => {
                let plan_code = payment.plan_code.as_deref().unwrap_or_default();
                let plan = self.catalog.paid_plan(plan_code)?;
                let mut account = self.current_account(tx, &payment.user_id, now)?;
                let (kind, extended_from) = match account.active_subscription_mut(now) {
                    // Bought again while active (two purchases raced): the period is added.
                    Some(sub) if sub.plan_code == plan.code => {
                        let from = sub.expires_at;
                        sub.extend(plan);
                        (EntryKind::SubscriptionRenewed, Some(from))
                    }
                    _ => {
                        account.subscription = Some(Subscription::start(plan, now));
                        (EntryKind::SubscriptionActivated, None)
                    }
                };
                self.record_subscription_change(tx, &mut account, kind, extended_from, payment, now)
            }
            (Purpose::Renewal, PaymentStatus::Succeeded) => {
                let mut account = self.current_account(tx, &payment.user_id, now)?;
                let plan = payment.plan_code.as_deref().and_then(|code| self.catalog.plan(code));
                match (account.subscription.as_mut(), plan) {
                    (Some(sub), Some(plan)) if payment.renewal_of.as_deref() == Some(sub.period_key().as_str()) => {
                        let from = sub.expires_at;
                        sub.extend(plan);
                        let kind = EntryKind::SubscriptionRenewed;
                        self.record_subscription_change(tx, &mut account, kind, Some(from), payment, now)
                    }
                    // The subscription changed since the renewal was created: nothing to extend.
                    _ => Ok(()),
                }
            }
            (Purpose::Renewal, PaymentStatus::Canceled) => {
                // Declined: no more attempts; the subscription runs to its end, then the free tier.
                let mut account = self.current_account(tx, &payment.user_id, now)?;
                let Some(sub) = account.subscription.as_mut() else { return Ok(()) };
                sub.cancel(now, false);
                let mut entry = NewEntry::new(&account, EntryKind::SubscriptionCanceled, now);
                entry.entry.reference = Some(payment.id.clone());
                entry.entry.metadata = Some(json!({ "reason": "renewal_declined", "plan_code": payment.plan_code }));
                tx.append_entry(&entry)?;
                tx.update_account(&account)
            }
            _ => Ok(()),
        }
    }

    /// Records that `payment` started or (from `extended_from`) extended the account's
    /// subscription: the period it bought, on the payment, and the ledger entry.
    fn record_subscription_change(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        kind: EntryKind,
        extended_from: Option<OffsetDateTime>,
        payment: &mut Payment,
        now: OffsetDateTime,
    ) -> Result<()> {
        let sub = account.subscription.as_ref().expect("a subscription was just set");
        payment.paid_period = Some(sub.paid_period(extended_from));
        let mut entry = NewEntry::new(account, kind, now);
        entry.entry.source = Some(ChargeSource::Subscription);
        entry.entry.reference = Some(payment.id.clone());
        entry.entry.metadata = Some(json!({
            "plan_code": sub.plan_code,
            "subscription_id": sub.id,
            "expires_at": time_util::iso(sub.expires_at),
        }));
        tx.append_entry(&entry)?;
        tx.update_account(account)
    }

    /// Records a succeeded refund of one of our payments, once per provider refund, and
    /// takes back the refunded share of what the payment gave: a package's credits in
    /// proportion (the balance may go below zero), or, once the whole payment is
    /// refunded, what is still ahead of the subscription period it bought. A refund of
    /// more than is left is capped to what is left, and its ledger entry says so.
    fn record_refund(&self, refund: &ProviderRefund) -> Result<(WebhookStatus, Option<Payment>)> {
        let now = self.now();
        self.store.write(|tx| {
            let Some(mut payment) = tx.payment_by_provider_id(&refund.payment_id)? else {
                return Ok((WebhookStatus::Ignored, None));
            };
            if !matches!(payment.status, PaymentStatus::Succeeded | PaymentStatus::Refunded) {
                return Ok((WebhookStatus::Ignored, Some(payment)));
            }
            let key = format!("refund:{}", refund.id);
            let request = Request { action: "payment_refund", target: &refund.id, amount: None, metadata: None };
            // Applied before (a refund recorded before refunds were keyed has only `refund_id`).
            let recorded = payment.refund_id.as_deref() == Some(refund.id.as_str());
            if recorded || tx.entry_by_key(&payment.user_id, &key)?.is_some() {
                return Ok((WebhookStatus::Duplicate, Some(payment)));
            }
            let applied = refund.amount.min(payment.refundable()).max(Decimal::ZERO);
            let refunded_before = payment.refunded_amount;
            payment.refunded_amount += applied;
            payment.refund_id = Some(refund.id.clone());
            payment.updated_at = now;
            if payment.refunded_amount == payment.amount {
                payment.status = PaymentStatus::Refunded;
            }
            let mut account = self.current_account(tx, &payment.user_id, now)?;
            let mut source = None;
            let mut credits = Decimal::ZERO;
            let mut subscription_expires_at = None;
            match payment.purpose {
                Purpose::Package => {
                    credits = payment.credits_taken_back(payment.refunded_amount)
                        - payment.credits_taken_back(refunded_before);
                    account.credits -= credits;
                    source = Some(ChargeSource::Credits);
                }
                Purpose::Plan | Purpose::Renewal if payment.status == PaymentStatus::Refunded => {
                    let sub = account.subscription.as_mut();
                    if let (Some(sub), Some(period)) = (sub, payment.paid_period.as_ref()) {
                        if sub.take_back(period, now) {
                            source = Some(ChargeSource::Subscription);
                            subscription_expires_at = Some(time_util::iso(sub.expires_at));
                        }
                    }
                }
                _ => {}
            }
            let mut entry = NewEntry::new(&account, EntryKind::PurchaseRefund, now).keyed(&key, &request);
            entry.entry.source = source;
            entry.entry.credits_delta = negate(credits);
            entry.entry.reference = Some(payment.id.clone());
            let mut metadata = json!({
                "refund_id": refund.id,
                "amount": applied.to_string(),
                "refunded_total": payment.refunded_amount.to_string(),
                "package_code": payment.package_code,
                "plan_code": payment.plan_code,
            });
            if applied != refund.amount {
                metadata["capped_from"] = json!(refund.amount.to_string());
            }
            if let Some(expires_at) = subscription_expires_at {
                metadata["subscription_expires_at"] = json!(expires_at);
            }
            entry.entry.metadata = Some(metadata);
            tx.append_entry(&entry)?;
            tx.update_account(&account)?;
            tx.update_payment(&payment)?;
            Ok((WebhookStatus::Applied, Some(payment)))
        })
    }

    // ---- notifications ----

    /// Handles a YooKassa notification: checks it (see [`crate::webhook`]), then applies
    /// it at most once. INVALID_WEBHOOK means reject it for good (answer 400);
    /// PAYMENT_ERROR means the API could not be reached to verify or finish it (answer
    /// 5xx, so YooKassa sends it again).
    pub fn handle_yookassa_webhook(
        &self,
        body: &[u8],
        remote_addr: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<WebhookOutcome> {
        let setup = self.setup()?;
        setup.checks.verify(body, remote_addr, headers, self.now())?;
        let outcome = |status: WebhookStatus, event: String, payment: Option<&Payment>| WebhookOutcome {
            status,
            event,
            payment_id: payment.map(|p| p.id.clone()),
        };
        match webhook::parse(body)? {
            Notification::Other { event } => Ok(outcome(WebhookStatus::Ignored, event, None)),
            Notification::Payment { event, status: claimed, object } => {
                let reported = yookassa::parse_payment(&object).map_err(not_a_notification)?;
                refuse_foreign_id(&reported.id)?;
                let object = if setup.checks.verify_by_fetch {
                    let actual = setup.provider.get_payment(&reported.id).map_err(unknown_to_the_provider)?;
                    if !claimed.may_precede(actual.status) {
                        return Err(BillingError::InvalidWebhook {
                            reason: format!(
                                "`{event}`, but the API reports payment {} as {}",
                                actual.id, actual.status
                            ),
                        });
                    }
                    actual
                } else {
                    reported
                };
                let (status, payment) = self.apply_notified_payment(&object)?;
                if let Some(payment) = &payment {
                    self.release_binding_hold(setup, payment)?;
                }
                Ok(outcome(status, event, payment.as_ref()))
            }
            Notification::Refund { event, object } => {
                let reported = yookassa::parse_refund(&object).map_err(not_a_notification)?;
                refuse_foreign_id(&reported.id)?;
                refuse_foreign_id(&reported.payment_id)?;
                let refund = if setup.checks.verify_by_fetch {
                    setup.provider.get_refund(&reported.id).map_err(unknown_to_the_provider)?
                } else {
                    reported.clone()
                };
                if !refund.succeeded() || refund.payment_id != reported.payment_id {
                    return Err(BillingError::InvalidWebhook {
                        reason: format!("`{event}`, but the API reports refund {} as {}", refund.id, refund.status),
                    });
                }
                let (status, payment) = self.record_refund(&refund)?;
                Ok(outcome(status, event, payment.as_ref()))
            }
        }
    }

    fn apply_notified_payment(&self, object: &ProviderPayment) -> Result<(WebhookStatus, Option<Payment>)> {
        let now = self.now();
        self.store.write(|tx| {
            let Some(mut payment) = find_payment(tx, object)? else { return Ok((WebhookStatus::Ignored, None)) };
            if payment.amount != object.amount || payment.currency != object.currency {
                return Err(BillingError::InvalidWebhook {
                    reason: format!(
                        "payment {} is for {} {}, the notification says {} {}",
                        payment.id, payment.amount, payment.currency, object.amount, object.currency
                    ),
                });
            }
            let status = self.apply_payment_state(tx, &mut payment, object, now)?;
            Ok((status, Some(payment)))
        })
    }

    /// A binding payment only proves the card: once the card is saved, the held ruble is
    /// released (or refunded, if it was captured). Runs on every notification of the
    /// payment, so a failed release is retried with YooKassa's next delivery.
    fn release_binding_hold(&self, setup: &PaymentSetup, payment: &Payment) -> Result<()> {
        let (Purpose::CardBinding, Some(provider_id)) = (payment.purpose, payment.provider_payment_id.as_deref())
        else {
            return Ok(());
        };
        match payment.status {
            PaymentStatus::WaitingForCapture => {
                let canceled = setup.provider.cancel_payment(provider_id, &format!("{}-cancel", payment.id))?;
                self.record_payment_state(&payment.id, &canceled).map(drop)
            }
            PaymentStatus::Succeeded => self.refund_in_full(setup, payment, provider_id),
            _ => Ok(()),
        }
    }

    /// Refunds what is left of a captured binding payment, under a key of its own so a
    /// repeat refunds once.
    fn refund_in_full(&self, setup: &PaymentSetup, payment: &Payment, provider_id: &str) -> Result<()> {
        let key = format!("{}-refund", payment.id);
        let refund = setup.provider.create_refund(provider_id, payment.refundable(), &payment.currency, &key)?;
        if refund.succeeded() {
            self.record_refund(&refund)?;
        }
        Ok(())
    }

    // ---- renewals and expiry ----

    /// Runs what is due now: creates one renewal payment per due subscription period
    /// (autorenew on, a saved card) and sends it, and records the end of subscriptions
    /// that ran out without one. Safe to run from several workers at once: a period is
    /// renewed once, and a renewal is sent with one idempotence key.
    pub fn process_due(&self) -> Result<DueReport> {
        let now = self.now();
        let mut report = DueReport::default();
        for user_id in self.store.read(|tx| tx.users_due(now + RENEWAL_LEAD))? {
            match self.store.write(|tx| self.due_step(tx, &user_id, now))? {
                DueStep::RenewalCreated => report.renewals_created += 1,
                DueStep::Expired => report.expired += 1,
                DueStep::NoProvider => report.renewals_skipped += 1,
                DueStep::Nothing => {}
            }
        }
        let Some(setup) = &self.payments else { return Ok(report) };
        for renewal in self.store.read(|tx| tx.unsent_renewals())? {
            match self.send_renewal(setup, renewal) {
                Ok(()) => report.renewals_sent += 1,
                // The card or the provider failed this time; the next run tries again.
                Err(BillingError::PaymentError { .. } | BillingError::NoPaymentMethod) => report.failures += 1,
                Err(other) => return Err(other),
            }
        }
        Ok(report)
    }

    fn due_step(&self, tx: &mut dyn Transaction, user_id: &str, now: OffsetDateTime) -> Result<DueStep> {
        let mut account = self.current_account(tx, user_id, now)?;
        // Re-checked inside the transaction: another worker may have renewed it since
        // the list of due users was read.
        let due = |sub: &&Subscription| sub.ended_at.is_none() && sub.expires_at <= now + RENEWAL_LEAD;
        let Some(sub) = account.subscription.as_ref().filter(due) else {
            return Ok(DueStep::Nothing);
        };
        let period_key = sub.period_key();
        let renewal = tx.renewal_payment(&period_key)?;
        let wants_renewal = sub.autorenew && sub.canceled_at.is_none();
        if wants_renewal && renewal.is_none() && self.payments.is_none() {
            // This worker cannot charge the card; one that can will renew it. Ending a
            // paying customer's subscription for that would be this worker's mistake.
            return Ok(DueStep::NoProvider);
        }
        if wants_renewal && renewal.is_none() {
            let plan = self.catalog.plan(&sub.plan_code).filter(|plan| !plan.is_free());
            if let (Some(plan), Some(_card)) = (plan, tx.saved_card(user_id)?) {
                let description = format!("{} plan renewal", plan.name);
                let mut payment = self.new_payment(user_id, Purpose::Renewal, plan.price, description, now);
                payment.plan_code = Some(plan.code.clone());
                payment.renewal_of = Some(period_key);
                tx.insert_payment(&payment, None)?;
                return Ok(DueStep::RenewalCreated);
            }
        }
        let in_flight = renewal.is_some_and(|r| !r.status.is_final());
        if now < sub.expires_at || in_flight {
            return Ok(DueStep::Nothing);
        }
        let sub = account.subscription.as_mut().expect("checked above");
        sub.ended_at = Some(now);
        let mut entry = NewEntry::new(&account, EntryKind::SubscriptionExpired, now);
        let sub = account.subscription.as_ref().expect("checked above");
        entry.entry.reference = Some(sub.id.clone());
        entry.entry.metadata =
            Some(json!({ "plan_code": sub.plan_code, "expires_at": time_util::iso(sub.expires_at) }));
        tx.append_entry(&entry)?;
        tx.update_account(&account)?;
        Ok(DueStep::Expired)
    }

    fn send_renewal(&self, setup: &PaymentSetup, renewal: Payment) -> Result<()> {
        let card = self.store.read(|tx| tx.saved_card(&renewal.user_id))?.ok_or(BillingError::NoPaymentMethod)?;
        self.send(setup, renewal, PayWith::SavedMethod { method_id: card.method_id }, true).map(drop)
    }

    // ---- views ----

    /// Seed 003 `PaymentMethod`: the user's saved card, if any.
    pub fn payment_method(&self, user_id: &str) -> Result<PaymentMethodView> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            self.current_account(tx, user_id, now)?;
            Ok(PaymentMethodView::from(tx.saved_card(user_id)?.as_ref()))
        })
    }

    /// Seed 003 `PaymentHistory`, newest first. Payments the provider never accepted are
    /// left out.
    pub fn payments(&self, user_id: &str, limit: u32) -> Result<PaymentHistory> {
        input::id("user_id", user_id)?;
        input::page_size(limit)?;
        let now = self.now();
        self.store.read(|tx| {
            self.current_account(tx, user_id, now)?;
            let results = tx.payment_history(user_id, limit)?.iter().map(PaymentHistoryItem::from).collect();
            Ok(PaymentHistory { results })
        })
    }

    /// One payment as the engine records it.
    pub fn payment(&self, payment_id: &str) -> Result<Payment> {
        input::id("payment_id", payment_id)?;
        self.store.read(|tx| tx.payment(payment_id))?.ok_or_else(|| unknown_payment(payment_id))
    }
}

enum DueStep {
    Nothing,
    /// An auto-renewing subscription is due, and this handle has no provider to renew it.
    NoProvider,
    RenewalCreated,
    Expired,
}

fn refuse_if_subscribed(account: &Account, now: OffsetDateTime) -> Result<()> {
    match account.active_subscription(now) {
        Some(active) => {
            Err(BillingError::ActiveSubscription { plan_code: active.plan_code.clone(), expires_at: active.expires_at })
        }
        None => Ok(()),
    }
}

/// The payment a provider object is about: by the provider's id, or, before that id is
/// stored (a notification that overtook the create answer), by our id in its metadata.
fn find_payment(tx: &mut dyn Transaction, object: &ProviderPayment) -> Result<Option<Payment>> {
    if let Some(payment) = tx.payment_by_provider_id(&object.id)? {
        return Ok(Some(payment));
    }
    let Some(ours) = &object.engine_payment_id else { return Ok(None) };
    Ok(tx.payment(ours)?.filter(|payment| payment.provider_payment_id.is_none()))
}

fn created(payment: &Payment) -> Result<CreatedPayment> {
    let missing = |what: &str| ProviderError::BadResponse { message: format!("payment {} has no {what}", payment.id) };
    Ok(CreatedPayment {
        payment_id: payment.id.clone(),
        yookassa_payment_id: payment.provider_payment_id.clone().ok_or_else(|| missing("provider id"))?,
        confirmation_url: payment.confirmation_url.clone().ok_or_else(|| missing("confirmation_url"))?,
    })
}

fn payment_entry(
    account: &Account,
    kind: EntryKind,
    delta: Decimal,
    payment: &Payment,
    now: OffsetDateTime,
) -> NewEntry {
    let mut entry = credits_entry(account, kind, delta, now);
    entry.entry.reference = Some(payment.id.clone());
    entry.entry.metadata = Some(json!({ "package_code": payment.package_code, "amount": payment.amount.to_string() }));
    entry
}

fn unknown_payment(payment_id: &str) -> BillingError {
    BillingError::invalid("payment_id", format!("no payment `{payment_id}`"))
}

/// A notification about an id no YooKassa object can have is forged or garbled.
fn refuse_foreign_id(id: &str) -> Result<()> {
    if yookassa::is_object_id(id) {
        return Ok(());
    }
    Err(BillingError::InvalidWebhook { reason: format!("`{}` is not a YooKassa object id", id.escape_debug()) })
}

/// The verifying read: an object the provider does not have was never created there,
/// so the notification is forged or misrouted, and final (a retry would be refused
/// again). Only a provider that could not answer makes it worth retrying.
fn unknown_to_the_provider(error: ProviderError) -> BillingError {
    match error {
        ProviderError::NotFound { message } => {
            BillingError::InvalidWebhook { reason: format!("the provider has no such object ({message})") }
        }
        other => other.into(),
    }
}

fn not_a_notification(error: ProviderError) -> BillingError {
    BillingError::InvalidWebhook { reason: format!("the notification's object is not a payment: {error}") }
}
