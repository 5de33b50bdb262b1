//! Delivering the outbox to an HTTP endpoint: each event POSTed as JSON with Standard
//! Webhooks headers ([`crate::standard_webhooks`]), in order, through a consumer cursor
//! of the endpoint's own. The host calls [`Billing::deliver_events`] from a worker, as
//! often as it likes; what a failure leaves (the backoff, a stop) is kept in the store,
//! so any process can make the next call.

use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::Billing;
use crate::error::{BillingError, Result};
use crate::events::Event;
use crate::input;
use crate::standard_webhooks::SigningSecret;
use crate::store::{DeliveryState, Store};

/// Waits after the 1st, 2nd, … failed attempt at an event: the schedule the Standard
/// Webhooks specification suggests (5 s, 5 min, 30 min, 2 h, 5 h, then 10 h).
const RETRY_SCHEDULE: [Duration; 6] = [
    Duration::seconds(5),
    Duration::minutes(5),
    Duration::minutes(30),
    Duration::hours(2),
    Duration::hours(5),
    Duration::hours(10),
];

/// The longest `Retry-After` honoured: an endpoint cannot park delivery for longer.
const MAX_RETRY_AFTER: Duration = Duration::hours(24);

/// Where [`Billing::deliver_events`] posts, and how.
#[derive(Debug, Clone)]
pub struct EventEndpoint {
    pub url: String,
    pub secret: SigningSecret,
    /// The consumer whose cursor delivery to this endpoint moves: one per endpoint.
    pub consumer: String,
    /// The longest one request may take.
    pub timeout: StdDuration,
}

impl EventEndpoint {
    /// An endpoint at `url` (`http://` or `https://`), signed with `secret`
    /// (`whsec_…`), as consumer `webhooks`, with a 10 s timeout.
    pub fn new(url: &str, secret: &str) -> Result<Self> {
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
            return Err(BillingError::invalid("endpoint_url", "an http:// or https:// URL of at most 2048 bytes"));
        }
        Ok(Self {
            url: url.to_owned(),
            secret: SigningSecret::parse(secret)?,
            consumer: "webhooks".to_owned(),
            timeout: StdDuration::from_secs(10),
        })
    }
}

/// How a [`Billing::deliver_events`] call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// Every event there was is delivered.
    Delivered,
    /// An attempt failed; the next is due at `next_attempt_at`.
    Retrying,
    /// A failed attempt's wait has not passed: nothing was sent.
    Waiting,
    /// The endpoint answered 410 Gone: nothing is sent until
    /// [`resume_delivery`](Billing::resume_delivery).
    Stopped,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Stopped => "stopped",
        }
    }
}

#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub outcome: DeliveryOutcome,
    /// Events the endpoint accepted in this call.
    pub delivered: u32,
    /// Failed attempts at the event delivery is stuck on.
    pub failed_attempts: u32,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// What the last failure was (`HTTP 503`, `connection failed`): never the URL, a
    /// header or a body.
    pub last_error: Option<String>,
}

/// One attempt's answer.
enum Answer {
    Accepted,
    Gone,
    Failed { error: String, retry_after: Option<Duration> },
}

