//! Domain events: what other services learn from billing (a quota service, a CRM, an
//! email sender), written to an outbox in the same transaction as the change that causes
//! them, so that an event exists exactly when its change does.
//!
//! This module is the one home of which change makes which event and what its payload
//! holds; `docs/EVENTS.md` lists them for consumers. Types are versioned (`.v1`): a
//! payload only ever gains fields under its version, and a change that would break a
//! consumer gets a new version.
//!
//! Most events follow from a ledger entry (`from_entry`), the rest from a payment's
//! status (`from_payment`) or a usage event crossing its quota (`over_limit`).

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ledger::{EntryKind, LedgerEntry};
use crate::payment::{Payment, PaymentStatus, Purpose};
use crate::time_util::iso;
use crate::usage::UsageRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum EventType {
    #[serde(rename = "payment.succeeded.v1")]
    PaymentSucceeded,
    #[serde(rename = "payment.failed.v1")]
    PaymentFailed,
    #[serde(rename = "payment.refunded.v1")]
    PaymentRefunded,
    #[serde(rename = "payment.reversed.v1")]
    PaymentReversed,
    #[serde(rename = "plan.changed.v1")]
    PlanChanged,
    #[serde(rename = "subscription.renewed.v1")]
    SubscriptionRenewed,
    #[serde(rename = "subscription.expired.v1")]
    SubscriptionExpired,
    #[serde(rename = "credits.granted.v1")]
    CreditsGranted,
    #[serde(rename = "credits.expired.v1")]
    CreditsExpired,
    #[serde(rename = "usage.over_limit.v1")]
    UsageOverLimit,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        Self::PaymentSucceeded,
        Self::PaymentFailed,
        Self::PaymentRefunded,
        Self::PaymentReversed,
        Self::PlanChanged,
        Self::SubscriptionRenewed,
        Self::SubscriptionExpired,
        Self::CreditsGranted,
        Self::CreditsExpired,
        Self::UsageOverLimit,
    ];
}

stored_names!(EventType {
    PaymentSucceeded => "payment.succeeded.v1",
    PaymentFailed => "payment.failed.v1",
    PaymentRefunded => "payment.refunded.v1",
    PaymentReversed => "payment.reversed.v1",
    PlanChanged => "plan.changed.v1",
    SubscriptionRenewed => "subscription.renewed.v1",
    SubscriptionExpired => "subscription.expired.v1",
    CreditsGranted => "credits.granted.v1",
    CreditsExpired => "credits.expired.v1",
    UsageOverLimit => "usage.over_limit.v1",
});

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append: the store gives it the user's next sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique and permanent: consumers deduplicate by it (at-least-once delivery), and
    /// HTTP delivery sends it as `webhook-id`.
    pub event_id: String,
    pub event_type: EventType,
    pub user_id: String,
    pub occurred_at: OffsetDateTime,
    pub payload: Value,
}

impl NewEvent {
    fn new(event_type: EventType, user_id: &str, occurred_at: OffsetDateTime, payload: Value) -> Self {
        Self {
            event_id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            event_type,
            user_id: user_id.to_owned(),
            occurred_at,
            payload,
        }
    }
}

/// One event of the outbox, as consumers get it.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub user_id: String,
    /// 1, 2, 3 … per user, in the order the user's changes committed.
    pub sequence: i64,
    #[serde(with = "crate::time_util::serde_iso")]
    pub occurred_at: OffsetDateTime,
    pub payload: Value,
}

impl Event {
    /// The event as one JSON object (its serde shape): what HTTP delivery posts and
    /// `docs/EVENTS.md` shows.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an event is JSON")
    }
}

