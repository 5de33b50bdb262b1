//! Which source pays for an operation, and what a charge and its refund change.
//!
//! The single rule: try the catalog's `charge_order` (default subscription → freemium →
//! credits) and take the first source that can pay now. An allowance pays one op while
//! it has ops left in its period and its plan's daily limit is not reached; credits pay
//! the operation's cost while the balance covers it. When nothing pays, the error is
//! DAILY_LIMIT_REACHED if some allowance was stopped only by its daily limit, else
//! NOT_ENOUGH_CREDITS.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::{Date, OffsetDateTime};

use crate::account::{next_local_midnight, Account, Allowance};
use crate::catalog::{Catalog, ChargeSource, Operation, Plan};
use crate::error::{BillingError, Result};
use crate::ledger::{negate, AllowancePeriod, LedgerEntry, FREEMIUM_OWNER};

/// What a charge would do now; computed by the same rule as the charge, writing nothing.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Quote {
    pub allowed: bool,
    pub source: Option<ChargeSource>,
    /// Credits the charge would take (0 when an allowance pays; the operation's cost
    /// when refused, so a UI can say how many are missing).
    pub credits_cost: Decimal,
    pub credits_after: Decimal,
    /// The error code a charge would raise now, when not allowed.
    pub reason_code: Option<String>,
}

/// A successful (or replayed) charge.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Charge {
    /// The ledger entry id; pass it to `refund_charge`.
    pub id: i64,
    pub user_id: String,
    pub operation: String,
    pub source: ChargeSource,
    pub credits_spent: Decimal,
    pub credits_balance: Decimal,
    /// True when this is the result of an earlier call with the same idempotency key.
    pub replayed: bool,
}

impl Charge {
    pub(crate) fn from_entry(entry: &LedgerEntry, replayed: bool) -> Self {
        Self {
            id: entry.id,
            user_id: entry.user_id.clone(),
            operation: entry.operation.clone().unwrap_or_default(),
            source: entry.source.unwrap_or(ChargeSource::Credits),
            credits_spent: negate(entry.credits_delta),
            credits_balance: entry.credits_balance_after,
            replayed,
        }
    }
}

/// One request of [`Billing::charge_batch`](crate::Billing::charge_batch): the arguments
/// of [`Billing::charge`](crate::Billing::charge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub user_id: String,
    pub operation: String,
    pub idempotency_key: String,
    /// A JSON object kept with the ledger entry.
    pub metadata: Option<Value>,
}

impl ChargeRequest {
    pub fn new(user_id: impl Into<String>, operation: impl Into<String>, idempotency_key: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            operation: operation.into(),
            idempotency_key: idempotency_key.into(),
            metadata: None,
        }
    }
}

/// A refund of one charge.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Refund {
    pub id: i64,
    pub charge_id: i64,
    pub user_id: String,
    pub source: ChargeSource,
    pub credits_refunded: Decimal,
    /// Whether the op went back to its allowance (false once that period or day is over).
    pub op_returned: bool,
    pub credits_balance: Decimal,
    pub replayed: bool,
}

impl Refund {
    pub(crate) fn from_entry(entry: &LedgerEntry, charge: &LedgerEntry, replayed: bool) -> Self {
        Self {
            id: entry.id,
            charge_id: charge.id,
            user_id: entry.user_id.clone(),
            source: charge.source.unwrap_or(ChargeSource::Credits),
            credits_refunded: entry.credits_delta,
            op_returned: entry.ops_delta != 0,
            credits_balance: entry.credits_balance_after,
            replayed,
        }
    }
}

/// What a charge takes, for its ledger entry: the credits, or one op of an allowance
/// period on a local day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spend {
    pub source: ChargeSource,
    pub credits: Decimal,
    pub allowance: Option<(AllowancePeriod, Date)>,
}

/// An allowance that could pay, with what identifies its period.
struct AllowanceSlot<'a> {
    plan: &'a Plan,
    allowance: &'a Allowance,
    owner: &'a str,
}

fn allowance_slot<'a>(
    account: &'a Account,
    catalog: &'a Catalog,
    source: ChargeSource,
    now: OffsetDateTime,
) -> Option<AllowanceSlot<'a>> {
    match source {
        ChargeSource::Subscription => {
            let sub = account.active_subscription(now)?;
            let plan = catalog.plan(&sub.plan_code)?;
            Some(AllowanceSlot { plan, allowance: &sub.ops, owner: &sub.id })
        }
        ChargeSource::Freemium => {
            Some(AllowanceSlot { plan: catalog.free_plan(), allowance: &account.freemium, owner: FREEMIUM_OWNER })
        }
        ChargeSource::Credits => None,
    }
}

