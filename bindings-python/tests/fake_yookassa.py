"""A fake YooKassa API v3 on 127.0.0.1 for the Python tests: real HTTP, the engine's real
client. Like the Rust one in ``tests/common/yookassa.rs`` it checks Basic auth and the
``Idempotence-Key`` (the same key and body get the first answer; another body is a 400),
and lets a test play the user (``pay``) and YooKassa (``notification``)."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

SHOP_ID = "506751"
SECRET_KEY = "test_SecretKey_42"
YOOKASSA_ADDR = "185.71.76.10"  # inside YooKassa's published networks

Answer = Tuple[int, Dict[str, Any]]


def _error(status: int, code: str, description: str) -> Answer:
    return status, {"type": "error", "code": code, "description": description}


class FakeYooKassa:
    def __init__(self) -> None:
        self.payments: Dict[str, Dict[str, Any]] = {}
        self.refunds: Dict[str, Dict[str, Any]] = {}
        self.requests: List[str] = []
        self._answered: Dict[str, Tuple[str, Answer]] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(fake._handle("GET", self.path, b"", self.headers))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self._answer(fake._handle("POST", self.path, body, self.headers))

            def _answer(self, answer: Answer) -> None:
                status, payload = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v3"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- what a test does

    def pay(self, payment_id: str) -> None:
        """The user pays: the payment succeeds, and its card is saved if asked."""
        with self._lock:
            payment = self.payments[payment_id]
            status = "succeeded" if payment["capture"] else "waiting_for_capture"
            payment.update(status=status, paid=True, payment_method=_card(f"pm-{payment_id}", bool(payment.get("save_payment_method"))))

    def notification(self, event: str, payment_id: str) -> bytes:
        with self._lock:
            payment = dict(self.payments[payment_id])
        return json.dumps({"type": "notification", "event": event, "object": payment}).encode()

    # ---- the API

    def _handle(self, method: str, url: str, body: bytes, headers: Any) -> Answer:
        path = url[len("/v3") :] if url.startswith("/v3") else url
        expected = "Basic " + base64.b64encode(f"{SHOP_ID}:{SECRET_KEY}".encode()).decode()
        with self._lock:
            self.requests.append(f"{method} {path}")
            if headers.get("Authorization") != expected:
                return _error(401, "invalid_credentials", "Authentication by given credentials failed")
            if method == "GET":
                kind, _, object_id = path.strip("/").partition("/")
                found = {"payments": self.payments, "refunds": self.refunds}.get(kind, {}).get(object_id)
                return (200, found) if found else _error(404, "not_found", "Not found")
            key = headers.get("Idempotence-Key") or ""
            if not key or len(key) > 64:
                return _error(400, "invalid_request", "Idempotence-Key header is missing or too long")
            request = f"{path} {body.decode()}"
            if key in self._answered:
                first, answer = self._answered[key]
                return answer if first == request else _error(400, "invalid_request", "Idempotence key duplicated")
            answer = self._post(path, json.loads(body or b"{}"))
            self._answered[key] = (request, answer)
            return answer

    def _post(self, path: str, body: Dict[str, Any]) -> Answer:
        self._next_id += 1
        object_id = f"2f{self._next_id:06x}-000f-5000-9000-1b68e7b15f3f"
        parts = path.strip("/").split("/")
        if parts == ["payments"]:
            payment: Dict[str, Any] = {
                "id": object_id,
                "status": "pending",
                "paid": False,
                "amount": body["amount"],
                "capture": body.get("capture", True),
                "description": body.get("description"),
                "metadata": body.get("metadata"),
                "save_payment_method": body.get("save_payment_method", False),
                "created_at": "2026-01-01T12:00:00.000Z",
                "confirmation": {
                    "type": "redirect",
                    "confirmation_url": f"https://yoomoney.test/checkout?orderId={object_id}",
                },
            }
            if "payment_method_id" in body:  # a renewal with the saved card: no user, no redirect
                del payment["confirmation"]
                payment.update(status="succeeded", paid=True, payment_method=_card(body["payment_method_id"], True))
            self.payments[object_id] = payment
            return 200, payment
        if parts == ["refunds"]:
            paid = self.payments.get(body.get("payment_id", ""))
            if not paid or paid["status"] != "succeeded":
                return _error(400, "invalid_request", "Payment cannot be refunded")
            refund = {"id": object_id, "payment_id": paid["id"], "status": "succeeded", "amount": body["amount"]}
            self.refunds[object_id] = refund
            return 200, refund
        if len(parts) == 3 and parts[0] == "payments" and parts[2] == "cancel" and parts[1] in self.payments:
            held = self.payments[parts[1]]
            held["status"] = "canceled"
            return 200, held
        return _error(404, "not_found", "Not found")


def _card(method_id: str, saved: bool) -> Dict[str, Any]:
    return {
        "type": "bank_card",
        "id": method_id,
        "saved": saved,
        "card": {"first6": "555555", "last4": "4444", "expiry_month": "12", "expiry_year": "2030", "card_type": "MasterCard"},
    }
