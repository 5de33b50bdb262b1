"""The project's one fake YooKassa (``tests/fakes/yookassa.py``, shared with the Rust
suite), started as a process on 127.0.0.1 and driven through its control API. The engine
talks to it over real HTTP through its real client."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "fakes" / "yookassa.py"
SHOP_ID = "506751"
SECRET_KEY = "test_SecretKey_42"
YOOKASSA_ADDR = "185.71.76.10"  # inside YooKassa's published networks


class FakeYooKassa:
    def __init__(self) -> None:
        # Standard input stays open: the fake exits when it closes.
        self._process = subprocess.Popen(
            [sys.executable, str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self._control = self.url[: -len("/v3")] + "/_control"

    def close(self) -> None:
        self._process.kill()
        self._process.wait()

    def _call(self, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._control + path, data=data, method="GET" if data is None else "POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    # ---- what a test does

    def pay(self, payment_id: str) -> None:
        """The user pays: the payment succeeds (a two-stage one is held), and its card is
        saved if the payment asked for it."""
        self._call("/pay", {"id": payment_id})

    def set_status(self, object_id: str, status: str) -> None:
        self._call("/set_status", {"id": object_id, "status": status})

    def fail(self, path: str, count: int, *, status: int = 500, delay_s: float = 0) -> None:
        """The next ``count`` calls to paths starting with ``path`` answer ``status`` after
        doing their work, or with ``status=0`` answer ``delay_s`` seconds late."""
        self._call("/fail", {"path": path, "count": count, "status": status, "delay_s": delay_s})

    def decline_recurring(self, on: bool) -> None:
        self._call("/decline_recurring", {"on": on})

    def require_receipts(self, on: bool) -> None:
        """The shop fiscalizes through YooKassa: a payment or refund needs a valid receipt."""
        self._call("/receipts", {"on": on})

    def refund_in_dashboard(self, payment_id: str, amount: str) -> str:
        """The shop refunds in YooKassa's dashboard; returns the refund's id."""
        refund: Dict[str, Any] = self._call("/refund", {"id": payment_id, "amount": amount})
        return str(refund["id"])

    def notification(self, event: str, object_id: str) -> bytes:
        return json.dumps(self._call(f"/notification?event={event}&id={object_id}")).encode()

    # ---- what a test reads

    @property
    def payments(self) -> Dict[str, Dict[str, Any]]:
        result: Dict[str, Dict[str, Any]] = self._call("/state")["payments"]
        return result

    @property
    def refunds(self) -> Dict[str, Dict[str, Any]]:
        result: Dict[str, Dict[str, Any]] = self._call("/state")["refunds"]
        return result

    @property
    def receipts(self) -> List[Dict[str, Any]]:
        """The receipts accepted, as ``{"path", "receipt"}``, oldest first."""
        result: List[Dict[str, Any]] = self._call("/state")["receipts"]
        return result

    @property
    def requests(self) -> List[str]:
        result: List[str] = self._call("/state")["requests"]
        return result
