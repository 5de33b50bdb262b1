# The Rust extension behind `billing_engine`, which re-exports its result classes. The
# classes are the engine's Rust types (its `python` feature); the test suite checks that
# the attributes declared here are exactly those the classes have.
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Union

INTERNAL_ERROR: str
ERROR_CODES: List[Tuple[str, int, bool]]  # (code, http_status, retryable): the engine's one table

class NativeError(Exception):
    args: Tuple[str, str, str]  # (code, message, details_json)

class NativeCatalog:
    @staticmethod
    def from_toml(text: str) -> NativeCatalog: ...
    @staticmethod
    def from_toml_file(path: str) -> NativeCatalog: ...
    def to_json(self) -> str: ...

class NativeClock:
    def __init__(self, iso: str) -> None: ...
    def set(self, iso: str) -> None: ...
    def advance(self, seconds: int) -> None: ...
    def now(self) -> str: ...

class NativeYooKassaConfig:
    def __init__(
        self,
        shop_id: str,
        secret_key: str,
        api_url: str,
        return_url: Optional[str],
        webhook_secrets: List[str],
        trusted_networks: Optional[List[str]],
        verify_by_fetch: bool,
        timeout_s: float,
        retries: int,
        receipts: bool,
        tax_system_code: Optional[int],
    ) -> None: ...
    @staticmethod
    def from_env_json() -> str: ...

