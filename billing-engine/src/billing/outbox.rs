//! The outbox of domain events, read by consumers: each polls what is after its cursor
//! and acknowledges what it handled. Delivery is at least once (a consumer that fails
//! before acknowledging gets the events again) and in each user's order; consumers
//! deduplicate by `event_id`. Which change makes which event is `events.rs`.
//!
//! On PostgreSQL an event becomes pollable once every transaction that started before
//! its own has ended (see the store's `events_after`): a transaction left open on the
//! server holds polling back, never reorders or loses an event. A user's own events
//! ([`Billing::user_events`]) show as soon as they commit.

use time::OffsetDateTime;

use super::Billing;
use crate::error::{BillingError, Result};
use crate::events::Event;
use crate::input;
use crate::store::Store;

impl<S: Store> Billing<S> {
    /// Up to `limit` events after `consumer`'s cursor, oldest first; a consumer not seen
    /// before starts at the first event stored. Polling does not move the cursor:
    /// [`ack_events`](Self::ack_events) does.
    pub fn poll_events(&self, consumer: &str, limit: u32) -> Result<Vec<Event>> {
        input::id("consumer", consumer)?;
        input::page_size(limit)?;
        self.store.read(|tx| Ok(tx.events_after(consumer, limit)?))
    }

    /// Moves `consumer`'s cursor to the event `up_to` (one that
    /// [`poll_events`](Self::poll_events) returned) and so past it and every event before
    /// it. The cursor only moves forward: acknowledging an older event changes nothing.
    /// An event that is not stored (or was pruned) is INVALID_ARGUMENT (`up_to`).
    pub fn ack_events(&self, consumer: &str, up_to: &str) -> Result<()> {
        input::id("consumer", consumer)?;
        input::id("up_to", up_to)?;
        self.store.write_many(&[], |tx| match tx.ack_event(consumer, up_to)? {
            true => Ok(()),
            false => Err(BillingError::invalid("up_to", format!("no event `{up_to}` to acknowledge"))),
        })
    }

    /// A page of the user's events in sequence, after `after_sequence` (0 from the
    /// first): what billing told other services about the user. UNKNOWN_USER when the
    /// user has no account.
    pub fn user_events(&self, user_id: &str, after_sequence: i64, limit: u32) -> Result<Vec<Event>> {
        input::id("user_id", user_id)?;
        input::page_size(limit)?;
        self.store.read(|tx| {
            if tx.account(user_id)?.is_none() {
                return Err(BillingError::UnknownUser { user_id: user_id.to_owned() });
            }
            Ok(tx.user_events(user_id, after_sequence, limit)?)
        })
    }

    /// Deletes the events that occurred before `before`, except each user's newest,
    /// which carries the user's sequence on; how many it deleted. Events a consumer has
    /// not acknowledged yet are deleted too: prune behind the slowest consumer.
    pub fn prune_events(&self, before: OffsetDateTime) -> Result<u64> {
        self.store.write_many(&[], |tx| Ok(tx.prune_events(before)?))
    }
}
