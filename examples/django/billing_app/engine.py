"""One `Billing` per process, opened on first use.

Opening lazily matters under gunicorn's preforking: each worker opens its own handle
after the fork (SQLite connections must not cross a fork), and every thread of the
worker shares it."""

from __future__ import annotations

import os
import threading
from typing import Optional

from django.conf import settings

import billing_engine as be

_billing: Optional[be.Billing] = None
_lock = threading.Lock()


def billing() -> be.Billing:
    global _billing
    with _lock:
        if _billing is None:
            catalog = be.Catalog.from_toml_file(settings.BILLING_TARIFFS)
            yookassa = be.YooKassaConfig.from_env() if os.environ.get("YOOKASSA_SHOP_ID") else None
            _billing = be.Billing.open(
                settings.BILLING_DB, catalog, yookassa=yookassa, alchemy_signing_key=os.environ.get("ALCHEMY_SIGNING_KEY")
            )
        return _billing


def use(instance: Optional[be.Billing]) -> None:
    """Replaces the process's engine, e.g. with one on a test file and a ManualClock."""
    global _billing
    with _lock:
        _billing = instance