enum Refusal {
    /// The allowance has ops left but its plan's daily limit stopped it.
    DailyLimit {
        limit: u32,
    },
    Exhausted,
}

fn allowance_refusal(slot: &AllowanceSlot, used_today: u32) -> Option<Refusal> {
    if slot.allowance.remaining(slot.plan.ops_limit) == Some(0) {
        return Some(Refusal::Exhausted);
    }
    match slot.plan.daily_limit {
        Some(limit) if used_today >= limit => Some(Refusal::DailyLimit { limit }),
        _ => None,
    }
}

/// The source that pays for `op` now, per the module rule. `account` must be rolled forward to `now`.
pub(crate) fn choose_source(
    account: &Account,
    catalog: &Catalog,
    op: &Operation,
    now: OffsetDateTime,
) -> Result<ChargeSource> {
    let mut daily_limit_hit = None;
    for &source in &catalog.charge_order {
        if source == ChargeSource::Credits {
            if account.credits >= op.credits {
                return Ok(source);
            }
            continue;
        }
        let Some(slot) = allowance_slot(account, catalog, source, now) else { continue };
        match allowance_refusal(&slot, account.today.used(source)) {
            None => return Ok(source),
            Some(Refusal::DailyLimit { limit }) => daily_limit_hit = daily_limit_hit.or(Some(limit)),
            Some(Refusal::Exhausted) => {}
        }
    }
    Err(match daily_limit_hit {
        Some(limit) => {
            BillingError::DailyLimitReached { limit, resets_at: next_local_midnight(now, catalog.timezone_offset) }
        }
        None => {
            BillingError::NotEnoughCredits { required: op.credits, available: account.credits, expired: Decimal::ZERO }
        }
    })
}

pub(crate) fn quote(account: &Account, catalog: &Catalog, op: &Operation, now: OffsetDateTime) -> Quote {
    match choose_source(account, catalog, op, now) {
        Ok(source) => {
            let credits_cost = if source == ChargeSource::Credits { op.credits } else { Decimal::ZERO };
            Quote {
                allowed: true,
                source: Some(source),
                credits_cost,
                credits_after: account.credits - credits_cost,
                reason_code: None,
            }
        }
        Err(refusal) => Quote {
            allowed: false,
            source: None,
            credits_cost: op.credits,
            credits_after: account.credits,
            reason_code: Some(refusal.code().to_owned()),
        },
    }
}

/// What paying for `op` now takes, from the source that pays. `account` must be rolled
/// forward to `now`; it changes when the charge's entry is applied to it.
pub(crate) fn spend(account: &Account, catalog: &Catalog, op: &Operation, now: OffsetDateTime) -> Result<Spend> {
    let source = choose_source(account, catalog, op, now)?;
    let allowance = allowance_slot(account, catalog, source, now).map(|slot| {
        (AllowancePeriod { owner: slot.owner.to_owned(), start: slot.allowance.period_start }, account.today.day)
    });
    let credits = if source == ChargeSource::Credits { op.credits } else { Decimal::ZERO };
    Ok(Spend { source, credits, allowance })
}

/// What a refund gives back.
pub(crate) struct GiveBack {
    pub credits: Decimal,
    pub op_returned: bool,
}

/// What refunding `charge` gives back to the source it came from. Credits always come
/// back; an op comes back only to the allowance period (and local day) it was taken
/// from, while that period is still the current one: a finished period is not reopened.
pub(crate) fn give_back(account: &Account, charge: &LedgerEntry) -> GiveBack {
    let credits = negate(charge.credits_delta);
    let Some(source) = charge.source.filter(|s| *s != ChargeSource::Credits) else {
        return GiveBack { credits, op_returned: false };
    };
    let current_period = match source {
        ChargeSource::Subscription => account.subscription.as_ref().map(|sub| (sub.id.as_str(), sub.ops.period_start)),
        _ => Some((FREEMIUM_OWNER, account.freemium.period_start)),
    };
    let same_period = matches!(
        (&charge.allowance, current_period),
        (Some(taken), Some((owner, start))) if taken.owner == owner && taken.start == start
    );
    GiveBack { credits, op_returned: same_period }
}
