//! Provider notifications: when one may be trusted. What one says is read by its
//! provider ([`crate::provider::PaymentProvider::read_notification`]).
//!
//! YooKassa does not sign its notifications, so anyone who knows the webhook URL can post
//! one. The engine trusts a notification only after every configured check passes:
//! 1. **Sender address** inside YooKassa's published networks (the default list, or the
//!    host's own). Behind a proxy the host passes the client address it trusts.
//! 2. **HMAC-SHA256**, when webhook secrets are set: for deployments whose own proxy or
//!    gateway signs what it forwards. The header is
//!    `X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
//!    (several `v1=` allowed); the time must be within ±5 minutes, so a captured
//!    request cannot be replayed later.
//! 3. **Re-reading the object** through the API (`verify_by_fetch`): the API's status
//!    wins, and a notification claiming more than the API knows is refused.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::error::{BillingError, Result};

/// YooKassa's published notification networks.
pub const YOOKASSA_NETWORKS: [&str; 7] = [
    "185.71.76.0/27",
    "185.71.77.0/27",
    "77.75.153.0/25",
    "77.75.154.128/25",
    "77.75.156.11/32",
    "77.75.156.35/32",
    "2a02:5180::/32",
];

pub const SIGNATURE_HEADER: &str = "X-Webhook-Signature";
/// How far a signed timestamp may be from the engine's clock.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

/// Sender networks; empty means the address is not checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkList(Vec<IpNet>);

impl NetworkList {
    pub fn yookassa() -> Self {
        Self::parse(&YOOKASSA_NETWORKS).expect("the published networks parse")
    }

    /// Networks as `a.b.c.d/n` or single addresses.
    pub fn parse<S: AsRef<str>>(list: &[S]) -> Result<Self> {
        list.iter()
            .map(|text| {
                let text = text.as_ref().trim();
                text.parse::<IpNet>().or_else(|_| text.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    BillingError::invalid("trusted_networks", format!("`{text}` is not an IP network or address"))
                })
            })
            .collect::<Result<_>>()
            .map(Self)
    }

    fn contains(&self, addr: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d.
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }
}

/// The checks a notification must pass before it is read.
#[derive(Clone)]
pub struct WebhookChecks {
    pub networks: NetworkList,
    pub secrets: Vec<String>,
    pub verify_by_fetch: bool,
}

impl WebhookChecks {
    pub(crate) fn verify(
        &self,
        body: &[u8],
        remote_addr: Option<&str>,
        headers: &[(String, String)],
        now: OffsetDateTime,
    ) -> Result<()> {
        self.verify_sender(remote_addr)?;
        self.verify_signature(body, headers, now)
    }

    fn verify_sender(&self, remote_addr: Option<&str>) -> Result<()> {
        if self.networks.0.is_empty() {
            return Ok(());
        }
        let addr = remote_addr.ok_or_else(|| invalid("the sender address is required by the address check"))?;
        let ip: IpAddr = addr.trim().parse().map_err(|_| invalid(format!("`{addr}` is not an IP address")))?;
        if !self.networks.contains(ip) {
            return Err(invalid(format!("sender {ip} is outside the trusted networks")));
        }
        Ok(())
    }

    fn verify_signature(&self, body: &[u8], headers: &[(String, String)], now: OffsetDateTime) -> Result<()> {
        if self.secrets.is_empty() {
            return Ok(());
        }
        let header = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(SIGNATURE_HEADER))
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| invalid(format!("the {SIGNATURE_HEADER} header is missing")))?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
                Some(("v1", hex_mac)) => signatures.extend(hex::decode(hex_mac).ok()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or_else(|| invalid("the signature has no valid `t=` timestamp"))?;
        // `abs_diff`: a timestamp far from now (`t=-9223372036854775808`) must not overflow.
        if now.unix_timestamp().abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
            return Err(invalid("the signature's timestamp is too far from now"));
        }
        let verified = self.secrets.iter().any(|secret| {
            let mac = signed_mac(secret, timestamp, body);
            // Constant time, and checks the length: an empty signature never passes.
            signatures.iter().any(|signature| mac.clone().verify_slice(signature).is_ok())
        });
        if !verified {
            return Err(invalid("the signature does not match"));
        }
        Ok(())
    }
}

/// The value of [`SIGNATURE_HEADER`] for `body` at `timestamp`: what a signing proxy sends.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = signed_mac(secret, timestamp, body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`: what is signed and verified.
fn signed_mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

fn invalid(reason: impl Into<String>) -> BillingError {
    BillingError::InvalidWebhook { reason: reason.into() }
}

/// What handling a notification did.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookOutcome {
    pub status: WebhookStatus,
    pub event: String,
    /// The engine's id of the payment the notification is about, when it is one of ours.
    pub payment_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// The notification moved a payment forward and its effects were applied.
    Applied,
    /// The payment was already in this state: nothing to do.
    Duplicate,
    /// Not ours, an event the engine does not act on, or older than what is recorded.
    Ignored,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(secrets: &[&str]) -> WebhookChecks {
        WebhookChecks {
            networks: NetworkList::yookassa(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            verify_by_fetch: false,
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
    }

    #[test]
    fn only_senders_in_the_published_networks_pass() {
        let c = checks(&[]);
        for ok in ["185.71.76.5", "77.75.156.11", "::ffff:185.71.77.31", "2a02:5180:0:1::7"] {
            assert!(c.verify_sender(Some(ok)).is_ok(), "{ok}");
        }
        for bad in ["185.71.76.32", "77.75.156.12", "127.0.0.1", "2a02:5181::1", "not-an-ip"] {
            assert_eq!(c.verify_sender(Some(bad)).unwrap_err().code(), "INVALID_WEBHOOK", "{bad}");
        }
        assert!(c.verify_sender(None).is_err());
        let off = WebhookChecks { networks: NetworkList::parse::<&str>(&[]).unwrap(), ..c };
        assert!(off.verify_sender(None).is_ok());
        assert!(NetworkList::parse(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn a_signature_passes_with_any_current_secret_and_within_the_time_window() {
        let body = br#"{"type":"notification"}"#;
        let t = now().unix_timestamp();
        let header = |value: String| vec![(SIGNATURE_HEADER.to_lowercase(), value)];
        let c = checks(&["new", "old"]);
        assert!(c.verify_signature(body, &header(sign("old", t, body)), now()).is_ok());
        assert!(c.verify_signature(body, &header(sign("new", t - 299, body)), now()).is_ok());
        let refused = [
            header(sign("other", t, body)),
            header(sign("new", t - 301, body)),
            header(sign("new", t, b"{}")),
            header(format!("t={t},v1=")),
            // Far-off timestamps once overflowed the check (a panic in debug builds).
            header(sign("new", i64::MIN, body)),
            header(sign("new", i64::MAX, body)),
            header(sign("new", t, body).split_once(',').unwrap().1.to_owned()),
            vec![],
        ];
        for headers in refused {
            assert_eq!(c.verify_signature(body, &headers, now()).unwrap_err().code(), "INVALID_WEBHOOK", "{headers:?}");
        }
    }
}
