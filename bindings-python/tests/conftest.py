from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

import billing_engine as be

sys.path.insert(0, str(Path(__file__).parent))
from fake_yookassa import SECRET_KEY, SHOP_ID, FakeYooKassa  # noqa: E402
from support import START, TARIFFS, new_database  # noqa: E402


@pytest.fixture(scope="session")
def catalog() -> be.Catalog:
    return be.Catalog.from_toml_file(TARIFFS)


@pytest.fixture
def clock() -> be.ManualClock:
    return be.ManualClock(START)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A fresh database of the store under test (see ``support.new_database``)."""
    return new_database(tmp_path)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A SQLite file, for the tests of SQLite's own locking."""
    return tmp_path / "billing.sqlite3"


@pytest.fixture
def billing(db: str, catalog: be.Catalog, clock: be.ManualClock) -> be.Billing:
    return be.Billing.open(db, catalog, clock=clock)


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
def paying(db: str, catalog: be.Catalog, clock: be.ManualClock, yookassa_config: be.YooKassaConfig) -> be.Billing:
    return be.Billing.open(db, catalog, clock=clock, yookassa=yookassa_config)
