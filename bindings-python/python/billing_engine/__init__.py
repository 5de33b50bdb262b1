"""billing_engine: tariffs, charge priority, an append-only ledger and YooKassa payments
over SQLite, for Python backends.

    import billing_engine as be

    catalog = be.Catalog.from_toml_file("tariffs.toml")
    billing = be.Billing.open("billing.sqlite3", catalog)
    billing.register_user("user-1")
    charge = billing.charge("user-1", "generation", idempotency_key="request-42")

The engine is Rust (``billing_engine._native``): its result types are the extension's
classes, with an attribute per field and ``to_dict()``, ``decimal.Decimal`` money and aware
UTC ``datetime`` times; this module adds the argument checks, one exception class per error
code, and the configuration types. One ``Billing`` is meant to be
shared by every thread of a process: the engine releases the GIL while it works.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
from datetime import datetime, timezone
from decimal import Decimal
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import _native

__all__ = [
    "ActiveSubscription",
    "AllowancePeriod",
    "AuditRecord",
    "Billing",
    "BillingError",
    "BillingMe",
    "BillingState",
    "Busy",
    "CardDetails",
    "Catalog",
    "Charge",
    "ChargeNotFound",
    "ChargeRequest",
    "CreatedPayment",
    "CryptoCheckout",
    "CryptoHistory",
    "CryptoReconcileReport",
    "CryptoWebhookOutcome",
    "CurrencyAmount",
    "DailyLimitReached",
    "DeliveryReport",
    "DueReport",
    "CreditLot",
    "CustomerContact",
    "Entitlement",
    "Entitlements",
    "Event",
    "ExpiringCredits",
    "FeatureNotAvailable",
    "GrantNotFound",
    "HeldUsage",
    "Hold",
    "HoldNotFound",
    "IdempotencyConflict",
    "IntegrityReport",
    "InternalError",
    "InvalidArgument",
    "InvalidCatalog",
    "InvalidPlan",
    "InvalidWebhook",
    "LedgerEntry",
    "ManualClock",
    "MetricCheck",
    "Mismatch",
    "MoneyMovement",
    "NoPaymentMethod",
    "NoSubscription",
    "NotEnoughCredits",
    "Overview",
    "PaidPeriod",
    "Payment",
    "PaymentCount",
    "PaymentError",
    "PaymentHistory",
    "PaymentHistoryItem",
    "PaymentMethod",
    "PlanCard",
    "QuotaExceeded",
    "Quote",
    "Refund",
    "RevenuePoint",
    "Segment",
    "StorageError",
    "StorageFull",
    "SubscriptionDetails",
    "SubscriptionPlan",
    "TxReceipt",
    "UnknownMetric",
    "UnknownOperation",
    "UnknownUser",
    "UsageAmount",
    "UsageCheck",
    "UsageRecord",
    "UsageRequest",
    "UsageSummary",
    "UsageTotal",
    "WebhookOutcome",
    "YooKassaConfig",
    "audit_context",
]

Money = Union[Decimal, int, str]
"""An amount: a ``Decimal``, an ``int`` or a decimal string. Never a ``float``."""

Moment = Union[datetime, str]
"""A time: an aware ``datetime`` or an RFC 3339 string such as ``2026-01-01T00:00:00Z``."""

# ---------------------------------------------------------------------------- errors


class BillingError(Exception):
    """Every refusal of the engine. ``code`` is the contract's stable string code and
    ``details`` a dict of machine-readable facts (``required``/``available``, ``field``...)."""

    code: ClassVar[str] = "BILLING_ERROR"
    #: The status an HTTP API answers with: 402 for missing credits, 409 for a state
    #: conflict, 429 for a spent limit, 5xx for what the client cannot fix.
    http_status: ClassVar[int] = 500
    details: Dict[str, Any]

    def __init__(self, message: str, details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.details = dict(details or {})

    def to_dict(self) -> Dict[str, Any]:
        """The error as an API answers it: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": str(self), "details": self.details}


class NotEnoughCredits(BillingError):
    code = "NOT_ENOUGH_CREDITS"
    http_status = 402


class DailyLimitReached(BillingError):
    code = "DAILY_LIMIT_REACHED"
    http_status = 429


class NoSubscription(BillingError):
    code = "NO_SUBSCRIPTION"
    http_status = 409


class InvalidPlan(BillingError):
    code = "INVALID_PLAN"
    http_status = 400


class PaymentError(BillingError):
    code = "PAYMENT_ERROR"
    http_status = 502


class NoPaymentMethod(BillingError):
    code = "NO_PAYMENT_METHOD"
    http_status = 409


class ActiveSubscription(BillingError):
    code = "ACTIVE_SUBSCRIPTION"
    http_status = 409


class IdempotencyConflict(BillingError):
    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class InvalidWebhook(BillingError):
    code = "INVALID_WEBHOOK"
    http_status = 400


class InvalidCatalog(BillingError):
    code = "INVALID_CATALOG"
    http_status = 500


class UnknownUser(BillingError):
    code = "UNKNOWN_USER"
    http_status = 404


class UnknownOperation(BillingError):
    code = "UNKNOWN_OPERATION"
    http_status = 404


class ChargeNotFound(BillingError):
    code = "CHARGE_NOT_FOUND"
    http_status = 404


