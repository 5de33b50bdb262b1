//! Credit lots: the credit balance as a set of lots, each with its own
//! priority, category and life, and the one order in which spending draws from them.
//!
//! A lot is live from the entry that creates it (its `effective_at`) until `expires_at`,
//! exclusive. Every spend draws from the live lots in
//! the **burn order** ([`burn_order`]):
//! 1. `priority`, lowest number first;
//! 2. the soonest `expires_at`, lots that never expire last;
//! 3. promotional before paid;
//! 4. `effective_at`, earliest first;
//! 5. the lot id, lowest first.
//!
//! For example, with a paid lot P (priority 50, no expiry), a trial lot T (priority 50,
//! expiring in 7 days) and a grant G (priority 10, expiring in 30 days), a charge draws
//! from G first (its priority is lower), then T (it expires before P), then P.
//!
//! Each spending entry records what it drew from each lot ([`Allocation`]); giving it
//! back (a refund, a released hold) restores those allocations in reverse.
//!
//! The engine carries these rules out when it records an entry (`billing::credit_lots`),
//! and the audit proves each lot's remainder from the allocations.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What a lot's credits are: given away, or paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum LotCategory {
    /// Burns before paid credits of the same priority and expiry.
    Promotional,
    Paid,
}

/// Where a lot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum LotSource {
    FreeTrial,
    Grant,
    Purchase,
    Import,
    /// A refund to a lot that had expired, given anew (`refund_to_expired = "reissue"`).
    RefundReissue,
}

stored_names!(LotCategory { Promotional => "promotional", Paid => "paid" });
stored_names!(LotSource {
    FreeTrial => "free_trial",
    Grant => "grant",
    Purchase => "purchase",
    Import => "import",
    RefundReissue => "refund_reissue",
});

/// The priority of a lot that is given none.
pub const DEFAULT_PRIORITY: u8 = 50;
/// The highest priority number: the last to burn.
pub const MAX_PRIORITY: u8 = 100;

/// One lot of a user's credits.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct CreditLot {
    /// The id of the ledger entry that created the lot.
    pub id: i64,
    pub user_id: String,
    pub amount: Decimal,
    pub remaining: Decimal,
    pub priority: u8,
    pub category: LotCategory,
    #[serde(with = "crate::time_util::serde_iso")]
    pub effective_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub source: LotSource,
    /// A payment id and the like.
    pub reference: Option<String>,
}

impl CreditLot {
    /// Spendable at `now`: not yet expired (expiry is exclusive). A lot is effective from
    /// the entry that creates it: a call that read the clock a moment before that entry
    /// was written, and runs after it under the user's lock, may spend it.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }

    /// Expired by `now` with credits left: what an expiry takes.
    pub fn has_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now) && self.remaining > Decimal::ZERO
    }
}

/// The terms of a granted lot ([`Billing::grant_credits_on`](crate::Billing::grant_credits_on)):
/// by default a promotional lot of the default priority that never expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct GrantTerms {
    #[serde(with = "crate::time_util::serde_iso::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    pub priority: Option<u8>,
    pub category: LotCategory,
}

impl Default for GrantTerms {
    fn default() -> Self {
        Self { expires_at: None, priority: None, category: LotCategory::Promotional }
    }
}

impl GrantTerms {
    /// The lot's terms, checked: a priority up to [`MAX_PRIORITY`], an expiry after now.
    pub(crate) fn lot_terms(&self, now: OffsetDateTime) -> crate::error::Result<crate::ledger::LotTerms> {
        let priority = self.priority.unwrap_or(DEFAULT_PRIORITY);
        if priority > MAX_PRIORITY {
            let message = format!("expected 0 to {MAX_PRIORITY}, got {priority}");
            return Err(crate::error::BillingError::invalid("priority", message));
        }
        if let Some(expires_at) = self.expires_at.filter(|at| *at <= now) {
            let message = format!("{} is not in the future", crate::time_util::iso(expires_at));
            return Err(crate::error::BillingError::invalid("expires_at", message));
        }
        let expires_at = self.expires_at.map(crate::time_util::truncate);
        Ok(crate::ledger::LotTerms { priority, category: self.category, expires_at, source: LotSource::Grant })
    }

