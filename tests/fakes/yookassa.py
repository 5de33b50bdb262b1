#!/usr/bin/env python3
"""The one fake YooKassa API v3 of the project, shared by the Rust and the Python test
suites. Real HTTP on 127.0.0.1; Python's standard library only.

    python3 tests/fakes/yookassa.py        # prints its base URL, `http://127.0.0.1:PORT/v3`

It runs until its standard input closes, so it ends with the test process that started it.

What it follows of YooKassa's documented API (https://yookassa.ru/developers, API v3):
- HTTP Basic auth `shop_id:secret_key` on every call (401 `invalid_credentials` otherwise).
- Every POST carries an `Idempotence-Key` of at most 64 characters. A repeat with the same
  key and body gets the first answer; the same key with another body is 400
  `invalid_request` ("Idempotence key duplicated").
- Money is `{"value": "299.00", "currency": "RUB"}`: a decimal string with two places.
- `metadata`: at most 16 keys of at most 32 characters, string values of at most 512.
- `POST /payments` creates a `pending` payment with a redirect `confirmation`, or charges a
  saved card at once when it names a `payment_method_id` (`succeeded`, or `canceled` with
  `cancellation_details` when declined).
- `GET /payments/{id}` and `GET /refunds/{id}` read objects; an unknown id is 404 `not_found`.
- `POST /payments/{id}/capture` and `/cancel` act only on a `waiting_for_capture` payment.
- `POST /refunds` refunds a `succeeded` payment in full or in part, never more than is left;
  the payment keeps its status and counts `refunded_amount`.
- `GET /payment_methods/{id}`: a saved method, `active` or `inactive`.
- A `receipt` (54-FZ), when sent with a payment or refund, follows the documented rules
  ("Параметры чека", yookassa.ru/developers/payment-acceptance/receipts/54fz/parameters-values):
  a `customer` with an `email` or a `phone` (E.164 digits); 1 to 100 `items`, each with a
  `description` of 1 to 128 characters, a positive `quantity`, an `amount` in the payment's
  currency, a `vat_code` from 1 to 12, and a `payment_subject` and `payment_mode` from the
  documented lists; items that add up to the payment's or refund's amount; an optional
  `tax_system_code` from 1 to 6. A shop with receipts on must send one with every payment
  and refund: otherwise 400 `invalid_request`, parameter `receipt`.

The control API under `/_control` (no auth) plays the user, the network and YooKassa:
- `POST /_control/pay {"id", "method_type"}`: the user pays (a two-stage payment is held)
  with a `bank_card` (the default), a `yoo_money` wallet or `sbp`; the method is saved when
  the payment asked for it.
- `POST /_control/receipts {"on"}`: the shop fiscalizes through YooKassa (receipts required).
- `POST /_control/refund {"id", "amount"}`: the shop refunds in YooKassa's dashboard, not
  through the API (the engine learns of it from notifications only).
- `POST /_control/patch {"id", "fields"}`: overwrites fields of a payment as the API shows it.
- `POST /_control/put {"kind", "object"}`: the API has `object` (of `payments`, `refunds` or
  `payment_methods`) as it is, for samples of real objects.
- `POST /_control/method_status {"id", "status"}`: a saved method becomes `inactive`, ...
- `POST /_control/next_id {"id"}`: the next object created gets this id.
- `POST /_control/set_status {"id", "status"}`.
- `POST /_control/fail {"path", "count", "status", "delay_s"}`: the next `count` calls whose
  path starts with `path` answer `status` (a 5xx), after doing their work, the worst case
  for a client; with `delay_s` they answer that much later (a timeout for a short client).
- `POST /_control/decline_recurring {"on", "reason"}`: charges of saved methods are declined,
  for `insufficient_funds` or the `reason` given (`permission_revoked`).
- `POST /_control/refunds_pending {"on"}`: new refunds stay `pending`.
- `GET /_control/state`: `{"payments", "refunds", "methods", "requests", "receipts"}`,
  requests as `METHOD path`, receipts as `{"path", "receipt"}` in the order they came.
- `GET /_control/notification?event=E&id=ID`: a notification carrying the object as the API
  has it now (a payment; a refund for `refund.*`; a method for `payment_method.*`).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

SHOP_ID = "506751"
SECRET_KEY = "test_SecretKey_42"

Answer = Tuple[int, Any]
MONEY = re.compile(r"^\d+\.\d{2}$")


def error(status: int, code: str, description: str) -> Answer:
    return status, {"type": "error", "code": code, "description": description}


def card(method_id: str, saved: bool) -> Dict[str, Any]:
    return method_object("bank_card", method_id, saved)


def method_object(kind: str, method_id: str, saved: bool) -> Dict[str, Any]:
    """A payment method object as YooKassa's docs show each type."""
    found: Dict[str, Any] = {"type": kind, "id": method_id, "saved": saved, "status": "active" if saved else "inactive"}
    if kind == "bank_card":
        found["title"] = "Bank card *4444"
        found["card"] = {"first6": "555555", "last4": "4444", "expiry_month": "12", "expiry_year": "2030",
                         "card_type": "MasterCard", "issuer_country": "RU"}
    elif kind == "yoo_money":
        found["title"] = "YooMoney wallet 410011758831136"
        found["account_number"] = "410011758831136"
    elif kind == "sbp":
        found["title"] = "SBP"
        found["sbp_operation_id"] = "1027088AE4CB48CB81287833347A8777"
        found["payer_bank_details"] = {"bank_id": "100000000111", "bic": "044525225"}
    return found