class InvalidArgument(BillingError, ValueError):
    """A bad argument value; ``details["field"]`` names the argument."""

    code = "INVALID_ARGUMENT"
    http_status = 400


class QuotaExceeded(BillingError):
    """Usage would pass a quota. ``details``: ``metric``, ``limit``, ``used``, ``held``,
    ``requested``, ``resets_at`` and ``window`` (``period`` or ``day``). HTTP 429."""

    code = "QUOTA_EXCEEDED"
    http_status = 429


class FeatureNotAvailable(BillingError):
    """The user's plan lacks the feature; ``details["cheapest_plan"]`` has it."""

    code = "FEATURE_NOT_AVAILABLE"
    http_status = 403


class UnknownMetric(BillingError):
    code = "UNKNOWN_METRIC"
    http_status = 404


class HoldNotFound(BillingError):
    code = "HOLD_NOT_FOUND"
    http_status = 404


class GrantNotFound(BillingError):
    code = "GRANT_NOT_FOUND"
    http_status = 404


class StorageError(BillingError):
    code = "STORAGE_ERROR"
    http_status = 500


class Busy(BillingError):
    """Another writer held the store's lock for the whole lock timeout; nothing was
    written and the same call may be retried. ``details["waited_ms"]``."""

    code = "BUSY"
    http_status = 503


class StorageFull(BillingError):
    """The disk is full; nothing was written. Writes work again once there is space."""

    code = "STORAGE_FULL"
    http_status = 507


class InternalError(BillingError):
    """A bug in the engine (a Rust panic), caught before it could abort the process."""

    code = _native.INTERNAL_ERROR
    http_status = 500


_ERRORS: Dict[str, Type[BillingError]] = {cls.code: cls for cls in BillingError.__subclasses__()}


def _invalid(field: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"invalid argument `{field}`: {message}", {"field": field, "message": message})


_R = TypeVar("_R")


def _error(native: _native.NativeError) -> BillingError:
    """The ``BillingError`` subclass instance for an engine error."""
    code, message, details = native.args
    return _ERRORS.get(code, BillingError)(message, json.loads(details))


@dataclasses.dataclass(frozen=True)
class _AuditContext:
    actor: str
    request_id: Optional[str]
    reason: Optional[str]


_AUDIT_CONTEXT: contextvars.ContextVar[Optional[_AuditContext]] = contextvars.ContextVar(
    "billing_engine_audit_context", default=None
)


@contextlib.contextmanager
def audit_context(actor: str, *, request_id: Optional[str] = None, reason: Optional[str] = None) -> Iterator[None]:
    """Every engine call inside ``with audit_context("admin:alice", request_id=...)`` writes
    its audit records with this actor, request id and reason (a call's own ``reason``
    wins). The context follows the task (``contextvars``), so concurrent requests, threads
    and asyncio tasks each keep their own; calls outside any context are ``system``'s."""
    for name, value in (("actor", actor), ("request_id", request_id), ("reason", reason)):
        if value is not None:
            _check_type(name, value, str, "a str")
    token = _AUDIT_CONTEXT.set(_AuditContext(actor, request_id, reason))
    try:
        yield
    finally:
        _AUDIT_CONTEXT.reset(token)


def _call(method: Callable[..., _R], *args: Any) -> _R:
    """Calls the engine, raising engine errors as their ``BillingError`` subclass, and an
    argument the extension cannot take (an int past 64 bits, a str with a lone surrogate)
    as ``InvalidArgument`` naming it. Inside an ``audit_context``, the call runs in it."""
    context = _AUDIT_CONTEXT.get()
    try:
        if context is not None:
            return _native.in_audit_context(context.actor, context.request_id, context.reason, method, args)  # type: ignore[no-any-return]
        return method(*args)
    except _native.NativeError as error:
        raise _error(error) from None
    except (OverflowError, UnicodeEncodeError) as error:
        name = _unfit_argument(method, args)
        raise _invalid(name, f"cannot be passed to the engine: {error}") from None


_I64 = range(-(2**63), 2**63)


def _unfit_argument(method: Callable[..., Any], args: Tuple[Any, ...]) -> str:
    """The name of the first argument the extension cannot take, from the native method's
    signature (``metadata_json`` is the caller's ``metadata``)."""
    signature = getattr(method, "__text_signature__", None) or "()"
    names = [n.strip() for n in signature.strip("()").split(",") if n.strip() and not n.strip().startswith("$")]
    for name, value in zip(names, args):
        unfit = (isinstance(value, int) and value not in _I64) or (
            isinstance(value, str) and not value.isascii() and not _encodes(value)
        )
        if unfit:
            return name.removesuffix("_json")
    return "arguments"


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------------------- arguments


def _check_type(name: str, value: Any, expected: Union[type, Tuple[type, ...]], what: str) -> None:
    # bool is an int in Python; a count or an id given as True is a bug, not a 1.
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        raise TypeError(f"argument `{name}` must be {what}, got {type(value).__name__}")


_U32_MAX = 2**32 - 1


def _count(name: str, value: int) -> int:
    _check_type(name, value, int, "an int")
    if not 0 <= value <= _U32_MAX:
        raise _invalid(name, f"expected 0 to {_U32_MAX}, got {value}")
    return value


