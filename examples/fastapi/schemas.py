"""What the service's routes take and answer, as pydantic models: the OpenAPI document
(``/openapi.json``) is built from them, and FastAPI checks every answer against them.

The answers are the binding's ``to_dict()`` shapes (seed 003's for the frontend routes),
written out here; ``test_app.py`` checks that each model has exactly the fields of the
binding's result it describes, so the two cannot drift apart. Money is a decimal string
(``"10.50"``) except seed 003's number fields (plan prices, payment amounts); times are
ISO 8601 UTC strings with milliseconds (``"2026-01-31T12:00:00.000Z"``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

#: The longest code, id or key a request may carry (the engine's limit for ids).
MAX_ID = 128
#: The longest return URL.
MAX_URL = 2048

Code = Field(min_length=1, max_length=64)


class Answer(BaseModel):
    """An answer: exactly these fields, no others."""

    model_config = ConfigDict(extra="forbid")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- requests


class AutoRenewRequest(Request):
    enabled: bool


class CreatePaymentRequest(Request):
    """Seed 003's request: exactly one of ``plan_code`` and ``package_code``."""

    plan_code: Optional[str] = Field(None, min_length=1, max_length=64)
    package_code: Optional[str] = Field(None, min_length=1, max_length=64)
    return_url: Optional[str] = Field(None, min_length=1, max_length=MAX_URL)
    save_payment_method: bool = False


class CryptoCheckoutRequest(Request):
    """Seed 004's checkout: exactly one of ``plan_code`` and ``package_code``, and the
    network to pay on."""

    plan_code: Optional[str] = Field(None, min_length=1, max_length=64)
    package_code: Optional[str] = Field(None, min_length=1, max_length=64)
    chain_id: int = Field(ge=1, le=2**32 - 1)


class ChargeRequest(Request):
    idempotency_key: str = Field(min_length=1, max_length=MAX_ID)
    metadata: Optional[Dict[str, Any]] = None


class UsageCheckRequest(Request):
    """Seed 001's one metric (``metric``, ``amount``), or several at once (``usage``)."""

    metric: Optional[str] = Field(None, min_length=1, max_length=64)
    amount: int = Field(1, ge=0, le=2**53)
    usage: Optional[Dict[str, int]] = Field(None, max_length=16)


class ChatRequest(Request):
    idempotency_key: str = Field(min_length=1, max_length=MAX_ID - 16)
    chat_id: str = Field(min_length=1, max_length=MAX_ID)
    model_id: str = Field("fake-gpt", min_length=1, max_length=MAX_ID)
    prompt: str = Field(max_length=100_000)
    max_tokens: int = Field(256, ge=1, le=1_000_000)


# ---------------------------------------------------------------------------- errors


class ApiError(Answer):
    """Every error: a stable ``code`` (the engine's, or ``BAD_REQUEST``, ``NOT_FOUND``,
    ``METHOD_NOT_ALLOWED``, ``PAYLOAD_TOO_LARGE``, ``MODEL_ERROR``, ``INTERNAL``), a
    ``message`` for people, and machine-readable ``details``."""

    code: str
    message: str
    details: Dict[str, Any]


# ---------------------------------------------------------------------------- seed 003


class ExpiringCredits(Answer):
    amount: str
    expires_at: str


class CryptoHistory(Answer):
    """Seed 004 ``/me/history``: a crypto payment's network, token and transaction.
    Amounts are base units of the token, as strings."""

    chain_id: int
    network: str
    token: str
    symbol: str
    amount: str
    received: str
    tx_hash: Optional[str]
    confirmations: int
    state: Literal[
        "pending", "confirming", "succeeded", "underpaid", "overpaid", "expired", "failed", "reorged", "refunded"
    ]


class PaymentHistoryItem(Answer):
    id: str
    amount: float
    currency: str
    status: Literal["pending", "succeeded", "failed", "canceled", "refunded"]
    paid_at: Optional[str]
    description: str
    refunded_amount: float
    crypto: Optional[CryptoHistory]


class BillingMe(Answer):
    plan_code: str
    plan_name: str
    expires_at: Optional[str]
    is_active: bool
    daily_photo_limit: Optional[int]
    used_today: int
    remaining_today: Optional[int]
    credits_expiring: List[ExpiringCredits]
    last_payment: Optional[PaymentHistoryItem]


class SubscriptionPlan(Answer):
    code: str
    display_name: str
    price: float
    old_price: Optional[float] = None
    duration_days: int
    daily_photo_limit: Optional[int]
    history_days: int
    ai_recognition: bool
    advanced_stats: bool
    priority_support: bool
    features: List[str]
    is_popular: bool