class NativeBilling:
    @staticmethod
    def open(
        location: str,
        catalog: NativeCatalog,
        clock: Optional[NativeClock],
        yookassa: Optional[NativeYooKassaConfig],
        durability_name: str,
        shared_commits: bool,
        alchemy_signing_key: Optional[str],
    ) -> NativeBilling: ...
    def register_user(self, user_id: str, free_trial: bool) -> BillingState: ...
    def import_user(
        self, user_id: str, credits: str, freemium_used: int, subscription_json: Optional[str]
    ) -> BillingState: ...
    def state(self, user_id: str) -> BillingState: ...
    def quote(self, user_id: str, operation: str) -> Quote: ...
    def charge(self, user_id: str, operation: str, idempotency_key: str, metadata_json: Optional[str]) -> Charge: ...
    def charge_batch(
        self, requests: List[Tuple[str, str, str, Optional[str]]]
    ) -> List[Union[Charge, NativeError]]: ...
    def check_usage(self, user_id: str, usage: Dict[str, int]) -> UsageCheck: ...
    def require_usage(self, user_id: str, usage: Dict[str, int]) -> UsageCheck: ...
    def track_usage(self, user_id: str, request_json: str, idempotency_key: str) -> UsageRecord: ...
    def track_usage_batch(self, user_id: str, records_json: str, idempotency_key: str) -> List[UsageRecord]: ...
    def usage(self, user_id: str, metric: str) -> UsageSummary: ...
    def usage_breakdown(
        self, user_id: str, metric: str, by: str, since: Optional[str], until: Optional[str]
    ) -> List[UsageTotal]: ...
    def reserve(
        self, user_id: str, usage: Dict[str, int], operation: Optional[str], idempotency_key: str, ttl_s: int
    ) -> Hold: ...
    def capture(
        self,
        hold_id: str,
        actual: Optional[Dict[str, int]],
        model_id: Optional[str],
        chat_id: Optional[str],
        idempotency_key: str,
    ) -> Hold: ...
    def release(self, hold_id: str, idempotency_key: str) -> Hold: ...
    def entitlements(self, user_id: str) -> Entitlements: ...
    def has_feature(self, user_id: str, feature: str) -> bool: ...
    def require_feature(self, user_id: str, feature: str) -> Entitlement: ...
    def _charge_loop(self, user_id: str, operation: str, prefix: str, count: int) -> None: ...
    def refund_charge(self, charge_id: int, idempotency_key: str, reason: Optional[str]) -> Refund: ...
    def grant_credits(
        self, user_id: str, amount: str, idempotency_key: str, reason: str, terms_json: str
    ) -> LedgerEntry: ...
    def void_grant(self, lot_id: int, idempotency_key: str, reason: str) -> LedgerEntry: ...
    def credit_lots(self, user_id: str) -> List[CreditLot]: ...
    def activate_subscription(self, user_id: str, plan_code: str, idempotency_key: str) -> SubscriptionDetails: ...
    def cancel_subscription(self, user_id: str, immediate: bool) -> SubscriptionDetails: ...
    def set_autorenew(self, user_id: str, enabled: bool) -> SubscriptionDetails: ...
    def create_payment(
        self,
        user_id: str,
        plan_code: Optional[str],
        package_code: Optional[str],
        return_url: Optional[str],
        save_payment_method: bool,
        idempotency_key: str,
        customer_email: Optional[str],
        customer_phone: Optional[str],
    ) -> CreatedPayment: ...
    def set_customer_contact(self, user_id: str, email: Optional[str], phone: Optional[str]) -> CustomerContact: ...
    def customer_contact(self, user_id: str) -> Optional[CustomerContact]: ...
    def start_card_binding(
        self, user_id: str, return_url: Optional[str], idempotency_key: Optional[str]
    ) -> CreatedPayment: ...
    def refund_payment(self, payment_id: str, amount: Optional[str], idempotency_key: Optional[str]) -> Payment: ...
    def handle_yookassa_webhook(
        self, body: bytes, remote_addr: Optional[str], headers: List[Tuple[str, str]]
    ) -> WebhookOutcome: ...
    def process_due(self) -> DueReport: ...
    def billing_me(self, user_id: str) -> BillingMe: ...
    def subscription_details(self, user_id: str) -> SubscriptionDetails: ...
    def plans(self) -> List[SubscriptionPlan]: ...
    def plan_cards(self, user_id: str) -> List[PlanCard]: ...
    def payment_method(self, user_id: str) -> PaymentMethod: ...
    def payments(self, user_id: str, limit: int) -> PaymentHistory: ...
    def payment(self, payment_id: str) -> Payment: ...
    def ledger(self, user_id: str, limit: int, before: Optional[int]) -> List[LedgerEntry]: ...
    def verify_integrity(self) -> IntegrityReport: ...
    def create_crypto_payment(
        self,
        user_id: str,
        plan_code: Optional[str],
        package_code: Optional[str],
        chain_id: int,
        idempotency_key: str,
    ) -> CryptoCheckout: ...
    def handle_crypto_webhook(self, body: bytes, headers: List[Tuple[str, str]]) -> CryptoWebhookOutcome: ...
    def reconcile_crypto(
        self, fetch: Callable[[int, str], Optional[Tuple[int, Optional[str], int, bool]]]
    ) -> CryptoReconcileReport: ...
    def refund_crypto_payment(self, payment_id: str, tx_hash: str) -> Payment: ...
    def crypto_transfers_json(self, payment_id: str) -> str: ...
    def poll_events(self, consumer: str, limit: int) -> List[Event]: ...
    def ack_events(self, consumer: str, up_to: str) -> None: ...
    def prune_events(self, before: str) -> int: ...
    def user_events(self, user_id: str, after_sequence: int, limit: int) -> List[Event]: ...
    def deliver_events(
        self, endpoint_url: str, secret: str, consumer: str, limit: int, timeout_s: float
    ) -> DeliveryReport: ...
    def resume_delivery(self, consumer: str) -> None: ...
    def overview(self, at: Optional[str], window_days: int) -> Overview: ...
    def revenue_series(self, from_: str, to: str, granularity: str) -> List[RevenuePoint]: ...
    def transactions(self, filter_json: str, limit: int, before: Optional[int]) -> List[MoneyMovement]: ...
    def metrics_text(self) -> str: ...
    def audit_log(
        self,
        user_id: Optional[str],
        actor: Optional[str],
        action: Optional[str],
        outcome: Optional[str],
        limit: int,
        before: Optional[int],
    ) -> List[AuditRecord]: ...

def in_audit_context(
    actor: str, request_id: Optional[str], reason: Optional[str], call: Callable[..., Any], args: Tuple[Any, ...]
) -> Any: ...
def _panic_for_test() -> None: ...
def _restore(class_name: str, json: str) -> _Result: ...

# ---- the engine's result types

