"""What the tests share besides fixtures."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Dict, List, Tuple

TARIFFS = Path(__file__).resolve().parents[2] / "examples" / "tariffs.toml"
START = "2026-01-01T09:00:00Z"


def snapshot(path: Path) -> Dict[str, List[Tuple[object, ...]]]:
    """Every row of the engine's tables, read with the standard library."""
    with sqlite3.connect(path) as db:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("accounts", "ledger", "payments", "payment_methods")
        }