class PaymentMethod(Answer):
    is_attached: bool
    card_mask: Optional[str]
    card_brand: Optional[str]
    method_type: Optional[str]
    title: Optional[str]


class SubscriptionDetails(Answer):
    plan: Literal["free", "pro"]
    plan_display: str
    expires_at: Optional[str]
    is_active: bool
    autorenew_available: bool
    autorenew_enabled: bool
    card_bound: bool
    payment_method: PaymentMethod


class CreatedPayment(Answer):
    payment_id: str
    yookassa_payment_id: str
    confirmation_url: str


class BindingStarted(Answer):
    payment_id: str
    confirmation_url: str


class PaymentHistory(Answer):
    results: List[PaymentHistoryItem]


class WebhookAnswer(Answer):
    """What the webhook route answers YooKassa: 200 with the outcome, or 200 with
    ``status: "rejected"`` and the error for a notification nothing will ever apply."""

    status: Literal["applied", "duplicate", "ignored", "rejected"]
    event: Optional[str] = None
    payment_id: Optional[str] = None
    code: Optional[str] = None
    message: Optional[str] = None
    details: Optional[Dict[str, Any]] = None


# ---------------------------------------------------------------------------- seed 004


class CryptoCheckout(Answer):
    """Where the payer sends exactly ``amount`` base units (``display_amount`` tokens) of
    ``token``, by ``expires_at``; ``uri`` opens the wallet (EIP-681)."""

    payment_id: str
    chain_id: int
    network: str
    token: str
    symbol: str
    decimals: int
    address: str
    amount: str
    display_amount: str
    reference: int
    uri: str
    expires_at: str


class CryptoWebhookAnswer(Answer):
    """What the crypto webhook route answers the indexer."""

    transfers: int
    applied: int
    duplicates: int
    unmatched: int
    payments: List[str]


# ---------------------------------------------------------------------------- seed 000


class BillingState(Answer):
    user_id: str
    plan_code: str
    plan_name: str
    tier: Literal["free", "pro"]
    is_active: bool
    expires_at: Optional[str]
    credits: str
    subscription_ops_limit: Optional[int]
    subscription_ops_used: Optional[int]
    subscription_ops_remaining: Optional[int]
    subscription_ops_reset_at: Optional[str]
    freemium_ops_limit: Optional[int]
    freemium_ops_used: int
    freemium_ops_remaining: Optional[int]
    freemium_reset_at: str
    daily_limit: Optional[int]
    used_today: int
    remaining_today: Optional[int]
    today_resets_at: str
    autorenew_enabled: bool
    credits_expiring: List[ExpiringCredits]


class AllowancePeriod(Answer):
    owner: str
    start: str


class LedgerEntry(Answer):
    id: int
    user_id: str
    kind: str
    source: Optional[str]
    operation: Optional[str]
    credits_delta: str
    credits_balance_after: str
    ops_delta: int
    allowance: Optional[AllowancePeriod]
    op_day: Optional[str]
    idempotency_key: Optional[str]
    reference: Optional[str]
    metadata: Optional[Any]
    created_at: str


class Ledger(Answer):
    results: List[LedgerEntry]


class Charge(Answer):
    id: int
    user_id: str
    operation: str
    source: str
    credits_spent: str
    credits_balance: str
    replayed: bool


# ---------------------------------------------------------------------------- seed 001


class UsageSummary(Answer):
    metric: str
    unit: str
    used: int
    held: int
    limit: Optional[int]
    remaining: Optional[int]
    period_start: str
    resets_at: str


class MetricCheck(Answer):
    metric: str
    requested: int
    limit: Optional[int]
    used: int
    held: int
    remaining: Optional[int]
    resets_at: str
    daily_limit: Optional[int]
    daily_used: int
    daily_remaining: Optional[int]
    over_limit: bool
    overage_credits: str


class UsageCheck(Answer):
    allowed: bool
    reason: Optional[str]
    metrics: List[MetricCheck]
    overage_credits: str


class ChatAnswer(Answer):
    hold_id: str
    status: str
    usage: Dict[str, int]
    replayed: bool
    text: Optional[str] = None


class Entitlement(Answer):
    name: str
    kind: Literal["flag", "limit"]
    enabled: bool
    limit: Optional[int]


class Entitlements(Answer):
    plan_code: str
    features: List[Entitlement]
    valid_until: Optional[str]