/// The events a stored ledger entry causes.
pub(crate) fn from_entry(entry: &LedgerEntry) -> Vec<NewEvent> {
    let event = |event_type, payload| NewEvent::new(event_type, &entry.user_id, entry.created_at, payload);
    let meta = entry.metadata.as_ref().unwrap_or(&Value::Null);
    let plan_changed = |plan_code: Value, reason: &str| {
        let payload = json!({
            "plan_code": plan_code,
            "subscription_id": meta["subscription_id"],
            "expires_at": if plan_code.is_null() { Value::Null } else { meta["expires_at"].clone() },
            "reason": reason,
        });
        event(EventType::PlanChanged, payload)
    };
    match entry.kind {
        EntryKind::FreeTrial | EntryKind::Import | EntryKind::Grant | EntryKind::CreditPurchase
            if entry.credits_delta > Decimal::ZERO =>
        {
            vec![event(EventType::CreditsGranted, credits_payload(entry))]
        }
        EntryKind::CreditExpired => vec![event(EventType::CreditsExpired, credits_payload(entry))],
        EntryKind::SubscriptionActivated => vec![plan_changed(meta["plan_code"].clone(), "activated")],
        EntryKind::SubscriptionRenewed => {
            let payload = json!({
                "plan_code": meta["plan_code"],
                "subscription_id": meta["subscription_id"],
                "expires_at": meta["expires_at"],
                "payment_id": entry.reference,
            });
            vec![event(EventType::SubscriptionRenewed, payload)]
        }
        EntryKind::SubscriptionExpired => {
            let payload = json!({
                "plan_code": meta["plan_code"],
                "subscription_id": meta["subscription_id"],
                "expired_at": meta["expires_at"],
            });
            vec![event(EventType::SubscriptionExpired, payload), plan_changed(Value::Null, "expired")]
        }
        EntryKind::SubscriptionCanceled if meta["immediate"] == json!(true) => {
            vec![plan_changed(Value::Null, "canceled")]
        }
        EntryKind::PurchaseRefund => {
            let payload = json!({
                "payment_id": entry.reference,
                "refund_id": meta["refund_id"],
                "amount": meta["amount"],
                "refunded_total": meta["refunded_total"],
                "plan_code": meta["plan_code"],
                "package_code": meta["package_code"],
                "credits_taken": entry.credits_delta.abs().to_string(),
            });
            // A reorg took the money back on chain: the same entry, another event.
            let kind = match meta["reason"].as_str() {
                Some("reorg") => EventType::PaymentReversed,
                _ => EventType::PaymentRefunded,
            };
            let mut events = vec![event(kind, payload)];
            // A refunded period cut the subscription short; the plan ends when no paid
            // time is left.
            let cut_to = meta["subscription_expires_at"].as_str().and_then(crate::time_util::parse_iso);
            if cut_to.is_some_and(|end| end <= entry.created_at) {
                events.push(plan_changed(Value::Null, "refunded"));
            }
            events
        }
        _ => Vec::new(),
    }
}

fn credits_payload(entry: &LedgerEntry) -> Value {
    json!({
        "amount": entry.credits_delta.abs().to_string(),
        "balance_after": entry.credits_balance_after.to_string(),
        "reason": entry.kind.as_str(),
        "entry_id": entry.id,
        "reference": entry.reference,
    })
}

/// The event of a payment that just reached `payment.status`: succeeded, or failed (a
/// cancellation). Card bindings buy nothing and make no events; refunds follow from
/// their ledger entries.
pub(crate) fn from_payment(payment: &Payment, now: OffsetDateTime) -> Option<NewEvent> {
    if payment.purpose == Purpose::CardBinding {
        return None;
    }
    let mut payload = json!({
        "payment_id": payment.id,
        "purpose": payment.purpose.as_str(),
        "plan_code": payment.plan_code,
        "package_code": payment.package_code,
        "amount": payment.amount.to_string(),
        "currency": payment.currency,
        "provider_payment_id": payment.provider_payment_id,
    });
    if let Some(crypto) = &payment.crypto {
        payload["crypto"] = json!({
            "chain_id": crypto.chain_id,
            "network": crypto.network,
            "token": crypto.token,
            "symbol": crypto.symbol,
            "amount": crypto.amount.to_string(),
            "received": crypto.received.to_string(),
            "tx_hash": crypto.tx_hash,
            "state": crypto.state.as_str(),
        });
    }
    let event_type = match payment.status {
        PaymentStatus::Succeeded => {
            payload["paid_at"] = json!(payment.paid_at.map(iso));
            EventType::PaymentSucceeded
        }
        PaymentStatus::Canceled => {
            payload["status"] = json!(payment.history_status());
            payload["reason"] = json!(payment.cancellation_reason());
            EventType::PaymentFailed
        }
        _ => return None,
    };
    Some(NewEvent::new(event_type, &payment.user_id, now, payload))
}

/// `usage.over_limit.v1`: the usage event that took a metric past one of its quotas.
pub(crate) fn over_limit(usage: &UsageRecord, now: OffsetDateTime) -> NewEvent {
    let payload = json!({
        "metric": usage.metric,
        "usage_id": usage.id,
        "amount": usage.amount,
        "at": iso(usage.at),
        "overage_credits": usage.overage_credits.to_string(),
    });
    NewEvent::new(EventType::UsageOverLimit, &usage.user_id, now, payload)
}
