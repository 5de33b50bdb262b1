"""The FastAPI example through FastAPI's TestClient, on a real SQLite file and the fake
YooKassa of the binding's tests."""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple, Type

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

import billing_engine as be

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1] / "bindings-python" / "tests")]
import schemas  # noqa: E402
import billing_workers as workers  # noqa: E402
from app import MAX_BODY_BYTES, create_app  # noqa: E402
from fake_indexer import SIGNING_KEY, FakeIndexer  # noqa: E402
from fake_yookassa import SECRET_KEY, SHOP_ID, FakeYooKassa  # noqa: E402
from support import new_database  # noqa: E402

WEBHOOK_SECRET = "whsec-test"


@pytest.fixture
def yookassa() -> Iterator[FakeYooKassa]:
    fake = FakeYooKassa()
    yield fake
    fake.close()


@pytest.fixture
def billing(tmp_path: Path, yookassa: FakeYooKassa) -> be.Billing:
    config = be.YooKassaConfig(
        SHOP_ID,
        SECRET_KEY,
        api_url=yookassa.url,
        return_url="https://app.example/billing/done",
        webhook_secret=WEBHOOK_SECRET,
        trusted_networks=[],  # the TestClient has no IP address; the signature is checked instead
        timeout_s=2,
    )
    catalog = be.Catalog.from_toml_file(HERE.parent / "web_tariffs.toml")
    return be.Billing.open(new_database(tmp_path), catalog, yookassa=config, alchemy_signing_key=SIGNING_KEY)


@pytest.fixture
def indexer() -> Iterator[FakeIndexer]:
    fake = FakeIndexer()
    yield fake
    fake.close()


@pytest.fixture
def client(billing: be.Billing) -> TestClient:
    return TestClient(create_app(billing))


def as_user(user: str) -> Dict[str, str]:
    return {"X-User-Id": user}


def signed(body: bytes) -> Dict[str, str]:
    t = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": f"t={t},v1={mac}", "Content-Type": "application/json"}


def test_a_free_user_reads_state_charges_and_is_refused_by_the_daily_limit(client: TestClient, billing: be.Billing) -> None:
    billing.register_user("u1")  # what the host's sign-up hook does
    me = client.get("/billing/me/", headers=as_user("u1"))
    assert me.status_code == 200
    assert me.json() == {
        "plan_code": "FREE", "plan_name": "Free", "expires_at": None, "is_active": False,
        "daily_photo_limit": 3, "used_today": 0, "remaining_today": 3, "credits_expiring": [],
        "last_payment": None,
    }
    sources = []
    for n in range(8):
        answer = client.post("/billing/charge-generation", json={"idempotency_key": f"g{n}"}, headers=as_user("u1"))
        assert answer.status_code == 200, answer.json()
        sources.append(answer.json()["source"])
    assert sources == ["freemium"] * 3 + ["credits"] * 5  # 3 free today, then 10 credits at 2 each
    refused = client.post("/billing/charge-generation", json={"idempotency_key": "g8"}, headers=as_user("u1"))
    # The free tier still has 2 ops this month, but not today: 429, not 402.
    assert (refused.status_code, refused.json()["code"]) == (429, "DAILY_LIMIT_REACHED")
    assert refused.json()["details"]["limit"] == 3
    replay = client.post("/billing/charge-generation", json={"idempotency_key": "g0"}, headers=as_user("u1"))
    assert replay.json()["replayed"] is True
    conflict = client.post("/billing/charge-assistant", json={"idempotency_key": "g0"}, headers=as_user("u1"))
    assert (conflict.status_code, conflict.json()["code"]) == (409, "IDEMPOTENCY_CONFLICT")

    state = client.get("/billing/state", headers=as_user("u1")).json()
    assert (state["credits"], state["freemium_ops_used"], state["used_today"]) == ("0", 3, 3)
    ledger = client.get("/billing/ledger", params={"limit": 3}, headers=as_user("u1")).json()["results"]
    assert [e["idempotency_key"] for e in ledger] == ["g7", "g6", "g5"]


