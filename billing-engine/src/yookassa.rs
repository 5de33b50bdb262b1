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
use crate::payment::{PaymentStatus, SavedMethod};
use crate::provider::{
    Notification, PayWith, PaymentProvider, PaymentRequest, ProviderError, ProviderMethod, ProviderPayment,
    ProviderRefund, RefundRequest,
};
use crate::receipt::{Receipt, MAX_DESCRIPTION_CHARS, TAX_SYSTEM_CODES};
use crate::time_util::parse_iso;
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
    /// Send a 54-FZ receipt with every payment and refund (the shop fiscalizes through
    /// YooKassa). The catalog then needs a `[receipt]` table, and each payment a
    /// customer contact (see [`crate::receipt`]).
    pub receipts: bool,
    /// The shop's tax system on its receipts (1–6); optional for YooKassa.
    pub tax_system_code: Option<u8>,
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
            .field("receipts", &self.receipts)
            .field("tax_system_code", &self.tax_system_code)
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
            receipts: false,
            tax_system_code: None,
        }
    }

    /// Reads `YOOKASSA_SHOP_ID`, `YOOKASSA_SECRET_KEY` (both required),
    /// `YOOKASSA_WEBHOOK_SECRET` (comma-separated for rotation), `YOOKASSA_API_URL`,
    /// `YOOKASSA_RETURN_URL`, `YOOKASSA_RECEIPTS` (`true` or `1` sends receipts) and
    /// `YOOKASSA_TAX_SYSTEM_CODE`.
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
        config.receipts = var("YOOKASSA_RECEIPTS").is_some_and(|on| matches!(on.trim(), "1" | "true" | "on"));
        if let Some(code) = var("YOOKASSA_TAX_SYSTEM_CODE") {
            let code = code.trim().parse().map_err(|_| {
                BillingError::invalid(
                    "YOOKASSA_TAX_SYSTEM_CODE",
                    format!("expected a number from 1 to 6, got `{code}`"),
                )
            })?;
            config.tax_system_code = Some(code);
        }
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
        if let Some(code) = self.tax_system_code.filter(|code| !TAX_SYSTEM_CODES.contains(code)) {
            return Err(BillingError::invalid("tax_system_code", format!("expected 1 to 6, got {code}")));
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
        check_limits(body, idempotence_key)?;
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
                Err(error) => format!("{path}: {}", crate::http::transport_failure(&error)),
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

/// The limits YooKassa enforces on a request, checked before it is sent, so that a
/// request it would refuse fails with the field to fix: a description of at most 128
/// characters, at most 16 metadata keys of at most 32 characters with string values of
/// at most 512, and an `Idempotence-Key` of 1 to 64 characters.
fn check_limits(body: &Value, idempotence_key: &str) -> Result<(), ProviderError> {
    let refuse = |field: &'static str, reason: String| Err(ProviderError::InvalidRequest { field, reason });
    if idempotence_key.is_empty() || idempotence_key.len() > 64 {
        return refuse("idempotence_key", format!("1 to 64 characters, got {}", idempotence_key.len()));
    }
    let description_chars = body.get("description").and_then(Value::as_str).map_or(0, |d| d.chars().count());
    if description_chars > MAX_DESCRIPTION_CHARS {
        return refuse("description", format!("at most {MAX_DESCRIPTION_CHARS} characters, got {description_chars}"));
    }
    if let Some(metadata) = body.get("metadata").and_then(Value::as_object) {
        if metadata.len() > 16 {
            return refuse("metadata", format!("at most 16 keys, got {}", metadata.len()));
        }
        for (key, value) in metadata {
            if key.chars().count() > 32 {
                return refuse("metadata", format!("a key has at most 32 characters: `{key}`"));
            }
            if value.as_str().is_none_or(|v| v.chars().count() > 512) {
                return refuse("metadata", format!("the value of `{key}` must be a string of at most 512 characters"));
            }
        }
    }
    Ok(())
}

/// The `receipt` object of a payment or refund, in YooKassa's format.
fn receipt_json(receipt: &Receipt) -> Value {
    let mut customer = Map::new();
    if let Some(email) = &receipt.customer.email {
        customer.insert("email".into(), json!(email));
    }
    if let Some(phone) = &receipt.customer.phone {
        customer.insert("phone".into(), json!(phone));
    }
    let items: Vec<Value> = receipt
        .items
        .iter()
        .map(|item| {
            json!({
                "description": item.description,
                "quantity": item.quantity.normalize().to_string(),
                "amount": money(item.amount, &item.currency),
                "vat_code": item.settings.vat_code,
                "payment_subject": item.settings.payment_subject,
                "payment_mode": item.settings.payment_mode,
            })
        })
        .collect();
    let mut body = json!({ "customer": customer, "items": items });
    if let Some(code) = receipt.tax_system_code {
        body["tax_system_code"] = json!(code);
    }
    body
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
        if let Some(receipt) = &request.receipt {
            body["receipt"] = receipt_json(receipt);
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

    fn create_refund(&self, request: &RefundRequest, idempotence_key: &str) -> Result<ProviderRefund, ProviderError> {
        let mut body =
            json!({ "payment_id": request.provider_payment_id, "amount": money(request.amount, &request.currency) });
        if let Some(receipt) = &request.receipt {
            body["receipt"] = receipt_json(receipt);
        }
        parse_refund(&self.post("/refunds", &body, idempotence_key)?)
    }

    fn get_refund(&self, refund_id: &str) -> Result<ProviderRefund, ProviderError> {
        parse_refund(&self.get(&format!("/refunds/{}", path_segment(refund_id)?))?)
    }

    fn get_payment_method(&self, method_id: &str) -> Result<ProviderMethod, ProviderError> {
        parse_method_object(&self.get(&format!("/payment_methods/{}", path_segment(method_id)?))?)
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
        "payment_method.active" => {
            let method = parse_method_object(object).map_err(|e| not_an_object("payment method", e))?;
            refuse_foreign_id(&method.method.method_id)?;
            return Ok(Notification::PaymentMethod { event, method });
        }
        _ => return Ok(Notification::Other { event }),
    };
    if object.get("status").and_then(Value::as_str) != Some(claimed.as_str()) {
        return Err(invalid(format!("`{event}` with an object whose status is not `{claimed}`")));
    }
    let payment = parse_payment(object).map_err(|e| not_an_object("payment", e))?;
    refuse_foreign_id(&payment.id)?;
    Ok(Notification::Payment { event, status: claimed, payment: Box::new(payment) })
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
    let refunded_amount = match object.get("refunded_amount") {
        None | Some(Value::Null) => Decimal::ZERO,
        found => parse_money(found).ok_or_else(|| bad(format!("payment {id}: bad `refunded_amount`")))?.0,
    };
    let time = |field: &str| text(object, field).and_then(|t| parse_iso(&t));
    let paid_at =
        (status == PaymentStatus::Succeeded).then(|| time("captured_at").or_else(|| time("created_at"))).flatten();
    Ok(ProviderPayment {
        confirmation_url: object.get("confirmation").and_then(|c| text(c, "confirmation_url")),
        engine_payment_id: object.get("metadata").and_then(|m| text(m, "payment_id")),
        cancellation_reason: object.get("cancellation_details").and_then(|c| text(c, "reason")),
        method_id: object.get("payment_method").and_then(|m| text(m, "id")),
        saved_method: method.and_then(parse_method),
        id,
        status,
        amount,
        currency,
        refunded_amount,
        paid_at,
        raw: object.clone(),
    })
}

/// A payment method as YooKassa describes it, inside a payment or on its own: a bank
/// card with its `card`, a YooMoney wallet, an SBP account, ... each with its `title`.
fn parse_method(method: &Value) -> Option<SavedMethod> {
    let text = |value: &Value, field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let card = method.get("card").cloned().unwrap_or(Value::Null);
    Some(SavedMethod {
        method_id: text(method, "id")?,
        method_type: text(method, "type").unwrap_or_else(|| "bank_card".to_owned()),
        title: text(method, "title"),
        card_type: text(&card, "card_type"),
        last4: text(&card, "last4"),
        first6: text(&card, "first6"),
        expiry_month: text(&card, "expiry_month"),
        expiry_year: text(&card, "expiry_year"),
        saved_at: None,
    })
}

/// A payment method object (`GET /payment_methods/{id}`, `payment_method.active`). Its
/// `status` is `active` once payments can be made with it; an object without a status is
/// active when it is `saved`.
fn parse_method_object(object: &Value) -> Result<ProviderMethod, ProviderError> {
    let method = parse_method(object)
        .ok_or_else(|| ProviderError::BadResponse { message: "payment method without `id`".into() })?;
    let saved = object.get("saved").and_then(Value::as_bool).unwrap_or(false);
    let status = object.get("status").and_then(Value::as_str).map(str::to_owned);
    let active = status.as_deref().map_or(saved, |status| status == "active" && saved);
    Ok(ProviderMethod {
        method,
        active,
        status: status.unwrap_or_else(|| if saved { "active" } else { "inactive" }.into()),
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
    fn requests_past_yookassa_s_limits_are_refused_before_they_are_sent() {
        let field = |body: Value, key: &str| match check_limits(&body, key) {
            Err(ProviderError::InvalidRequest { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        };
        let fits = json!({"description": "д".repeat(128), "metadata": {"k".repeat(32): "v".repeat(512)}});
        assert!(check_limits(&fits, &"k".repeat(64)).is_ok());
        assert_eq!(field(fits.clone(), &"k".repeat(65)), "idempotence_key");
        assert_eq!(field(fits, ""), "idempotence_key");
        assert_eq!(field(json!({"description": "d".repeat(129)}), "k"), "description");
        let seventeen: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(field(json!({ "metadata": seventeen }), "k"), "metadata");
        assert_eq!(field(json!({"metadata": {"k".repeat(33): "v"}}), "k"), "metadata");
        assert_eq!(field(json!({"metadata": {"k": "v".repeat(513)}}), "k"), "metadata");
        assert_eq!(field(json!({"metadata": {"k": 1}}), "k"), "metadata");
        let err = BillingError::from(ProviderError::InvalidRequest { field: "metadata", reason: "17 keys".into() });
        assert_eq!((err.code(), err.details()["field"].as_str()), ("INVALID_ARGUMENT", Some("metadata")));
    }

    #[test]
    fn a_payment_object_says_what_was_refunded_and_when_the_money_was_taken() {
        let mut object = json!({
            "id": "2f0a", "status": "succeeded", "amount": {"value": "149.00", "currency": "RUB"},
            "refunded_amount": {"value": "50.00", "currency": "RUB"},
            "captured_at": "2026-03-02T10:16:05Z", "created_at": "2026-03-02T10:15:42.387Z",
            "cancellation_details": {"party": "yoo_money", "reason": "permission_revoked"},
            "payment_method": {"type": "yoo_money", "id": "pm-9", "saved": true, "title": "YooMoney wallet 4100"}
        });
        let payment = parse_payment(&object).unwrap();
        assert_eq!(payment.refunded_amount, "50.00".parse().unwrap());
        assert_eq!(payment.paid_at.map(crate::time_util::iso).as_deref(), Some("2026-03-02T10:16:05.000Z"));
        assert_eq!(payment.cancellation_reason.as_deref(), Some("permission_revoked"));
        let method = payment.saved_method.unwrap();
        assert_eq!(
            (method.method_type.as_str(), method.title.as_deref(), method.last4),
            ("yoo_money", Some("YooMoney wallet 4100"), None)
        );
        object.as_object_mut().unwrap().remove("captured_at");
        let paid_at = parse_payment(&object).unwrap().paid_at.map(crate::time_util::iso);
        assert_eq!(paid_at.as_deref(), Some("2026-03-02T10:15:42.387Z"), "no capture: when it was created");
        object["status"] = json!("pending");
        assert_eq!(parse_payment(&object).unwrap().paid_at, None);
        object["refunded_amount"] = json!({"value": 50});
        assert!(matches!(parse_payment(&object), Err(ProviderError::BadResponse { .. })));
    }

    #[test]
    fn a_receipt_goes_out_in_yookassa_s_shape() {
        use crate::receipt::{CustomerContact, ReceiptSettings};
        let settings =
            ReceiptSettings { vat_code: 4, payment_subject: "service".into(), payment_mode: "full_payment".into() };
        let customer = CustomerContact::new(None, Some("+79001234567")).unwrap();
        let receipt = Receipt::single(customer, "Pro plan", "299".parse().unwrap(), "RUB", settings, Some(1));
        assert_eq!(
            receipt_json(&receipt),
            json!({"customer": {"phone": "79001234567"}, "tax_system_code": 1, "items": [{
                "description": "Pro plan", "quantity": "1", "amount": {"value": "299.00", "currency": "RUB"},
                "vat_code": 4, "payment_subject": "service", "payment_mode": "full_payment"}]})
        );
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
            "YOOKASSA_RECEIPTS" => Some("true".into()),
            "YOOKASSA_TAX_SYSTEM_CODE" => Some("2".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(config.webhook_secrets, ["new", "old"]);
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert_eq!((config.receipts, config.tax_system_code), (true, Some(2)));
        let bad = YooKassaConfig::from_vars(|name| match name {
            "YOOKASSA_SHOP_ID" | "YOOKASSA_SECRET_KEY" => Some("x".into()),
            "YOOKASSA_TAX_SYSTEM_CODE" => Some("usn".into()),
            _ => None,
        });
        assert_eq!(bad.unwrap_err().details()["field"], "YOOKASSA_TAX_SYSTEM_CODE");
    }

    #[test]
    fn a_payment_object_gives_its_saved_method_only_when_saved() {
        let mut object = json!({
            "id": "2f0a", "status": "waiting_for_capture", "amount": {"value": "1.00", "currency": "RUB"},
            "metadata": {"payment_id": "p1"},
            "payment_method": {"type": "bank_card", "id": "pm-1", "saved": true,
                "card": {"first6": "555555", "last4": "4444", "card_type": "MasterCard"}}
        });
        let payment = parse_payment(&object).unwrap();
        assert_eq!(payment.status, PaymentStatus::WaitingForCapture);
        assert_eq!(payment.engine_payment_id.as_deref(), Some("p1"));
        let card = payment.saved_method.unwrap();
        assert_eq!((card.method_id.as_str(), card.last4.as_deref()), ("pm-1", Some("4444")));
        object["payment_method"]["saved"] = json!(false);
        assert_eq!(parse_payment(&object).unwrap().saved_method, None);
        object["status"] = json!("refunded");
        assert!(matches!(parse_payment(&object), Err(ProviderError::BadResponse { .. })));
    }
}
