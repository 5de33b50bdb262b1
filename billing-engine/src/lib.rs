//! # billing-engine
//!
//! An embeddable billing core: tariffs from TOML, charges that take a plan allowance,
//! then the free tier, then credits, an append-only ledger that proves every balance,
//! and idempotent writes, over a [`Store`] with SQLite as the default.
//!
//! ```no_run
//! use billing_engine::{Billing, Catalog};
//!
//! let catalog = Catalog::from_toml_file("tariffs.toml")?;
//! let billing = Billing::open("billing.sqlite3", catalog)?;
//! billing.register_user("user-1", true)?;
//! let charge = billing.charge("user-1", "generation", "request-42", None)?;
//! println!("paid from {} ({} credits)", charge.source, charge.credits_spent);
//! # Ok::<(), billing_engine::BillingError>(())
//! ```
//!
//! Where each rule of the billing model lives:
//! - [`catalog`]: the tariffs file and its validation;
//! - [`account`]: anchored, lazy allowance resets and daily counters;
//! - [`charge`]: which source pays, and what a refund gives back;
//! - [`subscription`]: activation, cancellation, expiry;
//! - [`ledger`]: entries, idempotency fingerprints, the integrity audit;
//! - [`payment`]: what a payment buys and the order of its statuses;
//! - [`lots`]: credit lots, the burn order, draws and restores;
//! - [`usage`]: metered usage: quota windows, checks, overage and holds;
//! - [`receipt`]: 54-FZ receipts and the rules they follow;
//! - [`events`]: the domain events each change writes to the outbox;
//! - [`analytics`]: MRR, churn and revenue, from purchased periods and money movements;
//! - [`audit`]: who did what: the append-only audit log and the actor of a call;
//! - [`standard_webhooks`]: how HTTP delivery of events is signed;
//! - [`plan_card`]: what each plan card of a pricing screen shows and offers;
//! - [`webhook`]: when a provider notification is trusted;
//! - [`crypto`]: crypto (EVM) payments: networks, references, transfer states;
//! - [`provider`], [`yookassa`], [`alchemy`]: the provider traits, the YooKassa client,
//!   Alchemy's notifications;
//! - [`store`]: the persistence trait and the SQLite backend;
//! - [`input`]: the checks on caller input, and the parsers bindings use for text arguments.

/// An enum's names as stored and in JSON: `as_str`, and `FromStr` reading them back
/// (`Err(())` for any other text). One home for every such enum.
macro_rules! stored_names {
    ($t:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl ::std::str::FromStr for $t {
            type Err = ();

            fn from_str(s: &str) -> ::std::result::Result<Self, ()> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    _ => Err(()),
                }
            }
        }
    };
}

pub mod account;
pub mod alchemy;
pub mod analytics;
pub mod audit;
mod billing;
pub mod catalog;
pub mod charge;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod events;
#[cfg(feature = "http")]
mod http;
pub mod input;
pub mod ledger;
pub mod lots;
mod metrics;
pub mod payment;
pub mod plan_card;
pub mod provider;
#[cfg(feature = "python")]
mod python;
pub mod receipt;
pub mod standard_webhooks;
#[cfg(feature = "python")]
pub use python::_restore;
pub mod store;
pub mod subscription;
pub mod time_util;
pub mod usage;
pub mod views;
pub mod webhook;
#[cfg(feature = "yookassa")]
pub mod yookassa;

pub use analytics::{CurrencyAmount, Overview, PaymentCount, RevenuePoint, Segment, TransactionFilter};
pub use audit::{AuditContext, AuditFilter, AuditOutcome, AuditRecord};
pub use billing::{
    Billing, CryptoCheckout, CryptoReconcileReport, CryptoWebhookOutcome, Granularity, ImportedSubscription,
    MoneyMovement, Purchase,
};
#[cfg(feature = "http")]
pub use billing::{DeliveryOutcome, DeliveryReport, EventEndpoint};
pub use catalog::{Catalog, ChargeSource, Package, Plan, RefundToExpired, Tier};
pub use charge::{Charge, ChargeRequest, Quote, Refund};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BillingError, Result};
pub use events::{Event, EventType};
pub use ledger::{EntryKind, IntegrityReport, LedgerEntry, Mismatch};
pub use lots::{CreditLot, ExpiringCredits, GrantTerms, LotCategory, LotSource};
pub use payment::{
    CreatedPayment, DueReport, PaidPeriod, Payment, PaymentHistory, PaymentHistoryItem, PaymentMethodView,
    PaymentStatus, Purpose, SavedMethod,
};
pub use plan_card::{CardAction, CardDetails, PlanCard};
pub use provider::{PaymentProvider, ProviderError};
pub use store::{CommitStats, Durability, LocalOptions, SqliteOptions, SqliteStore, Store, Transaction};
pub use usage::{
    Entitlement, Entitlements, HeldUsage, Hold, HoldStatus, MetricCheck, UsageAmount, UsageCheck, UsageGroup,
    UsageLabels, UsageRecord, UsageRequest, UsageSummary, UsageTotal,
};
pub use views::{BillingMe, BillingState, SubscriptionDetails, SubscriptionPlan};
pub use webhook::{WebhookChecks, WebhookOutcome, WebhookStatus};
#[cfg(feature = "yookassa")]
pub use yookassa::{YooKassa, YooKassaConfig};

// UniFFI: this crate's result types are records and enums of the `billing_engine`
// namespace; decimals, times, days and JSON cross as strings.
#[cfg(feature = "uniffi")]
uniffi::setup_scaffolding!("billing_engine");

#[cfg(feature = "uniffi")]
mod ffi_types {
    use rust_decimal::Decimal;
    use serde_json::Value;
    use time::{Date, OffsetDateTime};
    use uniffi::deps::anyhow;

    uniffi::custom_type!(Decimal, String, {
        remote,
        lower: |amount| amount.to_string(),
        try_lift: |text| Ok(crate::input::decimal("amount", &text)?),
    });
    uniffi::custom_type!(OffsetDateTime, String, {
        remote,
        lower: |at| crate::time_util::iso(at),
        try_lift: |text| crate::time_util::parse_iso(&text).ok_or_else(|| anyhow::anyhow!("not an RFC 3339 time: {text}")),
    });
    uniffi::custom_type!(Date, String, {
        remote,
        lower: |day| day.to_string(),
        try_lift: |text| Ok(Date::parse(&text, time::macros::format_description!("[year]-[month]-[day]"))?),
    });
    uniffi::custom_type!(Value, String, {
        remote,
        lower: |value| value.to_string(),
        try_lift: |text| Ok(serde_json::from_str(&text)?),
    });
}
