//! Renewals and expiry: `process_due`, run from cron by any number of workers.
//!
//! A period is renewed by attempts. The first is made when the period is due. A declined
//! attempt ends renewal (the subscription runs to its end), but it is not the last word:
//! once the user binds another method and turns renewal back on, the next run makes
//! another attempt for the same period, under the period's key and its number
//! (`{period}#2`), so that two workers still make one. At most
//! [`MAX_RENEWAL_ATTEMPTS`] are made per period.

use time::{Duration, OffsetDateTime};

use super::Billing;
use crate::error::{BillingError, Result};
use crate::ledger::{EntryKind, NewEntry};
use crate::payment::{self, DueReport, Payment, PaymentStatus, Purpose, SavedMethod};
use crate::provider::PayWith;
use crate::store::{Store, Transaction};
use crate::subscription::Subscription;

use super::checkout::PaymentSetup;

/// How long before a subscription ends `process_due` charges the saved card, so the
/// next period is paid before the current one runs out.
pub const RENEWAL_LEAD: Duration = Duration::days(1);

/// Attempts to renew one period, each after a decline and a newly bound method.
pub const MAX_RENEWAL_ATTEMPTS: u32 = 5;

impl<S: Store> Billing<S> {
    /// Runs what is due now: creates one renewal payment per due subscription period
    /// (autorenew on, a saved card) and sends it, and records the end of subscriptions
    /// that ran out without one. Safe to run from several workers at once: a period is
    /// renewed once, and a renewal is sent with one idempotence key.
    pub fn process_due(&self) -> Result<DueReport> {
        let now = self.now();
        let mut report = DueReport::default();
        for user_id in self.store.read(|tx| Ok(tx.users_due(now + RENEWAL_LEAD)?))? {
            match self.store.write(&user_id, |tx| self.due_step(tx, &user_id, now))? {
                DueStep::RenewalCreated => report.renewals_created += 1,
                DueStep::Expired => report.expired += 1,
                DueStep::NoProvider => report.renewals_skipped += 1,
                DueStep::Nothing => {}
            }
        }
        let Some(setup) = &self.payments else { return Ok(report) };
        for renewal in self.store.read(|tx| Ok(tx.unsent_renewals()?))? {
            match self.send_renewal(setup, renewal) {
                Ok(()) => report.renewals_sent += 1,
                // The card or the provider failed this time; the next run tries again.
                Err(BillingError::PaymentError { .. } | BillingError::NoPaymentMethod) => report.failures += 1,
                // It cannot be sent as it stands (receipts were turned on and the user
                // has no contact); the next run tries again.
                Err(BillingError::InvalidArgument { field: "customer_contact", .. }) => report.failures += 1,
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
        let latest = latest_renewal(tx, user_id, &period_key)?;
        let method = tx.saved_method(user_id)?;
        let next_attempt = next_attempt(latest.as_ref(), method.as_ref());
        let wants_renewal = sub.autorenew && sub.canceled_at.is_none();
        if wants_renewal && next_attempt.is_some() && self.payments.is_none() {
            // This worker cannot charge the card; one that can will renew it. Ending a
            // paying customer's subscription for that would be this worker's mistake.
            return Ok(DueStep::NoProvider);
        }
        if let (true, Some(attempt)) = (wants_renewal, next_attempt) {
            let plan = self.catalog.plan(&sub.plan_code).filter(|plan| !plan.is_free());
            // Without a method to charge or a contact for the receipt there is nothing to
            // send: the subscription runs to its end.
            if let (Some(plan), Some(_method), true) = (plan, method, self.can_send_receipt(tx, user_id)?) {
                let description = payment::renewal_description(&plan.name);
                let mut payment = self.new_payment(user_id, Purpose::Renewal, plan.price, description, now);
                payment.plan_code = Some(plan.code.clone());
                payment.renewal_of = Some(attempt_key(&period_key, attempt));
                tx.insert_payment(&payment, None)?;
                return Ok(DueStep::RenewalCreated);
            }
        }
        let in_flight = latest.is_some_and(|(_, r)| !r.status.is_final());
        if now < sub.expires_at || in_flight {
            return Ok(DueStep::Nothing);
        }
        let sub = account.subscription.as_mut().expect("checked above");
        sub.ended_at = Some(now);
        let entry = NewEntry::subscription(EntryKind::SubscriptionExpired, user_id, sub, None, now);
        self.record(tx, &mut account, entry)?;
        tx.update_account(&account)?;
        Ok(DueStep::Expired)
    }

    fn send_renewal(&self, setup: &PaymentSetup, renewal: Payment) -> Result<()> {
        let card =
            self.store.read(|tx| Ok(tx.saved_method(&renewal.user_id)?))?.ok_or(BillingError::NoPaymentMethod)?;
        self.send(setup, renewal, PayWith::SavedMethod { method_id: card.method_id }, true).map(drop)
    }
}

/// The key of a period's `attempt`-th renewal: the period's own key for the first.
fn attempt_key(period_key: &str, attempt: u32) -> String {
    match attempt {
        1 => period_key.to_owned(),
        n => format!("{period_key}#{n}"),
    }
}

/// The period's last renewal attempt and its number, if one was made.
fn latest_renewal(tx: &mut dyn Transaction, user_id: &str, period_key: &str) -> Result<Option<(u32, Payment)>> {
    let mut latest = None;
    for attempt in 1..=MAX_RENEWAL_ATTEMPTS {
        match tx.renewal_payment(user_id, &attempt_key(period_key, attempt))? {
            Some(payment) => latest = Some((attempt, payment)),
            None => break,
        }
    }
    Ok(latest)
}

/// The number of the attempt to make now, if one may be made: the first, or the next
/// after a declined one when a method was bound after the decline.
fn next_attempt(latest: Option<&(u32, Payment)>, method: Option<&SavedMethod>) -> Option<u32> {
    match latest {
        None => Some(1),
        Some((attempt, declined)) if declined.status == PaymentStatus::Canceled && *attempt < MAX_RENEWAL_ATTEMPTS => {
            let bound_since = method.and_then(|m| m.saved_at).is_some_and(|at| at > declined.updated_at);
            bound_since.then_some(attempt + 1)
        }
        Some(_) => None,
    }
}

enum DueStep {
    Nothing,
    /// An auto-renewing subscription is due, and this handle has no provider to renew it.
    NoProvider,
    RenewalCreated,
    Expired,
}
