"""The Django example: views through Django's test client, and the process_due command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from django.core.management import call_command
from django.test import Client

import billing_engine as be
from billing_app import engine

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "bindings-python" / "tests"))
from fake_indexer import SIGNING_KEY, FakeIndexer  # noqa: E402
from support import new_database, on_postgres  # noqa: E402


@pytest.fixture
def clock() -> be.ManualClock:
    return be.ManualClock("2026-03-01T10:00:00Z")


@pytest.fixture
def billing(tmp_path: Path, clock: be.ManualClock) -> Iterator[be.Billing]:
    catalog = be.Catalog.from_toml_file(HERE.parent / "web_tariffs.toml")
    instance = be.Billing.open(new_database(tmp_path), catalog, clock=clock, alchemy_signing_key=SIGNING_KEY)
    engine.use(instance)
    yield instance
    engine.use(None)


def test_views_answer_the_engine_and_its_errors(billing: be.Billing) -> None:
    billing.register_user("u1", free_trial=False)
    client = Client(headers={"X-User-Id": "u1"})
    assert client.get("/billing/me/").json()["remaining_today"] == 3
    for n in range(3):
        answer = client.post("/billing/charge-generation", {"idempotency_key": f"k{n}"}, content_type="application/json")
        assert (answer.status_code, answer.json()["source"]) == (200, "freemium")
    refused = client.post("/billing/charge-generation", {"idempotency_key": "k3"}, content_type="application/json")
    assert (refused.status_code, refused.json()["code"]) == (429, "DAILY_LIMIT_REACHED")
    unknown = Client(headers={"X-User-Id": "ghost"}).get("/billing/state")
    assert (unknown.status_code, unknown.json()["details"]) == (404, {"user_id": "ghost"})


def test_process_due_ends_a_subscription_once_when_its_period_is_over(billing: be.Billing, clock: be.ManualClock) -> None:
    billing.register_user("u2")
    details = billing.activate_subscription("u2", "PRO_MONTHLY", idempotency_key="paid-outside")
    billing.cancel_subscription("u2")  # no renewal: it runs to its end
    assert details.expires_at is not None

    out = io.StringIO()
    call_command("process_due", stdout=out)
    assert "expired 0" in out.getvalue()
    clock.set(details.expires_at)
    out = io.StringIO()
    call_command("process_due", stdout=out)
    assert out.getvalue().strip() == "renewals created 0, sent 0, expired 1, failures 0"
    call_command("process_due", stdout=io.StringIO())
    kinds = [entry.kind for entry in billing.ledger("u2")]
    assert kinds.count("subscription_expired") == 1
    assert billing.state("u2").plan_code == "FREE"


def test_the_command_runs_from_manage_py_on_a_fresh_database(tmp_path: Path) -> None:
    db = new_database(tmp_path)
    done = subprocess.run(
        [sys.executable, "manage.py", "process_due"],
        cwd=HERE,
        env={"BILLING_DB": db, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "renewals created 0, sent 0, expired 0, failures 0"
    assert on_postgres() or Path(db).exists()


def test_usage_routes_and_the_metered_chat(billing: be.Billing) -> None:
    billing.register_user("u3")
    client = Client(headers={"X-User-Id": "u3"})
    usage = client.get("/billing/usage/tokens_input").json()
    assert (usage["used"], usage["limit"]) == (0, 50000)
    over = client.post("/billing/usage/check", {"metric": "tokens_input", "amount": 50001}, content_type="application/json")
    assert (over.status_code, over.json()["code"]) == (429, "QUOTA_EXCEEDED")
    body = {"idempotency_key": "m1", "chat_id": "c1", "prompt": "one two", "max_tokens": 20}
    answer = client.post("/billing/chat/completions", body, content_type="application/json")
    assert answer.status_code == 200 and answer.json()["usage"]["tokens_input"] == 2
    assert billing.usage("u3", "tokens_output").used == 2
    failing = {"idempotency_key": "m2", "chat_id": "c1", "prompt": "fail now", "max_tokens": 20}
    failed = client.post("/billing/chat/completions", failing, content_type="application/json")
    assert (failed.status_code, failed.json()["code"]) == (502, "MODEL_ERROR")
    assert billing.ledger("u3", limit=1)[0].kind == "hold_released"
    assert (billing.usage("u3", "requests").used, billing.usage("u3", "requests").held) == (1, 0)
    billing.track_usage("u3", "tokens_output", 20_000, idempotency_key="spent")
    refused = client.post("/billing/chat/completions", {**body, "idempotency_key": "m3"}, content_type="application/json")
    assert refused.status_code == 429
    assert billing.verify_integrity().ok



def test_hostile_requests_get_a_4xx_in_the_one_error_shape_and_nothing_is_an_html_page(billing: be.Billing) -> None:
    billing.register_user("eve")
    client = Client(headers={"X-User-Id": "eve"})
    post = client.post
    json_type = "application/json"
    probes = [
        ("malformed JSON", post("/billing/charge-generation", "{", content_type=json_type), 400, "BAD_REQUEST"),
        ("not an object", post("/billing/charge-generation", "[1]", content_type=json_type), 400, "BAD_REQUEST"),
        ("invalid UTF-8", post("/billing/charge-generation", b"{\"a\": \"\xff\"}", content_type=json_type), 400, "BAD_REQUEST"),
        ("a form body", post("/billing/charge-generation", {"idempotency_key": "k"}), 400, "BAD_REQUEST"),
        ("a key that is a number", post("/billing/charge-generation", {"idempotency_key": 5}, content_type=json_type), 400, "INVALID_ARGUMENT"),
        ("lone surrogate", post("/billing/create-payment/", '{"plan_code": "\\ud800"}', content_type=json_type), 400, "INVALID_ARGUMENT"),
        ("surrogate key", post("/billing/charge-generation", '{"idempotency_key": "\\ud800"}', content_type=json_type), 400, "INVALID_ARGUMENT"),
        ("limit of 2**32", client.get("/billing/payments/", {"limit": 2**32}), 400, "INVALID_ARGUMENT"),
        ("before past i64", client.get("/billing/ledger", {"before": 2**64}), 400, "INVALID_ARGUMENT"),
        ("limit not a number", client.get("/billing/payments/", {"limit": "ten"}), 400, "INVALID_ARGUMENT"),
        ("no X-User-Id", Client().get("/billing/me/"), 400, "INVALID_ARGUMENT"),
        ("blank Idempotency-Key", post("/billing/create-payment/", {"plan_code": "PRO_MONTHLY"}, content_type=json_type, headers={"Idempotency-Key": " "}), 400, "INVALID_ARGUMENT"),
        ("a 10 MB field", post("/billing/create-payment/", {"plan_code": "x" * 100_000}, content_type=json_type), 413, "PAYLOAD_TOO_LARGE"),
        ("no such route", client.get("/billing/nothing"), 404, "NOT_FOUND"),
        ("wrong method", client.delete("/billing/me/"), 405, "METHOD_NOT_ALLOWED"),
    ]
    for name, answer, status, code in probes:
        assert (answer.status_code, answer["Content-Type"]) == (status, json_type), (name, answer.content[:300])
        assert answer.json()["code"] == code, (name, answer.json())
        assert set(answer.json()) == {"code", "message", "details"}, name
        assert len(answer.content) < 2048, (name, "an error repeats a bounded part of the request")


def test_an_unexpected_error_is_logged_and_answered_in_the_error_shape(
    billing: be.Billing, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from billing_app import views

    billing.register_user("u5")
    monkeypatch.setattr(views, "model", lambda *args: 1 / 0)  # a bug in the host's code, not a model failure
    monkeypatch.setattr(views, "billing", lambda: None)
    client = Client(headers={"X-User-Id": "u5"}, raise_request_exception=False)
    answer = client.get("/billing/me/")
    assert (answer.status_code, answer.json()["code"]) == (500, "INTERNAL")
    assert "unexpected error on GET /billing/me/" in caplog.text


def test_crypto_checkout_the_indexer_webhook_and_the_events_command(billing: be.Billing) -> None:
    billing.register_user("u7")
    client = Client(headers={"X-User-Id": "u7", "Idempotency-Key": "c1"})
    created = client.post("/billing/crypto/checkout/", {"package_code": "credits_20", "chain_id": 1},
                          content_type="application/json")
    assert created.status_code == 200, created.json()
    checkout = created.json()
    bad = Client(headers={"X-User-Id": "u7"}).post(
        "/billing/crypto/checkout/", {"package_code": "credits_20", "chain_id": 56}, content_type="application/json"
    )
    assert (bad.status_code, bad.json()["details"]["field"]) == (400, "chain_id")
    indexer = FakeIndexer()
    try:
        tx_hash, (body, headers) = indexer.pay(checkout["amount"])
        forged_body, forged_headers = indexer.forged(tx_hash)
        webhook = Client()
        forged = webhook.post("/billing/webhook/crypto", forged_body, content_type="application/json",
                              headers=forged_headers)
        assert (forged.status_code, forged.json()["code"]) == (400, "INVALID_WEBHOOK")
        delivered = webhook.post("/billing/webhook/crypto", body, content_type="application/json", headers=headers)
        assert delivered.json()["applied"] == 1
        indexer.mine(11)
        assert billing.reconcile_crypto(indexer.receipt).changed == 1
    finally:
        indexer.close()
    assert billing.state("u7").credits == 30
    out = io.StringIO()
    call_command("consume_events", "--consumer", "quota-service", stdout=out)
    types = [json.loads(line)["type"] for line in out.getvalue().splitlines()]
    assert types[-2:] == ["payment.succeeded.v1", "credits.granted.v1"]
    out = io.StringIO()
    call_command("consume_events", "--consumer", "quota-service", stdout=out)
    assert out.getvalue() == "", "acknowledged: not handed again"