    /// What a key's replay compares besides the amount: nothing for the default terms,
    /// so that grants keyed before lots existed still replay.
    pub(crate) fn fingerprint_json(&self) -> Option<serde_json::Value> {
        (*self != Self::default()).then(|| serde_json::to_value(self).unwrap_or_default())
    }
}

/// The burn order of the module docs: the one total order of lots, for every draw.
pub fn burn_order(a: &CreditLot, b: &CreditLot) -> Ordering {
    let never = |lot: &CreditLot| lot.expires_at.is_none();
    a.priority
        .cmp(&b.priority)
        .then_with(|| never(a).cmp(&never(b)))
        .then_with(|| a.expires_at.cmp(&b.expires_at))
        .then_with(|| a.category.cmp(&b.category))
        .then_with(|| a.effective_at.cmp(&b.effective_at))
        .then_with(|| a.id.cmp(&b.id))
}

/// Credits of one live lot that will expire: what a balance screen warns of.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct ExpiringCredits {
    pub amount: Decimal,
    #[serde(with = "crate::time_util::serde_iso")]
    pub expires_at: OffsetDateTime,
}

impl ExpiringCredits {
    /// The live lots of `lots` with credits left that expire, soonest first.
    pub(crate) fn of(lots: &[CreditLot], now: OffsetDateTime) -> Vec<Self> {
        let mut expiring: Vec<Self> = lots
            .iter()
            .filter(|lot| lot.is_live(now) && lot.remaining > Decimal::ZERO)
            .filter_map(|lot| lot.expires_at.map(|expires_at| Self { amount: lot.remaining, expires_at }))
            .collect();
        expiring.sort_by_key(|item| item.expires_at);
        expiring
    }
}

/// What one entry drew from (positive) or gave back to (negative) one lot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub lot_id: i64,
    pub amount: Decimal,
}

/// What a draw took: from each lot in burn order, and what no live lot covered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Draw {
    pub allocations: Vec<Allocation>,
    pub uncovered: Decimal,
}

/// Draws `amount` from the lots live at `now`, in burn order, and lowers their
/// remainders; what they do not cover is `uncovered` (a balance going below zero).
pub fn draw(lots: &mut [CreditLot], amount: Decimal, now: OffsetDateTime) -> Draw {
    let mut order: Vec<usize> = (0..lots.len()).filter(|&i| lots[i].is_live(now)).collect();
    order.sort_by(|&a, &b| burn_order(&lots[a], &lots[b]));
    let mut left = amount;
    let mut allocations = Vec::new();
    for i in order {
        if left <= Decimal::ZERO {
            break;
        }
        let lot = &mut lots[i];
        let taken = left.min(lot.remaining);
        if taken > Decimal::ZERO {
            lot.remaining -= taken;
            left -= taken;
            allocations.push(Allocation { lot_id: lot.id, amount: taken });
        }
    }
    Draw { allocations, uncovered: left.max(Decimal::ZERO) }
}

/// What giving back one allocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub lot_id: i64,
    pub amount: Decimal,
    /// The lot had expired by then: the catalog's `refund_to_expired` decides what
    /// becomes of these credits.
    pub to_expired: bool,
}

/// Gives back `allocations` in reverse of their order, raising each lot's remainder;
/// says of each whether its lot had expired at `now`. A lot not among `lots` (voided
/// and gone) is skipped.
pub fn restore(lots: &mut [CreditLot], allocations: &[Allocation], now: OffsetDateTime) -> Vec<Restored> {
    let mut restored = Vec::new();
    for allocation in allocations.iter().rev() {
        if let Some(lot) = lots.iter_mut().find(|lot| lot.id == allocation.lot_id) {
            lot.remaining += allocation.amount;
            let to_expired = lot.expires_at.is_some_and(|expires_at| expires_at <= now);
            restored.push(Restored { lot_id: lot.id, amount: allocation.amount, to_expired });
        }
    }
    restored
}

