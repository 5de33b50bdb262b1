//! YooKassa API v3 over `ureq`: HTTP Basic auth with the shop id and secret key, an
//! `Idempotence-Key` on every POST, and retries with the same key after network errors
//! and 5xx answers only (after a 4xx the same key would only repeat the refusal).

use std::fmt;
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use crate::error::{BillingError, Result};
use crate::payment::{PaymentStatus, SavedCard};
use crate::provider::{
    Notification, PayWith, PaymentProvider, PaymentRequest, ProviderError, ProviderPayment, ProviderRefund,
};
use crate::webhook::{NetworkList, WebhookChecks};

pub const DEFAULT_API_URL: &str = "https://api.yookassa.ru/v3";

/// How to reach a YooKassa shop and which checks a notification must pass.
#[derive(Clone)]
pub struct YooKassaConfig {
    pub shop_id: String,
    pub secret_key: String,
    pub api_url: String,
    /// Where the provider sends the user back after paying, when a call gives none.
    pub return_url: Option<String>,
    /// Secrets for the optional HMAC check of notifications (see [`crate::webhook`]);
    /// several for rotation, any one verifies. Empty: no signature check.
    pub webhook_secrets: Vec<String>,
    /// Networks a notification may come from. `None`: YooKassa's published networks.
    /// `Some(vec![])`: no address check (only when a proxy in front already checks).
    pub trusted_networks: Option<Vec<String>>,
    /// Re-read each notified object through the API and trust the API's status.
    pub verify_by_fetch: bool,
    pub timeout: Duration,
    /// Extra attempts after a network error or a 5xx answer.
    pub retries: u32,
}

impl fmt::Debug for YooKassaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("YooKassaConfig")
            .field("shop_id", &self.shop_id)
            .field("secret_key", &"***")
            .field("api_url", &self.api_url)
            .field("return_url", &self.return_url)
            .field("webhook_secrets", &format_args!("[{} hidden]", self.webhook_secrets.len()))
            .field("trusted_networks", &self.trusted_networks)
            .field("verify_by_fetch", &self.verify_by_fetch)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

impl YooKassaConfig {
    pub fn new(shop_id: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            shop_id: shop_id.into(),
            secret_key: secret_key.into(),
            api_url: DEFAULT_API_URL.to_owned(),
            return_url: None,
            webhook_secrets: Vec::new(),
            trusted_networks: None,
            verify_by_fetch: true,
            timeout: Duration::from_secs(10),
            retries: 2,
        }
    }

    /// Reads `YOOKASSA_SHOP_ID`, `YOOKASSA_SECRET_KEY` (both required),
    /// `YOOKASSA_WEBHOOK_SECRET` (comma-separated for rotation), `YOOKASSA_API_URL` and
    /// `YOOKASSA_RETURN_URL`.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let required = |field: &'static str| {
            var(field).ok_or_else(|| BillingError::invalid(field, "the environment variable is not set"))
        };
        let mut config = Self::new(required("YOOKASSA_SHOP_ID")?, required("YOOKASSA_SECRET_KEY")?);
        if let Some(url) = var("YOOKASSA_API_URL") {
            config.api_url = url;
        }
        config.return_url = var("YOOKASSA_RETURN_URL");
        if let Some(secrets) = var("YOOKASSA_WEBHOOK_SECRET") {
            config.webhook_secrets =
                secrets.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        }
        Ok(config)
    }

    /// The client and the notification checks this configuration describes.
    pub(crate) fn build(&self) -> Result<(YooKassa, WebhookChecks)> {
        if self.shop_id.is_empty() || self.shop_id.contains(':') {
            return Err(BillingError::invalid("shop_id", "must be non-empty and contain no ':'"));
        }
        if self.secret_key.is_empty() {
            return Err(BillingError::invalid("secret_key", "must not be empty"));
        }
        if !(self.api_url.starts_with("https://") || self.api_url.starts_with("http://")) {
            return Err(BillingError::invalid("api_url", format!("expected an http(s) URL, got `{}`", self.api_url)));
        }
        if self.timeout.is_zero() {
            return Err(BillingError::invalid("timeout", "must be positive"));
        }
        let networks = match &self.trusted_networks {
            None => NetworkList::yookassa(),
            Some(list) => NetworkList::parse(list)?,
        };
        let checks =
            WebhookChecks { networks, secrets: self.webhook_secrets.clone(), verify_by_fetch: self.verify_by_fetch };
        Ok((YooKassa::new(self), checks))
    }
}

