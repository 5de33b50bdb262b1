"""Metered usage, holds and features through the Python binding (seed 001): the calls,
their typed results, and their errors as the documented exception classes."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

import billing_engine as be


def test_check_track_and_usage_follow_the_free_plans_quotas(billing: be.Billing) -> None:
    billing.register_user("ann")
    check = billing.check_usage("ann", {"requests": 1, "tokens_input": 1200})
    assert check.allowed and check.reason is None
    tokens = next(m for m in check.metrics if m.metric == "tokens_input")
    assert (tokens.limit, tokens.used, tokens.remaining) == (50000, 0, 50000)
    requests = next(m for m in check.metrics if m.metric == "requests")
    assert requests.daily_remaining == 20

    record = billing.track_usage("ann", "tokens_input", 49_000, idempotency_key="t1", model_id="gpt", chat_id="c1")
    assert (record.amount, record.model_id, record.over_limit, record.replayed) == (49_000, "gpt", False, False)
    crossing = billing.track_usage("ann", "tokens_input", 2_000, idempotency_key="t2", model_id="claude")
    assert crossing.over_limit, "usage that happened is recorded past the quota"
    assert billing.track_usage("ann", "tokens_input", 2_000, idempotency_key="t2", model_id="claude").replayed

    with pytest.raises(be.QuotaExceeded) as refused:
        billing.require_usage("ann", {"tokens_input": 1})
    details = refused.value.details
    assert (details["metric"], details["limit"], details["used"], details["window"]) == (
        "tokens_input",
        50000,
        51000,
        "period",
    )
    assert refused.value.http_status == 429

    summary = billing.usage("ann", "tokens_input")
    assert (summary.used, summary.limit, summary.remaining, summary.unit) == (51000, 50000, 0, "token")
    assert summary.resets_at > summary.period_start
    totals = {t.key: t.amount for t in billing.usage_breakdown("ann", "tokens_input", by="model_id")}
    assert totals == {"claude": 2000, "gpt": 49000}
    assert billing.verify_integrity().ok


def test_a_batch_is_one_call_and_replays_whole(billing: be.Billing) -> None:
    billing.register_user("ann")
    records = [be.UsageRequest("tokens_output", 10, chat_id="c1"), be.UsageRequest("requests", 1)]
    first = billing.track_usage_batch("ann", records, idempotency_key="b1")
    again = billing.track_usage_batch("ann", records, idempotency_key="b1")
    assert [r.id for r in first] == [r.id for r in again] and all(r.replayed for r in again)
    with pytest.raises(be.IdempotencyConflict):
        billing.track_usage_batch("ann", records[:1], idempotency_key="b1")
    assert billing.usage("ann", "requests").used == 1


def test_bad_usage_is_an_invalid_argument_naming_the_field(billing: be.Billing) -> None:
    billing.register_user("ann")
    with pytest.raises(be.InvalidArgument) as negative:
        billing.track_usage("ann", "tokens_input", -5, idempotency_key="n")
    assert negative.value.details["field"] == "amount"
    with pytest.raises(be.InvalidArgument) as counted:
        billing.track_usage("ann", "requests", 2, idempotency_key="c")
    assert counted.value.details["field"] == "amount"
    with pytest.raises(be.InvalidArgument) as future:
        billing.track_usage("ann", "requests", idempotency_key="f", at="2099-01-01T00:00:00Z")
    assert future.value.details["field"] == "at"
    with pytest.raises(be.UnknownMetric):
        billing.check_usage("ann", {"words": 1})
    with pytest.raises(be.InvalidArgument):
        billing.check_usage("ann", {"tokens_input": 2**64})
    with pytest.raises(be.InvalidArgument):
        billing.usage_breakdown("ann", "tokens_input", by="user")
    assert billing.usage("ann", "tokens_input").used == 0


def test_a_hold_reserves_then_captures_or_releases_once(billing: be.Billing) -> None:
    billing.import_user("bob", credits=10, freemium_used=5)
    hold = billing.reserve("bob", usage={"tokens_input": 3000}, operation="generation", idempotency_key="h1")
    assert (hold.status, hold.source, hold.credits_held) == ("open", "credits", Decimal("2"))
    assert billing.usage("bob", "tokens_input").held == 3000
    assert billing.state("bob").credits == Decimal("8")

    captured = billing.capture(hold.id, actual={"tokens_input": 1200}, idempotency_key="c1", model_id="gpt")
    assert (captured.status, [(u.metric, u.amount) for u in captured.captured]) == (
        "captured",
        [("tokens_input", 1200)],
    )
    usage = billing.usage("bob", "tokens_input")
    assert (usage.used, usage.held) == (1200, 0)
    assert [(t.key, t.amount) for t in billing.usage_breakdown("bob", "tokens_input")] == [("gpt", 1200)]
    assert billing.release(hold.id, idempotency_key="r1").replayed, "a hold settles once"

    second = billing.reserve("bob", usage={"requests": 1}, operation="assistant", idempotency_key="h2")
    released = billing.release(second.id, idempotency_key="r2")
    assert released.status == "released"
    assert billing.state("bob").credits == Decimal("8")
    kinds = [e.kind for e in billing.ledger("bob", limit=3)]
    assert kinds == ["hold_released", "hold_placed", "hold_captured"]
    with pytest.raises(be.HoldNotFound):
        billing.capture("hold_missing", idempotency_key="c9")
    restored = pickle.loads(pickle.dumps(released))
    assert restored == released and restored.to_dict()["status"] == "released"
    assert billing.verify_integrity().ok


def test_features_and_the_cheapest_plan_that_has_one(billing: be.Billing) -> None:
    billing.register_user("ann")
    entitlements = billing.entitlements("ann")
    assert entitlements.plan_code == "FREE" and entitlements.valid_until is None
    values = {e.name: (e.enabled, e.limit) for e in entitlements.features}
    assert values["max_chats"] == (True, 3) and values["ai_recognition"] == (False, None)
    assert not billing.has_feature("ann", "ai_recognition")
    with pytest.raises(be.FeatureNotAvailable) as missing:
        billing.require_feature("ann", "ai_recognition")
    assert missing.value.details["cheapest_plan"] == "basic"
    assert missing.value.http_status == 403
    billing.activate_subscription("ann", "basic", idempotency_key="sub")
    assert billing.require_feature("ann", "max_chats").limit == 20