VAT_CODES = range(1, 13)
TAX_SYSTEM_CODES = range(1, 7)
PAYMENT_SUBJECTS = {
    "commodity", "excise", "job", "service", "gambling_bet", "gambling_prize", "lottery", "lottery_prize",
    "intellectual_activity", "payment", "agent_commission", "composite", "another", "property_right",
    "non_operating_gain", "insurance_premium", "sales_tax", "resort_fee", "fine", "tax", "lien", "cost",
    "pension_insurance_with_payouts", "casino", "marked",
}
PAYMENT_MODES = {
    "full_prepayment", "partial_prepayment", "advance", "full_payment", "partial_payment", "credit", "credit_payment",
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
PHONE = re.compile(r"^\d{7,15}$")


def receipt_error(receipt: Any, total: Dict[str, Any]) -> Optional[Answer]:
    """The documented rules of a receipt for a payment or refund of ``total``."""
    def bad(why: str) -> Answer:
        return 400, {"type": "error", "code": "invalid_request", "parameter": "receipt",
                     "description": f"Receipt is missing or illegal: {why}"}

    if not isinstance(receipt, dict):
        return bad("no receipt")
    customer = receipt.get("customer") or {}
    email, phone = customer.get("email"), customer.get("phone")
    if email is None and phone is None:
        return bad("customer: an email or a phone is required")
    if email is not None and not (isinstance(email, str) and EMAIL.match(email)):
        return bad("customer.email")
    if phone is not None and not (isinstance(phone, str) and PHONE.match(phone)):
        return bad("customer.phone: E.164 digits")
    code = receipt.get("tax_system_code")
    if code is not None and code not in TAX_SYSTEM_CODES:
        return bad("tax_system_code")
    items = receipt.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        return bad("items: 1 to 100")
    cents = Decimal(0)
    for item in items:
        description = item.get("description")
        if not isinstance(description, str) or not 1 <= len(description) <= 128:
            return bad("items.description: 1 to 128 characters")
        try:
            quantity = Decimal(str(item.get("quantity")))
        except InvalidOperation:
            return bad("items.quantity")
        if quantity <= 0:
            return bad("items.quantity must be positive")
        amount = item.get("amount")
        if money_error(amount) or amount.get("currency") != total.get("currency"):
            return bad("items.amount")
        if item.get("vat_code") not in VAT_CODES or isinstance(item.get("vat_code"), bool):
            return bad("items.vat_code")
        if item.get("payment_subject") not in PAYMENT_SUBJECTS:
            return bad("items.payment_subject")
        if item.get("payment_mode") not in PAYMENT_MODES:
            return bad("items.payment_mode")
        cents += quantity * Decimal(amount["value"])
    if cents != Decimal(total["value"]):
        return bad(f"the items add up to {cents}, not {total['value']}")
    return None


def money_error(amount: Any) -> Optional[Answer]:
    if not isinstance(amount, dict) or not isinstance(amount.get("value"), str) or not MONEY.match(amount["value"]):
        return error(400, "invalid_request", "amount.value must be a decimal string with two places")
    if amount.get("currency") != "RUB":
        return error(400, "invalid_request", "amount.currency is not supported")
    return None


def metadata_error(metadata: Any) -> Optional[Answer]:
    if metadata is None:
        return None
    ok = isinstance(metadata, dict) and len(metadata) <= 16 and all(
        isinstance(k, str) and len(k) <= 32 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items()
    )
    return None if ok else error(400, "invalid_request", "metadata: at most 16 string keys and values")


class Fake:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.payments: Dict[str, Dict[str, Any]] = {}
        self.refunds: Dict[str, Dict[str, Any]] = {}
        self.requests: List[str] = []
        self.answered: Dict[str, Tuple[str, Answer]] = {}
        self.faults: List[Dict[str, Any]] = []
        self.decline_recurring = False
        self.decline_reason = "insufficient_funds"
        self.refunds_pending = False
        self.receipts_required = False
        self.receipts: List[Dict[str, Any]] = []
        self.methods: Dict[str, Dict[str, Any]] = {}
        self.forced_id: Optional[str] = None
        self.next_id = 0

    # ---- the API

    def api(self, method: str, path: str, body: bytes, headers: Any) -> Tuple[Answer, float]:
        """The answer to one API call, and how long to wait before sending it."""
        expected = "Basic " + base64.b64encode(f"{SHOP_ID}:{SECRET_KEY}".encode()).decode()
        with self.lock:
            self.requests.append(f"{method} {path}")
            fault = self.take_fault(path)
            if headers.get("Authorization") != expected:
                return error(401, "invalid_credentials", "Authentication by given credentials failed"), 0
            if method == "GET":
                kind, _, object_id = path.strip("/").partition("/")
                objects = {"payments": self.payments, "refunds": self.refunds, "payment_methods": self.methods}
                found = objects.get(kind, {}).get(object_id)
                answer: Answer = (200, found) if found else error(404, "not_found", "Not found")
            else:
                answer = self.post_once(path, body, headers.get("Idempotence-Key") or "")
        if fault is None:
            return answer, 0
        if fault.get("status"):
            return error(int(fault["status"]), "internal_server_error", "Internal server error"), float(fault.get("delay_s", 0))
        return answer, float(fault.get("delay_s", 0))

    def take_fault(self, path: str) -> Optional[Dict[str, Any]]:
        for fault in self.faults:
            if path.startswith(fault["path"]) and fault["count"] > 0:
                fault["count"] -= 1
                return fault
        return None

    def post_once(self, path: str, body: bytes, key: str) -> Answer:
        if not key or len(key) > 64:
            return error(400, "invalid_request", "Idempotence-Key header is missing or longer than 64 characters")
        request = f"{path} {body.decode(errors='replace')}"
        if key in self.answered:
            first, answer = self.answered[key]
            return answer if first == request else error(400, "invalid_request", "Idempotence key duplicated")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return error(400, "invalid_request", "the body is not JSON")
        answer = self.post(path, data if isinstance(data, dict) else {})
        self.answered[key] = (request, answer)
        return answer

    def new_id(self) -> str:
        if self.forced_id:
            forced, self.forced_id = self.forced_id, None
            return forced
        self.next_id += 1
        return f"2f{self.next_id:06x}-000f-5000-9000-1b68e7b15f3f"

    def check_receipt(self, path: str, body: Dict[str, Any]) -> Optional[Answer]:
        if "receipt" not in body and not self.receipts_required:
            return None
        bad = receipt_error(body.get("receipt"), body.get("amount") or {})
        if bad is None:
            self.receipts.append({"path": path, "receipt": body["receipt"]})
        return bad

    def post(self, path: str, body: Dict[str, Any]) -> Answer:
        parts = path.strip("/").split("/")
        if parts == ["payments"]:
            return self.create_payment(body)
        if parts == ["refunds"]:
            return self.create_refund(body)
        if len(parts) == 3 and parts[0] == "payments" and parts[2] in ("capture", "cancel"):
            payment = self.payments.get(parts[1])
            if payment is None:
                return error(404, "not_found", "Not found")
            if payment["status"] != "waiting_for_capture":
                return error(400, "invalid_request", f"Payment is {payment['status']}, not waiting_for_capture")
            if parts[2] == "capture":
                payment.update(status="succeeded", paid=True, captured_at="2026-01-01T12:05:00.000Z")
            else:
                payment.update(
                    status="canceled",
                    paid=False,
                    cancellation_details={"party": "merchant", "reason": "canceled_by_merchant"},
                )
            return 200, payment
        return error(404, "not_found", "Not found")

    def create_payment(self, body: Dict[str, Any]) -> Answer:
        bad = money_error(body.get("amount")) or metadata_error(body.get("metadata")) or self.check_receipt("/payments", body)
        if bad:
            return bad
        if len(str(body.get("description") or "")) > 128:
            return error(400, "invalid_request", "description: at most 128 characters")
        object_id = self.new_id()
        payment: Dict[str, Any] = {
            "id": object_id,
            "status": "pending",
            "paid": False,
            "amount": body["amount"],
            "capture": body.get("capture", False),
            "description": body.get("description"),
            "metadata": body.get("metadata") or {},
            "save_payment_method": body.get("save_payment_method", False),
            "refundable": False,
            "test": True,
            "created_at": "2026-01-01T12:00:00.000Z",
        }
        if body.get("receipt"):
            payment["receipt_registration"] = "pending"
        if "payment_method_id" in body:  # a saved method, charged without the user
            method_id = str(body["payment_method_id"])
            saved = self.methods.get(method_id)
            declined = self.decline_recurring or saved is None or saved["status"] != "active"
            payment.update(status="canceled" if declined else "succeeded", paid=not declined)
            payment["payment_method"] = dict(saved) if saved else card(method_id, False)
            if declined:
                reason = self.decline_reason if saved and saved["status"] == "active" else "permission_revoked"
                party = "yoo_money" if reason == "permission_revoked" else "payment_network"
                payment["cancellation_details"] = {"party": party, "reason": reason}
            else:
                payment.update(captured_at="2026-01-01T12:00:01.000Z", refundable=True)
        else:
            confirmation = body.get("confirmation") or {}
            if confirmation.get("type") != "redirect" or not confirmation.get("return_url"):
                return error(400, "invalid_request", "confirmation: a redirect with a return_url is required")
            payment["confirmation"] = {
                "type": "redirect",
                "return_url": confirmation["return_url"],
                "confirmation_url": f"https://yoomoney.test/checkout/payments/v2/contract?orderId={object_id}",
            }
        self.payments[object_id] = payment
        return 200, payment

    def create_refund(self, body: Dict[str, Any]) -> Answer:
        bad = money_error(body.get("amount")) or self.check_receipt("/refunds", body)
        if bad:
            return bad
        payment = self.payments.get(str(body.get("payment_id", "")))
        if payment is None or payment["status"] != "succeeded":
            return error(400, "invalid_request", "Payment cannot be refunded: it is not succeeded")
        amount = Decimal(body["amount"]["value"])
        refunded = Decimal(payment.get("refunded_amount", {}).get("value", "0.00"))
        if amount <= 0 or refunded + amount > Decimal(payment["amount"]["value"]):
            return error(400, "invalid_request", "The refund amount is more than is left to refund")
        refund = {
            "id": self.new_id(),
            "payment_id": payment["id"],
            "status": "pending" if self.refunds_pending else "succeeded",
            "amount": body["amount"],
            "created_at": "2026-01-01T12:10:00.000Z",
        }
        if not self.refunds_pending:
            self.settle_refund(refund)
        self.refunds[refund["id"]] = refund
        return 200, refund

    def settle_refund(self, refund: Dict[str, Any]) -> None:
        payment = self.payments[refund["payment_id"]]
        refunded = Decimal(payment.get("refunded_amount", {}).get("value", "0.00")) + Decimal(refund["amount"]["value"])
        payment["refunded_amount"] = {"value": f"{refunded:.2f}", "currency": refund["amount"]["currency"]}
        refund["status"] = "succeeded"

    # ---- the control API

    def control(self, method: str, path: str, query: Dict[str, List[str]], data: Dict[str, Any]) -> Answer:
        with self.lock:
            try:
                return self.control_locked(method, path, query, data)
            except (KeyError, TypeError, ValueError, InvalidOperation) as bad:
                return error(400, "bad_control_call", f"{path}: {bad!r}")

    def control_locked(self, method: str, path: str, query: Dict[str, List[str]], data: Dict[str, Any]) -> Answer:
        if method == "GET" and path == "/state":
            return 200, {"payments": self.payments, "refunds": self.refunds, "methods": self.methods,
                         "requests": self.requests, "receipts": self.receipts}
        if method == "GET" and path == "/notification":
            event, object_id = query["event"][0], query["id"][0]
            kinds = {"refund": self.refunds, "payment_method": self.methods, "payment": self.payments}
            return 200, {"type": "notification", "event": event, "object": kinds[event.split(".")[0]][object_id]}
        if method != "POST":
            return error(404, "not_found", path)
        if path == "/pay":
            payment = self.payments[data["id"]]
            held = not payment["capture"]
            payment.update(status="waiting_for_capture" if held else "succeeded", paid=True, refundable=not held)
            if not held:
                payment["captured_at"] = "2026-01-01T12:01:00.000Z"
            saved = bool(payment.get("save_payment_method"))
            paid_with = method_object(data.get("method_type", "bank_card"), f"pm-{payment['id']}", saved)
            payment["payment_method"] = paid_with
            if saved:
                self.methods[paid_with["id"]] = dict(paid_with)
        elif path == "/receipts":
            self.receipts_required = bool(data["on"])
        elif path == "/refund":
            payment = self.payments[data["id"]]
            amount = {"value": data["amount"], "currency": payment["amount"]["currency"]}
            refund = {"id": self.new_id(), "payment_id": payment["id"], "status": "succeeded", "amount": amount,
                      "created_at": "2026-01-01T12:20:00.000Z"}
            self.settle_refund(refund)
            self.refunds[refund["id"]] = refund
            return 200, refund
        elif path == "/patch":
            self.payments[data["id"]].update(data["fields"])
        elif path == "/put":
            kinds = {"payments": self.payments, "refunds": self.refunds, "payment_methods": self.methods}
            kinds[data["kind"]][data["object"]["id"]] = data["object"]
        elif path == "/method_status":
            found = self.methods[data["id"]]
            found.update(status=data["status"], saved=data["status"] == "active")
        elif path == "/next_id":
            self.forced_id = str(data["id"])
        elif path == "/set_status":
            target = self.refunds if data["id"] in self.refunds else self.payments
            target[data["id"]]["status"] = data["status"]
            if target is self.refunds and data["status"] == "succeeded":
                self.settle_refund(target[data["id"]])
        elif path == "/fail":
            self.faults.append({"path": data["path"], "count": int(data.get("count", 1)),
                                "status": int(data.get("status", 0)), "delay_s": float(data.get("delay_s", 0))})
        elif path == "/decline_recurring":
            self.decline_recurring = bool(data["on"])
            self.decline_reason = str(data.get("reason", "insufficient_funds"))
        elif path == "/refunds_pending":
            self.refunds_pending = bool(data["on"])
        else:
            return error(404, "not_found", path)
        return 200, {"ok": True}


def serve(fake: Fake) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.dispatch("GET", b"")

        def do_POST(self) -> None:
            self.dispatch("POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def dispatch(self, method: str, body: bytes) -> None:
            url = urlsplit(self.path)
            delay = 0.0
            if url.path.startswith("/_control/"):
                try:
                    data = json.loads(body or b"{}")
                except ValueError:
                    data = {}
                answer = fake.control(method, url.path[len("/_control"):], parse_qs(url.query), data)
            elif url.path.startswith("/v3/"):
                answer, delay = fake.api(method, url.path[len("/v3"):], body, self.headers)
            else:
                answer = error(404, "not_found", "Not found")
            if delay:
                time.sleep(delay)
            status, payload = answer
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    server = serve(Fake())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}/v3", flush=True)
    sys.stdin.read()  # until the parent closes it or exits


if __name__ == "__main__":
    main()
