//! The payment provider behind a trait, so the engine's payment rules do not depend on
//! one provider's HTTP API. [`YooKassa`](crate::yookassa::YooKassa) is the first
//! implementation.

use rust_decimal::Decimal;
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::BillingError;
use crate::payment::{PaymentStatus, SavedMethod};
use crate::receipt::Receipt;

/// A payment to create at the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRequest {
    pub amount: Decimal,
    pub currency: String,
    pub description: String,
    /// `false` holds the money at `waiting_for_capture` (two-stage payment).
    pub capture: bool,
    pub save_payment_method: bool,
    pub pay_with: PayWith,
    pub metadata: Vec<(String, String)>,
    /// The 54-FZ receipt, when the shop sends receipts.
    pub receipt: Option<Receipt>,
}

/// A refund to ask the provider for.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    pub provider_payment_id: String,
    pub amount: Decimal,
    pub currency: String,
    /// The 54-FZ receipt of the refund, when the shop sends receipts.
    pub receipt: Option<Receipt>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PayWith {
    /// The user confirms on the provider's page, then comes back to `return_url`.
    Redirect { return_url: String },
    /// A saved card, charged without the user present.
    SavedMethod { method_id: String },
}

/// A payment as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPayment {
    pub id: String,
    pub status: PaymentStatus,
    pub amount: Decimal,
    pub currency: String,
    pub confirmation_url: Option<String>,
    /// The id of the method paid with, saved or not.
    pub method_id: Option<String>,
    /// The method paid with, when the provider saved it for later payments.
    pub saved_method: Option<SavedMethod>,
    /// `metadata.payment_id`: the engine's id of this payment.
    pub engine_payment_id: Option<String>,
    /// Money refunded so far, over all the payment's refunds, as the provider counts it.
    pub refunded_amount: Decimal,
    /// When the money was taken: the capture time, or the creation time of a payment
    /// that needed no capture. `None` before it succeeded.
    pub paid_at: Option<OffsetDateTime>,
    /// Why a canceled payment was canceled (`insufficient_funds`, `permission_revoked`,
    /// ...), as the provider names it.
    pub cancellation_reason: Option<String>,
    /// The provider's object as received, kept with the payment.
    pub raw: Value,
}

/// A saved payment method as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderMethod {
    pub method: SavedMethod,
    /// Whether payments can be made with it without the user present.
    pub active: bool,
    /// The provider's status word (`active`, `inactive`, `pending`).
    pub status: String,
}

/// A refund as the provider reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderRefund {
    pub id: String,
    pub payment_id: String,
    /// `succeeded`, `pending` or `canceled`.
    pub status: String,
    pub amount: Decimal,
}

impl ProviderRefund {
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }
}

/// What a provider notification reports, read by the provider that sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `payment.*`: the payment reached `status`.
    Payment { event: String, status: PaymentStatus, payment: Box<ProviderPayment> },
    /// A refund succeeded.
    Refund { event: String, refund: ProviderRefund },
    /// `payment_method.active`: a saved method's state changed.
    PaymentMethod { event: String, method: ProviderMethod },
    /// An event the engine does not act on.
    Other { event: String },
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached or answered 5xx, after the retries. The same
    /// request may be sent again later with the same idempotence key.
    #[error("the payment provider is unavailable: {message}")]
    Unavailable { message: String },
    /// The provider has no object with that id (404): it was never created there.
    #[error("the payment provider has no such object: {message}")]
    NotFound { message: String },
    /// The provider refused the request (4xx). Another attempt needs a new key.
    #[error("the payment provider refused the request: {code}: {description}")]
    Refused { code: String, description: String },
    /// The provider's answer could not be understood.
    #[error("the payment provider answered something unexpected: {message}")]
    BadResponse { message: String },
    #[error("no payment provider is configured")]
    NotConfigured,
    /// The request breaks a limit the provider enforces; it was not sent.
    #[error("{field}: {reason}")]
    InvalidRequest { field: &'static str, reason: String },
}

impl ProviderError {
    /// Whether sending the same request again, with the same key, may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    fn code(&self) -> &str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::NotFound { .. } => "not_found",
            Self::Refused { code, .. } => code,
            Self::BadResponse { .. } => "bad_response",
            Self::NotConfigured => "not_configured",
            Self::InvalidRequest { .. } => "invalid_request",
        }
    }
}

impl From<ProviderError> for BillingError {
    fn from(error: ProviderError) -> Self {
        if let ProviderError::InvalidRequest { field, reason } = error {
            return BillingError::invalid(field, reason);
        }
        let description = match &error {
            ProviderError::Refused { description, .. } => description.clone(),
            other => other.to_string(),
        };
        BillingError::PaymentError {
            provider_code: error.code().to_owned(),
            description,
            retryable: error.is_retryable(),
        }
    }
}

/// What the engine asks of a payment provider. Every call that creates or changes
/// something carries an idempotence key: the provider must answer a repeat with the same
/// key with the first result, so the engine can retry without paying twice.
pub trait PaymentProvider: Send + Sync {
    fn create_payment(&self, request: &PaymentRequest, idempotence_key: &str)
        -> Result<ProviderPayment, ProviderError>;

    fn get_payment(&self, provider_payment_id: &str) -> Result<ProviderPayment, ProviderError>;

    /// Releases the money held by a two-stage payment.
    fn cancel_payment(
        &self,
        provider_payment_id: &str,
        idempotence_key: &str,
    ) -> Result<ProviderPayment, ProviderError>;

    fn create_refund(&self, request: &RefundRequest, idempotence_key: &str) -> Result<ProviderRefund, ProviderError>;

    fn get_refund(&self, refund_id: &str) -> Result<ProviderRefund, ProviderError>;

    fn get_payment_method(&self, method_id: &str) -> Result<ProviderMethod, ProviderError>;

    /// Reads a notification body in this provider's format. A body that is not one of its
    /// notifications, or that names an id none of its objects can have, is
    /// INVALID_WEBHOOK.
    fn read_notification(&self, body: &[u8]) -> Result<Notification, BillingError>;
}
