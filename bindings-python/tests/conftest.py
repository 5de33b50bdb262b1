from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

import billing_engine as be

sys.path.insert(0, str(Path(__file__).parent))
from fake_yookassa import SECRET_KEY, SHOP_ID, FakeYooKassa  # noqa: E402

TARIFFS = Path(__file__).resolve().parents[2] / "examples" / "tariffs.toml"
START = "2026-01-01T09:00:00Z"


@pytest.fixture(scope="session")
def catalog() -> be.Catalog:
    return be.Catalog.from_toml_file(TARIFFS)


@pytest.fixture
def clock() -> be.ManualClock:
    return be.ManualClock(START)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "billing.sqlite3"


@pytest.fixture
def billing(db_path: Path, catalog: be.Catalog, clock: be.ManualClock) -> be.Billing:
    return be.Billing.open(db_path, catalog, clock=clock)


@pytest.fixture
def yookassa() -> Iterator[FakeYooKassa]:
    fake = FakeYooKassa()
    yield fake
    fake.close()


@pytest.fixture
def yookassa_config(yookassa: FakeYooKassa) -> be.YooKassaConfig:
    return be.YooKassaConfig(
        SHOP_ID,
        SECRET_KEY,
        api_url=yookassa.url,
        return_url="https://app.example/billing/done",
        timeout_s=2,
    )


@pytest.fixture
def paying(db_path: Path, catalog: be.Catalog, clock: be.ManualClock, yookassa_config: be.YooKassaConfig) -> be.Billing:
    return be.Billing.open(db_path, catalog, clock=clock, yookassa=yookassa_config)


def snapshot(path: Path) -> Dict[str, List[Tuple[object, ...]]]:
    """Every row of the engine's tables, read with the standard library."""
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("accounts", "ledger", "payments", "payment_methods")
        }
