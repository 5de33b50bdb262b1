//! Applying what the provider reports, in its answers and in notifications, exactly
//! once: a payment's status moves forward only ([`PaymentStatus::can_become`]), its
//! refunded total only grows, and each move is what applies its effects
//! (`payment::status_effects`, `payment::refund_effects`). So whatever order the
//! notifications come in, the end state is the state the provider's API reports.
//!
//! A notification about an object the engine never created (another shop posting to the
//! same URL, a payment made elsewhere) is `ignored` before any call to the provider, so
//! that the provider stops sending it.

use time::OffsetDateTime;

use super::checkout::{unknown_payment, PaymentSetup};
use super::Billing;
use crate::audit::{AuditOutcome, NewAuditRecord};
use crate::error::{BillingError, Result};
use crate::events;
use crate::ledger::Request;
use crate::payment::{self, Payment, PaymentStatus, Purpose, SavedMethod};
use crate::provider::{Notification, ProviderError, ProviderMethod, ProviderPayment, ProviderRefund};
use crate::store::{Store, Transaction};
use crate::webhook::{WebhookOutcome, WebhookStatus};

/// The cancellation reason YooKassa gives when the user revoked the permission to charge
/// a saved method.
const PERMISSION_REVOKED: &str = "permission_revoked";

impl<S: Store> Billing<S> {
    /// Handles a YooKassa notification: checks it (see [`crate::webhook`]), then applies
    /// it at most once. INVALID_WEBHOOK means reject it for good: nothing will ever apply
    /// it. PAYMENT_ERROR means the API could not be reached to verify or finish it, and
    /// a retry can help (answer 5xx, so YooKassa sends it again). The body is read by
    /// the configured provider.
    ///
    /// Every notification's outcome, a rejection included, is in the audit log
    /// (`webhook.yookassa`).
    pub fn handle_yookassa_webhook(
        &self,
        body: &[u8],
        remote_addr: Option<&str>,
        headers: &[(String, String)],
    ) -> Result<WebhookOutcome> {
        let audit = self.audit_record("webhook.yookassa", None);
        let outcome = self.audited(&audit, || self.handle_yookassa_notification(body, remote_addr, headers));
        self.count_webhook("yookassa", &outcome, |o| o.status.as_str());
        let outcome = outcome?;
        self.audit_webhook(audit, &outcome)?;
        Ok(outcome)
    }

    /// Appends the record of a notification the engine took: what it was about, and
    /// whether it changed anything.
    pub(super) fn audit_webhook(&self, audit: NewAuditRecord, outcome: &WebhookOutcome) -> Result<()> {
        let payment = outcome.payment_id.as_deref().map(|id| self.payment(id)).transpose()?;
        let record = NewAuditRecord { user_id: payment.as_ref().map(|p| p.user_id.clone()), ..audit }
            .target(match &outcome.payment_id {
                Some(id) => format!("{} {id}", outcome.event),
                None => outcome.event.clone(),
            })
            .change(None, payment.as_ref().map(super::checkout::payment_summary))
            .outcome(match outcome.status {
                WebhookStatus::Applied => AuditOutcome::Applied,
                _ => AuditOutcome::Unchanged,
            });
        self.append_audit(&record)
    }

