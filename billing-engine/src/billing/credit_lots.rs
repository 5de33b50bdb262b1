//! Credit lots in the engine's writes: what each entry's [`LotEffect`] does to the user's
//! lots when it is recorded, the expiry of lots (left out by every read at the instant,
//! recorded by the next write), and the calls of lots. The rules are `crate::lots`.

use rust_decimal::Decimal;
use time::{Duration, OffsetDateTime};

use super::Billing;
use crate::account::Account;
use crate::catalog::RefundToExpired;
use crate::error::{BillingError, Result};
use crate::input;
use crate::ledger::{LedgerEntry, LotEffect, LotTerms, NewEntry, Request};
use crate::lots::{self, Allocation, CreditLot, LotCategory, LotSource};
use crate::store::{Store, Transaction};

impl<S: Store> Billing<S> {
    /// Carries out what a recorded entry does to the lots; `before` is the balance
    /// before it. The lots' remainders add up to the balance when it is above zero, and
    /// to zero when it is not (a debt no lot holds).
    pub(super) fn settle_lots(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        entry: &LedgerEntry,
        effect: &LotEffect,
        before: Decimal,
    ) -> Result<()> {
        let user_id = entry.user_id.as_str();
        let now = entry.created_at;
        let debt = (-before).max(Decimal::ZERO);
        match effect {
            LotEffect::None => Ok(()),
            LotEffect::Create(terms) => {
                // A debt is paid first, from the new lot.
                let paid_debt = debt.min(entry.credits_delta);
                let lot = new_lot(entry, entry.credits_delta, paid_debt, terms);
                tx.insert_lot(&lot)?;
                if paid_debt > Decimal::ZERO {
                    tx.insert_allocations(user_id, entry.id, &[Allocation { lot_id: lot.id, amount: paid_debt }])?;
                }
                Ok(())
            }
            LotEffect::Draw => {
                let mut open = tx.open_lots(user_id)?;
                let drawn = lots::draw(&mut open, -entry.credits_delta, now);
                for allocation in &drawn.allocations {
                    if let Some(lot) = open.iter().find(|lot| lot.id == allocation.lot_id) {
                        tx.update_lot(lot)?;
                    }
                }
                Ok(tx.insert_allocations(user_id, entry.id, &drawn.allocations)?)
            }
            LotEffect::Restore { of } => self.restore_lots(tx, account, entry, *of, debt),
            LotEffect::Close { lot_id } => {
                let mut lot = tx.lot(user_id, *lot_id)?.ok_or(BillingError::GrantNotFound { lot_id: *lot_id })?;
                let taken = -entry.credits_delta;
                lot.remaining -= taken;
                tx.update_lot(&lot)?;
                Ok(tx.insert_allocations(user_id, entry.id, &[Allocation { lot_id: lot.id, amount: taken }])?)
            }
        }
    }

    /// Gives back, last drawn first, what entry `of` drew, up to what `entry` returns,
    /// once a debt is paid from it (as from any credits that come in). To a lot that has
    /// expired the catalog's `refund_to_expired` applies: `expire` records its expiry at
    /// once (two entries), `reissue` gives the credits as a new promotional lot instead.
    /// What the draw had taken beyond the lots comes back as a paid lot of its own.
    fn restore_lots(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        entry: &LedgerEntry,
        of: i64,
        debt: Decimal,
    ) -> Result<()> {
        let user_id = entry.user_id.as_str();
        let now = entry.created_at;
        let mut left = entry.credits_delta - debt.min(entry.credits_delta);
        let mut back = Vec::new();
        let mut expired = Vec::new();
        let mut reissued = Decimal::ZERO;
        for taken in tx.allocations(user_id, of)?.iter().rev().filter(|a| a.amount > Decimal::ZERO) {
            if left <= Decimal::ZERO {
                break;
            }
            let amount = taken.amount.min(left);
            left -= amount;
            let Some(mut lot) = tx.lot(user_id, taken.lot_id)? else { continue };
            let lot_expired = lot.expires_at.is_some_and(|at| at <= now);
            if lot_expired && self.catalog.refund_to_expired == RefundToExpired::Reissue {
                reissued += amount;
                continue;
            }
            lot.remaining += amount;
            tx.update_lot(&lot)?;
            back.push(Allocation { lot_id: lot.id, amount: -amount });
            if lot_expired {
                expired.push(lot);
            }
        }
        tx.insert_allocations(user_id, entry.id, &back)?;
        let beyond_debt = left.max(Decimal::ZERO);
        if beyond_debt > Decimal::ZERO || reissued > Decimal::ZERO {
            let terms = if beyond_debt > Decimal::ZERO {
                LotTerms {
                    priority: lots::DEFAULT_PRIORITY,
                    category: LotCategory::Paid,
                    expires_at: None,
                    source: LotSource::RefundReissue,
                }
            } else {
                LotTerms {
                    priority: lots::DEFAULT_PRIORITY,
                    category: LotCategory::Promotional,
                    expires_at: Some(now + Duration::days(self.catalog.reissue_days.into())),
                    source: LotSource::RefundReissue,
                }
            };
            let amount = beyond_debt + reissued;
            tx.insert_lot(&new_lot(entry, amount, Decimal::ZERO, &terms))?;
        }
        for lot in expired {
            self.record(tx, account, NewEntry::credit_expired(&lot, now))?;
        }
        Ok(())
    }