def _id_number(name: str, value: int) -> int:
    """A ledger id: a 64-bit integer."""
    _check_type(name, value, int, "an int")
    if value not in _I64:
        raise _invalid(name, f"expected a 64-bit integer, got {value}")
    return value


def _money(name: str, value: Money) -> str:
    if isinstance(value, float):
        raise TypeError(f"argument `{name}` must be a Decimal, an int or a decimal string, not a float")
    _check_type(name, value, (Decimal, int, str), "a Decimal, an int or a decimal string")
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _seconds(name: str, value: float) -> float:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        raise _invalid(name, f"expected a number of seconds, got {value!r}") from None


def _moment(name: str, value: Moment) -> str:
    if isinstance(value, str):
        return value
    _check_type(name, value, datetime, "a datetime or an RFC 3339 string")
    if value.tzinfo is None:
        raise _invalid(name, "a naive datetime is ambiguous: give it a timezone")
    return _iso(value)


def _json_arg(name: str, value: Any) -> Optional[str]:
    if value is None:
        return None
    try:
        return json.dumps(value, default=_json_default)
    except (TypeError, ValueError) as error:
        raise _invalid(name, f"not JSON-serializable: {error}") from None
    except RecursionError:
        raise _invalid(name, "nested too deeply") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return _iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _headers(value: Union[Mapping[str, str], Iterable[Tuple[str, str]], None]) -> List[Tuple[str, str]]:
    if value is None:
        return []
    pairs = value.items() if isinstance(value, Mapping) else value
    headers = []
    for pair in pairs:
        name, text = pair
        _check_type("headers", name, str, "str names and values")
        _check_type("headers", text, str, "str names and values")
        headers.append((name, text))
    return headers


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_time(text: str) -> datetime:
    # fromisoformat reads a trailing `Z` only from Python 3.11 on.
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------- results
# The result types are classes of the extension, made from the engine's Rust types by its
# `python` feature, so every Rust field is an attribute here. Money is `Decimal`, times are
# aware UTC `datetime`s, days are `date`s, sources, kinds and statuses are their names
# (`"credits"`), and `to_dict()` gives the JSON shape: decimals as strings, except the
# seed 003 number fields (plan prices and payment amounts).
from ._native import (  # noqa: E402
    CreditLot,
    CustomerContact,
    ExpiringCredits,
    Entitlement,
    Entitlements,
    HeldUsage,
    Hold,
    MetricCheck,
    UsageAmount,
    UsageCheck,
    UsageRecord,
    UsageSummary,
    UsageTotal,
    AllowancePeriod,
    BillingMe,
    BillingState,
    CardDetails,
    Charge,
    CreatedPayment,
    DueReport,
    IntegrityReport,
    LedgerEntry,
    Mismatch,
    PaidPeriod,
    Payment,
    PaymentHistory,
    PaymentHistoryItem,
    PaymentMethod,
    PlanCard,
    Quote,
    Refund,
    SubscriptionDetails,
    SubscriptionPlan,
    WebhookOutcome,
    AuditRecord,
    CryptoCheckout,
    CryptoHistory,
    CryptoReconcileReport,
    CryptoWebhookOutcome,
    DeliveryReport,
    Event,
    CurrencyAmount,
    MoneyMovement,
    Overview,
    PaymentCount,
    RevenuePoint,
    Segment,
)


class TxReceipt(NamedTuple):
    """What ``Billing.reconcile_crypto``'s ``fetch`` answers for a transaction the chain
    has: its block, how many blocks are on top of it (its own included), and whether it
    reverted (receipt ``status`` 0)."""

    block_number: int
    block_hash: Optional[str]
    confirmations: int
    failed: bool = False



class UsageRequest(NamedTuple):
    """One event of ``Billing.track_usage_batch``: the arguments of ``Billing.track_usage``."""

    metric: str
    amount: int = 1
    model_id: Optional[str] = None
    chat_id: Optional[str] = None
    metadata: Optional[Mapping[str, Any]] = None
    at: Optional[Moment] = None


_U63 = range(0, 2**63)


def _usage(name: str, usage: Optional[Mapping[str, int]]) -> Dict[str, int]:
    """Metric amounts: non-negative ints of at most 63 bits."""
    if usage is None:
        return {}
    _check_type(name, usage, Mapping, "a mapping of metric to amount")
    checked = {}
    for metric, amount in usage.items():
        _check_type(f"{name}.{metric}", metric, str, "a str")
        _check_type(f"{name}.{metric}", amount, int, "an int")
        if amount not in _U63:
            raise _invalid("amount", f"`{metric}`: expected 0 to {2**63 - 1}, got {amount}")
        checked[metric] = amount
    return checked


def _usage_request(request: UsageRequest) -> Dict[str, Any]:
    """The JSON shape of one usage event, as the engine reads it."""
    _check_type("metric", request.metric, str, "a str")
    amount = _usage("usage", {request.metric: request.amount})[request.metric]
    if request.metadata is not None:
        _check_type("metadata", request.metadata, Mapping, "a mapping")
    return {
        "metric": request.metric,
        "amount": amount,
        "model_id": request.model_id,
        "chat_id": request.chat_id,
        "metadata": None if request.metadata is None else json.loads(_json_arg("metadata", request.metadata) or "null"),
        "at": None if request.at is None else _moment("at", request.at),
    }


