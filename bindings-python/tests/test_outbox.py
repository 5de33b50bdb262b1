"""The outbox of events, its HTTP delivery (checked by the Standard Webhooks reference
library, as a consumer would), the audit log with its per-task context, and crypto
payments through the fake indexer: issue 17 from Python."""

from __future__ import annotations

import asyncio
import http.server
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import standardwebhooks

import billing_engine as be
from fake_indexer import GATEWAY, SIGNING_KEY, FakeIndexer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def indexer() -> Iterator[FakeIndexer]:
    fake = FakeIndexer()
    yield fake
    fake.close()


@pytest.fixture
def crypto(db: str, catalog: be.Catalog, clock: be.ManualClock) -> be.Billing:
    return be.Billing.open(db, catalog, clock=clock, alchemy_signing_key=SIGNING_KEY)


def test_events_are_polled_in_order_acknowledged_and_typed(billing: be.Billing) -> None:
    billing.register_user("ann")
    billing.grant_credits("ann", 5, idempotency_key="g1", reason="support")
    events = billing.poll_events("crm")
    assert [e.type for e in events] == ["credits.granted.v1", "credits.granted.v1"]
    assert [e.sequence for e in events] == [1, 2]
    assert events[1].payload == {"amount": "5", "balance_after": "15", "reason": "grant",
                                 "entry_id": events[1].payload["entry_id"], "reference": None}
    assert set(events[1].to_dict()) == {"event_id", "type", "user_id", "sequence", "occurred_at", "payload"}
    billing.ack_events("crm", events[0].event_id)
    assert billing.poll_events("crm") == events[1:]
    assert billing.user_events("ann", after_sequence=1) == events[1:]
    with pytest.raises(be.InvalidArgument) as unknown:
        billing.ack_events("crm", "evt_nope")
    assert unknown.value.details["field"] == "up_to"
    assert billing.prune_events("2999-01-01T00:00:00Z") == 1, "the user's newest stays"


class _Receiver(http.server.BaseHTTPRequestHandler):
    """A consumer's endpoint that checks each delivery with the reference library."""

    received: List[Dict[str, Any]] = []
    answers: List[int] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = standardwebhooks.Webhook(SECRET).verify(body, headers)
            status = self.answers.pop(0) if self.answers else 204
            if status < 300:
                self.received.append(event)
        except standardwebhooks.WebhookVerificationError:
            status = 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_delivered_events_verify_with_the_standard_webhooks_library(db: str, catalog: be.Catalog) -> None:
    # The system clock: the library refuses a timestamp more than 5 minutes off.
    billing = be.Billing.open(db, catalog)
    billing.register_user("ann")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    _Receiver.received, _Receiver.answers = [], [503]
    try:
        first = billing.deliver_events(url, SECRET)
        assert (first.outcome, first.last_error, first.failed_attempts) == ("retrying", "HTTP 503", 1)
        assert first.next_attempt_at is not None
        assert billing.deliver_events(url, SECRET).outcome == "waiting"
        billing.resume_delivery()  # clears the backoff too
        report = billing.deliver_events(url, SECRET)
        assert (report.outcome, report.delivered) == ("delivered", 1)
        event = billing.user_events("ann")[0]
        assert _Receiver.received == [event.to_dict()], "the body is the event's JSON"
        with pytest.raises(be.InvalidArgument) as bad:
            billing.deliver_events(url, "whsec_short")
        assert bad.value.details["field"] == "secret" and "whsec_short" not in str(bad.value)
    finally:
        server.shutdown()


def test_the_audit_context_follows_each_task(billing: be.Billing) -> None:
    billing.register_user("ann")

    async def grant(actor: str, key: str) -> None:
        with be.audit_context(actor, request_id=f"req-{key}"):
            await asyncio.sleep(0.01)  # the other task runs meanwhile, in its own context
            billing.grant_credits("ann", 1, idempotency_key=key, reason="promo")

    async def both() -> None:
        await asyncio.gather(grant("admin:alice", "a"), grant("support:bob", "b"))

    asyncio.run(both())
    billing.grant_credits("ann", 1, idempotency_key="c", reason="promo")
    records = billing.audit_log(action="credits.grant")
    seen = {(r.actor, r.request_id) for r in records}
    assert seen == {("admin:alice", "req-a"), ("support:bob", "req-b"), ("system", None)}
    assert all(r.before is not None and r.after is not None and r.outcome == "applied" for r in records)
    assert billing.audit_log(actor="admin:alice")[0].reason == "promo"


def test_crypto_checkout_confirmations_credit_and_a_forged_notification(
    crypto: be.Billing, indexer: FakeIndexer
) -> None:
    crypto.register_user("ann")
    checkout = crypto.create_crypto_payment("ann", package_code="credits_20", chain_id=1, idempotency_key="k")
    assert checkout.address == GATEWAY and checkout.amount == str(1_990_000 + checkout.reference)
    assert checkout.display_amount == Decimal(checkout.amount) / 10**6
    tx_hash, notification = indexer.pay(checkout.amount)
    with pytest.raises(be.InvalidWebhook):
        crypto.handle_crypto_webhook(indexer.forged(tx_hash)[0], headers=indexer.forged(tx_hash)[1])
    outcome = crypto.handle_crypto_webhook(notification[0], headers=notification[1])
    assert (outcome.applied, outcome.payments) == (1, [checkout.payment_id])
    indexer.mine(11)
    report = crypto.reconcile_crypto(indexer.receipt)
    assert (report.checked, report.changed) == (1, 1)
    assert crypto.state("ann").credits == Decimal("30")
    item = crypto.payments("ann").results[0]
    assert item.crypto is not None and (item.crypto.state, item.crypto.tx_hash) == ("succeeded", tx_hash)
    assert crypto.billing_me("ann").last_payment == item
    assert crypto.crypto_transfers(checkout.payment_id)[0]["observation"]["raw"]["hash"] == tx_hash
    # A callback that fails is counted, not raised.
    def broken(chain_id: int, tx_hash: str) -> be.TxReceipt:
        raise RuntimeError("node down")
    assert crypto.reconcile_crypto(broken).errors == 1
    refunded = crypto.refund_crypto_payment(checkout.payment_id, "0x" + "ab" * 32)
    assert refunded.crypto is not None and refunded.crypto["state"] == "refunded"
    assert crypto.state("ann").credits == Decimal("10")
