"""Credit lots through the Python binding: grants with terms, the burn order, expiry at
the instant, voiding a grant, and their errors."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

import billing_engine as be


def test_a_grant_is_a_lot_that_burns_in_order_and_expires_at_its_instant(
    billing: be.Billing, clock: be.ManualClock
) -> None:
    billing.import_user("ann", credits=0, freemium_used=5)
    soon = clock.now() + timedelta(days=2)
    billing.grant_credits("ann", 4, idempotency_key="g1", reason="promo", expires_at=soon, priority=10)
    billing.grant_credits("ann", 6, idempotency_key="g2", reason="bought", category="paid")
    charge = billing.charge("ann", "generation", idempotency_key="c1")
    lots = billing.credit_lots("ann")
    assert [(lot.source, lot.category, lot.remaining) for lot in lots] == [
        ("grant", "promotional", Decimal("2")),
        ("grant", "paid", Decimal("6")),
    ]
    state = billing.state("ann")
    assert [(item.amount, item.expires_at) for item in state.credits_expiring] == [(Decimal("2"), soon)]
    assert billing.billing_me("ann").to_dict()["credits_expiring"][0]["amount"] == "2"

    clock.set(soon)
    assert billing.state("ann").credits == Decimal("6"), "the expired lot spends nothing from its instant"
    billing.refund_charge(charge.id, idempotency_key="r1")
    # The write records the lot's expiry; the refund to it expires at once: two entries.
    kinds = [entry.kind for entry in billing.ledger("ann", limit=3)]
    assert kinds == ["credit_expired", "refund", "credit_expired"]
    assert billing.state("ann").credits == Decimal("6")
    assert billing.verify_integrity().ok


def test_void_grant_forfeits_the_rest_and_unknown_lots_are_grant_not_found(billing: be.Billing) -> None:
    billing.import_user("bob", credits=0, freemium_used=5)
    grant = billing.grant_credits("bob", 5, idempotency_key="g", reason="promo")
    voided = billing.void_grant(grant.id, idempotency_key="v", reason="mistake")
    assert (voided.kind, voided.credits_delta) == ("credit_voided", Decimal("-5"))
    assert billing.void_grant(grant.id, idempotency_key="v", reason="mistake") == voided
    with pytest.raises(be.GrantNotFound) as missing:
        billing.void_grant(123456789, idempotency_key="v2", reason="none")
    assert missing.value.details["lot_id"] == 123456789
    with pytest.raises(be.InvalidArgument) as bad:
        billing.grant_credits("bob", 1, idempotency_key="g2", reason="promo", priority=101)
    assert bad.value.details["field"] == "priority"
    assert billing.state("bob").credits == Decimal("0")
