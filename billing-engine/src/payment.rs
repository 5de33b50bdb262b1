//! Payments: what a payment buys, the order its statuses may take, and the views of
//! seed 003 (`CreatedPayment`, `PaymentMethod`, `PaymentHistory`).
//!
//! A provider reports a payment's status many times, late and out of order. The one rule
//! that makes that safe is [`PaymentStatus::can_become`]: a status only moves forward, and
//! a final one never changes back, so each effect of a payment happens at most once.
//!
//! What a payment does to an account lives here too, without the store: `status_effects`
//! (purchases, renewals, declines) and `refund_effects` (what a refund takes back).

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::account::Account;
use crate::catalog::Catalog;
use crate::crypto::{CryptoDetails, CryptoState};
use crate::error::Result;
use crate::ledger::{CancelReason, EntryKind, NewEntry, PaymentRefund};
use crate::subscription::Subscription;

/// Cancellation reasons that mean nobody finished the payment, or the shop canceled it,
/// rather than that it failed: the user never confirmed it, a held payment was not
/// captured in time, the shop released it. YooKassa's names; any other reason (the
/// bank's, the network's, the provider's) is a failure.
pub const CANCELED_NOT_FAILED: [&str; 3] = ["expired_on_confirmation", "expired_on_capture", "canceled_by_merchant"];

/// What a plan payment is called at the provider and on its receipt.
pub(crate) fn plan_description(plan_name: &str) -> String {
    format!("{plan_name} plan")
}

/// What a renewal is called: the longest description, which the catalog keeps within
/// [`MAX_DESCRIPTION_CHARS`](crate::receipt::MAX_DESCRIPTION_CHARS) by limiting plan names.
pub(crate) fn renewal_description(plan_name: &str) -> String {
    format!("{plan_name} plan renewal")
}

pub(crate) fn package_description(credits: Decimal) -> String {
    format!("{credits} credits")
}

pub(crate) const BINDING_DESCRIPTION: &str = "Card binding";

/// What a payment pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A paid plan bought by the user: activates a subscription.
    Plan,
    /// A credit package: grants its credits.
    Package,
    /// A 1 RUB payment that saves the user's card; the money is given back.
    CardBinding,
    /// An automatic charge of the saved card for the next period of a subscription.
    Renewal,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Package => "package",
            Self::CardBinding => "card_binding",
            Self::Renewal => "renewal",
        }
    }
}

impl FromStr for Purpose {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        [Self::Plan, Self::Package, Self::CardBinding, Self::Renewal].into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Recorded by the engine, not yet accepted by the provider.
    New,
    Pending,
    /// Two-stage payments only: the money is held, waiting for capture or cancel.
    WaitingForCapture,
    Succeeded,
    Canceled,
    /// Money returned after success.
    Refunded,
}

impl PaymentStatus {
    const ALL: [Self; 6] =
        [Self::New, Self::Pending, Self::WaitingForCapture, Self::Succeeded, Self::Canceled, Self::Refunded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::WaitingForCapture => "waiting_for_capture",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
            Self::Refunded => "refunded",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::New => 0,
            Self::Pending => 1,
            Self::WaitingForCapture => 2,
            Self::Succeeded | Self::Canceled => 3,
            Self::Refunded => 4,
        }
    }

    /// Statuses move forward only: `new < pending < waiting_for_capture < succeeded |
    /// canceled`, and only a succeeded payment can be refunded. A late or repeated report
    /// of an earlier status is therefore never applied.
    pub fn can_become(self, next: Self) -> bool {
        match next {
            Self::Refunded => self == Self::Succeeded,
            _ => next.rank() > self.rank(),
        }
    }

    /// Whether a status reported in a notification can have led to `actual`, the status
    /// the provider's API reports now: the same status, one after it, or, for a refunded
    /// payment, any status that can still have reached `succeeded`. A notification
    /// claiming more than the API knows is forged.
    pub fn may_precede(self, actual: Self) -> bool {
        let via_success = actual == Self::Refunded && (self == Self::Succeeded || self.can_become(Self::Succeeded));
        self == actual || self.can_become(actual) || via_success
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Canceled | Self::Refunded)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|status| status.as_str() == s).ok_or(())
    }
}

