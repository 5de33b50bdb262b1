//! Checkout: creating payments at the provider, card binding, refunds an admin asks
//! for, and the payment views.
//!
//! Provider calls never run inside a store transaction, so a slow provider never holds
//! the write lock. A payment is therefore written in steps: recorded as `new` with the
//! idempotence key it will be sent with, sent, then updated from the provider's answer.
//! A crash or failure between the steps leaves a `new` payment that the next attempt
//! sends again with the same key, which the provider answers with the first result.

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;
use time::OffsetDateTime;

use super::Billing;
use crate::account::Account;
use crate::audit::{AuditOutcome, NewAuditRecord};
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::Request;
use crate::payment::{
    self, CreatedPayment, Payment, PaymentHistory, PaymentHistoryItem, PaymentMethodView, PaymentStatus, Purpose,
};
use crate::provider::{PayWith, PaymentProvider, PaymentRequest, ProviderError, RefundRequest};
use crate::receipt::{CustomerContact, Receipt};
use crate::store::{Store, Transaction};
use crate::webhook::WebhookChecks;
#[cfg(feature = "yookassa")]
use crate::yookassa::YooKassaConfig;

/// What a binding payment holds: 1 unit of the catalog's currency.
const BINDING_AMOUNT: Decimal = Decimal::ONE;

/// How long a call's claim on sending a payment lasts: longer than the provider client
/// takes with its retries.
const SENDING_CLAIM: time::Duration = time::Duration::seconds(60);

enum Sending {
    /// This call sends it.
    Ours(Payment),
    /// The provider has it already (another call sent it).
    Done(Payment),
}

pub(super) struct PaymentSetup {
    pub(super) provider: Arc<dyn PaymentProvider>,
    pub(super) checks: WebhookChecks,
    return_url: Option<String>,
    /// `Some` when every payment and refund carries a 54-FZ receipt: the shop's tax
    /// system, if it names one.
    receipts: Option<Option<u8>>,
}