def test_errors_map_to_the_statuses_a_frontend_expects(client: TestClient, billing: be.Billing) -> None:
    billing.register_user("u2")
    billing.import_user("spent", credits=1, freemium_used=5)
    cases = [
        (client.post("/billing/charge-generation", json={"idempotency_key": "k"}, headers=as_user("spent")), 402, "NOT_ENOUGH_CREDITS"),
        (client.get("/billing/me/", headers=as_user("nobody")), 404, "UNKNOWN_USER"),
        (client.post("/billing/subscription/autorenew/", json={"enabled": True}, headers=as_user("u2")), 409, "NO_SUBSCRIPTION"),
        (client.post("/billing/create-payment/", json={"plan_code": "gold"}, headers=as_user("u2")), 400, "INVALID_PLAN"),
        (client.get("/billing/payments/", params={"limit": -1}, headers=as_user("u2")), 400, "INVALID_ARGUMENT"),
        (client.post("/billing/charge-assistant", json={"idempotency_key": ""}, headers=as_user("u2")), 400, "INVALID_ARGUMENT"),
    ]
    for answer, status, code in cases:
        assert (answer.status_code, answer.json()["code"]) == (status, code)
    billing.activate_subscription("u2", "PRO_MONTHLY", idempotency_key="paid")
    autorenew = client.post("/billing/subscription/autorenew/", json={"enabled": True}, headers=as_user("u2"))
    assert (autorenew.status_code, autorenew.json()["code"]) == (409, "NO_PAYMENT_METHOD")
    again = client.post("/billing/create-payment/", json={"plan_code": "PRO_MONTHLY"}, headers=as_user("u2"))
    assert (again.status_code, again.json()["code"]) == (409, "ACTIVE_SUBSCRIPTION")


def test_buying_a_plan_binding_a_card_and_the_signed_webhook(
    client: TestClient, billing: be.Billing, yookassa: FakeYooKassa
) -> None:
    billing.register_user("u3")
    plans = client.get("/billing/plans/").json()
    assert [(p["code"], p["price"]) for p in plans] == [("FREE", 0), ("PRO_MONTHLY", 299), ("PRO_YEARLY", 2990)]

    headers = {**as_user("u3"), "Idempotency-Key": "checkout-1"}
    created = client.post("/billing/create-payment/", json={"plan_code": "PRO_MONTHLY"}, headers=headers).json()
    assert created == client.post("/billing/create-payment/", json={"plan_code": "PRO_MONTHLY"}, headers=headers).json()
    assert set(created) == {"payment_id", "yookassa_payment_id", "confirmation_url"}
    yookassa.pay(created["yookassa_payment_id"])
    body = yookassa.notification("payment.succeeded", created["yookassa_payment_id"])

    unsigned = client.post("/billing/webhook/yookassa", content=body)
    assert (unsigned.status_code, unsigned.json()["status"], unsigned.json()["code"]) == (200, "rejected", "INVALID_WEBHOOK")
    applied = client.post("/billing/webhook/yookassa", content=body, headers=signed(body))
    assert (applied.status_code, applied.json()["status"]) == (200, "applied")
    duplicate = client.post("/billing/webhook/yookassa", content=body, headers=signed(body))
    assert duplicate.json()["status"] == "duplicate"

    subscription: Dict[str, Any] = client.get("/billing/subscription/", headers=as_user("u3")).json()
    assert (subscription["plan"], subscription["plan_display"], subscription["card_bound"]) == ("pro", "Pro", False)
    history = client.get("/billing/payments/", headers=as_user("u3")).json()["results"]
    assert [(p["amount"], p["status"]) for p in history] == [(299, "succeeded")]

    binding = client.post("/billing/bind-card/start/", headers=as_user("u3")).json()
    assert set(binding) == {"payment_id", "confirmation_url"}
    held = next(p for p in yookassa.payments.values() if p["metadata"]["payment_id"] == binding["payment_id"])
    yookassa.pay(held["id"])
    body = yookassa.notification("payment.waiting_for_capture", held["id"])
    assert client.post("/billing/webhook/yookassa", content=body, headers=signed(body)).json()["status"] == "applied"
    card = client.get("/billing/payment-method/", headers=as_user("u3")).json()
    assert card == {
        "is_attached": True,
        "card_mask": "•••• 4444",
        "card_brand": "MasterCard",
        "method_type": "bank_card",
        "title": "Bank card *4444",
    }
    autorenew = client.post("/billing/subscription/autorenew/", json={"enabled": True}, headers=as_user("u3"))
    assert (autorenew.status_code, autorenew.json()["autorenew_enabled"]) == (200, True)
    assert billing.verify_integrity().ok