/// The YooKassa client.
pub struct YooKassa {
    agent: ureq::Agent,
    api_url: String,
    authorization: String,
    retries: u32,
}

/// The first wait before a retry; each next one is twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

impl YooKassa {
    fn new(config: &YooKassaConfig) -> Self {
        let credentials = format!("{}:{}", config.shop_id, config.secret_key);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            // Statuses are read below: a 4xx body says why, and only a 5xx is retried.
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            agent,
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            authorization: format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)),
            retries: config.retries,
        }
    }

    fn get(&self, path: &str) -> Result<Value, ProviderError> {
        self.send(path, None)
    }

    fn post(&self, path: &str, body: &Value, idempotence_key: &str) -> Result<Value, ProviderError> {
        self.send(path, Some((body, idempotence_key)))
    }

    /// One logical request: the same body and key on every attempt.
    fn send(&self, path: &str, post: Option<(&Value, &str)>) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.api_url);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let result = match post {
                Some((body, key)) => self
                    .agent
                    .post(&url)
                    .header("Authorization", &self.authorization)
                    .header("Idempotence-Key", key)
                    .send_json(body),
                None => self.agent.get(&url).header("Authorization", &self.authorization).call(),
            };
            let failure = match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_json::<Value>();
                    match status {
                        200..=299 => {
                            return body.map_err(|e| ProviderError::BadResponse { message: format!("{path}: {e}") })
                        }
                        404 => return Err(ProviderError::NotFound { message: format!("{path}: HTTP 404") }),
                        400..=499 => return Err(refusal(status, body.ok())),
                        _ => format!("{path}: HTTP {status}"),
                    }
                }
                Err(error) => format!("{path}: {}", transport_failure(&error)),
            };
            if attempt >= self.retries {
                return Err(ProviderError::Unavailable { message: failure });
            }
            attempt += 1;
            thread::sleep(backoff);
            backoff *= 2;
        }
    }
}

/// What went wrong on the way, in words that carry no request data.
fn transport_failure(error: &ureq::Error) -> &'static str {
    match error {
        ureq::Error::Timeout(_) => "timed out",
        ureq::Error::HostNotFound => "host not found",
        ureq::Error::ConnectionFailed => "connection failed",
        ureq::Error::Io(_) => "connection error",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error",
        _ => "invalid response",
    }
}

/// A 4xx answer: YooKassa's `{"type": "error", "code", "description"}` body.
fn refusal(status: u16, body: Option<Value>) -> ProviderError {
    let body = body.unwrap_or(Value::Null);
    let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
    ProviderError::Refused {
        code: text("code").unwrap_or_else(|| format!("http_{status}")),
        description: text("description").unwrap_or_else(|| format!("HTTP {status}")),
    }
}

impl PaymentProvider for YooKassa {
    fn create_payment(
        &self,
        request: &PaymentRequest,
        idempotence_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let mut body = json!({
            "amount": money(request.amount, &request.currency),
            "capture": request.capture,
            "description": request.description,
            "metadata": request.metadata.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<Map<String, Value>>(),
        });
        match &request.pay_with {
            PayWith::Redirect { return_url } => {
                body["confirmation"] = json!({ "type": "redirect", "return_url": return_url });
                body["save_payment_method"] = json!(request.save_payment_method);
            }
            PayWith::SavedMethod { method_id } => body["payment_method_id"] = json!(method_id),
        }
        parse_payment(&self.post("/payments", &body, idempotence_key)?)
    }

    fn get_payment(&self, provider_payment_id: &str) -> Result<ProviderPayment, ProviderError> {
        parse_payment(&self.get(&format!("/payments/{}", path_segment(provider_payment_id)?))?)
    }

    fn cancel_payment(
        &self,
        provider_payment_id: &str,
        idempotence_key: &str,
    ) -> Result<ProviderPayment, ProviderError> {
        let path = format!("/payments/{}/cancel", path_segment(provider_payment_id)?);
        parse_payment(&self.post(&path, &json!({}), idempotence_key)?)
    }

    fn create_refund(
        &self,
        provider_payment_id: &str,
        amount: Decimal,
        currency: &str,
        idempotence_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let body = json!({ "payment_id": provider_payment_id, "amount": money(amount, currency) });
        parse_refund(&self.post("/refunds", &body, idempotence_key)?)
    }

    fn get_refund(&self, refund_id: &str) -> Result<ProviderRefund, ProviderError> {
        parse_refund(&self.get(&format!("/refunds/{}", path_segment(refund_id)?))?)
    }

