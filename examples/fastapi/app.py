"""A FastAPI backend on billing_engine: the seed 003 endpoints a frontend calls, seed 000's
state, ledger and charge endpoints, and the YooKassa webhook.

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

import os
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

import billing_engine as be


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


def current_user(x_user_id: str = Header(...)) -> str:
    return x_user_id


def create_app(billing: be.Billing) -> FastAPI:
    app = FastAPI(title="billing")

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
        # 200 for applied/duplicate/ignored; 400 (INVALID_WEBHOOK) is final; 502
        # (PAYMENT_ERROR) makes YooKassa deliver it again later.
        # In the thread pool like the sync routes: verifying may call the YooKassa API.
        outcome = await run_in_threadpool(
            billing.handle_yookassa_webhook,
            await request.body(),
            remote_addr=request.client.host if request.client else None,
            headers=dict(request.headers),
        )
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

    return app


def app_from_env() -> FastAPI:
    tariffs = os.environ.get("BILLING_TARIFFS", str(Path(__file__).parents[1] / "tariffs.toml"))
    yookassa = be.YooKassaConfig.from_env() if os.environ.get("YOOKASSA_SHOP_ID") else None
    billing = be.Billing.open(
        os.environ.get("BILLING_DB", "billing.sqlite3"), be.Catalog.from_toml_file(tariffs), yookassa=yookassa
    )
    return create_app(billing)