# ---- seed 001: usage and the metered chat


def test_usage_and_its_check_answer_in_seed_001_shape(client: TestClient) -> None:
    usage = client.get("/billing/usage/tokens_input", headers=as_user("uma"))
    assert usage.status_code == 404, "an unknown user has no usage"
    billing_of(client).register_user("uma")
    usage = client.get("/billing/usage/tokens_input", headers=as_user("uma")).json()
    assert (usage["metric"], usage["used"], usage["limit"], usage["remaining"]) == ("tokens_input", 0, 50000, 50000)
    assert {"period_start", "resets_at"} <= usage.keys()
    ok = client.post("/billing/usage/check", json={"metric": "tokens_input", "amount": 1000}, headers=as_user("uma"))
    assert ok.status_code == 200 and ok.json()["allowed"] is True
    over = client.post("/billing/usage/check", json={"metric": "tokens_input", "amount": 50001}, headers=as_user("uma"))
    assert over.status_code == 429
    assert (over.json()["code"], over.json()["details"]["metric"]) == ("QUOTA_EXCEEDED", "tokens_input")
    unknown = client.get("/billing/usage/words", headers=as_user("uma"))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "UNKNOWN_METRIC")


def test_a_chat_reserves_calls_the_model_and_captures_what_it_used(client: TestClient) -> None:
    billing = billing_of(client)
    billing.register_user("vic")
    body = {"idempotency_key": "m1", "chat_id": "c1", "model_id": "gpt", "prompt": "one two three", "max_tokens": 50}
    answer = client.post("/billing/chat/completions", json=body, headers=as_user("vic"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"] == {"requests": 1, "tokens_input": 3, "tokens_output": 3}
    usage = billing.usage("vic", "tokens_output")
    assert (usage.used, usage.held) == (3, 0), "the capture returned what the hold over-reserved"
    again = client.post("/billing/chat/completions", json=body, headers=as_user("vic"))
    assert again.json()["replayed"] is True and billing.usage("vic", "requests").used == 1
    assert [t.key for t in billing.usage_breakdown("vic", "tokens_input", by="chat_id")] == ["c1"]


def test_a_failed_model_call_releases_its_hold_and_a_spent_quota_answers_429(client: TestClient) -> None:
    billing = billing_of(client)
    billing.register_user("wen")
    failing = {"idempotency_key": "f1", "chat_id": "c1", "prompt": "please fail", "max_tokens": 10}
    failed = client.post("/billing/chat/completions", json=failing, headers=as_user("wen"))
    assert (failed.status_code, failed.json()["code"]) == (502, "MODEL_ERROR")
    for metric in ("requests", "tokens_output"):
        usage = billing.usage("wen", metric)
        assert (usage.used, usage.held) == (0, 0), metric
    assert billing.ledger("wen", limit=1)[0].kind == "hold_released"
    billing.track_usage("wen", "tokens_output", 20_000, idempotency_key="spent")
    refused = client.post(
        "/billing/chat/completions",
        json={"idempotency_key": "f2", "chat_id": "c1", "prompt": "hi", "max_tokens": 10},
        headers=as_user("wen"),
    )
    assert (refused.status_code, refused.json()["details"]["window"]) == (429, "period")
    assert billing.verify_integrity().ok


def billing_of(client: TestClient) -> be.Billing:
    billing: be.Billing = client.app.state.billing  # type: ignore[attr-defined]
    return billing


def test_hostile_requests_get_a_4xx_in_the_one_error_shape(client: TestClient, billing: be.Billing) -> None:
    billing.register_user("eve")
    user = as_user("eve")
    surrogate = '{"plan_code": "\\ud800"}'
    huge = "x" * (MAX_BODY_BYTES + 1)
    probes = [
        ("limit of 2**32", client.get("/billing/payments/", params={"limit": 2**32}, headers=user), 400),
        ("before past i64", client.get("/billing/ledger", params={"before": 2**64}, headers=user), 400),
        ("lone surrogate", client.post("/billing/create-payment/", content=surrogate, headers={**user, "Content-Type": "application/json"}), 400),
        ("surrogate key", client.post("/billing/charge-generation", content='{"idempotency_key": "\\ud800"}', headers={**user, "Content-Type": "application/json"}), 400),
        ("malformed JSON", client.post("/billing/charge-generation", content="{", headers={**user, "Content-Type": "application/json"}), 400),
        ("not an object", client.post("/billing/charge-generation", json=[1, 2], headers=user), 400),
        ("a form body", client.post("/billing/charge-generation", data={"idempotency_key": "k"}, headers=user), 400),
        ("no X-User-Id", client.get("/billing/me/"), 400),
        ("unknown field", client.post("/billing/charge-generation", json={"idempotency_key": "k", "x": 1}, headers=user), 400),
        ("blank Idempotency-Key", client.post("/billing/create-payment/", json={"plan_code": "PRO_MONTHLY"}, headers={**user, "Idempotency-Key": "  "}), 400),
        ("10 MB field", client.post("/billing/create-payment/", json={"plan_code": huge}, headers=user), 413),
        ("no such route", client.get("/billing/nothing", headers=user), 404),
        ("wrong method", client.delete("/billing/me/", headers=user), 405),
    ]
    for name, answer, status in probes:
        assert answer.status_code == status, (name, answer.status_code, answer.text[:300])
        body = answer.json()
        assert set(body) == {"code", "message", "details"}, (name, body)
        assert len(answer.content) < 2048, (name, "an error repeats a bounded part of the request")
    codes = {name: answer.json()["code"] for name, answer, _ in probes}
    assert codes["malformed JSON"] == "BAD_REQUEST" and codes["no such route"] == "NOT_FOUND"
    assert codes["wrong method"] == "METHOD_NOT_ALLOWED" and codes["10 MB field"] == "PAYLOAD_TOO_LARGE"
    assert codes["blank Idempotency-Key"] == "INVALID_ARGUMENT"
    long_code = client.post("/billing/create-payment/", json={"plan_code": "y" * 60_000}, headers=user)
    assert long_code.status_code == 400 and len(long_code.content) < 2048, long_code.text[:300]


def test_the_openapi_document_describes_every_route_with_its_models(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    me = document["paths"]["/billing/me/"]["get"]["responses"]
    assert me["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BillingMe")
    assert me["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ApiError")
    limit = next(p for p in document["paths"]["/billing/payments/"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert "200" in operation["responses"] and "400" in operation["responses"], (method, path)
            assert "422" not in operation["responses"], (method, path, "validation errors are 400 ApiError")


def test_each_answer_model_has_exactly_the_fields_of_the_binding_result(client: TestClient, billing: be.Billing) -> None:
    billing.register_user("kim")
    billing.charge("kim", "generation", idempotency_key="c")
    billing.grant_credits("kim", 5, idempotency_key="g", reason="promo", expires_at="2099-01-01T00:00:00Z")
    pairs: List[Tuple[Type[BaseModel], Any]] = [
        (schemas.BillingMe, billing.billing_me("kim")),
        (schemas.SubscriptionPlan, billing.plans()[1]),
        (schemas.SubscriptionDetails, billing.subscription_details("kim")),
        (schemas.PaymentMethod, billing.payment_method("kim")),
        (schemas.PaymentHistory, billing.payments("kim")),
        (schemas.BillingState, billing.state("kim")),
        (schemas.LedgerEntry, billing.ledger("kim")[0]),
        (schemas.Charge, billing.charge("kim", "generation", idempotency_key="c")),
        (schemas.UsageSummary, billing.usage("kim", "requests")),
        (schemas.UsageCheck, billing.check_usage("kim", {"requests": 1})),
        (schemas.Entitlements, billing.entitlements("kim")),
        (schemas.ExpiringCredits, billing.state("kim").credits_expiring[0]),
        (schemas.CryptoCheckout, billing.create_crypto_payment("kim", package_code="credits_20", chain_id=1,
                                                               idempotency_key="crypto")),
        (schemas.PaymentHistoryItem, billing.payments("kim").results[0]),
        (schemas.CryptoHistory, billing.payments("kim").results[0].crypto),
    ]
    for model, result in pairs:
        data = result.to_dict()
        assert set(model.model_fields) >= set(data), (model.__name__, set(data) - set(model.model_fields))
        optional = {name for name, field in model.model_fields.items() if not field.is_required()}
        assert set(model.model_fields) - optional <= set(data), (model.__name__, set(model.model_fields) - set(data))
        model.model_validate(data)


def test_crypto_checkout_the_indexer_webhook_and_the_workers(
    client: TestClient, billing: be.Billing, indexer: FakeIndexer
) -> None:
    billing.register_user("u9")
    answer = client.post("/billing/crypto/checkout/", json={"plan_code": "PRO_MONTHLY", "chain_id": 1},
                         headers={**as_user("u9"), "Idempotency-Key": "c1"})
    assert answer.status_code == 200, answer.json()
    checkout = answer.json()
    assert checkout["uri"].startswith("ethereum:0xdac17f958d2ee523a2206206994597c13d831ec7@1/transfer?address=")
    again = client.post("/billing/crypto/checkout/", json={"plan_code": "PRO_MONTHLY", "chain_id": 1},
                        headers={**as_user("u9"), "Idempotency-Key": "c1"})
    assert again.json() == checkout
    wrong = client.post("/billing/crypto/checkout/", json={"plan_code": "PRO_MONTHLY", "chain_id": 56},
                        headers=as_user("u9"))
    assert (wrong.status_code, wrong.json()["details"]["field"]) == (400, "chain_id")

    tx_hash, (body, headers) = indexer.pay(checkout["amount"])
    forged_body, forged_headers = indexer.forged(tx_hash)
    forged = client.post("/billing/webhook/crypto", content=forged_body, headers=forged_headers)
    assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_WEBHOOK")
    delivered = client.post("/billing/webhook/crypto", content=body, headers=headers)
    assert delivered.json() == {"transfers": 1, "applied": 1, "duplicates": 0, "unmatched": 0,
                                "payments": [checkout["payment_id"]]}
    indexer.mine(11)
    report = billing.reconcile_crypto(workers.rpc_reader({1: f"{indexer.url}/rpc/1"}))
    assert (report.checked, report.changed, report.errors) == (1, 1, 0)
    me = client.get("/billing/me/", headers=as_user("u9")).json()
    assert me["plan_code"] == "PRO_MONTHLY"
    assert me["last_payment"]["crypto"]["tx_hash"] == tx_hash and me["last_payment"]["status"] == "succeeded"
    history = client.get("/billing/payments/", headers=as_user("u9")).json()["results"]
    assert history[0]["crypto"]["state"] == "succeeded" and history[0]["currency"] == "USDT"

    # The events worker hands the quota service plan.changed.v1, once.
    seen: List[be.Event] = []
    assert workers.consume(billing, seen.append) == len(seen) > 0
    assert [e.type for e in seen if e.user_id == "u9"][-2:] == ["payment.succeeded.v1", "plan.changed.v1"]
    assert workers.consume(billing, seen.append) == 0, "acknowledged: not handed again"