/// A payment method saved at the provider for payments without the user present: a
/// bank card, a YooMoney wallet, an SBP account, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedMethod {
    /// The provider's payment method id, sent as `payment_method_id` on renewals.
    pub method_id: String,
    /// The provider's type of method: `bank_card`, `yoo_money`, `sbp`, ... (methods saved
    /// before types were recorded were all cards).
    #[serde(default = "bank_card")]
    pub method_type: String,
    /// How the provider names the method to its owner (`Bank card *4444`,
    /// `YooMoney wallet 410011758831136`).
    #[serde(default)]
    pub title: Option<String>,
    /// `Visa`, `MasterCard`, `Mir`, ... as the provider names it; cards only.
    pub card_type: Option<String>,
    pub last4: Option<String>,
    pub first6: Option<String>,
    pub expiry_month: Option<String>,
    pub expiry_year: Option<String>,
    /// When the engine saved it: a renewal declined before this may be tried again with
    /// it (see `renewals.rs`). `None` for methods saved before this was recorded.
    #[serde(default, with = "crate::time_util::serde_iso::option")]
    pub saved_at: Option<OffsetDateTime>,
}

fn bank_card() -> String {
    "bank_card".to_owned()
}

/// One payment as the engine records it.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    /// The engine's own id, also sent to the provider in `metadata.payment_id`.
    pub id: String,
    pub user_id: String,
    pub purpose: Purpose,
    pub plan_code: Option<String>,
    pub package_code: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    /// Credits a package payment grants when it succeeds.
    pub credits: Option<Decimal>,
    pub description: String,
    pub status: PaymentStatus,
    pub provider_payment_id: Option<String>,
    /// The `Idempotence-Key` of the create request. It stays the same while the engine
    /// retries the same attempt, and changes only after the provider refused the attempt.
    pub provider_key: String,
    pub save_payment_method: bool,
    pub return_url: Option<String>,
    pub confirmation_url: Option<String>,
    /// For renewals: `"{subscription id}@{period end}"` for a period's first attempt, and
    /// `"{subscription id}@{period end}#{n}"` for its n-th, made after a decline once
    /// another method is bound (see `renewals.rs`). One payment per attempt.
    pub renewal_of: Option<String>,
    /// The provider's id of the last refund of this payment the engine was told of.
    pub refund_id: Option<String>,
    /// Money given back so far, over every (partial) refund; at most `amount`. The
    /// payment is `refunded` once this reaches `amount`.
    #[serde(default)]
    pub refunded_amount: Decimal,
    /// For a plan or renewal payment that started or extended a subscription: the
    /// period it bought. A refund takes back only this period.
    #[serde(default)]
    pub paid_period: Option<PaidPeriod>,
    /// The provider's last payment object, as received.
    pub payload: Option<Value>,
    pub idempotency_key: Option<String>,
    #[serde(with = "crate::time_util::serde_iso")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub paid_at: Option<OffsetDateTime>,
    /// A crypto payment's network, token, amount and transfers (`crate::crypto`);
    /// `None` for a payment through a card provider.
    #[serde(default)]
    pub crypto: Option<CryptoDetails>,
}

/// The part of a subscription one payment bought: `[start, end)` of `subscription_id`.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidPeriod {
    pub subscription_id: String,
    #[serde(with = "crate::time_util::serde_iso")]
    pub start: OffsetDateTime,
    #[serde(with = "crate::time_util::serde_iso")]
    pub end: OffsetDateTime,
}

impl Payment {
    /// Money not refunded yet.
    pub fn refundable(&self) -> Decimal {
        self.amount - self.refunded_amount
    }