    fn read_notification(&self, body: &[u8]) -> Result<Notification> {
        read_notification(body)
    }
}

/// Reads a YooKassa notification: `{"type": "notification", "event", "object"}`.
pub(crate) fn read_notification(body: &[u8]) -> Result<Notification> {
    let invalid = |reason: String| BillingError::InvalidWebhook { reason };
    let value: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    if value.get("type").and_then(Value::as_str) != Some("notification") {
        return Err(invalid("the body is not a notification (`type` must be \"notification\")".into()));
    }
    let event = value.get("event").and_then(Value::as_str).ok_or_else(|| invalid("it has no `event`".into()))?;
    let event = event.to_owned();
    let object = value.get("object").filter(|o| o.is_object()).ok_or_else(|| invalid("it has no `object`".into()))?;
    let not_an_object =
        |what: &str, e: ProviderError| invalid(format!("the notification's object is not a {what}: {e}"));
    let claimed = match event.as_str() {
        "payment.waiting_for_capture" => PaymentStatus::WaitingForCapture,
        "payment.succeeded" => PaymentStatus::Succeeded,
        "payment.canceled" => PaymentStatus::Canceled,
        "refund.succeeded" => {
            let refund = parse_refund(object).map_err(|e| not_an_object("refund", e))?;
            refuse_foreign_id(&refund.id)?;
            refuse_foreign_id(&refund.payment_id)?;
            return Ok(Notification::Refund { event, refund });
        }
        _ => return Ok(Notification::Other { event }),
    };
    if object.get("status").and_then(Value::as_str) != Some(claimed.as_str()) {
        return Err(invalid(format!("`{event}` with an object whose status is not `{claimed}`")));
    }
    let payment = parse_payment(object).map_err(|e| not_an_object("payment", e))?;
    refuse_foreign_id(&payment.id)?;
    Ok(Notification::Payment { event, status: claimed, payment })
}

/// A notification about an id no YooKassa object can have is forged or garbled.
fn refuse_foreign_id(id: &str) -> Result<()> {
    if is_object_id(id) {
        return Ok(());
    }
    Err(BillingError::InvalidWebhook { reason: format!("`{}` is not a YooKassa object id", id.escape_debug()) })
}

/// `{"value": "299.00", "currency": "RUB"}`: two decimal places, as YooKassa wants.
fn money(amount: Decimal, currency: &str) -> Value {
    let mut value = amount.round_dp(2);
    value.rescale(2);
    json!({ "value": value.to_string(), "currency": currency })
}

/// Whether `id` can be a YooKassa object id (a UUID-like string). Ids go into URL
/// paths, so anything else is refused before a request is made.
fn is_object_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn path_segment(id: &str) -> Result<&str, ProviderError> {
    if is_object_id(id) {
        Ok(id)
    } else {
        Err(ProviderError::BadResponse { message: format!("not a provider id: {id:?}") })
    }
}

/// A YooKassa payment object, from an API answer or a notification.
fn parse_payment(object: &Value) -> Result<ProviderPayment, ProviderError> {
    let bad = |message: String| ProviderError::BadResponse { message };
    let text = |value: &Value, field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let id = text(object, "id").ok_or_else(|| bad("payment without `id`".into()))?;
    let status_text = text(object, "status").ok_or_else(|| bad(format!("payment {id} without `status`")))?;
    let status = PaymentStatus::from_str(&status_text)
        .ok()
        .filter(|status| *status != PaymentStatus::New && *status != PaymentStatus::Refunded)
        .ok_or_else(|| bad(format!("payment {id} has an unknown status `{status_text}`")))?;
    let (amount, currency) =
        parse_money(object.get("amount")).ok_or_else(|| bad(format!("payment {id}: bad `amount`")))?;
    let method = object.get("payment_method").filter(|m| m.get("saved").and_then(Value::as_bool) == Some(true));
    let saved_card = method.and_then(|method| {
        let card = method.get("card").cloned().unwrap_or(Value::Null);
        Some(SavedCard {
            method_id: text(method, "id")?,
            card_type: text(&card, "card_type"),
            last4: text(&card, "last4"),
            first6: text(&card, "first6"),
            expiry_month: text(&card, "expiry_month"),
            expiry_year: text(&card, "expiry_year"),
        })
    });
    Ok(ProviderPayment {
        confirmation_url: object.get("confirmation").and_then(|c| text(c, "confirmation_url")),
        engine_payment_id: object.get("metadata").and_then(|m| text(m, "payment_id")),
        id,
        status,
        amount,
        currency,
        saved_card,
        raw: object.clone(),
    })
}

