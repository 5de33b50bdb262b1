"""Code run in child processes by the tests (spawned, so it must be importable)."""

from __future__ import annotations

from typing import List

import billing_engine as be


def charge_many(path: str, tariffs: str, user_id: str, worker: int, attempts: int, start: object) -> List[str]:
    """Opens its own handle on the shared file, waits for the others, then charges."""
    billing = be.Billing.open(path, be.Catalog.from_toml_file(tariffs))
    start.wait()  # type: ignore[attr-defined]
    outcomes = []
    for n in range(attempts):
        try:
            billing.charge(user_id, "assistant", idempotency_key=f"p{worker}-{n}")
            outcomes.append("ok")
        except be.BillingError as error:
            outcomes.append(error.code)
    return outcomes