    /// The credits a package payment has taken back once `refunded` of its money is
    /// returned in total: its credits in proportion to the money, **rounded down** to the
    /// package's own precision, so rounding never costs the customer, and the whole
    /// package once the whole payment is refunded. Refunds are applied cumulatively, so
    /// several partial refunds take back exactly what one refund of their sum would.
    ///
    /// A 149.00 payment for 20 credits, refunded 50.00: 20 × 50 / 149 = 6.71, so 6
    /// credits go back; refunding the other 99.00 later takes the remaining 14.
    pub fn credits_taken_back(&self, refunded: Decimal) -> Decimal {
        let credits = self.credits.unwrap_or_default();
        if refunded >= self.amount || self.amount.is_zero() {
            return credits;
        }
        let places = credits.normalize().scale();
        credits
            .checked_mul(refunded)
            .and_then(|money| money.checked_div(self.amount))
            .map_or(credits, |share| share.round_dp_with_strategy(places, RoundingStrategy::ToZero))
    }

    /// Seed 003's word for the payment's status: `pending` until it is final (a payment
    /// held for capture too), `failed` for a canceled payment the bank, the network or
    /// the provider refused, `canceled` for one nobody finished or the shop canceled
    /// ([`CANCELED_NOT_FAILED`]), else the status itself.
    pub fn history_status(&self) -> &'static str {
        // A crypto payment that expired unpaid was canceled by nobody's failure; one
        // whose credit a reorg reversed failed (its `crypto.state` says which).
        match self.crypto.as_ref().map(|c| c.state) {
            Some(CryptoState::Expired) => return "canceled",
            Some(CryptoState::Reorged) => return "failed",
            _ => {}
        }
        match self.status {
            PaymentStatus::New | PaymentStatus::Pending | PaymentStatus::WaitingForCapture => "pending",
            PaymentStatus::Canceled
                if !self.cancellation_reason().is_some_and(|r| CANCELED_NOT_FAILED.contains(&r)) =>
            {
                "failed"
            }
            status => status.as_str(),
        }
    }

    /// The provider's reason for canceling it, from its last payment object.
    pub fn cancellation_reason(&self) -> Option<&str> {
        self.payload.as_ref()?.get("cancellation_details")?.get("reason")?.as_str()
    }

    /// The subscription period a renewal pays for, whichever attempt it is.
    pub fn renewed_period(&self) -> Option<&str> {
        self.renewal_of.as_deref().map(|key| key.split_once('#').map_or(key, |(period, _)| period))
    }

    /// Metadata sent with the payment, so a notification can be matched to the engine's
    /// record even before the provider's id is stored.
    pub fn provider_metadata(&self) -> Vec<(String, String)> {
        vec![
            ("payment_id".to_owned(), self.id.clone()),
            ("user_id".to_owned(), self.user_id.clone()),
            ("purpose".to_owned(), self.purpose.as_str().to_owned()),
        ]
    }
}