class ChargeRequest(NamedTuple):
    """One charge of ``Billing.charge_batch``: the arguments of ``Billing.charge``."""

    user_id: str
    operation: str
    idempotency_key: str
    metadata: Optional[Mapping[str, Any]] = None


# ---------------------------------------------------------------------------- setup


class Catalog:
    """The validated tariffs; an invalid file raises ``InvalidCatalog`` naming the field path."""

    __slots__ = ("_native",)

    def __init__(self, native: Any) -> None:
        self._native = native

    @classmethod
    def from_toml(cls, text: str) -> Catalog:
        _check_type("text", text, str, "a str")
        return cls(_call(_native.NativeCatalog.from_toml, text))

    @classmethod
    def from_toml_file(cls, path: Union[str, os.PathLike[str]]) -> Catalog:
        return cls(_call(_native.NativeCatalog.from_toml_file, os.fspath(path)))

    def to_dict(self) -> Dict[str, Any]:
        result: Dict[str, Any] = json.loads(self._native.to_json())
        return result


class ManualClock:
    """A clock that moves only when told to, for tests: share it with ``Billing.open``."""

    __slots__ = ("_native",)

    def __init__(self, now: Moment) -> None:
        self._native = _call(_native.NativeClock, _moment("now", now))

    def now(self) -> datetime:
        return _parse_time(self._native.now())

    def set(self, now: Moment) -> None:
        _call(self._native.set, _moment("now", now))

    def advance(self, *, days: int = 0, hours: int = 0, minutes: int = 0, seconds: int = 0) -> None:
        for name, value in (("days", days), ("hours", hours), ("minutes", minutes), ("seconds", seconds)):
            _check_type(name, value, int, "an int")
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if total not in _I64:
            raise _invalid("clock", f"cannot advance by {total} seconds")
        _call(self._native.advance, total)


YOOKASSA_API_URL = "https://api.yookassa.ru/v3"


@dataclasses.dataclass(frozen=True)
class YooKassaConfig:
    """How to reach a YooKassa shop and which checks a notification must pass.

    ``webhook_secret``: one secret or several (rotation) for the optional HMAC header;
    ``trusted_networks``: ``None`` for YooKassa's published networks, ``[]`` for no
    address check. The secrets never appear in ``repr`` or in errors."""

    shop_id: str
    secret_key: str = dataclasses.field(repr=False)
    api_url: str = YOOKASSA_API_URL
    return_url: Optional[str] = None
    webhook_secret: Union[str, Sequence[str], None] = dataclasses.field(default=None, repr=False)
    trusted_networks: Optional[Sequence[str]] = None
    verify_by_fetch: bool = True
    timeout_s: float = 10
    retries: int = 2
    #: Send a 54-FZ receipt with every payment and refund; the catalog then needs a
    #: ``[receipt]`` table and each user a contact.
    receipts: bool = False
    tax_system_code: Optional[int] = None

    @classmethod
    def from_env(cls) -> YooKassaConfig:
        """Reads ``YOOKASSA_SHOP_ID``, ``YOOKASSA_SECRET_KEY``, ``YOOKASSA_WEBHOOK_SECRET``
        (comma-separated for several), ``YOOKASSA_API_URL``, ``YOOKASSA_RETURN_URL``,
        ``YOOKASSA_RECEIPTS`` and ``YOOKASSA_TAX_SYSTEM_CODE``."""
        fields = json.loads(_call(_native.NativeYooKassaConfig.from_env_json))
        fields["webhook_secret"] = fields.pop("webhook_secrets")
        return cls(**fields)

    def _to_native(self) -> Any:
        secrets = self.webhook_secret
        secrets_list = [] if secrets is None else [secrets] if isinstance(secrets, str) else list(secrets)
        networks = None if self.trusted_networks is None else list(self.trusted_networks)
        return _call(
            _native.NativeYooKassaConfig,
            self.shop_id,
            self.secret_key,
            self.api_url,
            self.return_url,
            secrets_list,
            networks,
            self.verify_by_fetch,
            _seconds("timeout_s", self.timeout_s),
            _count("retries", self.retries),
            self.receipts,
            None if self.tax_system_code is None else _count("tax_system_code", self.tax_system_code),
        )


# ---------------------------------------------------------------------------- the engine


_PASSWORD_IN_URL = re.compile(r"^([a-z]+://[^:/@]*:)[^@]*@")