/// The credits of `lots` that expired by `now` but whose expiry is not recorded yet:
/// what a read leaves out of the balance.
pub fn expired_remainder(lots: &[CreditLot], now: OffsetDateTime) -> Decimal {
    lots.iter().filter(|lot| lot.has_expired(now)).map(|lot| lot.remaining).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Duration;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00 UTC);

    fn lot(id: i64, remaining: &str, priority: u8, category: LotCategory, expires_in_days: Option<i64>) -> CreditLot {
        CreditLot {
            id,
            user_id: "u".into(),
            amount: remaining.parse().unwrap(),
            remaining: remaining.parse().unwrap(),
            priority,
            category,
            effective_at: NOW - Duration::days(1),
            expires_at: expires_in_days.map(|days| NOW + Duration::days(days)),
            source: LotSource::Grant,
            reference: None,
        }
    }

    /// The module docs' example: the grant of priority 10 first, then the trial that
    /// expires, then the paid lot that never does.
    #[test]
    fn the_burn_order_is_priority_then_expiry_then_category_then_age_then_id() {
        let paid = lot(1, "5", 50, LotCategory::Paid, None);
        let trial = lot(2, "5", 50, LotCategory::Promotional, Some(7));
        let grant = lot(3, "5", 10, LotCategory::Promotional, Some(30));
        let mut lots = vec![paid, trial, grant];
        let drawn = draw(&mut lots, "12".parse().unwrap(), NOW);
        let order: Vec<(i64, String)> = drawn.allocations.iter().map(|a| (a.lot_id, a.amount.to_string())).collect();
        assert_eq!(order, [(3, "5".into()), (2, "5".into()), (1, "2".into())]);
        assert_eq!(drawn.uncovered, Decimal::ZERO);

        // Same priority and expiry: promotional before paid, then the older, then the lower id.
        let a = lot(10, "1", 50, LotCategory::Paid, Some(3));
        let b = lot(11, "1", 50, LotCategory::Promotional, Some(3));
        assert_eq!(burn_order(&b, &a), Ordering::Less);
        let mut older = lot(12, "1", 50, LotCategory::Paid, Some(3));
        older.effective_at -= Duration::days(1);
        assert_eq!(burn_order(&older, &a), Ordering::Less);
        assert_eq!(burn_order(&a, &lot(13, "1", 50, LotCategory::Paid, Some(3))), Ordering::Less);
    }

    #[test]
    fn a_lot_is_live_until_the_exact_instant_it_expires_and_then_spends_nothing() {
        let mut lots = vec![lot(1, "5", 50, LotCategory::Promotional, Some(1))];
        let at_expiry = NOW + Duration::days(1);
        assert!(lots[0].is_live(at_expiry - Duration::milliseconds(1)));
        assert!(!lots[0].is_live(at_expiry) && lots[0].has_expired(at_expiry));
        assert_eq!(expired_remainder(&lots, at_expiry).to_string(), "5", "a read leaves all of it out");
        let drawn = draw(&mut lots, "2".parse().unwrap(), at_expiry);
        assert_eq!((drawn.allocations.len(), drawn.uncovered.to_string()), (0, "2".into()));
    }

    #[test]
    fn a_restore_gives_back_in_reverse_and_says_which_lots_had_expired() {
        let mut lots =
            vec![lot(1, "3", 10, LotCategory::Promotional, Some(2)), lot(2, "10", 50, LotCategory::Paid, None)];
        let drawn = draw(&mut lots, "5".parse().unwrap(), NOW);
        assert_eq!(lots.iter().map(|l| l.remaining.to_string()).collect::<Vec<_>>(), ["0", "8"]);
        let later = NOW + Duration::days(3);
        let restored = restore(&mut lots, &drawn.allocations, later);
        assert_eq!(
            restored.iter().map(|r| (r.lot_id, r.to_expired)).collect::<Vec<_>>(),
            [(2, false), (1, true)],
            "the last drawn comes back first"
        );
        assert_eq!(lots.iter().map(|l| l.remaining.to_string()).collect::<Vec<_>>(), ["3", "10"]);
    }
}
