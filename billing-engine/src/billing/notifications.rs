//! Applying what the provider reports, in its answers and in notifications, exactly
//! once: a payment's status moves forward only ([`PaymentStatus::can_become`]), and the
//! move is what applies its effects (`payment::status_effects`, `payment::refund_effects`).

use time::OffsetDateTime;

use super::checkout::{unknown_payment, PaymentSetup};
use super::Billing;
use crate::error::{BillingError, Result};
use crate::ledger::Request;
use crate::payment::{self, Payment, PaymentStatus, Purpose};
use crate::provider::{Notification, ProviderError, ProviderPayment, ProviderRefund};
use crate::store::{Store, Transaction};
use crate::webhook::{WebhookOutcome, WebhookStatus};

impl<S: Store> Billing<S> {
    /// Handles a YooKassa notification: checks it (see [`crate::webhook`]), then applies
    /// it at most once. INVALID_WEBHOOK means reject it for good (answer 400);
    /// PAYMENT_ERROR means the API could not be reached to verify or finish it (answer
    /// 5xx, so YooKassa sends it again). The body is read by the configured provider.
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
        match setup.provider.read_notification(body)? {
            Notification::Other { event } => Ok(outcome(WebhookStatus::Ignored, event, None)),
            Notification::Payment { event, status: claimed, payment: reported } => {
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
            Notification::Refund { event, refund: reported } => {
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

    /// Records the provider's view of one of our payments, in one transaction.
    pub(super) fn record_payment_state(
        &self,
        payment_id: &str,
        object: &ProviderPayment,
    ) -> Result<(WebhookStatus, Payment)> {
        let now = self.now();
        let owner = self.payment(payment_id)?.user_id;
        self.store.write(&owner, |tx| {
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

    /// Records what `payment` reaching its status does to its user's account.
    pub(super) fn apply_effects(
        &self,
        tx: &mut dyn Transaction,
        payment: &mut Payment,
        now: OffsetDateTime,
    ) -> Result<()> {
        let mut account = self.current_account(tx, &payment.user_id, now)?;
        let entries = payment::status_effects(payment, &mut account, &self.catalog, now)?;
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            self.record(tx, &mut account, entry)?;
        }
        Ok(tx.update_account(&account)?)
    }

    /// Records a succeeded refund of one of our payments, once per provider refund, with
    /// what it takes back (see `payment::refund_effects`).
    pub(super) fn record_refund(&self, refund: &ProviderRefund) -> Result<(WebhookStatus, Option<Payment>)> {
        let now = self.now();
        let Some(owner) = self.store.read(|tx| Ok(tx.payment_by_provider_id(&refund.payment_id)?))? else {
            return Ok((WebhookStatus::Ignored, None));
        };
        self.store.write(&owner.user_id, |tx| {
            let Some(mut payment) = tx.payment_by_provider_id(&refund.payment_id)? else {
                return Ok((WebhookStatus::Ignored, None));
            };
            if !matches!(payment.status, PaymentStatus::Succeeded | PaymentStatus::Refunded) {
                return Ok((WebhookStatus::Ignored, Some(payment)));
            }
            let key = format!("refund:{}", refund.id);
            // Applied before (a refund recorded before refunds were keyed has only `refund_id`).
            let recorded = payment.refund_id.as_deref() == Some(refund.id.as_str());
            if recorded || tx.entry_by_key(&payment.user_id, &key)?.is_some() {
                return Ok((WebhookStatus::Duplicate, Some(payment)));
            }
            let request = Request { action: "payment_refund", target: &refund.id, amount: None, metadata: None };
            let mut account = self.current_account(tx, &payment.user_id, now)?;
            let entry = payment::refund_effects(&mut payment, &refund.id, refund.amount, &mut account, now);
            self.record(tx, &mut account, entry.keyed(&key, &request))?;
            tx.update_account(&account)?;
            tx.update_payment(&payment)?;
            Ok((WebhookStatus::Applied, Some(payment)))
        })
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
