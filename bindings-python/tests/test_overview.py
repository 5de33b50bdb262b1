"""The operators' numbers from Python: the overview's types, the transactions filters, the
revenue series and the metrics exposition (the formulas are checked in tests/overview.rs
and, through the page, in examples/fastapi/test_browser.py)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

import billing_engine as be


def test_overview_revenue_transactions_and_metrics(billing: be.Billing, clock: be.ManualClock) -> None:
    for user in ("ann", "bob"):
        billing.register_user(user)
    billing.activate_subscription("ann", "basic", idempotency_key="a")
    billing.activate_subscription("bob", "premium", idempotency_key="b")
    billing.charge("ann", "generation", idempotency_key="c")
    clock.advance(hours=1)
    overview = billing.overview(window_days=7)
    yearly = (Decimal("7990.00") / 12).quantize(Decimal("0.000001"))
    assert [(m.currency, m.amount) for m in overview.mrr] == [("RUB", Decimal("299") + yearly)]
    assert (overview.paying_users, overview.active_subscriptions, overview.new_subscriptions) == (2, 2, 2)
    assert {s.plan_code: s.subscriptions for s in overview.segments} == {"basic": 1, "premium": 1}
    assert overview.to_dict()["mrr"][0]["amount"] == str(Decimal("299") + yearly)
    assert billing.transactions() == [], "plans paid outside the engine move no money"
    at = overview.at
    assert billing.revenue_series(at - timedelta(days=30), at, granularity="week") == []
    with pytest.raises(be.InvalidArgument) as wrong:
        billing.revenue_series(at - timedelta(days=30), at, granularity="year")
    assert wrong.value.details["field"] == "granularity"
    with pytest.raises(be.InvalidArgument):
        billing.overview(window_days=0)
    assert 'billing_charges_total{source="subscription"} 1' in billing.metrics_text()