    /// Records the expiry of every lot of the account's user that expired by `now` with
    /// credits left (`credit_expired`, one per lot), and writes the account if there was
    /// one: part of reading an account for a write.
    pub(super) fn expire_lots(
        &self,
        tx: &mut dyn Transaction,
        account: &mut Account,
        now: OffsetDateTime,
    ) -> Result<()> {
        let expired: Vec<CreditLot> =
            tx.open_lots(&account.user_id)?.into_iter().filter(|lot| lot.has_expired(now)).collect();
        if expired.is_empty() {
            return Ok(());
        }
        for lot in &expired {
            self.record(tx, account, NewEntry::credit_expired(lot, now))?;
        }
        tx.update_account(account)?;
        Ok(())
    }

    /// The user's lots, live and spent, by id.
    pub fn credit_lots(&self, user_id: &str) -> Result<Vec<CreditLot>> {
        input::id("user_id", user_id)?;
        self.store.read(|tx| {
            if tx.account(user_id)?.is_none() {
                return Err(BillingError::UnknownUser { user_id: user_id.to_owned() });
            }
            Ok(tx.all_lots(user_id)?)
        })
    }

    /// Forfeits what remains of a granted lot (`credit_voided`). A retry with the key
    /// replays; a lot that is not a grant's, or no lot, is GRANT_NOT_FOUND.
    pub fn void_grant(&self, lot_id: i64, idempotency_key: &str, reason: &str) -> Result<LedgerEntry> {
        input::id("idempotency_key", idempotency_key)?;
        input::text("reason", reason)?;
        let target = lot_id.to_string();
        let request = Request { action: "void_grant", target: &target, amount: None, metadata: None };
        let now = self.now();
        // A lot's id is its creating entry's, whose user never changes.
        let owner = self
            .store
            .read(|tx| Ok(tx.entry(lot_id)?))?
            .map(|entry| entry.user_id)
            .ok_or(BillingError::GrantNotFound { lot_id })?;
        let audit = self.audit_record("credits.void", Some(&owner)).target(target.as_str()).reason(reason);
        self.store.write(&owner, |tx| {
            if let Some(entry) = super::replay(tx, &owner, idempotency_key, &request)? {
                tx.append_audit(&audit.clone().replayed(&entry))?;
                return Ok(entry);
            }
            let mut account = self.current_account(tx, &owner, now)?;
            let lot = tx.lot(&owner, lot_id)?.filter(|lot| lot.source == LotSource::Grant);
            let lot = lot.ok_or(BillingError::GrantNotFound { lot_id })?;
            let before = account.credits;
            let entry = NewEntry::credit_voided(&lot, reason, now).keyed(idempotency_key, &request);
            let entry = self.record(tx, &mut account, entry)?;
            tx.update_account(&account)?;
            tx.append_audit(&audit.clone().credits_moved(&entry, before))?;
            Ok(entry)
        })
    }
}

/// The lot `entry` creates: `amount`, of which `spent` is already taken (a debt paid).
fn new_lot(entry: &LedgerEntry, amount: Decimal, spent: Decimal, terms: &LotTerms) -> CreditLot {
    CreditLot {
        id: entry.id,
        user_id: entry.user_id.clone(),
        amount,
        remaining: amount - spent,
        priority: terms.priority,
        category: terms.category,
        effective_at: entry.created_at,
        expires_at: terms.expires_at,
        source: terms.source,
        reference: entry.reference.clone(),
    }
}
