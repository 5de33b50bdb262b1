//! The audit log: who did what to billing, and why. Every admin and payment operation
//! appends a record (grants, voids, imports, activations, cancellations, refunds, new
//! payments, catalog reloads, reconciliations, and every webhook's outcome, rejections
//! included), in the transaction of the change it records where there is one. Like the
//! ledger, the log is append-only: the store refuses to change or delete a record.
//!
//! Who acts is the host's to say: it runs the calls of a request inside
//! [`AuditContext::scope`] (an admin's id, the request id, a reason), and each record
//! written on that thread takes them. Calls outside a scope are recorded as `system`.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{BillingError, Result};
use crate::input;

/// Who acts, for the records written inside [`AuditContext::scope`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditContext {
    /// `admin:alice`, `support:bob`, `service:quota`: the host's own naming.
    pub actor: String,
    /// The id of the request the calls serve (`X-Request-Id`), to find them in logs.
    pub request_id: Option<String>,
    /// Why, where the call itself takes no reason.
    pub reason: Option<String>,
}

/// The actor of calls made outside any [`AuditContext::scope`].
pub const SYSTEM: &str = "system";

thread_local! {
    static CURRENT: RefCell<Option<AuditContext>> = const { RefCell::new(None) };
}

impl AuditContext {
    /// A context with its fields checked: an actor of 1 to 128 bytes, a request id and a
    /// reason bounded like other ids and texts.
    pub fn new(actor: &str, request_id: Option<&str>, reason: Option<&str>) -> Result<Self> {
        input::id("actor", actor)?;
        if let Some(id) = request_id {
            input::id("request_id", id)?;
        }
        if let Some(reason) = reason {
            input::text("reason", reason)?;
        }
        Ok(Self {
            actor: actor.to_owned(),
            request_id: request_id.map(str::to_owned),
            reason: reason.map(str::to_owned),
        })
    }

    /// Runs `f` with this context for every record written on this thread; the context
    /// before it is back when `f` returns (or panics).
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Restore(Option<AuditContext>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(CURRENT.with(|current| current.borrow_mut().replace(self.clone())));
        f()
    }

    /// The context of this thread's current scope, or `system`. Read on the calling
    /// thread before a store transaction starts: a store may run the transaction on
    /// another thread.
    pub(crate) fn current() -> Self {
        CURRENT.with(|current| current.borrow().clone()).unwrap_or_else(|| Self {
            actor: SYSTEM.to_owned(),
            request_id: None,
            reason: None,
        })
    }
}

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "uniffi", derive(uniffi::Enum))]
pub enum AuditOutcome {
    /// The operation changed what it was asked to.
    Applied,
    /// It changed nothing: a replay, a duplicate, or nothing to do.
    Unchanged,
    /// It was refused; `error` says why.
    Rejected,
}

stored_names!(AuditOutcome { Applied => "applied", Unchanged => "unchanged", Rejected => "rejected" });

/// A record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditRecord {
    /// The user the operation was about, if one.
    pub user_id: Option<String>,
    pub actor: String,
    /// `credits.grant`, `subscription.cancel`, `webhook.yookassa`, ... (see `docs/AUDIT.md`).
    pub action: String,
    /// What it acted on: a payment id, a lot id, an event name.
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    pub reason: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// A refusal's code and message.
    pub error: Option<Value>,
    pub request_id: Option<String>,
    pub created_at: OffsetDateTime,
}

impl NewAuditRecord {
    /// A record of `action` by the context's actor, applied, with nothing else yet.
    pub(crate) fn new(context: &AuditContext, action: &str, user_id: Option<&str>, now: OffsetDateTime) -> Self {
        Self {
            user_id: user_id.map(str::to_owned),
            actor: context.actor.clone(),
            action: action.to_owned(),
            target: None,
            outcome: AuditOutcome::Applied,
            reason: context.reason.clone(),
            before: None,
            after: None,
            error: None,
            request_id: context.request_id.clone(),
            created_at: now,
        }
    }

    pub(crate) fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The call's own reason, which wins over the context's.
    pub(crate) fn reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    pub(crate) fn change(mut self, before: Option<Value>, after: Option<Value>) -> Self {
        self.before = before;
        self.after = after;
        self
    }

    pub(crate) fn outcome(mut self, outcome: AuditOutcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// A keyed call replayed: it changed nothing, and returned the entry `entry`.
    pub(crate) fn replayed(self, entry: &crate::ledger::LedgerEntry) -> Self {
        let mut record = self.outcome(AuditOutcome::Unchanged);
        record.target = record.target.or_else(|| Some(entry.id.to_string()));
        record
    }

    /// The entry `entry` moved the user's credits from `before`.
    pub(crate) fn credits_moved(self, entry: &crate::ledger::LedgerEntry, before: rust_decimal::Decimal) -> Self {
        let moved = self.change(
            Some(serde_json::json!({ "credits": before.to_string() })),
            Some(serde_json::json!({ "credits": entry.credits_balance_after.to_string() })),
        );
        NewAuditRecord { target: moved.target.clone().or_else(|| Some(entry.id.to_string())), ..moved }
    }

    /// The operation was refused with `error`: its stable code and its (bounded) message.
    pub(crate) fn rejected(mut self, error: &BillingError) -> Self {
        self.outcome = AuditOutcome::Rejected;
        self.error = Some(serde_json::json!({ "code": error.code(), "message": error.message() }));
        self
    }
}

/// One stored record.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AuditRecord {
    /// Grows with every record; pass the last one's as `before` for the next page.
    pub id: i64,
    pub user_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: AuditOutcome,
    pub reason: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub error: Option<Value>,
    pub request_id: Option<String>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub created_at: OffsetDateTime,
}

/// A stored record written again elsewhere, as a copy between stores does (its id aside).
impl From<&AuditRecord> for NewAuditRecord {
    fn from(r: &AuditRecord) -> Self {
        Self {
            user_id: r.user_id.clone(),
            actor: r.actor.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            outcome: r.outcome,
            reason: r.reason.clone(),
            before: r.before.clone(),
            after: r.after.clone(),
            error: r.error.clone(),
            request_id: r.request_id.clone(),
            created_at: r.created_at,
        }
    }
}

/// Which records [`audit_log`](crate::Billing::audit_log) reads: all that match every
/// field given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<AuditOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_sets_the_actor_for_its_thread_and_restores_the_one_before() {
        assert_eq!(AuditContext::current().actor, SYSTEM);
        let admin = AuditContext::new("admin:alice", Some("req-1"), None).unwrap();
        let support = AuditContext::new("support:bob", None, Some("ticket 7")).unwrap();
        admin.scope(|| {
            assert_eq!(AuditContext::current(), admin);
            support.scope(|| assert_eq!(AuditContext::current(), support));
            assert_eq!(AuditContext::current(), admin);
            std::thread::spawn(|| assert_eq!(AuditContext::current().actor, SYSTEM)).join().unwrap();
        });
        let _ = std::panic::catch_unwind(|| admin.scope(|| panic!("inside")));
        assert_eq!(AuditContext::current().actor, SYSTEM);
    }

    #[test]
    fn a_context_checks_its_fields() {
        assert!(AuditContext::new("", None, None).is_err());
        assert!(AuditContext::new("admin", Some("\u{0}"), None).is_err());
        assert!(AuditContext::new("admin", None, Some("")).is_err());
    }
}
