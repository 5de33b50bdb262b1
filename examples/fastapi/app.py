"""A FastAPI backend on billing_engine: the seed 003 endpoints a frontend calls, seed 000's
state, ledger and charge endpoints, seed 001's usage endpoints with a chat completion that
meters its model call, the YooKassa webhook, and seed 004's crypto checkout and the
indexer's webhook (``ALCHEMY_SIGNING_KEY``), the operators' overview page
(``/admin/overview``, behind ``BILLING_ADMIN_TOKEN``) and Prometheus' ``/metrics``. ``../billing_workers.py`` runs beside it: the events
consumer, the HTTP delivery of events and the crypto reconciler.

    BILLING_DB=billing.sqlite3 BILLING_TARIFFS=../web_tariffs.toml uvicorn --factory app:app_from_env

``BILLING_DB`` is a SQLite file, or a PostgreSQL URL (``postgresql://user:pw@host/db``)
when the app runs on several servers.

Every route is one call into the engine, declared with its request and answer models
(``schemas.py``), so ``/openapi.json`` describes the service. Every error, the engine's and
the HTTP layer's (malformed JSON, a missing header, 404, 405, a body over 64 KiB), answers
``{"code", "message", "details"}`` with the status each error class names
(``BillingError.http_status``: 402 for missing credits, 409 for conflicts, 429 for a spent
limit, 502 when the payment provider fails, 503 when busy), and repeats at most a bounded
part of the request. The user comes from ``X-User-Id``: a stand-in for the host's real
authentication.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence, Union

from fastapi import Depends, FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import admin
import billing_engine as be
from schemas import (
    MAX_ID,
    ApiError,
    AutoRenewRequest,
    BillingMe,
    BillingState,
    BindingStarted,
    Charge,
    ChargeRequest,
    ChatAnswer,
    ChatRequest,
    CreatedPayment,
    CreatePaymentRequest,
    CryptoCheckout,
    CryptoCheckoutRequest,
    CryptoWebhookAnswer,
    Entitlements,
    Ledger,
    PaymentHistory,
    PaymentMethod,
    SubscriptionDetails,
    SubscriptionPlan,
    UsageCheck,
    UsageCheckRequest,
    UsageSummary,
    WebhookAnswer,
)

log = logging.getLogger("billing")


class ModelAnswer(Protocol):
    text: str
    tokens_input: int
    tokens_output: int


class ChatModel(Protocol):
    """The host's model client: one call, which reports the tokens it really used."""

    def complete(self, model_id: str, prompt: str, max_tokens: int) -> ModelAnswer: ...


class FakeAnswer(BaseModel):
    text: str
    tokens_input: int
    tokens_output: int


class FakeModel:
    """A stand-in model: echoes the prompt, a token per word, and fails on ``fail``."""

    def complete(self, model_id: str, prompt: str, max_tokens: int) -> ModelAnswer:
        words: Sequence[str] = prompt.split()
        if "fail" in words:
            raise RuntimeError("the model is unavailable")
        answer = words[: max(1, min(len(words), max_tokens))]
        return FakeAnswer(text=" ".join(answer), tokens_input=len(words), tokens_output=len(answer))


def estimated_input_tokens(prompt: str) -> int:
    """What the chat reserves for its input before the model counts it: a token per word,
    rounded up generously."""
    return len(prompt.split()) * 2 + 8


#: The largest request body the service reads: a billing request is small, and a 10 MB
#: field must not cost 10 MB of memory and a 20 MB error.
MAX_BODY_BYTES = 64 * 1024


def current_user(x_user_id: str = Header(min_length=1, max_length=MAX_ID)) -> str:
    return x_user_id


