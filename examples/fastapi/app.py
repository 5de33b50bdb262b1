"""A FastAPI backend on billing_engine: the seed 003 endpoints a frontend calls, seed 000's
state, ledger and charge endpoints, seed 001's usage endpoints with a chat completion that
meters its model call, and the YooKassa webhook.

    BILLING_DB=billing.sqlite3 BILLING_TARIFFS=../tariffs.toml uvicorn --factory app:app_from_env

``BILLING_DB`` is a SQLite file, or a PostgreSQL URL (``postgresql://user:pw@host/db``)
when the app runs on several servers.

Every route is one call into the engine. The engine's errors become JSON answers
``{"code", "message", "details"}`` with the status each error class names
(``BillingError.http_status``: 402 for missing credits, 409 for conflicts, 429 for a spent
limit, 502 when the payment provider fails). The user comes from ``X-User-Id``: a stand-in
for the host's real authentication.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Sequence, Union

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

import billing_engine as be

log = logging.getLogger("billing")


class AutoRenewRequest(BaseModel):
    enabled: bool


class CreatePaymentRequest(BaseModel):
    plan_code: Optional[str] = None
    package_code: Optional[str] = None
    return_url: Optional[str] = None
    save_payment_method: bool = False


class ChargeRequest(BaseModel):
    idempotency_key: str
    metadata: Optional[Dict[str, Any]] = None


class UsageCheckRequest(BaseModel):
    """Seed 001's one metric (``metric``, ``amount``), or several at once (``usage``)."""

    metric: Optional[str] = None
    amount: int = 1
    usage: Optional[Dict[str, int]] = None


class ChatRequest(BaseModel):
    idempotency_key: str
    chat_id: str
    model_id: str = "fake-gpt"
    prompt: str
    max_tokens: int = 256


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


def current_user(x_user_id: str = Header(...)) -> str:
    return x_user_id


def create_app(billing: be.Billing, model: Optional[ChatModel] = None) -> FastAPI:
    app = FastAPI(title="billing")
    app.state.billing = billing
    chat_model: ChatModel = model or FakeModel()

    @app.exception_handler(be.BillingError)
    async def billing_error(request: Request, error: be.BillingError) -> JSONResponse:
        # BUSY (503) is worth retrying in a moment; every other status is final.
        retry = {"Retry-After": "1"} if isinstance(error, be.Busy) else None
        return JSONResponse(error.to_dict(), status_code=error.http_status, headers=retry)

    # ---- seed 003: what the frontend reads and starts

    @app.get("/billing/me/")
    def me(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.billing_me(user).to_dict()

    @app.get("/billing/plans/")
    def plans() -> list[Dict[str, Any]]:
        return [plan.to_dict() for plan in billing.plans()]

    @app.get("/billing/subscription/")
    def subscription(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.subscription_details(user).to_dict()

    @app.post("/billing/subscription/autorenew/")
    def autorenew(body: AutoRenewRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.set_autorenew(user, body.enabled).to_dict()

    @app.post("/billing/create-payment/")
    def create_payment(
        body: CreatePaymentRequest,
        user: str = Depends(current_user),
        idempotency_key: Optional[str] = Header(None),
    ) -> Dict[str, Any]:
        # A client that retries sends the same Idempotency-Key and gets the same payment.
        created = billing.create_payment(
            user,
            plan_code=body.plan_code,
            package_code=body.package_code,
            return_url=body.return_url,
            save_payment_method=body.save_payment_method,
            idempotency_key=idempotency_key or str(uuid.uuid4()),
        )
        return created.to_dict()

    @app.post("/billing/bind-card/start/")
    def bind_card(user: str = Depends(current_user)) -> Dict[str, Any]:
        created = billing.start_card_binding(user)
        return {"payment_id": created.payment_id, "confirmation_url": created.confirmation_url}

    @app.get("/billing/payment-method/")
    def payment_method(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.payment_method(user).to_dict()

    @app.get("/billing/payments/")
    def payments(limit: int = 10, user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.payments(user, limit).to_dict()

    @app.post("/billing/webhook/yookassa")
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

    # ---- seed 000: the app's own billing screen and its internal charge calls

    @app.get("/billing/state")
    def state(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.state(user).to_dict()

    @app.get("/billing/ledger")
    def ledger(limit: int = 50, before: Optional[int] = None, user: str = Depends(current_user)) -> Dict[str, Any]:
        return {"results": [entry.to_dict() for entry in billing.ledger(user, limit=limit, before=before)]}

    def charge(operation: str, body: ChargeRequest, user: str) -> Dict[str, Any]:
        return billing.charge(user, operation, idempotency_key=body.idempotency_key, metadata=body.metadata).to_dict()

    @app.post("/billing/charge-generation")
    def charge_generation(body: ChargeRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return charge("generation", body, user)

    @app.post("/billing/charge-assistant")
    def charge_assistant(body: ChargeRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        return charge("assistant", body, user)

    # ---- seed 001: metered usage before and after each model call

    @app.get("/billing/usage/{metric}")
    def usage(metric: str, user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.usage(user, metric).to_dict()

    @app.post("/billing/usage/check")
    def usage_check(body: UsageCheckRequest, user: str = Depends(current_user)) -> Dict[str, Any]:
        # Over a quota is QUOTA_EXCEEDED: 429, with the metric, limit and reset time.
        wanted = body.usage if body.usage is not None else {body.metric or "requests": body.amount}
        return billing.require_usage(user, wanted).to_dict()

    @app.post("/billing/chat/completions", response_model=None)
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
            error = {"code": "MODEL_ERROR", "message": "the model call failed; nothing was charged", "details": {}}
            return JSONResponse(error, status_code=502)
        actual = {"requests": 1, "tokens_input": answer.tokens_input, "tokens_output": answer.tokens_output}
        captured = billing.capture(
            hold.id,
            actual=actual,
            idempotency_key=f"{body.idempotency_key}:capture",
            model_id=body.model_id,
            chat_id=body.chat_id,
        )
        return {"hold_id": captured.id, "status": captured.status, "text": answer.text, "usage": actual, "replayed": False}

    @app.get("/billing/entitlements")
    def entitlements(user: str = Depends(current_user)) -> Dict[str, Any]:
        return billing.entitlements(user).to_dict()

    return app


def app_from_env() -> FastAPI:
    tariffs = os.environ.get("BILLING_TARIFFS", str(Path(__file__).parents[1] / "tariffs.toml"))
    yookassa = be.YooKassaConfig.from_env() if os.environ.get("YOOKASSA_SHOP_ID") else None
    billing = be.Billing.open(
        os.environ.get("BILLING_DB", "billing.sqlite3"), be.Catalog.from_toml_file(tariffs), yookassa=yookassa
    )
    return create_app(billing)
