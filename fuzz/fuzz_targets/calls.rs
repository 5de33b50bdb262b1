//! Engine calls with hostile arguments on a real SQLite file: every refusal is typed and
//! changes no table.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use billing_engine::{UsageLabels, UsageRequest};
use rust_decimal::Decimal;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Call {
    Charge { user: String, operation: String, key: String, metadata: String },
    Grant { user: String, amount: String, key: String, reason: String },
    Refund { charge_id: i64, key: String, reason: Option<String> },
    Import { user: String, credits: String, freemium_used: u32 },
    Activate { user: String, plan: String, key: String },
    Ledger { user: String, limit: u32, before: Option<i64> },
    CheckUsage { user: String, usage: Vec<(String, u64)> },
    TrackUsage { user: String, metric: String, amount: u64, key: String, model: Option<String>, at: Option<String> },
    Reserve { user: String, usage: Vec<(String, u64)>, operation: Option<String>, key: String, ttl_s: u64 },
    Settle { hold: String, actual: Option<Vec<(String, u64)>>, key: String, capture: bool },
    Feature { user: String, name: String },
    VoidGrant { lot_id: i64, key: String, reason: String },
}

fn db() -> &'static common::Db {
    static DB: OnceLock<common::Db> = OnceLock::new();
    DB.get_or_init(|| {
        common::Db::open(|billing| {
            billing.register_user("u", true).unwrap();
            billing
        })
    })
}

/// Any decimal text, else zero (a refused amount too).
fn decimal(text: &str) -> Decimal {
    text.parse().unwrap_or_default()
}

fuzz_target!(|call: Call| {
    let db = db();
    match call {
        Call::Charge { user, operation, key, metadata } => {
            let metadata = serde_json::from_str(&metadata).ok();
            db.refused_changes_nothing(|b| b.charge(&user, &operation, &key, metadata));
        }
        Call::Grant { user, amount, key, reason } => {
            db.refused_changes_nothing(|b| b.grant_credits(&user, decimal(&amount), &key, &reason));
        }
        Call::Refund { charge_id, key, reason } => {
            db.refused_changes_nothing(|b| b.refund_charge(charge_id, &key, reason.as_deref()));
        }
        Call::Import { user, credits, freemium_used } => {
            db.refused_changes_nothing(|b| b.import_user(&user, decimal(&credits), freemium_used, None));
        }
        Call::Activate { user, plan, key } => {
            db.refused_changes_nothing(|b| b.activate_subscription(&user, &plan, &key));
        }
        Call::Ledger { user, limit, before } => {
            db.refused_changes_nothing(|b| b.ledger(&user, limit, before));
        }
        Call::CheckUsage { user, usage } => {
            db.refused_changes_nothing(|b| b.require_usage(&user, &usage.into_iter().collect()));
        }
        Call::TrackUsage { user, metric, amount, key, model, at } => {
            let at = at.and_then(|at| billing_engine::time_util::parse_iso(&at));
            let usage = UsageRequest { model_id: model, at, ..UsageRequest::new(metric, amount) };
            db.refused_changes_nothing(|b| b.track_usage(&user, &usage, &key));
        }
        Call::Reserve { user, usage, operation, key, ttl_s } => {
            let usage = usage.into_iter().collect();
            db.refused_changes_nothing(|b| b.reserve(&user, &usage, operation.as_deref(), &key, ttl_s));
        }
        Call::Settle { hold, actual, key, capture } => {
            let actual: Option<BTreeMap<String, u64>> = actual.map(|a| a.into_iter().collect());
            if capture {
                db.refused_changes_nothing(|b| b.capture(&hold, actual.as_ref(), &UsageLabels::default(), &key));
            } else {
                db.refused_changes_nothing(|b| b.release(&hold, &key));
            }
        }
        Call::Feature { user, name } => {
            db.refused_changes_nothing(|b| b.require_feature(&user, &name));
        }
        Call::VoidGrant { lot_id, key, reason } => {
            db.refused_changes_nothing(|b| b.void_grant(lot_id, &key, &reason));
        }
    }
});