Source = Literal["subscription", "freemium", "credits"]
EntryKind = Literal[
    "free_trial", "import", "charge", "refund", "grant", "subscription_activated", "subscription_canceled",
    "subscription_renewed", "subscription_expired", "credit_purchase", "purchase_refund", "hold_placed",
    "hold_captured", "hold_released", "hold_expired", "overage", "credit_expired", "credit_voided",
]
LotCategory = Literal["promotional", "paid"]
LotSource = Literal["free_trial", "grant", "purchase", "import", "refund_reissue"]
HoldStatus = Literal["open", "captured", "released", "expired"]
PaymentStatus = Literal["new", "pending", "waiting_for_capture", "succeeded", "canceled", "refunded"]
Purpose = Literal["plan", "package", "card_binding", "renewal"]
CardAction = Literal["none", "select", "manage_subscription", "enable_autorenew", "bind_card", "restore"]
WebhookStatus = Literal["applied", "duplicate", "ignored"]
EventType = Literal[
    "payment.succeeded.v1", "payment.failed.v1", "payment.refunded.v1", "payment.reversed.v1", "plan.changed.v1",
    "subscription.renewed.v1", "subscription.expired.v1", "credits.granted.v1", "credits.expired.v1",
    "usage.over_limit.v1",
]
AuditOutcome = Literal["applied", "unchanged", "rejected"]
DeliveryOutcome = Literal["delivered", "retrying", "waiting", "stopped"]
ErrorCode = Literal[
    "NOT_ENOUGH_CREDITS", "DAILY_LIMIT_REACHED", "NO_SUBSCRIPTION", "INVALID_PLAN", "NO_PAYMENT_METHOD",
    "ACTIVE_SUBSCRIPTION", "IDEMPOTENCY_CONFLICT", "INVALID_CATALOG", "UNKNOWN_USER", "UNKNOWN_OPERATION",
    "CHARGE_NOT_FOUND", "INVALID_ARGUMENT", "QUOTA_EXCEEDED", "FEATURE_NOT_AVAILABLE", "UNKNOWN_METRIC",
    "HOLD_NOT_FOUND", "GRANT_NOT_FOUND", "PAYMENT_ERROR", "INVALID_WEBHOOK", "BUSY", "STORAGE_FULL", "STORAGE_ERROR",
    "INTERNAL_ERROR",
]

class _Result:
    def to_dict(self) -> Dict[str, Any]: ...
    def __reduce__(self) -> Tuple[Any, Tuple[str, str]]: ...

class BillingState(_Result):
    user_id: str
    plan_code: str
    plan_name: str
    tier: str
    is_active: bool
    expires_at: Optional[datetime]
    credits: Decimal
    subscription_ops_limit: Optional[int]
    subscription_ops_used: Optional[int]
    subscription_ops_remaining: Optional[int]
    subscription_ops_reset_at: Optional[datetime]
    freemium_ops_limit: Optional[int]
    freemium_ops_used: int
    freemium_ops_remaining: Optional[int]
    freemium_reset_at: datetime
    daily_limit: Optional[int]
    used_today: int
    remaining_today: Optional[int]
    today_resets_at: datetime
    autorenew_enabled: bool
    credits_expiring: List[ExpiringCredits]

class Quote(_Result):
    allowed: bool
    source: Optional[Source]
    credits_cost: Decimal
    credits_after: Decimal
    reason_code: Optional[ErrorCode]

class Charge(_Result):
    id: int
    user_id: str
    operation: str
    source: Source
    credits_spent: Decimal
    credits_balance: Decimal
    replayed: bool

class Refund(_Result):
    id: int
    charge_id: int
    user_id: str
    source: Source
    credits_refunded: Decimal
    op_returned: bool
    credits_balance: Decimal
    replayed: bool

class AllowancePeriod(_Result):
    owner: str
    start: datetime

class LedgerEntry(_Result):
    id: int
    user_id: str
    kind: EntryKind
    source: Optional[Source]
    operation: Optional[str]
    credits_delta: Decimal
    credits_balance_after: Decimal
    ops_delta: int
    allowance: Optional[AllowancePeriod]
    op_day: Optional[date]
    idempotency_key: Optional[str]
    reference: Optional[str]
    metadata: Optional[Any]
    created_at: datetime