/// What `payment` reaching its current status does to `account`, decided without the
/// store: a package's credits; the subscription a plan starts, or extends when bought
/// again while active, and a renewal extends (recorded on the payment as its
/// `paid_period`); or, for a declined renewal, the end of renewal (the subscription runs
/// to its end, then the free tier). Returns the entries to record; the credits move when
/// they are applied to the account.
pub(crate) fn status_effects(
    payment: &mut Payment,
    account: &mut Account,
    catalog: &Catalog,
    now: OffsetDateTime,
) -> Result<Vec<NewEntry>> {
    let user_id = account.user_id.clone();
    match (payment.purpose, payment.status) {
        (Purpose::Package, PaymentStatus::Succeeded) => {
            let package = payment.package_code.as_deref().and_then(|code| catalog.package(code));
            let expires_at =
                package.and_then(|p| p.expires_after_days).map(|days| now + time::Duration::days(days.into()));
            Ok(vec![NewEntry::credit_purchase(payment, expires_at, now)])
        }
        (Purpose::Plan, PaymentStatus::Succeeded) => {
            let plan = catalog.paid_plan(payment.plan_code.as_deref().unwrap_or_default())?;
            let (kind, period) = match account.active_subscription_mut(now) {
                // Bought again while active (two purchases raced): the period is added.
                Some(sub) if sub.plan_code == plan.code => (EntryKind::SubscriptionRenewed, sub.extend(plan)),
                _ => {
                    let sub = account.subscription.insert(Subscription::start(plan, now));
                    (EntryKind::SubscriptionActivated, sub.first_period())
                }
            };
            payment.paid_period = Some(period);
            let sub = account.subscription.as_ref().expect("a subscription was just set");
            Ok(vec![NewEntry::subscription(kind, &user_id, sub, Some(payment), now)])
        }
        (Purpose::Renewal, PaymentStatus::Succeeded) => {
            let plan = payment.plan_code.as_deref().and_then(|code| catalog.plan(code));
            match (account.subscription.as_mut(), plan) {
                (Some(sub), Some(plan)) if payment.renewed_period() == Some(sub.period_key().as_str()) => {
                    payment.paid_period = Some(sub.extend(plan));
                    Ok(vec![NewEntry::subscription(EntryKind::SubscriptionRenewed, &user_id, sub, Some(payment), now)])
                }
                // The subscription changed since the renewal was created: nothing to extend.
                _ => Ok(Vec::new()),
            }
        }
        (Purpose::Renewal, PaymentStatus::Canceled) => {
            let Some(sub) = account.subscription.as_mut() else { return Ok(Vec::new()) };
            sub.cancel(now, false);
            let reason = CancelReason::RenewalDeclined;
            Ok(vec![NewEntry::subscription_canceled(&user_id, sub, reason, false, Some(payment), now)])
        }
        _ => Ok(Vec::new()),
    }
}

/// Records on `payment` `reported` money newly refunded (by the provider's refund
/// `refund_id`, when it is known), capped to what is left, and takes back its share from
/// `account`: a package's credits by
/// [`Payment::credits_taken_back`], or, once the whole payment is refunded, what is still
/// ahead of the period it bought ([`Subscription::take_back`]). Returns the refund's
/// entry; the credits move when it is applied.
pub(crate) fn refund_effects(
    payment: &mut Payment,
    refund_id: Option<&str>,
    reported: Decimal,
    account: &mut Account,
    now: OffsetDateTime,
) -> NewEntry {
    let applied = reported.min(payment.refundable()).max(Decimal::ZERO);
    let refunded_before = payment.refunded_amount;
    payment.refunded_amount += applied;
    if let Some(refund_id) = refund_id {
        payment.refund_id = Some(refund_id.to_owned());
    }
    payment.updated_at = now;
    if payment.refunded_amount == payment.amount {
        payment.status = PaymentStatus::Refunded;
    }
    let credits_taken = match payment.purpose {
        Purpose::Package => {
            payment.credits_taken_back(payment.refunded_amount) - payment.credits_taken_back(refunded_before)
        }
        _ => Decimal::ZERO,
    };
    let whole_plan_refunded =
        matches!(payment.purpose, Purpose::Plan | Purpose::Renewal) && payment.status == PaymentStatus::Refunded;
    let cut_short = match (whole_plan_refunded, account.subscription.as_mut(), payment.paid_period.as_ref()) {
        (true, Some(sub), Some(period)) => sub.take_back(period, now).then_some(&*sub),
        _ => None,
    };
    NewEntry::purchase_refund(&PaymentRefund { payment, refund_id, reported, applied, credits_taken, cut_short }, now)
}

/// Seed 003 `CreatePaymentResponse`.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPayment {
    pub payment_id: String,
    pub yookassa_payment_id: String,
    pub confirmation_url: String,
}

/// Seed 003 `PaymentMethod`.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine", name = "PaymentMethod"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct PaymentMethodView {
    pub is_attached: bool,
    /// `•••• 4444`; cards only.
    pub card_mask: Option<String>,
    pub card_brand: Option<String>,
    /// `bank_card`, `yoo_money`, `sbp`, ... as the provider names the type.
    pub method_type: Option<String>,
    /// The provider's name of the method: `Bank card *4444`, `YooMoney wallet 4100…`.
    pub title: Option<String>,
}