impl<S: Store> Billing<S> {
    /// Posts up to `limit` events after the endpoint's cursor, in order, and moves the
    /// cursor past each one the endpoint accepts (any 2xx). A failure (another status, a
    /// timeout) stops the call and waits by the retry schedule, or longer when the
    /// endpoint sends `Retry-After`; 410 Gone stops delivery to the endpoint for good.
    /// Each event is delivered at least once; a receiver deduplicates by `webhook-id`.
    pub fn deliver_events(&self, endpoint: &EventEndpoint, limit: u32) -> Result<DeliveryReport> {
        input::id("consumer", &endpoint.consumer)?;
        input::page_size(limit)?;
        let consumer = endpoint.consumer.as_str();
        let state = self.store.read(|tx| Ok(tx.delivery(consumer)?))?;
        let report = |outcome, delivered, state: &DeliveryState, last_error| DeliveryReport {
            outcome,
            delivered,
            failed_attempts: state.failed_attempts,
            next_attempt_at: state.next_attempt_at,
            last_error,
        };
        if state.stopped_at.is_some() {
            return Ok(report(DeliveryOutcome::Stopped, 0, &state, None));
        }
        if state.next_attempt_at.is_some_and(|at| at > self.now()) {
            return Ok(report(DeliveryOutcome::Waiting, 0, &state, None));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(endpoint.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let mut delivered = 0;
        for event in self.poll_events(consumer, limit)? {
            match post(&agent, endpoint, &event, self.now()) {
                Answer::Accepted => {
                    self.ack_events(consumer, &event.event_id)?;
                    delivered += 1;
                }
                Answer::Gone => {
                    let stopped = DeliveryState { stopped_at: Some(self.now()), ..state };
                    self.store.write_many(&[], |tx| Ok(tx.set_delivery(consumer, &stopped)?))?;
                    return Ok(report(DeliveryOutcome::Stopped, delivered, &stopped, Some("HTTP 410".to_owned())));
                }
                Answer::Failed { error, retry_after } => {
                    let failed_attempts = if delivered == 0 { state.failed_attempts + 1 } else { 1 };
                    let wait = RETRY_SCHEDULE[(failed_attempts as usize - 1).min(RETRY_SCHEDULE.len() - 1)]
                        .max(retry_after.unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER));
                    let failed =
                        DeliveryState { failed_attempts, next_attempt_at: Some(self.now() + wait), stopped_at: None };
                    self.store.write_many(&[], |tx| Ok(tx.set_delivery(consumer, &failed)?))?;
                    return Ok(report(DeliveryOutcome::Retrying, delivered, &failed, Some(error)));
                }
            }
        }
        Ok(report(DeliveryOutcome::Delivered, delivered, &DeliveryState::default(), None))
    }

    /// Delivers to a consumer again after its endpoint answered 410 Gone, from where its
    /// cursor stands.
    pub fn resume_delivery(&self, consumer: &str) -> Result<()> {
        input::id("consumer", consumer)?;
        self.store.write_many(&[], |tx| Ok(tx.set_delivery(consumer, &DeliveryState::default())?))
    }
}

/// One attempt at one event, signed for the time it is sent.
fn post(agent: &ureq::Agent, endpoint: &EventEndpoint, event: &Event, now: OffsetDateTime) -> Answer {
    let body = event.to_json().to_string();
    let mut request = agent.post(&endpoint.url).header("content-type", "application/json");
    for (name, value) in endpoint.secret.headers(&event.event_id, now.unix_timestamp(), body.as_bytes()) {
        request = request.header(name, value);
    }
    match request.send(body.as_bytes()) {
        Ok(response) => match response.status().as_u16() {
            200..=299 => Answer::Accepted,
            410 => Answer::Gone,
            status => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| retry_after(value, now));
                Answer::Failed { error: format!("HTTP {status}"), retry_after }
            }
        },
        Err(error) => Answer::Failed { error: crate::http::transport_failure(&error).to_owned(), retry_after: None },
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u32>() {
        return Some(Duration::seconds(seconds.into()));
    }
    let at = OffsetDateTime::parse(value.trim(), &time::format_description::well_known::Rfc2822).ok()?;
    Some((at - now).max(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = datetime!(2026-11-06 08:49:00 UTC);
        assert_eq!(retry_after("120", now), Some(Duration::seconds(120)));
        assert_eq!(retry_after("Fri, 06 Nov 2026 08:49:37 GMT", now), Some(Duration::seconds(37)));
        assert_eq!(retry_after("Fri, 06 Nov 2026 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn an_endpoint_needs_a_web_url_and_a_secret() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(EventEndpoint::new("https://example.com/hooks", secret).is_ok());
        let error = EventEndpoint::new("ftp://example.com", secret).unwrap_err();
        assert!(error.to_string().contains("endpoint_url"), "{error}");
        let error = EventEndpoint::new("https://example.com", "whsec_short").unwrap_err();
        assert!(error.to_string().contains("secret"), "{error}");
    }
}