class Billing:
    """The billing engine over a SQLite file or a PostgreSQL database. Share one object
    between threads; processes (and, on PostgreSQL, servers) may open the same database.
    Every call raises a ``BillingError`` subclass on refusal and writes nothing then."""

    __slots__ = ("_native", "location")

    def __init__(self, native: _native.NativeBilling, location: str) -> None:
        self._native = native
        self.location = location

    @classmethod
    def open(
        cls,
        location: Union[str, os.PathLike[str]],
        catalog: Catalog,
        *,
        yookassa: Optional[YooKassaConfig] = None,
        clock: Optional[ManualClock] = None,
        durability: str = "full",
        shared_commits: bool = True,
        alchemy_signing_key: Optional[str] = None,
    ) -> Billing:
        """Opens (and creates or migrates) the database at ``location``: a SQLite file
        (``":memory:"`` for a private in-memory database), or a PostgreSQL database by
        its URL, ``"postgresql://user:password@host:5432/db"`` (``?pool_size=N`` sets
        how many connections this handle keeps, 8 by default; ``sslmode=require`` asks for
        TLS, verified against the public roots or the CA file ``sslrootcert=`` names). ``durability="normal"``
        trades SQLite's last commits on power loss (never on a crash) for speed.
        ``shared_commits``: threads that write to a SQLite file at once share commits, each
        answered once the commit holding its write is durable; ``False`` gives every write
        a commit of its own. ``alchemy_signing_key``: the signing key of the Alchemy
        Address Activity webhook that reports transfers to the catalog's crypto gateways
        (``ALCHEMY_SIGNING_KEY``); it never appears in a repr or an error."""
        location = os.fspath(location)
        _check_type("catalog", catalog, Catalog, "a Catalog")
        if clock is not None:
            _check_type("clock", clock, ManualClock, "a ManualClock")
        if yookassa is not None:
            _check_type("yookassa", yookassa, YooKassaConfig, "a YooKassaConfig")
        native_clock = None if clock is None else clock._native
        native_yookassa = None if yookassa is None else yookassa._to_native()
        _check_type("shared_commits", shared_commits, bool, "a bool")
        if alchemy_signing_key is not None:
            _check_type("alchemy_signing_key", alchemy_signing_key, str, "a str")
        native = _call(
            _native.NativeBilling.open,
            location,
            catalog._native,
            native_clock,
            native_yookassa,
            durability,
            shared_commits,
            alchemy_signing_key,
        )
        return cls(native, location)

    def __repr__(self) -> str:
        # A URL's password never reaches a log through a repr.
        shown = _PASSWORD_IN_URL.sub(r"\1***@", self.location)
        return f"Billing(location={shown!r})"

    # ---- users and charges

    def register_user(self, user_id: str, *, free_trial: bool = True) -> BillingState:
        """Creates the account if missing; the free trial is awarded once per user ever."""
        return _call(self._native.register_user, user_id, free_trial)

    def import_user(
        self,
        user_id: str,
        *,
        credits: Money,
        freemium_used: int = 0,
        subscription: Optional[Mapping[str, Any]] = None,
    ) -> BillingState:
        """Carries over a user of an earlier system. ``subscription``:
        ``{"plan_code": "pro_month", "expires_at": datetime | str | None}``."""
        sub = None
        if subscription is not None:
            _check_type("subscription", subscription, Mapping, "a mapping with plan_code and expires_at")
            sub = dict(subscription)
            if sub.get("expires_at") is not None:
                sub["expires_at"] = _moment("subscription.expires_at", sub["expires_at"])
        return _call(
                self._native.import_user,
                user_id,
                _money("credits", credits),
                _count("freemium_used", freemium_used),
                _json_arg("subscription", sub),
            )

    def state(self, user_id: str) -> BillingState:
        return _call(self._native.state, user_id)

    def quote(self, user_id: str, operation: str) -> Quote:
        return _call(self._native.quote, user_id, operation)

    def charge(
        self, user_id: str, operation: str, *, idempotency_key: str, metadata: Optional[Mapping[str, Any]] = None
    ) -> Charge:
        return _call(self._native.charge, user_id, operation, idempotency_key, _json_arg("metadata", metadata))

    def charge_batch(self, requests: Iterable[ChargeRequest]) -> List[Union[Charge, BillingError]]:
        """Many charges, of any users, in one transaction with one commit. Each request
        gets what ``charge`` would give, in order: a ``Charge``, or the ``BillingError`` it
        would raise (returned, not raised; such an item writes nothing). A storage failure
        raises, and nothing of the batch is written. At most 10,000 requests."""
        native_requests = []
        for request in requests:
            _check_type("requests", request, tuple, "ChargeRequest tuples")
            user_id, operation, idempotency_key, metadata = ChargeRequest(*request)
            native_requests.append((user_id, operation, idempotency_key, _json_arg("metadata", metadata)))
        results = _call(self._native.charge_batch, native_requests)
        return [_error(result) if isinstance(result, _native.NativeError) else result for result in results]

    def refund_charge(self, charge_id: int, *, idempotency_key: str, reason: Optional[str] = None) -> Refund:
        return _call(self._native.refund_charge, _id_number("charge_id", charge_id), idempotency_key, reason)

    def grant_credits(
        self,
        user_id: str,
        amount: Money,
        *,
        idempotency_key: str,
        reason: str,
        expires_at: Optional[Moment] = None,
        priority: Optional[int] = None,
        category: str = "promotional",
    ) -> LedgerEntry:
        """An admin grant, a lot of its own (``expires_at``, ``priority`` 0-100 in the burn
        order, ``category`` ``promotional`` or ``paid``), or a correction when negative."""
        if priority is not None:
            _check_type("priority", priority, int, "an int")
            if priority not in range(0, 256):
                raise _invalid("priority", f"expected 0 to 100, got {priority}")
        _check_type("category", category, str, "a str")
        terms = {
            "expires_at": None if expires_at is None else _moment("expires_at", expires_at),
            "priority": priority,
            "category": category,
        }
        return _call(
            self._native.grant_credits,
            user_id,
            _money("amount", amount),
            idempotency_key,
            reason,
            json.dumps(terms),
        )

    def void_grant(self, lot_id: int, *, idempotency_key: str, reason: str) -> LedgerEntry:
        """Forfeits what remains of a granted lot (``credit_voided``); a retry replays."""
        return _call(self._native.void_grant, _id_number("lot_id", lot_id), idempotency_key, reason)

    def credit_lots(self, user_id: str) -> List[CreditLot]:
        """The user's credit lots, live and spent, by id."""
        return _call(self._native.credit_lots, user_id)

    # ---- subscriptions

    def activate_subscription(self, user_id: str, plan_code: str, *, idempotency_key: str) -> SubscriptionDetails:
        return _call(self._native.activate_subscription, user_id, plan_code, idempotency_key)

    def cancel_subscription(self, user_id: str, *, immediate: bool = False) -> SubscriptionDetails:
        return _call(self._native.cancel_subscription, user_id, immediate)

    def set_autorenew(self, user_id: str, enabled: bool) -> SubscriptionDetails:
        return _call(self._native.set_autorenew, user_id, enabled)

    # ---- payments

    def create_payment(
        self,
        user_id: str,
        *,
        plan_code: Optional[str] = None,
        package_code: Optional[str] = None,
        return_url: Optional[str] = None,
        save_payment_method: bool = False,
        idempotency_key: str,
        customer_email: Optional[str] = None,
        customer_phone: Optional[str] = None,
    ) -> CreatedPayment:
        """A payment for a paid plan or a credit package (exactly one of the two).

        ``customer_email`` / ``customer_phone``: where its 54-FZ receipt goes, kept as the
        user's contact for later renewals and refunds. With receipts on, a payment with
        no contact, given or kept, raises ``InvalidArgument`` before anything is sent."""
        return _call(
                self._native.create_payment,
                user_id,
                plan_code,
                package_code,
                return_url,
                save_payment_method,
                idempotency_key,
                customer_email,
                customer_phone,
            )

    def set_customer_contact(
        self, user_id: str, *, email: Optional[str] = None, phone: Optional[str] = None
    ) -> CustomerContact:
        """Where the user's receipts go: an email, a phone (digits, country code first), or both."""
        return _call(self._native.set_customer_contact, user_id, email, phone)

    def customer_contact(self, user_id: str) -> Optional[CustomerContact]:
        return _call(self._native.customer_contact, user_id)

    def start_card_binding(
        self, user_id: str, *, return_url: Optional[str] = None, idempotency_key: Optional[str] = None
    ) -> CreatedPayment:
        """Holds 1 RUB to save the user's payment method. With ``idempotency_key``, a repeat
        (a double click) returns the same binding instead of holding another ruble."""
        return _call(self._native.start_card_binding, user_id, return_url, idempotency_key)

    def refund_payment(
        self, payment_id: str, *, amount: Optional[Money] = None, idempotency_key: Optional[str] = None
    ) -> Payment:
        """Refunds what is left of a succeeded payment, or ``amount`` of it (which needs an
        ``idempotency_key``). A package's credits go back in proportion, rounded down; a
        plan's period ends only when the whole payment is refunded."""
        money = None if amount is None else _money("amount", amount)
        return _call(self._native.refund_payment, payment_id, money, idempotency_key)

    def handle_yookassa_webhook(
        self,
        body: bytes,
        *,
        remote_addr: Optional[str] = None,
        headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None,
    ) -> WebhookOutcome:
        """``InvalidWebhook``: nothing will ever apply it (answer 200, so YooKassa stops
        sending it, and log it); ``PaymentError``: the API could not be reached, a retry can
        help (answer 5xx)."""
        _check_type("body", body, (bytes, bytearray, memoryview), "bytes")
        return _call(self._native.handle_yookassa_webhook, bytes(body), remote_addr, _headers(headers))

    def process_due(self) -> DueReport:
        """Renewals and expiries due now; safe from several cron workers at once."""
        return _call(self._native.process_due)

    def payment(self, payment_id: str) -> Payment:
        return _call(self._native.payment, payment_id)

    # ---- seed 003 views

    def billing_me(self, user_id: str) -> BillingMe:
        return _call(self._native.billing_me, user_id)

    def subscription_details(self, user_id: str) -> SubscriptionDetails:
        return _call(self._native.subscription_details, user_id)

    def plans(self) -> List[SubscriptionPlan]:
        return _call(self._native.plans)

    def plan_cards(self, user_id: str) -> List[PlanCard]:
        """The pricing screen's card for every plan, in display order."""
        return _call(self._native.plan_cards, user_id)

    def payment_method(self, user_id: str) -> PaymentMethod:
        return _call(self._native.payment_method, user_id)

    def payments(self, user_id: str, limit: int = 10) -> PaymentHistory:
        return _call(self._native.payments, user_id, _count("limit", limit))

    # ---- metered usage, holds and features

    def check_usage(self, user_id: str, usage: Mapping[str, int]) -> UsageCheck:
        """Whether ``usage`` (metric -> amount) fits the user's quotas now; writes nothing."""
        return _call(self._native.check_usage, user_id, _usage("usage", usage))

    def require_usage(self, user_id: str, usage: Mapping[str, int]) -> UsageCheck:
        """``check_usage`` that raises ``QuotaExceeded`` (or ``NotEnoughCredits`` for
        overage the credits do not cover)."""
        return _call(self._native.require_usage, user_id, _usage("usage", usage))

    def track_usage(
        self,
        user_id: str,
        metric: str,
        amount: int = 1,
        *,
        idempotency_key: str,
        model_id: Optional[str] = None,
        chat_id: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        at: Optional[Moment] = None,
    ) -> UsageRecord:
        """Records usage that happened: never refused for a quota (``over_limit`` says it
        crossed one). ``at`` places it in the period that held it; at most 5 minutes ahead."""
        request = _usage_request(UsageRequest(metric, amount, model_id, chat_id, metadata, at))
        return _call(self._native.track_usage, user_id, json.dumps(request), idempotency_key)

    def track_usage_batch(
        self, user_id: str, records: Iterable[UsageRequest], *, idempotency_key: str
    ) -> List[UsageRecord]:
        """Many events of one user in one transaction, under one key."""
        native = []
        for record in records:
            _check_type("records", record, tuple, "UsageRequest tuples")
            native.append(_usage_request(UsageRequest(*record)))
        return _call(self._native.track_usage_batch, user_id, json.dumps(native), idempotency_key)

    def usage(self, user_id: str, metric: str) -> UsageSummary:
        """The metric in the current period: ``used``, ``limit``, ``remaining``, ``resets_at``."""
        return _call(self._native.usage, user_id, metric)

    def usage_breakdown(
        self,
        user_id: str,
        metric: str,
        *,
        by: str = "model_id",
        since: Optional[Moment] = None,
        until: Optional[Moment] = None,
    ) -> List[UsageTotal]:
        """Totals per ``model_id`` or ``chat_id`` of the usage in ``[since, until)``."""
        since_text = None if since is None else _moment("since", since)
        until_text = None if until is None else _moment("until", until)
        return _call(self._native.usage_breakdown, user_id, metric, by, since_text, until_text)

    def reserve(
        self,
        user_id: str,
        *,
        usage: Optional[Mapping[str, int]] = None,
        operation: Optional[str] = None,
        idempotency_key: str,
        ttl_s: int = 600,
    ) -> Hold:
        """Reserves quota, an operation's op or credits, and overage credits in one step,
        for work whose cost is known only afterwards. Settle it with ``capture`` or
        ``release``; unsettled, it expires after ``ttl_s`` seconds."""
        ttl = _count("ttl_s", ttl_s)
        return _call(self._native.reserve, user_id, _usage("usage", usage), operation, idempotency_key, ttl)

    def capture(
        self,
        hold_id: str,
        *,
        actual: Optional[Mapping[str, int]] = None,
        idempotency_key: str,
        model_id: Optional[str] = None,
        chat_id: Optional[str] = None,
    ) -> Hold:
        """Settles a hold with the usage the work took (``None``: what was held); less
        returns the rest, more is charged as far as the credits go. A hold settles once.
        Its usage events carry ``model_id`` and ``chat_id``."""
        actual_usage = None if actual is None else _usage("actual", actual)
        return _call(self._native.capture, hold_id, actual_usage, model_id, chat_id, idempotency_key)

    def release(self, hold_id: str, *, idempotency_key: str) -> Hold:
        """Gives back everything a hold reserved."""
        return _call(self._native.release, hold_id, idempotency_key)

    def entitlements(self, user_id: str) -> Entitlements:
        """Every feature's value on the user's plan, and ``valid_until`` for caching."""
        return _call(self._native.entitlements, user_id)

    def has_feature(self, user_id: str, name: str) -> bool:
        return _call(self._native.has_feature, user_id, name)

    def require_feature(self, user_id: str, name: str) -> Entitlement:
        """The feature, or ``FeatureNotAvailable`` naming the cheapest plan that has it."""
        return _call(self._native.require_feature, user_id, name)

    # ---- the ledger

    def ledger(self, user_id: str, *, limit: int = 50, before: Optional[int] = None) -> List[LedgerEntry]:
        """Newest first; pass the last entry's ``id`` as ``before`` for the next page."""
        if before is not None:
            _id_number("before", before)
        return _call(self._native.ledger, user_id, _count("limit", limit), before)

    def verify_integrity(self) -> IntegrityReport:
        """Recomputes every balance and allowance use from the ledger alone."""
        return _call(self._native.verify_integrity)

    # ---- crypto payments (seed 004)

    def create_crypto_payment(
        self,
        user_id: str,
        *,
        plan_code: Optional[str] = None,
        package_code: Optional[str] = None,
        chain_id: int,
        idempotency_key: str,
    ) -> CryptoCheckout:
        """A ``pending`` crypto payment for a plan or a package (exactly one) on network
        ``chain_id``: where to send, exactly how much (base units, the reference in its
        lowest digits), the EIP-681 URI for the wallet, and the expiry."""
        return _call(
            self._native.create_crypto_payment, user_id, plan_code, package_code, _count("chain_id", chain_id),
            idempotency_key,
        )

    def handle_crypto_webhook(
        self, body: bytes, *, headers: Union[Mapping[str, str], Iterable[Tuple[str, str]], None] = None
    ) -> CryptoWebhookOutcome:
        """An Alchemy Address Activity notification (signed in ``X-Alchemy-Signature``).
        ``InvalidWebhook``: forged or malformed, never applied (answer 401/400)."""
        _check_type("body", body, (bytes, bytearray, memoryview), "bytes")
        return _call(self._native.handle_crypto_webhook, bytes(body), _headers(headers))

    def reconcile_crypto(self, fetch: Callable[[int, str], Optional[TxReceipt]]) -> CryptoReconcileReport:
        """Re-checks open and recently credited crypto payments against the chain:
        ``fetch(chain_id, tx_hash)`` reads a transaction's receipt from your node and
        answers a ``TxReceipt``, or ``None`` when the chain has no such transaction. Run it
        from a worker every few minutes: notifications get lost."""
        if not callable(fetch):
            raise TypeError("argument `fetch` must be callable")
        return _call(self._native.reconcile_crypto, fetch)

    def refund_crypto_payment(self, payment_id: str, tx_hash: str) -> Payment:
        """Records that a credited crypto payment's money went back to the payer in the
        transaction ``tx_hash``: what it bought is taken back, and it is ``refunded``."""
        return _call(self._native.refund_crypto_payment, payment_id, tx_hash)

    def crypto_transfers(self, payment_id: str) -> List[Dict[str, Any]]:
        """The transfers seen of a crypto payment, each with the raw payload it came in."""
        transfers: List[Dict[str, Any]] = json.loads(_call(self._native.crypto_transfers_json, payment_id))
        return transfers

    # ---- the outbox of domain events

    def poll_events(self, consumer: str, *, limit: int = 100) -> List[Event]:
        """Up to ``limit`` events after ``consumer``'s cursor, oldest first (each user's in
        sequence); polling does not move the cursor."""
        return _call(self._native.poll_events, consumer, _count("limit", limit))

    def ack_events(self, consumer: str, up_to: str) -> None:
        """Moves ``consumer``'s cursor past the event ``up_to`` (an ``event_id`` polled)."""
        _call(self._native.ack_events, consumer, up_to)

    def prune_events(self, before: Moment) -> int:
        """Deletes events that occurred before ``before`` (each user's newest stays);
        how many."""
        return _call(self._native.prune_events, _moment("before", before))

    def user_events(self, user_id: str, *, after_sequence: int = 0, limit: int = 100) -> List[Event]:
        """A page of the user's events in sequence."""
        return _call(self._native.user_events, user_id, _id_number("after_sequence", after_sequence),
                     _count("limit", limit))

    def deliver_events(
        self,
        endpoint_url: str,
        secret: str,
        *,
        consumer: str = "webhooks",
        limit: int = 100,
        timeout_s: float = 10,
    ) -> DeliveryReport:
        """POSTs the events after ``consumer``'s cursor to ``endpoint_url``, signed by the
        Standard Webhooks ``secret`` (``whsec_…``); retries by the schedule and honours
        ``Retry-After``; 410 stops delivery until ``resume_delivery``."""
        return _call(self._native.deliver_events, endpoint_url, secret, consumer, _count("limit", limit),
                     _seconds("timeout_s", timeout_s))

    def resume_delivery(self, consumer: str = "webhooks") -> None:
        _call(self._native.resume_delivery, consumer)

    # ---- the operators' overview (docs/OVERVIEW.md)

    def overview(self, at: Optional[Moment] = None, *, window_days: int = 30) -> Overview:
        """MRR, ARPU, active subscriptions, churn, revenue per day and payment counts at
        ``at`` (now) over the ``window_days`` before it."""
        return _call(self._native.overview, None if at is None else _moment("at", at), _count("window_days", window_days))

    def revenue_series(self, from_: Moment, to: Moment, *, granularity: str = "day") -> List[RevenuePoint]:
        """Gross, refunds and net per ``day``, ``week`` or ``month`` and currency."""
        return _call(self._native.revenue_series, _moment("from_", from_), _moment("to", to), granularity)

    def transactions(
        self,
        *,
        status: Optional[str] = None,
        provider: Optional[str] = None,
        network: Optional[str] = None,
        plan_code: Optional[str] = None,
        from_: Optional[Moment] = None,
        to: Optional[Moment] = None,
        min_amount: Optional[Money] = None,
        max_amount: Optional[Money] = None,
        limit: int = 50,
        before: Optional[int] = None,
    ) -> List[MoneyMovement]:
        """Money movements (``gross``, ``refund``, ``reversal``, ``failed``), newest first,
        matching every filter given; pass the last one's ``id`` as ``before`` for more."""
        if before is not None:
            _id_number("before", before)
        filters = {
            "status": status, "provider": provider, "network": network, "plan_code": plan_code,
            "from": None if from_ is None else _moment("from_", from_), "to": None if to is None else _moment("to", to),
            "min_amount": None if min_amount is None else _money("min_amount", min_amount),
            "max_amount": None if max_amount is None else _money("max_amount", max_amount),
        }
        return _call(self._native.transactions, json.dumps(filters), _count("limit", limit), before)

    def metrics_text(self) -> str:
        """The Prometheus exposition (OpenMetrics text) of what this handle counted."""
        return self._native.metrics_text()

    # ---- the audit log

    def audit_log(
        self,
        *,
        user_id: Optional[str] = None,
        actor: Optional[str] = None,
        action: Optional[str] = None,
        outcome: Optional[str] = None,
        limit: int = 50,
        before: Optional[int] = None,
    ) -> List[AuditRecord]:
        """Newest first: the records matching every filter given; pass the last one's
        ``id`` as ``before`` for the next page."""
        if before is not None:
            _id_number("before", before)
        return _call(self._native.audit_log, user_id, actor, action, outcome, _count("limit", limit), before)