impl From<Option<&SavedMethod>> for PaymentMethodView {
    fn from(method: Option<&SavedMethod>) -> Self {
        match method {
            None => Self::default(),
            Some(method) => Self {
                is_attached: true,
                card_mask: method.last4.as_ref().map(|last4| format!("•••• {last4}")),
                card_brand: method.card_type.clone(),
                method_type: Some(method.method_type.clone()),
                title: method.title.clone(),
            },
        }
    }
}

/// Seed 003 `PaymentHistory`.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentHistory {
    pub results: Vec<PaymentHistoryItem>,
}

/// Seed 003 `PaymentHistoryItem`; the amount is a JSON number there.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct PaymentHistoryItem {
    pub id: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub currency: String,
    /// `pending`, `succeeded`, `failed`, `canceled` or `refunded` (see
    /// [`Payment::history_status`]).
    pub status: String,
    #[serde(with = "crate::time_util::serde_iso::option")]
    pub paid_at: Option<OffsetDateTime>,
    pub description: String,
    /// Money given back so far (partial refunds leave the status `succeeded`).
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub refunded_amount: Decimal,
    /// A crypto payment's network, token and transaction (seed 004 `/me/history`);
    /// `None` for other payments.
    #[serde(default)]
    pub crypto: Option<CryptoHistory>,
}

/// What the history shows of a crypto payment.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct CryptoHistory {
    pub chain_id: u64,
    pub network: String,
    /// The token's contract, and its symbol for people.
    pub token: String,
    pub symbol: String,
    /// What was asked, in base units.
    pub amount: String,
    /// What arrived, in base units.
    pub received: String,
    pub tx_hash: Option<String>,
    pub confirmations: u32,
    /// `pending`, `confirming`, `succeeded`, `underpaid`, `overpaid`, `expired`, `failed`,
    /// `reorged` or `refunded`.
    pub state: String,
}

impl From<&Payment> for PaymentHistoryItem {
    fn from(payment: &Payment) -> Self {
        Self {
            id: payment.id.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            status: payment.history_status().to_owned(),
            paid_at: payment.paid_at,
            description: payment.description.clone(),
            refunded_amount: payment.refunded_amount,
            crypto: payment.crypto.as_ref().map(|c| CryptoHistory {
                chain_id: c.chain_id,
                network: c.network.clone(),
                token: c.token.clone(),
                symbol: c.symbol.clone(),
                amount: c.amount.to_string(),
                received: c.received.to_string(),
                tx_hash: c.tx_hash.clone(),
                confirmations: c.confirmations,
                state: c.state.as_str().to_owned(),
            }),
        }
    }
}