def idempotency_key(idempotency_key: Optional[str] = Header(None, max_length=MAX_ID)) -> str:
    """The ``Idempotency-Key`` header: a retry with the same key gets the same answer.
    Absent, the call gets a key of its own (a retry then repeats the work); present but
    blank, it is refused: a client that meant to send a key must not lose idempotency
    without noticing."""
    if idempotency_key is None:
        return str(uuid.uuid4())
    if not idempotency_key.strip():
        raise be.InvalidArgument("Idempotency-Key: must not be blank", {"field": "Idempotency-Key"})
    return idempotency_key


def errors(*statuses: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """The error answers a route declares, each with the one error model."""
    common = (400, 404, 413, 503)
    return {status: {"model": ApiError} for status in sorted(set(common + statuses))}


def error_answer(status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": details or {}}, status_code=status)


HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}


class BodyLimit:
    """Answers 413 for a body over ``max_bytes``, by its declared length or as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await self.too_large(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self.too_large(scope, receive, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await error_answer(413, "PAYLOAD_TOO_LARGE", message, {"max_bytes": self.max_bytes})(scope, receive, send)


class BodyTooLarge(Exception):
    pass


def create_app(
    billing: be.Billing,
    model: Optional[ChatModel] = None,
    *,
    admin_token: Optional[str] = None,
    currency: str = "RUB",
) -> FastAPI:
    """The service over ``billing``. ``admin_token`` opens the operators' pages
    (``/admin/overview``), which show money in ``currency``, the catalog's."""
    app = FastAPI(title="billing", version="1")
    app.state.billing = billing
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    chat_model: ChatModel = model or FakeModel()
    app.include_router(admin.router(billing, admin_token, currency))

    # Every error answers {"code", "message", "details"}: the engine's, and the HTTP
    # layer's own. None repeats more than a bounded part of the request.
    @app.exception_handler(be.BillingError)
    async def billing_error(request: Request, error: be.BillingError) -> JSONResponse:
        # BUSY (503) is worth retrying in a moment; every other status is final.
        retry = {"Retry-After": "1"} if isinstance(error, be.Busy) else None
        return JSONResponse(error.to_dict(), status_code=error.http_status, headers=retry)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        if first.get("type") == "json_invalid":
            return error_answer(400, "BAD_REQUEST", "the body is not valid JSON")
        field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        # The message, never the input: pydantic's errors carry the whole value.
        message = str(first.get("msg", "invalid"))[:200]
        return error_answer(400, "INVALID_ARGUMENT", f"{field}: {message}", {"field": field, "message": message})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(error.status_code, "BAD_REQUEST")
        return error_answer(error.status_code, code, str(error.detail)[:200])

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_answer(500, "INTERNAL", "an unexpected error; it was logged")

    # ---- seed 003: what the frontend reads and starts

    @app.get("/billing/me/", response_model=BillingMe, responses=errors())
    def me(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.billing_me(user).to_dict()

    @app.get("/billing/plans/", response_model=List[SubscriptionPlan], responses=errors())
    def plans() -> List[Dict[str, Any]]:
        return [plan.to_dict() for plan in billing.plans()]

    @app.get("/billing/subscription/", response_model=SubscriptionDetails, responses=errors())
    def subscription(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.subscription_details(user).to_dict()

    @app.post("/billing/subscription/autorenew/", response_model=SubscriptionDetails, responses=errors(404, 409))
    def autorenew(body: AutoRenewRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.set_autorenew(user, body.enabled).to_dict()

    @app.post("/billing/create-payment/", response_model=CreatedPayment, responses=errors(404, 409, 502))
    def create_payment(
        body: CreatePaymentRequest, user: str = Depends(current_user), key: str = Depends(idempotency_key)
    ) -> Dict[str, Any]:
        # A client that retries sends the same Idempotency-Key and gets the same payment.
        created = billing.create_payment(
            user,
            plan_code=body.plan_code,
            package_code=body.package_code,
            return_url=body.return_url,
            save_payment_method=body.save_payment_method,
            idempotency_key=key,
        )
        return created.to_dict()

    @app.post("/billing/bind-card/start/", response_model=BindingStarted, responses=errors(404, 409, 502))
    def bind_card(user: str = Depends(current_user), key: str = Depends(idempotency_key)) -> Dict[str, Any]:
        # Twenty clicks with one key hold one ruble.
        created = billing.start_card_binding(user, idempotency_key=key)
        return {"payment_id": created.payment_id, "confirmation_url": created.confirmation_url}

    @app.get("/billing/payment-method/", response_model=PaymentMethod, responses=errors(404))
    def payment_method(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.payment_method(user).to_dict()

    @app.get("/billing/payments/", response_model=PaymentHistory, responses=errors(404))
    def payments(limit: int = Query(10, ge=1, le=1000), user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.payments(user, limit).to_dict()

    @app.post("/billing/webhook/yookassa", response_model=WebhookAnswer, responses=errors(502))
    async def yookassa_webhook(request: Request) -> Dict[str, Any]:
        # YooKassa sends a notification again for 24 hours after anything but a 200. So
        # everything the engine will never apply is answered 200: applied, duplicate,
        # ignored (not ours), and rejected (INVALID_WEBHOOK, logged). Only a failure a
        # retry can help is a 5xx: PAYMENT_ERROR (502, the API could not be reached to
        # verify it) and BUSY (503), through the error handler above.
        # In the thread pool like the sync routes: verifying may call the YooKassa API.
        try:
            outcome = await run_in_threadpool(
                billing.handle_yookassa_webhook,
                await request.body(),
                remote_addr=request.client.host if request.client else None,
                headers=dict(request.headers),
            )
        except be.InvalidWebhook as rejected:
            log.warning("YooKassa notification rejected: %s", rejected)
            return {"status": "rejected", **rejected.to_dict()}
        return outcome.to_dict()

    # ---- seed 004: crypto payments

    @app.post("/billing/crypto/checkout/", response_model=CryptoCheckout, responses=errors(404, 409))
    def crypto_checkout(
        body: CryptoCheckoutRequest, user: str = Depends(current_user), key: str = Depends(idempotency_key)
    ) -> Dict[str, Any]:
        checkout = billing.create_crypto_payment(
            user, plan_code=body.plan_code, package_code=body.package_code, chain_id=body.chain_id,
            idempotency_key=key,
        )
        return checkout.to_dict()

    @app.post("/billing/webhook/crypto", response_model=CryptoWebhookAnswer, responses=errors(502))
    async def crypto_webhook(request: Request) -> Dict[str, Any]:
        # Alchemy signs each notification (X-Alchemy-Signature over the raw body). A forged
        # or malformed one is INVALID_WEBHOOK, answered 400 by the error handler; each
        # transfer applies at most once, so a redelivery is harmless.
        outcome = await run_in_threadpool(
            billing.handle_crypto_webhook, await request.body(), headers=dict(request.headers)
        )
        return outcome.to_dict()

    # ---- seed 000: the app's own billing screen and its internal charge calls

    @app.get("/billing/state", response_model=BillingState, responses=errors(404))
    def state(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.state(user).to_dict()

    @app.get("/billing/ledger", response_model=Ledger, responses=errors(404))
    def ledger(
        limit: int = Query(50, ge=1, le=1000),
        before: Optional[int] = Query(None, ge=1, le=2**63 - 1),
        user: str = Depends(current_user),
    ) -> Dict[str, Any]:
        return {"results": [entry.to_dict() for entry in billing.ledger(user, limit=limit, before=before)]}

    def charge(operation: str, body: ChargeRequest, user: str) -> Dict[str, Any]:
        return billing.charge(user, operation, idempotency_key=body.idempotency_key, metadata=body.metadata).to_dict()

    @app.post("/billing/charge-generation", response_model=Charge, responses=errors(402, 404, 409, 429))
    def charge_generation(body: ChargeRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return charge("generation", body, user)

    @app.post("/billing/charge-assistant", response_model=Charge, responses=errors(402, 404, 409, 429))
    def charge_assistant(body: ChargeRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return charge("assistant", body, user)

    # ---- seed 001: metered usage before and after each model call

    @app.get("/billing/usage/{metric}", response_model=UsageSummary, responses=errors(404))
    def usage(metric: str = PathParam(min_length=1, max_length=64), user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.usage(user, metric).to_dict()

    @app.post("/billing/usage/check", response_model=UsageCheck, responses=errors(402, 404, 429))
    def usage_check(body: UsageCheckRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        # Over a quota is QUOTA_EXCEEDED: 429, with the metric, limit and reset time.
        wanted = body.usage if body.usage is not None else {body.metric or "requests": body.amount}
        return billing.require_usage(user, wanted).to_dict()

    @app.post(
        "/billing/chat/completions", response_model=ChatAnswer, responses=errors(402, 404, 409, 429, 502)
    )
    def chat(body: ChatRequest, user: str = Depends(current_user)) -> Union[Dict[str, Any], JSONResponse]:
        # Reserve before the call (429 when it would pass a quota), call the model outside
        # any transaction, then capture what it really used; a failed call releases.
        estimate = {"requests": 1, "tokens_input": estimated_input_tokens(body.prompt), "tokens_output": body.max_tokens}
        hold = billing.reserve(user, usage=estimate, idempotency_key=f"{body.idempotency_key}:reserve", ttl_s=300)
        if hold.replayed and hold.status != "open":
            # A retry of a finished call: its answer was given; the hold says what it used.
            usage = {u.metric: u.amount for u in hold.captured}
            return {"hold_id": hold.id, "status": hold.status, "usage": usage, "replayed": True}
        try:
            answer = chat_model.complete(body.model_id, body.prompt, body.max_tokens)
        except Exception:
            billing.release(hold.id, idempotency_key=f"{body.idempotency_key}:release")
            return error_answer(502, "MODEL_ERROR", "the model call failed; nothing was charged")
        actual = {"requests": 1, "tokens_input": answer.tokens_input, "tokens_output": answer.tokens_output}
        captured = billing.capture(
            hold.id,
            actual=actual,
            idempotency_key=f"{body.idempotency_key}:capture",
            model_id=body.model_id,
            chat_id=body.chat_id,
        )
        return {"hold_id": captured.id, "status": captured.status, "text": answer.text, "usage": actual, "replayed": False}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> PlainTextResponse:
        # Prometheus scrapes this handle's counters; serve it where only Prometheus reaches.
        return PlainTextResponse(
            billing.metrics_text(), media_type="application/openmetrics-text; version=1.0.0; charset=utf-8"
        )

    @app.get("/billing/entitlements", response_model=Entitlements, responses=errors(404))
    def entitlements(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.entitlements(user).to_dict()

    def document() -> Dict[str, Any]:
        # Validation errors answer 400 with the error model (the handler above), never
        # FastAPI's 422 `{"detail"}`: the document says what the service does.
        if app.openapi_schema is None:
            built = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for methods in built["paths"].values():
                for operation in methods.values():
                    operation["responses"].pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                built.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = built
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    tariffs = os.environ.get("BILLING_TARIFFS", str(Path(__file__).parents[1] / "web_tariffs.toml"))
    yookassa = be.YooKassaConfig.from_env() if os.environ.get("YOOKASSA_SHOP_ID") else None
    catalog = be.Catalog.from_toml_file(tariffs)
    billing = be.Billing.open(
        os.environ.get("BILLING_DB", "billing.sqlite3"),
        catalog,
        yookassa=yookassa,
        alchemy_signing_key=os.environ.get("ALCHEMY_SIGNING_KEY"),
    )
    currency = str(catalog.to_dict()["currency"])
    return create_app(billing, admin_token=os.environ.get("BILLING_ADMIN_TOKEN"), currency=currency)