class Mismatch(_Result):
    user_id: str
    check: str
    ledger: str
    stored: str

class IntegrityReport(_Result):
    ok: bool
    users_checked: int
    entries_checked: int
    mismatches: List[Mismatch]

class BillingMe(_Result):
    plan_code: str
    plan_name: str
    expires_at: Optional[datetime]
    is_active: bool
    daily_photo_limit: Optional[int]
    used_today: int
    remaining_today: Optional[int]
    credits_expiring: List[ExpiringCredits]
    last_payment: Optional[PaymentHistoryItem]

class PaymentMethod(_Result):
    is_attached: bool
    card_mask: Optional[str]
    card_brand: Optional[str]
    method_type: Optional[str]
    title: Optional[str]

class CustomerContact(_Result):
    email: Optional[str]
    phone: Optional[str]

class SubscriptionDetails(_Result):
    plan: str
    plan_display: str
    expires_at: Optional[datetime]
    is_active: bool
    autorenew_available: bool
    autorenew_enabled: bool
    card_bound: bool
    payment_method: PaymentMethod

class SubscriptionPlan(_Result):
    code: str
    display_name: str
    price: Decimal
    old_price: Optional[Decimal]
    duration_days: int
    daily_photo_limit: Optional[int]
    history_days: int
    ai_recognition: bool
    advanced_stats: bool
    priority_support: bool
    features: List[str]
    is_popular: bool

class CardDetails(_Result):
    expires_at: datetime
    expired: bool
    autorenew_enabled: bool
    payment_method: PaymentMethod
    restore_price: Optional[Decimal]

class PlanCard(_Result):
    plan_code: str
    is_current: bool
    disabled: bool
    action: CardAction
    label_key: str
    details: Optional[CardDetails]

class CreatedPayment(_Result):
    payment_id: str
    yookassa_payment_id: str
    confirmation_url: str

class PaymentHistoryItem(_Result):
    id: str
    amount: Decimal
    currency: str
    status: str
    paid_at: Optional[datetime]
    description: str
    refunded_amount: Decimal
    crypto: Optional[CryptoHistory]

class CryptoHistory(_Result):
    chain_id: int
    network: str
    token: str
    symbol: str
    amount: str
    received: str
    tx_hash: Optional[str]
    confirmations: int
    state: str

class PaymentHistory(_Result):
    results: List[PaymentHistoryItem]

class PaidPeriod(_Result):
    subscription_id: str
    start: datetime
    end: datetime

class Payment(_Result):
    id: str
    user_id: str
    purpose: Purpose
    plan_code: Optional[str]
    package_code: Optional[str]
    amount: Decimal
    currency: str
    credits: Optional[Decimal]
    description: str
    status: PaymentStatus
    provider_payment_id: Optional[str]
    provider_key: str
    save_payment_method: bool
    return_url: Optional[str]
    confirmation_url: Optional[str]
    renewal_of: Optional[str]
    refund_id: Optional[str]
    refunded_amount: Decimal
    paid_period: Optional[PaidPeriod]
    payload: Optional[Any]
    idempotency_key: Optional[str]
    created_at: datetime
    updated_at: datetime
    paid_at: Optional[datetime]
    crypto: Optional[Dict[str, Any]]

class WebhookOutcome(_Result):
    status: WebhookStatus
    event: str
    payment_id: Optional[str]

class CryptoCheckout(_Result):
    payment_id: str
    chain_id: int
    network: str
    token: str
    symbol: str
    decimals: int
    address: str
    amount: str
    display_amount: Decimal
    reference: int
    uri: str
    expires_at: datetime

class CryptoWebhookOutcome(_Result):
    transfers: int
    applied: int
    duplicates: int
    unmatched: int
    payments: List[str]

class CryptoReconcileReport(_Result):
    checked: int
    changed: int
    errors: int

class Event(_Result):
    event_id: str
    type: EventType
    user_id: str
    sequence: int
    occurred_at: datetime
    payload: Any

