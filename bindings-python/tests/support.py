"""What the tests share besides fixtures."""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List, Tuple, Union

TARIFFS = Path(__file__).resolve().parents[2] / "examples" / "tariffs.toml"
START = "2026-01-01T09:00:00Z"
TABLES = ("accounts", "ledger", "payments", "payment_methods", "customer_contacts")


def on_postgres() -> bool:
    """Whether the tests run on PostgreSQL (``BILLING_TEST_STORE=postgres``, the server's
    URL in ``BILLING_TEST_POSTGRES``) rather than on a SQLite file."""
    return os.environ.get("BILLING_TEST_STORE") == "postgres"


def psql(url: str, sql: str) -> List[str]:
    """Runs ``sql`` with PostgreSQL's own client; one line of text per row."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql")) or ["psql"]
    done = subprocess.run(
        [candidates[-1], "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def new_database(tmp_path: Path) -> str:
    """A fresh database of the store under test: a SQLite file, or a PostgreSQL schema
    of its own (by URL)."""
    if not on_postgres():
        return str(tmp_path / "billing.sqlite3")
    url = os.environ["BILLING_TEST_POSTGRES"]
    schema = f"p_{uuid.uuid4().hex}"
    psql(url, f"CREATE SCHEMA {schema}")
    return f"{url}?options=-csearch_path%3D{schema}"


def snapshot(location: Union[str, Path]) -> Dict[str, List[Tuple[object, ...]]]:
    """Every row of the engine's tables, read beside the engine."""
    location = str(location)
    if location.startswith("postgresql://"):
        url, _, options = location.partition("?")
        schema = options.rpartition("%3D")[2]
        return {table: [(row,) for row in psql(url, f"SELECT t::text FROM {schema}.{table} t ORDER BY 1")] for table in TABLES}
    with sqlite3.connect(location) as db:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall() for table in TABLES}