/// A YooKassa refund object.
fn parse_refund(object: &Value) -> Result<ProviderRefund, ProviderError> {
    let bad = |message: &str| ProviderError::BadResponse { message: message.to_owned() };
    let text = |field: &str| object.get(field).and_then(Value::as_str).map(str::to_owned);
    let (amount, _) = parse_money(object.get("amount")).ok_or_else(|| bad("refund: bad `amount`"))?;
    Ok(ProviderRefund {
        id: text("id").ok_or_else(|| bad("refund without `id`"))?,
        payment_id: text("payment_id").ok_or_else(|| bad("refund without `payment_id`"))?,
        status: text("status").ok_or_else(|| bad("refund without `status`"))?,
        amount,
    })
}

fn parse_money(value: Option<&Value>) -> Option<(Decimal, String)> {
    let value = value?;
    let amount = Decimal::from_str_exact(value.get("value")?.as_str()?).ok()?;
    Some((amount, value.get("currency")?.as_str()?.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_notifications_are_refused() {
        for body in [
            &b"{\"type\":\"notif"[..],
            b"<html>",
            b"[]",
            b"{\"type\":\"notification\",\"event\":\"payment.succeeded\"}",
            br#"{"type":"notification","event":"payment.succeeded","object":{"id":"x","status":"pending"}}"#,
            br#"{"type":"notification","event":"refund.succeeded","object":{"id":"a/b","payment_id":"p","status":"succeeded","amount":{"value":"1.00","currency":"RUB"}}}"#,
        ] {
            assert_eq!(read_notification(body).unwrap_err().code(), "INVALID_WEBHOOK");
        }
        let other = br#"{"type":"notification","event":"deal.closed","object":{"id":"x"}}"#;
        assert_eq!(read_notification(other).unwrap(), Notification::Other { event: "deal.closed".into() });
    }

    #[test]
    fn amounts_go_out_with_two_places() {
        assert_eq!(money("299".parse().unwrap(), "RUB"), json!({"value": "299.00", "currency": "RUB"}));
        assert_eq!(money("1.5".parse().unwrap(), "RUB")["value"], "1.50");
    }

    #[test]
    fn the_config_never_prints_its_secrets() {
        let mut config = YooKassaConfig::new("shop", "live_S3CRET");
        config.webhook_secrets = vec!["whsec_TOPSECRET".into()];
        let printed = format!("{config:?}");
        assert!(!printed.contains("S3CRET") && !printed.contains("TOPSECRET"), "{printed}");
    }

    #[test]
    fn from_env_requires_the_shop_and_reads_rotated_secrets() {
        let err = YooKassaConfig::from_vars(|_| None).unwrap_err();
        assert_eq!(err.details()["field"], "YOOKASSA_SHOP_ID");
        let config = YooKassaConfig::from_vars(|name| match name {
            "YOOKASSA_SHOP_ID" => Some("42".into()),
            "YOOKASSA_SECRET_KEY" => Some("k".into()),
            "YOOKASSA_WEBHOOK_SECRET" => Some("new, old".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.webhook_secrets, ["new", "old"]);
        assert_eq!(config.api_url, DEFAULT_API_URL);
    }

    #[test]
    fn a_payment_object_gives_its_saved_card_only_when_saved() {
        let mut object = json!({
            "id": "2f0a", "status": "waiting_for_capture", "amount": {"value": "1.00", "currency": "RUB"},
            "metadata": {"payment_id": "p1"},
            "payment_method": {"type": "bank_card", "id": "pm-1", "saved": true,
                "card": {"first6": "555555", "last4": "4444", "card_type": "MasterCard"}}
        });
        let payment = parse_payment(&object).unwrap();
        assert_eq!(payment.status, PaymentStatus::WaitingForCapture);
        assert_eq!(payment.engine_payment_id.as_deref(), Some("p1"));
        let card = payment.saved_card.unwrap();
        assert_eq!((card.method_id.as_str(), card.last4.as_deref()), ("pm-1", Some("4444")));
        object["payment_method"]["saved"] = json!(false);
        assert_eq!(parse_payment(&object).unwrap().saved_card, None);
        object["status"] = json!("refunded");
        assert!(matches!(parse_payment(&object), Err(ProviderError::BadResponse { .. })));
    }
}