/// What a payment created by [`Billing::create_payment`] buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purchase<'a> {
    Plan(&'a str),
    Package(&'a str),
}

impl<S: Store> Billing<S> {
    /// Takes payments through YooKassa.
    #[cfg(feature = "yookassa")]
    pub fn with_yookassa(self, config: &YooKassaConfig) -> Result<Self> {
        let (client, checks) = config.build()?;
        if config.receipts && self.catalog.receipt.is_none() {
            return Err(BillingError::invalid(
                "receipts",
                "receipts are on, so the catalog needs a [receipt] table with a vat_code",
            ));
        }
        let mut billing = self.with_provider(Arc::new(client), checks, config.return_url.clone());
        if let Some(setup) = billing.payments.as_mut() {
            setup.receipts = config.receipts.then_some(config.tax_system_code);
        }
        Ok(billing)
    }

    /// Takes payments through any [`PaymentProvider`]; its notifications are read by the
    /// provider itself, in [`handle_yookassa_webhook`](Self::handle_yookassa_webhook).
    pub fn with_provider(
        mut self,
        provider: Arc<dyn PaymentProvider>,
        checks: WebhookChecks,
        return_url: Option<String>,
    ) -> Self {
        self.payments = Some(PaymentSetup { provider, checks, return_url, receipts: None });
        self
    }

    /// Whether a payment of `user_id` can carry the receipt the shop must send: receipts
    /// are off, or the user has a contact.
    pub(super) fn can_send_receipt(&self, tx: &mut dyn Transaction, user_id: &str) -> Result<bool> {
        let receipts_on = self.payments.as_ref().is_some_and(|setup| setup.receipts.is_some());
        Ok(!receipts_on || tx.customer_contact(user_id)?.is_some())
    }

    pub(super) fn setup(&self) -> Result<&PaymentSetup> {
        self.payments.as_ref().ok_or_else(|| ProviderError::NotConfigured.into())
    }

    /// Creates a payment for a paid plan or a credit package and returns where to send
    /// the user to pay. Idempotent by key: a repeat returns the same payment, and a
    /// repeat after a failure sends the same attempt again instead of creating another.
    ///
    /// `contact` is where the receipt goes; it is kept as the user's contact (see
    /// [`set_customer_contact`](Self::set_customer_contact)) for the receipts of later
    /// renewals and refunds. When the shop sends receipts, a payment with no contact,
    /// given or kept, is INVALID_ARGUMENT (`customer_contact`) before anything is written
    /// or sent.
    pub fn create_payment(
        &self,
        user_id: &str,
        purchase: Purchase<'_>,
        return_url: Option<&str>,
        save_payment_method: bool,
        idempotency_key: &str,
        contact: Option<&CustomerContact>,
    ) -> Result<CreatedPayment> {
        input::id("user_id", user_id)?;
        input::id("idempotency_key", idempotency_key)?;
        let audit = self.audit_record("payment.create", Some(user_id));
        let earlier = self.payment_by_key(user_id, Some(idempotency_key))?;
        let contact = contact.map(|c| CustomerContact::new(c.email.as_deref(), c.phone.as_deref())).transpose()?;
        let contact = contact.as_ref();
        let setup = self.setup()?;
        let return_url = self.return_url(setup, return_url)?;
        let now = self.now();
        let mut payment = match purchase {
            Purchase::Plan(code) => {
                let plan = self.catalog.paid_plan(code)?;
                let mut payment =
                    self.new_payment(user_id, Purpose::Plan, plan.price, payment::plan_description(&plan.name), now);
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
                    payment::package_description(package.credits),
                    now,
                );
                payment.package_code = Some(package.code.clone());
                payment.credits = Some(package.credits);
                payment
            }
        };
        payment.save_payment_method = save_payment_method;
        payment.return_url = Some(return_url.clone());
        let payment = self.record_new_payment(payment, Some(idempotency_key), contact, now)?;
        let payment = self.send(setup, payment, PayWith::Redirect { return_url }, true)?;
        self.audit_payment(audit, &payment, earlier.as_ref())?;
        created(&payment)
    }

    /// Records `payment` as `new`, or, when `key` was used before, returns the payment
    /// recorded under it (IDEMPOTENCY_CONFLICT when that one was another request). A
    /// plan is refused while one is active; the contact is kept or required (see
    /// `keep_contact`).
    fn record_new_payment(
        &self,
        mut payment: Payment,
        key: Option<&str>,
        contact: Option<&CustomerContact>,
        now: OffsetDateTime,
    ) -> Result<Payment> {
        payment.idempotency_key = key.map(str::to_owned);
        let target = format!(
            "{}:{}:{}:{}",
            payment.purpose.as_str(),
            payment.plan_code.as_deref().or(payment.package_code.as_deref()).unwrap_or_default(),
            payment.return_url.as_deref().unwrap_or_default(),
            payment.save_payment_method
        );
        let fingerprint =
            Request { action: "create_payment", target: &target, amount: Some(payment.amount), metadata: None }
                .fingerprint();
        let user_id = payment.user_id.clone();
        self.store.write(&user_id, |tx| {
            if let Some(key) = key {
                if let Some((earlier, hash)) = tx.payment_by_key(&user_id, key)? {
                    if hash.as_deref() != Some(fingerprint.as_str()) {
                        return Err(BillingError::IdempotencyConflict { key: key.to_owned() });
                    }
                    return Ok(earlier);
                }
            }
            let account = self.current_account(tx, &user_id, now)?;
            if payment.purpose == Purpose::Plan {
                refuse_if_subscribed(&account, now)?;
            }
            self.keep_contact(tx, &user_id, contact, now)?;
            tx.insert_payment(&payment, key.map(|_| fingerprint.as_str()))?;
            Ok(payment.clone())
        })
    }

    /// Starts saving the user's payment method: a 1 RUB payment held at
    /// `waiting_for_capture` and then canceled, so no money is kept. The method is saved
    /// when the provider reports the hold (see
    /// [`handle_yookassa_webhook`](Self::handle_yookassa_webhook)). With a key, a repeat
    /// (twenty clicks) returns the same binding instead of holding another ruble.
    pub fn start_card_binding(
        &self,
        user_id: &str,
        return_url: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<CreatedPayment> {
        input::id("user_id", user_id)?;
        if let Some(key) = idempotency_key {
            input::id("idempotency_key", key)?;
        }
        let audit = self.audit_record("payment.card_binding", Some(user_id));
        let earlier = self.payment_by_key(user_id, idempotency_key)?;
        let setup = self.setup()?;
        let return_url = self.return_url(setup, return_url)?;
        let now = self.now();
        let mut payment =
            self.new_payment(user_id, Purpose::CardBinding, BINDING_AMOUNT, payment::BINDING_DESCRIPTION.into(), now);
        payment.save_payment_method = true;
        payment.return_url = Some(return_url.clone());
        let payment = self.record_new_payment(payment, idempotency_key, None, now)?;
        let payment = self.send(setup, payment, PayWith::Redirect { return_url }, false)?;
        self.audit_payment(audit, &payment, earlier.as_ref())?;
        created(&payment)
    }

    /// Refunds a succeeded payment (an admin action): the whole of what is left when
    /// `amount` is `None`, else `amount`, which needs an `idempotency_key` so that a
    /// retried call refunds once. What the refund takes back is applied when the
    /// provider confirms it, in the answer or in `refund.succeeded` (see
    /// [`Payment::credits_taken_back`] and [`Subscription::take_back`](crate::subscription::Subscription::take_back)).
    pub fn refund_payment(
        &self,
        payment_id: &str,
        amount: Option<Decimal>,
        idempotency_key: Option<&str>,
    ) -> Result<Payment> {
        let audit = self.audit_record("payment.refund", None).target(payment_id);
        let before = self.store.read(|tx| Ok(tx.payment(payment_id)?)).ok().flatten();
        let audit = NewAuditRecord { user_id: before.as_ref().map(|p| p.user_id.clone()), ..audit };
        let refunded = self.refund_payment_in(payment_id, amount, idempotency_key)?;
        self.audit_payment(audit, &refunded, before.as_ref())?;
        Ok(refunded)
    }

    fn refund_payment_in(
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
        let payment = self.payment(payment_id)?;
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
        Ok(self.send_refund(setup, &payment, provider_id, amount, &key)?.unwrap_or(payment))
    }

    /// Asks the provider to refund `amount` of `payment` under the idempotence `key`, and
    /// records the refund if the provider confirms it at once, returning the payment as
    /// recorded then; a pending refund (`None`) is recorded when `refund.succeeded` comes.
    pub(super) fn send_refund(
        &self,
        setup: &PaymentSetup,
        payment: &Payment,
        provider_id: &str,
        amount: Decimal,
        key: &str,
    ) -> Result<Option<Payment>> {
        let receipt = self.receipt(setup, payment, amount)?;
        let request = RefundRequest {
            provider_payment_id: provider_id.to_owned(),
            amount,
            currency: payment.currency.clone(),
            receipt,
        };
        let refund = setup.provider.create_refund(&request, key)?;
        if !refund.succeeded() {
            return Ok(None);
        }
        // What the refund takes back follows the payment's refunded total as the API
        // counts it, the one number every path (this answer, `refund.succeeded`, a late
        // `payment.succeeded`) agrees on.
        let object = setup.provider.get_payment(provider_id)?;
        Ok(Some(self.record_payment_state(&payment.id, &object, Some(&refund.id))?.1))
    }

    /// Where the user's receipts go, set or replaced: an email, a phone, or both (see
    /// [`CustomerContact::new`]).
    pub fn set_customer_contact(
        &self,
        user_id: &str,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<CustomerContact> {
        input::id("user_id", user_id)?;
        let contact = CustomerContact::new(email, phone)?;
        let now = self.now();
        self.store.write(user_id, |tx| {
            self.current_account(tx, user_id, now)?;
            tx.set_customer_contact(user_id, &contact, now)?;
            Ok(contact.clone())
        })
    }

    /// Where the user's receipts go, if set.
    pub fn customer_contact(&self, user_id: &str) -> Result<Option<CustomerContact>> {
        input::id("user_id", user_id)?;
        self.store.read(|tx| Ok(tx.customer_contact(user_id)?))
    }

    /// Keeps a contact given with a payment as the user's; when receipts are on, refuses
    /// a payment for which no contact is given or kept.
    fn keep_contact(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        given: Option<&CustomerContact>,
        now: OffsetDateTime,
    ) -> Result<()> {
        match given {
            Some(contact) => Ok(tx.set_customer_contact(user_id, contact, now)?),
            None if !self.can_send_receipt(tx, user_id)? => Err(no_contact()),
            None => Ok(()),
        }
    }

    /// The 54-FZ receipt for `amount` of `payment`, when the shop sends receipts: the
    /// item the payment is for, as the catalog describes it, to the user's contact.
    fn receipt(&self, setup: &PaymentSetup, payment: &Payment, amount: Decimal) -> Result<Option<Receipt>> {
        let Some(tax_system_code) = setup.receipts else { return Ok(None) };
        let contact = self.store.read(|tx| Ok(tx.customer_contact(&payment.user_id)?))?.ok_or_else(no_contact)?;
        let settings = self
            .catalog
            .receipt_settings(payment.plan_code.as_deref(), payment.package_code.as_deref())
            .cloned()
            .ok_or_else(|| BillingError::invalid("receipts", "the catalog has no [receipt] table"))?;
        let receipt =
            Receipt::single(contact, &payment.description, amount, &payment.currency, settings, tax_system_code);
        receipt.check(amount)?;
        Ok(Some(receipt))
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

    pub(super) fn new_payment(
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
            crypto: None,
        }
    }

    /// Sends a `new` payment to the provider with its stored key and records the answer;
    /// a payment already sent is returned as it is. One call sends it: the call claims
    /// the sending in the store first, and a concurrent call with the same payment waits
    /// for that call's result instead of sending it again.
    pub(super) fn send(
        &self,
        setup: &PaymentSetup,
        payment: Payment,
        pay_with: PayWith,
        capture: bool,
    ) -> Result<Payment> {
        let payment = match self.claim_sending(payment)? {
            Sending::Ours(payment) => payment,
            Sending::Done(payment) => return Ok(payment),
        };
        let request = PaymentRequest {
            amount: payment.amount,
            currency: payment.currency.clone(),
            description: payment.description.clone(),
            capture,
            save_payment_method: payment.save_payment_method,
            pay_with,
            metadata: payment.provider_metadata(),
            receipt: self.receipt(setup, &payment, payment.amount)?,
        };
        match setup.provider.create_payment(&request, &payment.provider_key) {
            Ok(object) => Ok(self.record_payment_state(&payment.id, &object, None)?.1),
            Err(error) => {
                self.store.write(&payment.user_id, |tx| {
                    tx.end_sending(&payment.id)?;
                    if error.is_retryable() {
                        return Ok(());
                    }
                    self.after_refusal(tx, &payment.id)
                })?;
                Err(error.into())
            }
        }
    }

    /// Waits until this call may send `payment`, or until another call has sent it. A
    /// claim lasts [`SENDING_CLAIM`], so a process that died while sending holds nobody
    /// up for longer.
    fn claim_sending(&self, payment: Payment) -> Result<Sending> {
        let waited_since = Instant::now();
        loop {
            let now = self.now();
            let claimed = self.store.write(&payment.user_id, |tx| {
                let current = tx.payment(&payment.id)?.ok_or_else(|| unknown_payment(&payment.id))?;
                if current.status != PaymentStatus::New {
                    return Ok(Some(Sending::Done(current)));
                }
                let ours = tx.claim_sending(&current.id, now + SENDING_CLAIM, now)?;
                Ok(ours.then_some(Sending::Ours(current)))
            })?;
            if let Some(sending) = claimed {
                return Ok(sending);
            }
            if waited_since.elapsed() > SENDING_CLAIM.unsigned_abs() {
                let message = "another call is sending this payment; try again".to_owned();
                return Err(ProviderError::Unavailable { message }.into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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
            self.apply_effects(tx, &mut payment, None, now)?;
        } else {
            payment.provider_key = uuid::Uuid::new_v4().to_string();
        }
        Ok(tx.update_payment(&payment)?)
    }

    /// The payment an earlier call recorded under the user's `key`, for the audit log to
    /// tell a replay from a new payment.
    fn payment_by_key(&self, user_id: &str, key: Option<&str>) -> Result<Option<Payment>> {
        let Some(key) = key else { return Ok(None) };
        Ok(self.store.read(|tx| Ok(tx.payment_by_key(user_id, key)?))?.map(|(payment, _)| payment))
    }

    /// Appends the record of an operation on `after`, with the payment as it was
    /// (`before`). Payment operations span provider calls and several transactions, so
    /// the record follows the call in a transaction of its own.
    fn audit_payment(&self, audit: NewAuditRecord, after: &Payment, before: Option<&Payment>) -> Result<()> {
        let unchanged = before.is_some_and(|before| before == after);
        let record = NewAuditRecord { user_id: Some(after.user_id.clone()), ..audit }
            .target(after.id.as_str())
            .change(before.map(payment_summary), Some(payment_summary(after)))
            .outcome(if unchanged { AuditOutcome::Unchanged } else { AuditOutcome::Applied });
        self.append_audit(&record)
    }

    // ---- views ----

    /// Seed 003 `PaymentMethod`: the user's saved card, if any.
    pub fn payment_method(&self, user_id: &str) -> Result<PaymentMethodView> {
        input::id("user_id", user_id)?;
        let now = self.now();
        self.store.read(|tx| {
            self.current_account(tx, user_id, now)?;
            Ok(PaymentMethodView::from(tx.saved_method(user_id)?.as_ref()))
        })
    }

    /// Seed 003 `PaymentHistory`, newest first. Card bindings (they buy nothing) and
    /// payments the provider never accepted are left out; a status is seed 003's word
    /// for it ([`Payment::history_status`]).
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
        self.store.read(|tx| Ok(tx.payment(payment_id)?))?.ok_or_else(|| unknown_payment(payment_id))
    }
}

/// What the audit log keeps of a payment before and after an operation on it.
pub(super) fn payment_summary(payment: &Payment) -> serde_json::Value {
    serde_json::json!({
        "purpose": payment.purpose.as_str(),
        "plan_code": payment.plan_code,
        "package_code": payment.package_code,
        "amount": payment.amount.to_string(),
        "currency": payment.currency,
        "status": payment.status.as_str(),
        "refunded_amount": payment.refunded_amount.to_string(),
    })
}

fn refuse_if_subscribed(account: &Account, now: OffsetDateTime) -> Result<()> {
    match account.active_subscription(now) {
        Some(active) => {
            Err(BillingError::ActiveSubscription { plan_code: active.plan_code.clone(), expires_at: active.expires_at })
        }
        None => Ok(()),
    }
}

fn created(payment: &Payment) -> Result<CreatedPayment> {
    let missing = |what: &str| ProviderError::BadResponse { message: format!("payment {} has no {what}", payment.id) };
    Ok(CreatedPayment {
        payment_id: payment.id.clone(),
        yookassa_payment_id: payment.provider_payment_id.clone().ok_or_else(|| missing("provider id"))?,
        confirmation_url: payment.confirmation_url.clone().ok_or_else(|| missing("confirmation_url"))?,
    })
}

fn no_contact() -> BillingError {
    BillingError::invalid("customer_contact", "receipts are on: give an email or a phone for the receipt")
}

pub(super) fn unknown_payment(payment_id: &str) -> BillingError {
    BillingError::invalid("payment_id", format!("no payment `{payment_id}`"))
}
