//! Renewals and expiry: `process_due`, run from cron by any number of workers.

use time::{Duration, OffsetDateTime};

use super::Billing;
use crate::error::{BillingError, Result};
use crate::ledger::{EntryKind, NewEntry};
use crate::payment::{DueReport, Payment, Purpose};
use crate::provider::PayWith;
use crate::store::{Store, Transaction};
use crate::subscription::Subscription;

use super::checkout::PaymentSetup;

/// How long before a subscription ends `process_due` charges the saved card, so the
/// next period is paid before the current one runs out.
pub const RENEWAL_LEAD: Duration = Duration::days(1);

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
        let renewal = tx.renewal_payment(user_id, &period_key)?;
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
        let entry = NewEntry::subscription(EntryKind::SubscriptionExpired, user_id, sub, None, now);
        self.record(tx, &mut account, entry)?;
        tx.update_account(&account)?;
        Ok(DueStep::Expired)
    }

    fn send_renewal(&self, setup: &PaymentSetup, renewal: Payment) -> Result<()> {
        let card = self.store.read(|tx| Ok(tx.saved_card(&renewal.user_id)?))?.ok_or(BillingError::NoPaymentMethod)?;
        self.send(setup, renewal, PayWith::SavedMethod { method_id: card.method_id }, true).map(drop)
    }
}

enum DueStep {
    Nothing,
    /// An auto-renewing subscription is due, and this handle has no provider to renew it.
    NoProvider,
    RenewalCreated,
    Expired,
}