class DeliveryReport(_Result):
    outcome: DeliveryOutcome
    delivered: int
    failed_attempts: int
    next_attempt_at: Optional[datetime]
    last_error: Optional[str]

class AuditRecord(_Result):
    id: int
    user_id: Optional[str]
    actor: str
    action: str
    target: Optional[str]
    outcome: AuditOutcome
    reason: Optional[str]
    before: Optional[Any]
    after: Optional[Any]
    error: Optional[Any]
    request_id: Optional[str]
    created_at: datetime

class DueReport(_Result):
    renewals_created: int
    renewals_sent: int
    expired: int
    failures: int
    renewals_skipped: int

class MetricCheck(_Result):
    metric: str
    requested: int
    limit: Optional[int]
    used: int
    held: int
    remaining: Optional[int]
    resets_at: datetime
    daily_limit: Optional[int]
    daily_used: int
    daily_remaining: Optional[int]
    over_limit: bool
    overage_credits: Decimal

class UsageCheck(_Result):
    allowed: bool
    reason: Optional[ErrorCode]
    metrics: List[MetricCheck]
    overage_credits: Decimal

class UsageRecord(_Result):
    id: int
    user_id: str
    metric: str
    amount: int
    model_id: Optional[str]
    chat_id: Optional[str]
    hold_id: Optional[str]
    metadata: Optional[Any]
    at: datetime
    over_limit: bool
    overage_credits: Decimal
    replayed: bool

class UsageSummary(_Result):
    metric: str
    unit: str
    used: int
    held: int
    limit: Optional[int]
    remaining: Optional[int]
    period_start: datetime
    resets_at: datetime

class UsageTotal(_Result):
    key: Optional[str]
    amount: int
    events: int

class HeldUsage(_Result):
    metric: str
    amount: int
    period_window: str
    day_window: str

class UsageAmount(_Result):
    metric: str
    amount: int

class Hold(_Result):
    id: str
    user_id: str
    status: HoldStatus
    usage: List[HeldUsage]
    operation: Optional[str]
    source: Optional[Source]
    credits_held: Decimal
    overage_held: Decimal
    placed_entry_id: int
    created_at: datetime
    expires_at: datetime
    settled_at: Optional[datetime]
    captured: List[UsageAmount]
    overage_charged: Decimal
    shortfall: Decimal
    settled_entry_id: Optional[int]
    captured_late: bool
    replayed: bool

class Entitlement(_Result):
    name: str
    kind: Literal["flag", "limit"]
    enabled: bool
    limit: Optional[int]

class Entitlements(_Result):
    plan_code: str
    features: List[Entitlement]
    valid_until: Optional[datetime]

class ExpiringCredits(_Result):
    amount: Decimal
    expires_at: datetime

class CreditLot(_Result):
    id: int
    user_id: str
    amount: Decimal
    remaining: Decimal
    priority: int
    category: LotCategory
    effective_at: datetime
    expires_at: Optional[datetime]
    source: LotSource
    reference: Optional[str]

class CurrencyAmount(_Result):
    currency: str
    amount: Decimal

class Segment(_Result):
    plan_code: str
    currency: str
    network: Optional[str]
    subscriptions: int
    mrr: Decimal

class RevenuePoint(_Result):
    start: str
    currency: str
    gross: Decimal
    refunds: Decimal
    net: Decimal

class PaymentCount(_Result):
    status: str
    provider: str
    count: int

class Overview(_Result):
    at: datetime
    window_start: datetime
    mrr: List[CurrencyAmount]
    arpu: List[CurrencyAmount]
    paying_users: int
    active_subscriptions: int
    segments: List[Segment]
    new_subscriptions: int
    renewals: int
    reactivations: int
    churned: int
    subscriber_churn: Decimal
    mrr_churn: List[CurrencyAmount]
    revenue: List[RevenuePoint]
    payments: List[PaymentCount]

class MoneyMovement(_Result):
    id: int
    user_id: str
    payment_id: str
    status: str
    amount: Decimal
    currency: str
    provider: str
    network: Optional[str]
    plan_code: Optional[str]
    package_code: Optional[str]
    at: datetime