/// What [`process_due`](crate::Billing::process_due) did.
#[cfg_attr(feature = "python", pyo3::pyclass(frozen, eq, get_all, module = "billing_engine"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DueReport {
    /// Renewal payments created by this call.
    pub renewals_created: u32,
    /// Renewal payments sent to the provider by this call (new ones and earlier unsent ones).
    pub renewals_sent: u32,
    /// Subscriptions recorded as ended by this call.
    pub expired: u32,
    /// Renewals the provider could not take now; the next call tries again.
    pub failures: u32,
    /// Auto-renewing subscriptions left due because this handle has no payment
    /// provider; a worker with one renews them. They are never ended for that.
    #[serde(default)]
    pub renewals_skipped: u32,
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn a_partial_refund_takes_back_credits_in_proportion_rounded_for_the_customer() {
        let payment = |credits: &str| Payment {
            credits: Some(credits.parse().unwrap()),
            amount: "149.00".parse().unwrap(),
            ..serde_json::from_value(serde_json::json!({
                "id": "p", "user_id": "u", "purpose": "package", "plan_code": null, "package_code": "p20",
                "amount": "149.00", "currency": "RUB", "credits": "20", "description": "", "status": "succeeded",
                "provider_payment_id": null, "provider_key": "k", "save_payment_method": false, "return_url": null,
                "confirmation_url": null, "renewal_of": null, "refund_id": null, "payload": null,
                "idempotency_key": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "paid_at": null
            }))
            .unwrap()
        };
        let taken = |p: &Payment, money: &str| p.credits_taken_back(money.parse().unwrap()).to_string();
        let whole = payment("20");
        assert_eq!(taken(&whole, "50.00"), "6", "20 × 50 / 149 = 6.71, rounded down");
        assert_eq!(taken(&whole, "149.00"), "20");
        assert_eq!(taken(&whole, "200.00"), "20", "never more than the package (kills a mutant of the cap)");
        assert_eq!(taken(&whole, "0"), "0");
        assert_eq!(taken(&whole, "148.99"), "19", "19.9987 is still rounded down");
        assert_eq!(taken(&payment("20.5"), "50.00"), "6.8", "the package's own precision");
    }

    #[test]
    fn the_history_says_failed_for_a_refusal_and_canceled_for_a_payment_nobody_finished() {
        let mut payment: Payment = serde_json::from_value(serde_json::json!({
            "id": "p", "user_id": "u", "purpose": "renewal", "plan_code": "basic", "package_code": null,
            "amount": "299.00", "currency": "RUB", "credits": null, "description": "", "status": "canceled",
            "provider_payment_id": "2f", "provider_key": "k", "save_payment_method": false, "return_url": null,
            "confirmation_url": null, "renewal_of": null, "refund_id": null, "payload": null,
            "idempotency_key": null, "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "paid_at": null
        }))
        .unwrap();
        let with_reason = |payment: &mut Payment, reason: &str| {
            payment.payload = Some(serde_json::json!({"cancellation_details": {"party": "x", "reason": reason}}));
            PaymentHistoryItem::from(&*payment).status
        };
        assert_eq!(PaymentHistoryItem::from(&payment).status, "failed", "refused before the provider had it");
        assert_eq!(with_reason(&mut payment, "insufficient_funds"), "failed");
        assert_eq!(with_reason(&mut payment, "permission_revoked"), "failed");
        assert_eq!(with_reason(&mut payment, "expired_on_confirmation"), "canceled");
        assert_eq!(with_reason(&mut payment, "canceled_by_merchant"), "canceled");
        payment.status = WaitingForCapture;
        assert_eq!(PaymentHistoryItem::from(&payment).status, "pending");
        payment.status = Refunded;
        assert_eq!(PaymentHistoryItem::from(&payment).status, "refunded");
    }

    #[test]
    fn statuses_move_forward_only_and_final_states_stay() {
        assert!(New.can_become(Pending) && Pending.can_become(WaitingForCapture) && Pending.can_become(Succeeded));
        assert!(WaitingForCapture.can_become(Canceled) && Succeeded.can_become(Refunded));
        assert!(!Succeeded.can_become(Canceled) && !Canceled.can_become(Succeeded));
        assert!(!Succeeded.can_become(Pending) && !WaitingForCapture.can_become(Pending));
        assert!(!Canceled.can_become(Refunded) && !Pending.can_become(Refunded));
        assert!(!Succeeded.can_become(Succeeded));
    }

    #[test]
    fn a_notification_may_only_claim_what_the_api_confirms() {
        assert!(WaitingForCapture.may_precede(Canceled) && Succeeded.may_precede(Succeeded));
        assert!(Succeeded.may_precede(Refunded));
        assert!(!Succeeded.may_precede(Pending) && !Succeeded.may_precede(Canceled));
        assert!(!Canceled.may_precede(Succeeded));
        // A late `waiting_for_capture` of a payment since captured and refunded is true,
        // not forged; a canceled payment was never refunded. (Found by a mutant of the
        // refunded case, which passed the old tests.)
        assert!(WaitingForCapture.may_precede(Refunded) && Pending.may_precede(Refunded));
        assert!(!Canceled.may_precede(Refunded));
    }

    /// Kills the mutants of `is_final` (a renewal in flight would count as settled) and of
    /// `Display` (a status would print as nothing).
    #[test]
    fn final_statuses_and_names() {
        for status in PaymentStatus::ALL {
            let settled = matches!(status, Succeeded | Canceled | Refunded);
            assert_eq!(status.is_final(), settled, "{status:?}");
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
        }
    }
}