    fn handle_yookassa_notification(
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
        match setup.provider.read_notification(body)? {
            Notification::Other { event } => Ok(outcome(WebhookStatus::Ignored, event, None)),
            Notification::Payment { event, status: claimed, payment: reported } => {
                if self.store.read(|tx| find_payment(tx, &reported))?.is_none() {
                    return Ok(outcome(WebhookStatus::Ignored, event, None));
                }
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
                    *reported
                };
                let (status, payment) = self.apply_notified_payment(&object)?;
                if let Some(payment) = &payment {
                    self.release_binding_hold(setup, payment)?;
                }
                Ok(outcome(status, event, payment.as_ref()))
            }
            Notification::Refund { event, refund: reported } => {
                let Some(ours) = self.store.read(|tx| Ok(tx.payment_by_provider_id(&reported.payment_id)?))? else {
                    return Ok(outcome(WebhookStatus::Ignored, event, None));
                };
                if setup.checks.verify_by_fetch {
                    verify_refund(
                        &setup.provider.get_refund(&reported.id).map_err(unknown_to_the_provider)?,
                        &reported,
                    )?;
                }
                // A refund object cannot say what the payment's refunds add up to, and
                // it may come before the payment's own success: the payment as the API
                // has it now says both.
                let object = setup.provider.get_payment(&reported.payment_id).map_err(unknown_to_the_provider)?;
                let (status, payment) = self.record_payment_state(&ours.id, &object, Some(&reported.id))?;
                Ok(outcome(status, event, Some(&payment)))
            }
            Notification::PaymentMethod { event, method: reported } => {
                let method_id = &reported.method.method_id;
                let Some((user_id, _)) = self.store.read(|tx| Ok(tx.saved_method_by_id(method_id)?))? else {
                    return Ok(outcome(WebhookStatus::Ignored, event, None));
                };
                let method = if setup.checks.verify_by_fetch {
                    setup.provider.get_payment_method(method_id).map_err(unknown_to_the_provider)?
                } else {
                    reported
                };
                let now = self.now();
                let status = self.store.write(&user_id, |tx| self.apply_method_state(tx, &user_id, &method, now))?;
                Ok(outcome(status, event, None))
            }
        }
    }

    /// Records the provider's view of one of our payments, in one transaction;
    /// `refund_id` names the refund that led to reading it, if one did.
    pub(super) fn record_payment_state(
        &self,
        payment_id: &str,
        object: &ProviderPayment,
        refund_id: Option<&str>,
    ) -> Result<(WebhookStatus, Payment)> {
        let now = self.now();
        let owner = self.payment(payment_id)?.user_id;
        self.store.write(&owner, |tx| {
            let mut payment = tx.payment(payment_id)?.ok_or_else(|| unknown_payment(payment_id))?;
            let status = self.apply_payment_state(tx, &mut payment, object, refund_id, now)?;
            Ok((status, payment))
        })
    }

    /// Brings `payment` to the state the provider reports: its status, if that is a step
    /// forward, then its refunded total, if that grew, applying what each move means.
    /// This is the only place a payment changes after it was sent, so each effect
    /// happens once.
    fn apply_payment_state(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        object: &ProviderPayment,
        refund_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<WebhookStatus> {
        let newly_linked = payment.provider_payment_id.is_none();
        if newly_linked {
            payment.provider_payment_id = Some(object.id.clone());
            payment.confirmation_url = object.confirmation_url.clone();
        }
        let moved = payment.status.can_become(object.status);
        if moved {
            self.apply_status(tx, payment, object, now)?;
        }
        let refunded = self.apply_refunded_total(tx, payment, object, refund_id, now)?;
        if moved || refunded || newly_linked {
            tx.update_payment(payment)?;
        }
        let as_reported = match payment.status {
            PaymentStatus::Refunded => PaymentStatus::Succeeded,
            status => status,
        };
        Ok(match (moved || refunded, object.status == as_reported) {
            (true, _) => WebhookStatus::Applied,
            (false, true) => WebhookStatus::Duplicate,
            (false, false) => WebhookStatus::Ignored,
        })
    }

    fn apply_status(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        object: &ProviderPayment,
        now: OffsetDateTime,
    ) -> Result<()> {
        payment.status = object.status;
        payment.payload = Some(object.raw.clone());
        payment.updated_at = now;
        if object.status == PaymentStatus::Succeeded {
            payment.paid_at = Some(object.paid_at.unwrap_or(now));
        }
        if let Some(method) = object.saved_method.as_ref().filter(|_| payment.save_payment_method) {
            tx.save_method(&payment.user_id, &SavedMethod { saved_at: Some(now), ..method.clone() }, now)?;
        }
        if object.cancellation_reason.as_deref() == Some(PERMISSION_REVOKED) {
            self.forget_method(tx, &payment.user_id, object.method_id.as_deref(), now)?;
        }
        self.apply_effects(tx, payment, None, now)
    }

    /// Records money the provider has refunded on `payment` since the engine last looked,
    /// once per move of the total (the entry is keyed by the total it reaches).
    fn apply_refunded_total(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        object: &ProviderPayment,
        refund_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let paid = matches!(payment.status, PaymentStatus::Succeeded | PaymentStatus::Refunded);
        if !paid || object.refunded_amount <= payment.refunded_amount || payment.refundable().is_zero() {
            return Ok(false);
        }
        let key = format!("refunded:{}:{}", payment.id, object.refunded_amount.normalize());
        if tx.entry_by_key(&payment.user_id, &key)?.is_some() {
            return Ok(false);
        }
        let reported = object.refunded_amount - payment.refunded_amount;
        let request = Request { action: "payment_refund", target: &key, amount: None, metadata: None };
        let mut account = self.current_account(tx, &payment.user_id, now)?;
        let entry = payment::refund_effects(payment, refund_id, reported, &mut account, now);
        self.record(tx, &mut account, entry.keyed(&key, &request))?;
        tx.update_account(&account)?;
        Ok(true)
    }

    /// Forgets the user's saved method when it is the one the provider says can no longer
    /// be charged (any, when the provider does not say which), and turns renewal off, so
    /// the engine never promises a renewal it cannot make.
    fn forget_method(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        method_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool> {
        let Some(saved) = tx.saved_method(user_id)? else { return Ok(false) };
        if method_id.is_some_and(|id| id != saved.method_id) {
            return Ok(false);
        }
        tx.forget_method(user_id)?;
        let mut account = self.current_account(tx, user_id, now)?;
        if let Some(sub) = account.subscription.as_mut().filter(|sub| sub.autorenew) {
            sub.autorenew = false;
            tx.update_account(&account)?;
        }
        Ok(true)
    }

    /// `payment_method.active`: an active method is confirmed with what the provider says
    /// of it; one that is not (revoked, expired) is forgotten.
    fn apply_method_state(
        &self,
        tx: &mut dyn Transaction,
        user_id: &str,
        reported: &ProviderMethod,
        now: OffsetDateTime,
    ) -> Result<WebhookStatus> {
        // Read again under the user's lock: another method may have been bound since.
        let Some(saved) = tx.saved_method(user_id)?.filter(|m| m.method_id == reported.method.method_id) else {
            return Ok(WebhookStatus::Ignored);
        };
        if !reported.active {
            self.forget_method(tx, user_id, Some(&saved.method_id), now)?;
            return Ok(WebhookStatus::Applied);
        }
        let confirmed = SavedMethod { saved_at: saved.saved_at, ..reported.method.clone() };
        if confirmed == saved {
            return Ok(WebhookStatus::Duplicate);
        }
        tx.save_method(user_id, &confirmed, saved.saved_at.unwrap_or(now))?;
        Ok(WebhookStatus::Applied)
    }

    /// Records what `payment` reaching its status does to its user's account, and the
    /// event that says it did.
    /// `key`, when given, keys the first entry (a crypto credit, once per transfer).
    pub(super) fn apply_effects(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        key: Option<(&str, &Request)>,
        now: OffsetDateTime,
    ) -> Result<()> {
        if let Some(event) = events::from_payment(payment, now) {
            tx.append_event(&event)?;
        }
        self.record_payment_outcome(tx, payment, now)?;
        let mut account = self.current_account(tx, &payment.user_id, now)?;
        let entries = payment::status_effects(payment, &mut account, &self.catalog, now)?;
        if entries.is_empty() {
            return Ok(());
        }
        for (i, entry) in entries.into_iter().enumerate() {
            let entry = match key {
                Some((key, request)) if i == 0 => entry.keyed(key, request),
                _ => entry,
            };
            self.record(tx, &mut account, entry)?;
        }
        Ok(tx.update_account(&account)?)
    }

    fn apply_notified_payment(&self, object: &ProviderPayment) -> Result<(WebhookStatus, Option<Payment>)> {
        let now = self.now();
        let Some(owner) = self.store.read(|tx| find_payment(tx, object))? else {
            return Ok((WebhookStatus::Ignored, None));
        };
        self.store.write(&owner.user_id, |tx| {
            let Some(mut payment) = find_payment(tx, object)? else { return Ok((WebhookStatus::Ignored, None)) };
            if payment.amount != object.amount || payment.currency != object.currency {
                return Err(BillingError::InvalidWebhook {
                    reason: format!(
                        "payment {} is for {} {}, the notification says {} {}",
                        payment.id, payment.amount, payment.currency, object.amount, object.currency
                    ),
                });
            }
            let status = self.apply_payment_state(tx, &mut payment, object, None, now)?;
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
                self.record_payment_state(&payment.id, &canceled, None).map(drop)
            }
            // Captured after all: refund what is left, under a key of its own so a repeat
            // refunds once.
            PaymentStatus::Succeeded => {
                let key = format!("{}-refund", payment.id);
                self.send_refund(setup, payment, provider_id, payment.refundable(), &key).map(drop)
            }
            _ => Ok(()),
        }
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

/// A refund notification must name a refund the API has, succeeded, of that payment.
fn verify_refund(actual: &ProviderRefund, reported: &ProviderRefund) -> Result<()> {
    if actual.succeeded() && actual.payment_id == reported.payment_id {
        return Ok(());
    }
    Err(BillingError::InvalidWebhook {
        reason: format!("`refund.succeeded`, but the API reports refund {} as {}", actual.id, actual.status),
    })
}

/// The verifying read of an object of a payment the engine did create: one the provider
/// does not have was never created there, so the notification is forged, and final (a
/// retry would be refused again). Only a provider that could not answer makes it worth
/// retrying.
fn unknown_to_the_provider(error: ProviderError) -> BillingError {
    match error {
        ProviderError::NotFound { message } => {
            BillingError::InvalidWebhook { reason: format!("the provider has no such object ({message})") }
        }
        other => other.into(),
    }
}
