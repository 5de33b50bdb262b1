"""Payments through the binding, against the fake YooKassa on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

import billing_engine as be
from support import snapshot
from fake_yookassa import SECRET_KEY, SHOP_ID, YOOKASSA_ADDR, FakeYooKassa


def deliver(billing: be.Billing, body: bytes) -> be.WebhookOutcome:
    return billing.handle_yookassa_webhook(body, remote_addr=YOOKASSA_ADDR, headers={"Content-Type": "application/json"})


def test_a_paid_plan_arrives_by_webhook_once(paying: be.Billing, yookassa: FakeYooKassa) -> None:
    paying.register_user("ann")
    created = paying.create_payment("ann", plan_code="basic", idempotency_key="buy-1")
    assert created.confirmation_url.startswith("https://yoomoney.test/checkout")
    assert paying.create_payment("ann", plan_code="basic", idempotency_key="buy-1") == created
    with pytest.raises(be.IdempotencyConflict):
        paying.create_payment("ann", plan_code="standard", idempotency_key="buy-1")
    assert paying.payments("ann").to_dict()["results"][0]["status"] == "pending"

    yookassa.pay(created.yookassa_payment_id)
    body = yookassa.notification("payment.succeeded", created.yookassa_payment_id)
    outcome = deliver(paying, body)
    assert (outcome.status, outcome.event, outcome.payment_id) == ("applied", "payment.succeeded", created.payment_id)
    assert deliver(paying, body).status == "duplicate"

    me = paying.billing_me("ann")
    assert (me.plan_code, me.is_active) == ("basic", True)
    history = paying.payments("ann")
    item = history.results[0]
    assert (item.id, item.amount, item.status, item.currency) == (created.payment_id, Decimal("299.00"), "succeeded", "RUB")
    assert history.to_dict()["results"][0]["amount"] == 299
    with pytest.raises(be.ActiveSubscription):
        paying.create_payment("ann", plan_code="standard", idempotency_key="buy-2")
    assert paying.verify_integrity().ok


def test_concurrent_deliveries_apply_a_package_once_and_a_refund_takes_it_back(
    paying: be.Billing, yookassa: FakeYooKassa
) -> None:
    paying.register_user("ben", free_trial=False)
    created = paying.create_payment("ben", package_code="credits_20", idempotency_key="pkg-1")
    yookassa.pay(created.yookassa_payment_id)
    body = yookassa.notification("payment.succeeded", created.yookassa_payment_id)
    statuses: list[str] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        statuses.append(deliver(paying, body).status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == ["applied"] + ["duplicate"] * 7
    assert paying.state("ben").credits == Decimal("20")

    refunded = paying.refund_payment(created.payment_id)
    assert (refunded.status, refunded.amount) == ("refunded", Decimal("149.00"))
    assert paying.state("ben").credits == 0
    assert paying.payment(created.payment_id).refund_id is not None
    assert paying.verify_integrity().ok


def test_a_bound_card_enables_autorenew_and_process_due_renews_once(
    paying: be.Billing, yookassa: FakeYooKassa, clock: be.ManualClock
) -> None:
    paying.register_user("cat")
    binding = paying.start_card_binding("cat")
    yookassa.pay(binding.yookassa_payment_id)
    outcome = deliver(paying, yookassa.notification("payment.waiting_for_capture", binding.yookassa_payment_id))
    assert outcome.status == "applied"
    method = paying.payment_method("cat")
    assert (method.is_attached, method.card_mask, method.card_brand) == (True, "•••• 4444", "MasterCard")
    assert "POST /payments/{}/cancel".format(binding.yookassa_payment_id) in yookassa.requests

    paying.activate_subscription("cat", "basic", idempotency_key="paid-elsewhere")
    details = paying.set_autorenew("cat", True)
    assert (details.autorenew_enabled, details.card_bound) == (True, True)
    expires = details.expires_at
    assert expires is not None

    assert paying.process_due().renewals_created == 0
    clock.set(expires - timedelta(hours=12))  # within a day of the end: time to charge the card
    report = paying.process_due()
    assert (report.renewals_created, report.renewals_sent, report.failures) == (1, 1, 0)
    assert paying.process_due().renewals_created == 0
    renewed = paying.subscription_details("cat").expires_at
    assert renewed is not None and (renewed - expires).days == 30


def test_an_untrusted_or_malformed_notification_is_refused_and_changes_nothing(
    paying: be.Billing, yookassa: FakeYooKassa, db: str
) -> None:
    paying.register_user("dov")
    created = paying.create_payment("dov", package_code="credits_100", idempotency_key="pkg")
    yookassa.pay(created.yookassa_payment_id)
    body = yookassa.notification("payment.succeeded", created.yookassa_payment_id)
    before = snapshot(db)
    refusals: list[Callable[[], object]] = [
        lambda: paying.handle_yookassa_webhook(body, remote_addr="203.0.113.9"),
        lambda: paying.handle_yookassa_webhook(body),
        lambda: deliver(paying, body[:-5]),
        lambda: deliver(paying, b"not json"),
    ]
    for call in refusals:
        with pytest.raises(be.InvalidWebhook) as refused:
            call()
        assert refused.value.details["reason"]
    assert snapshot(db) == before
    with pytest.raises(TypeError, match="body"):
        paying.handle_yookassa_webhook(body.decode())  # type: ignore[arg-type]


def test_provider_failures_are_payment_errors_without_secrets(
    db: str, catalog: be.Catalog, yookassa: FakeYooKassa
) -> None:
    unconfigured = be.Billing.open(db, catalog)
    unconfigured.register_user("eve")
    with pytest.raises(be.PaymentError) as not_configured:
        unconfigured.create_payment("eve", plan_code="basic", idempotency_key="k")
    assert not_configured.value.details["provider_code"] == "not_configured"

    wrong = be.YooKassaConfig(SHOP_ID, "wrong-secret-123", api_url=yookassa.url, return_url="https://app.example/")
    billing = be.Billing.open(db, catalog, yookassa=wrong)
    with pytest.raises(be.PaymentError) as refused:
        billing.create_payment("eve", plan_code="basic", idempotency_key="k")
    assert refused.value.details["provider_code"] == "invalid_credentials"
    assert refused.value.details["retryable"] is False
    assert "wrong-secret-123" not in str(refused.value) + repr(refused.value.details)
    with pytest.raises(be.InvalidArgument) as both:
        billing.create_payment("eve", plan_code="basic", package_code="credits_20", idempotency_key="k2")
    assert both.value.details["field"] == "plan_code"


def test_yookassa_config_from_env_and_its_repr_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOOKASSA_SHOP_ID", "123")
    monkeypatch.setenv("YOOKASSA_SECRET_KEY", "live_topsecret")
    monkeypatch.setenv("YOOKASSA_WEBHOOK_SECRET", "whsec-a,whsec-b")
    monkeypatch.setenv("YOOKASSA_API_URL", "http://127.0.0.1:9/v3")
    config = be.YooKassaConfig.from_env()
    assert (config.shop_id, config.secret_key, config.api_url) == ("123", "live_topsecret", "http://127.0.0.1:9/v3")
    assert list(config.webhook_secret or []) == ["whsec-a", "whsec-b"]
    assert "topsecret" not in repr(config) and "whsec" not in repr(config)
    monkeypatch.delenv("YOOKASSA_SECRET_KEY")
    with pytest.raises(be.InvalidArgument) as missing:
        be.YooKassaConfig.from_env()
    assert missing.value.details["field"] == "YOOKASSA_SECRET_KEY"


def test_a_partial_refund_takes_back_a_share_of_the_credits_once(paying: be.Billing, yookassa: FakeYooKassa) -> None:
    paying.register_user("fay", free_trial=False)
    created = paying.create_payment("fay", package_code="credits_20", idempotency_key="pkg")
    yookassa.pay(created.yookassa_payment_id)
    deliver(paying, yookassa.notification("payment.succeeded", created.yookassa_payment_id))
    part = paying.refund_payment(created.payment_id, amount=Decimal("50.00"), idempotency_key="r1")
    assert (part.status, part.refunded_amount) == ("succeeded", Decimal("50.00"))
    assert paying.refund_payment(created.payment_id, amount="50.00", idempotency_key="r1").refunded_amount == Decimal("50")
    assert paying.state("fay").credits == Decimal("14"), "20 x 50/149 = 6.71: 6 credits back, rounded down"
    with pytest.raises(be.InvalidArgument) as too_much:
        paying.refund_payment(created.payment_id, amount="99.01", idempotency_key="r2")
    assert too_much.value.details["field"] == "amount"
    rest = paying.refund_payment(created.payment_id)
    assert (rest.status, paying.state("fay").credits) == ("refunded", Decimal("0"))
    assert paying.payments("fay").to_dict()["results"][0]["refunded_amount"] == 149
    assert len(yookassa.refunds) == 2 and paying.verify_integrity().ok


def test_a_5xx_is_retried_with_the_same_key_and_pays_once(paying: be.Billing, yookassa: FakeYooKassa) -> None:
    paying.register_user("gus")
    yookassa.fail("/payments", 2)  # the first attempt and the first retry, each after creating
    created = paying.create_payment("gus", plan_code="basic", idempotency_key="buy")
    assert len(yookassa.payments) == 1, "three attempts under one key create one payment"
    assert yookassa.requests.count("POST /payments") == 3
    yookassa.fail("/payments", 3)
    with pytest.raises(be.PaymentError) as unavailable:
        paying.create_payment("gus", package_code="credits_20", idempotency_key="pkg")
    assert unavailable.value.details["retryable"] is True
    assert paying.create_payment("gus", package_code="credits_20", idempotency_key="pkg").payment_id
    assert len(yookassa.payments) == 2 and created.payment_id


def test_a_declined_renewal_stops_renewing_and_the_plan_runs_out(
    paying: be.Billing, yookassa: FakeYooKassa, clock: be.ManualClock
) -> None:
    paying.register_user("hal")
    created = paying.create_payment("hal", plan_code="basic", save_payment_method=True, idempotency_key="buy")
    yookassa.pay(created.yookassa_payment_id)
    deliver(paying, yookassa.notification("payment.succeeded", created.yookassa_payment_id))
    expires = paying.set_autorenew("hal", True).expires_at
    assert expires is not None
    yookassa.decline_recurring(True)
    clock.set(expires - timedelta(hours=12))
    report = paying.process_due()
    assert (report.renewals_created, report.renewals_sent, report.failures) == (1, 1, 0)
    assert paying.subscription_details("hal").autorenew_enabled is False
    clock.set(expires + timedelta(hours=1))
    assert paying.process_due().expired == 1
    assert paying.billing_me("hal").plan_code == "FREE" and paying.verify_integrity().ok


def test_receipts_go_to_the_contact_given_or_kept_and_a_missing_one_sends_nothing(
    db: str, catalog: be.Catalog, clock: be.ManualClock, yookassa: FakeYooKassa, yookassa_config: be.YooKassaConfig
) -> None:
    yookassa.require_receipts(True)
    config = dataclasses.replace(yookassa_config, receipts=True, tax_system_code=2)
    shop = be.Billing.open(db, catalog, clock=clock, yookassa=config)
    shop.register_user("ida")
    with pytest.raises(be.InvalidArgument) as missing:
        shop.create_payment("ida", plan_code="basic", idempotency_key="buy")
    assert missing.value.details["field"] == "customer_contact" and yookassa.payments == {}
    with pytest.raises(be.InvalidArgument) as bad:
        shop.set_customer_contact("ida", phone="12-34")
    assert bad.value.details["field"] == "phone" and shop.customer_contact("ida") is None

    created = shop.create_payment("ida", plan_code="basic", idempotency_key="buy", customer_email="ida@example.ru")
    kept = shop.customer_contact("ida")
    assert kept is not None and kept.to_dict() == {"email": "ida@example.ru", "phone": None}
    yookassa.pay(created.yookassa_payment_id)
    deliver(shop, yookassa.notification("payment.succeeded", created.yookassa_payment_id))
    shop.refund_payment(created.payment_id, amount="100.00", idempotency_key="part")
    receipts = yookassa.receipts
    assert [r["path"] for r in receipts] == ["/payments", "/refunds"]
    payment_item, refund_item = receipts[0]["receipt"]["items"][0], receipts[1]["receipt"]["items"][0]
    assert receipts[0]["receipt"]["customer"] == {"email": "ida@example.ru"}
    assert receipts[0]["receipt"]["tax_system_code"] == 2
    assert (payment_item["description"], payment_item["amount"]["value"], payment_item["vat_code"]) == ("Basic plan", "299.00", 1)
    assert refund_item["amount"]["value"] == "100.00"


def test_a_refund_heard_of_before_the_payment_s_success_is_not_lost(paying: be.Billing, yookassa: FakeYooKassa) -> None:
    paying.register_user("jon")
    created = paying.create_payment("jon", package_code="credits_20", idempotency_key="pkg")
    yookassa.pay(created.yookassa_payment_id)
    refund_id = yookassa.refund_in_dashboard(created.yookassa_payment_id, "149.00")
    assert deliver(paying, yookassa.notification("refund.succeeded", refund_id)).status == "applied"
    assert deliver(paying, yookassa.notification("payment.succeeded", created.yookassa_payment_id)).status == "duplicate"
    payment = paying.payment(created.payment_id)
    assert (payment.status, payment.refunded_amount, paying.state("jon").credits) == ("refunded", Decimal("149.00"), Decimal("10"))


def test_an_error_about_a_huge_field_repeats_a_bounded_part_of_it(paying: be.Billing) -> None:
    paying.register_user("kai")
    with pytest.raises(be.InvalidArgument) as huge:
        paying.create_payment("kai", plan_code="basic", idempotency_key="k", return_url="ftp://" + "x" * 1_000_000)
    assert len(str(huge.value)) <= 513 and str(huge.value).endswith("…")
    assert huge.value.details["field"] == "return_url" and len(huge.value.details["message"]) <= 257


def test_a_binding_under_a_key_is_made_once_and_stays_out_of_the_history(
    paying: be.Billing, yookassa: FakeYooKassa
) -> None:
    paying.register_user("lev")
    first = paying.start_card_binding("lev", idempotency_key="bind")
    assert paying.start_card_binding("lev", idempotency_key="bind") == first
    assert len(yookassa.payments) == 1
    yookassa.pay(first.yookassa_payment_id)
    deliver(paying, yookassa.notification("payment.waiting_for_capture", first.yookassa_payment_id))
    assert paying.payment_method("lev").is_attached and paying.payments("lev").results == []
