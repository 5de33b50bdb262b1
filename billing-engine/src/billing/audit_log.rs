//! Reading the audit log, and the two ways a call writes to it: inside its own
//! transaction when it changes something, or, when it is refused, in one of its own
//! after the refusal (see [`crate::audit`]).

use super::Billing;
use crate::audit::{AuditContext, AuditFilter, AuditRecord, NewAuditRecord};
use crate::error::Result;
use crate::input;
use crate::store::Store;

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
