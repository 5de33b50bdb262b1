//! Reading the audit log, and the two ways a call writes to it: inside its own
//! transaction when it changes something, or, when it is refused, in one of its own
//! after the refusal (see [`crate::audit`]).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Billing;
use crate::audit::{AuditContext, AuditFilter, AuditRecord, NewAuditRecord};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::input;
use crate::store::Store;

/// The action of the record a catalog that differs from the last one loaded leaves.
const CATALOG_LOADED: &str = "catalog.load";

impl<S: Store> Billing<S> {
    /// A page of the audit log, newest first: the records that match every field of
    /// `filter`, with ids below `before` (pass the last record's id for the next page).
    pub fn audit_log(&self, filter: &AuditFilter, limit: u32, before: Option<i64>) -> Result<Vec<AuditRecord>> {
        for (field, value) in [("user_id", &filter.user_id), ("actor", &filter.actor), ("action", &filter.action)] {
            if let Some(value) = value {
                input::id(field, value)?;
            }
        }
        input::page_size(limit)?;
        self.store.read(|tx| Ok(tx.audit_records(filter, before, limit)?))
    }

    /// Records the catalog this engine opened with when it differs from the last one
    /// recorded: the audit log then shows every change of tariffs (a deploy of a new
    /// file is a catalog reload), with the prices before and after. Servers that open
    /// with a new catalog at the same moment may each record it.
    pub(super) fn record_catalog(&self) -> Result<()> {
        let filter = AuditFilter { action: Some(CATALOG_LOADED.to_owned()), ..AuditFilter::default() };
        let last = self.store.read(|tx| Ok(tx.audit_records(&filter, None, 1)?))?.pop();
        let now = catalog_summary(&self.catalog);
        let before = last.and_then(|record| record.after);
        if before.as_ref().map(|b| &b["fingerprint"]) == Some(&now["fingerprint"]) {
            return Ok(());
        }
        self.append_audit(&self.audit_record(CATALOG_LOADED, None).change(before, Some(now)))
    }

    /// The record of `action` about `user_id` (left out when it is not a valid id: a
    /// refusal's record never repeats hostile input) by this thread's actor, now.
    pub(super) fn audit_record(&self, action: &str, user_id: Option<&str>) -> NewAuditRecord {
        let user_id = user_id.filter(|id| input::id("user_id", id).is_ok());
        NewAuditRecord::new(&AuditContext::current(), action, user_id, self.now())
    }

    /// Runs `call`; when it is refused, appends `record` as rejected, with the error's
    /// code and message, and returns the refusal as it was. The call's own transaction
    /// rolled back with it, so the record takes one of its own; a store that cannot
    /// write it does not hide the refusal.
    pub(super) fn audited<T>(&self, record: &NewAuditRecord, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let result = call();
        if let Err(error) = &result {
            let _ = self.append_audit(&record.clone().rejected(error));
        }
        result
    }

    /// Appends `record` in a transaction of its own: for what a call did over several
    /// transactions (a payment, a notification), once it is done.
    pub(super) fn append_audit(&self, record: &NewAuditRecord) -> Result<()> {
        self.store.write_many(&[], |tx| Ok(tx.append_audit(record).map(drop)?))
    }
}

/// What the audit log keeps of a catalog: its fingerprint (SHA-256 of its JSON) and
/// every price in it.
fn catalog_summary(catalog: &Catalog) -> Value {
    let text = serde_json::to_string(catalog).expect("a catalog is JSON");
    let plans: Vec<Value> =
        catalog.plans.iter().map(|p| json!({ "code": p.code, "price": p.price.to_string() })).collect();
    let packages: Vec<Value> = catalog
        .packages
        .iter()
        .map(|p| json!({ "code": p.code, "credits": p.credits.to_string(), "price": p.price.to_string() }))
        .collect();
    json!({
        "fingerprint": hex::encode(Sha256::digest(text.as_bytes())),
        "currency": catalog.currency,
        "plans": plans,
        "packages": packages,
    })
}
