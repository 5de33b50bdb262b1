#!/usr/bin/env python3
"""The project's one fake receiver of delivered events (a consumer's webhook endpoint),
shared by the Rust and the Python test suites. Real HTTP on 127.0.0.1; Python's standard
library only.

    python3 tests/fakes/event_receiver.py whsec_...   # prints its URL, `http://127.0.0.1:PORT/hooks`

It runs until its standard input closes, so it ends with the test process that started it.

It checks every request the way the Standard Webhooks specification tells a receiver to
(https://www.standardwebhooks.com/, `spec/standard-webhooks.md`), written here apart from
the engine's signer: the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers
are present; one of the space-separated `v1,<base64>` signatures is the HMAC-SHA256, keyed
by the base64-decoded part of the secret after `whsec_`, of `<id>.<timestamp>.<raw body>`;
the body is a JSON object. A request that fails a check is answered 400 and recorded with
`"verified": false`.

The control API under `/_control`:
- `POST /_control/answers {"answers": [{"status": 503, "retry_after": "120"}, ...]}`: the
  next requests get these answers in turn (then 204 again), verified or not.
- `GET /_control/attempts`: every request so far, in order:
  `{"id", "timestamp", "verified", "status", "event"}`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, secret: str) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))
        self.lock = threading.Lock()
        self.answers: list[dict[str, Any]] = []
        self.attempts: list[dict[str, Any]] = []

    def verified(self, headers: Any, body: bytes) -> bool:
        msg_id = headers.get("webhook-id")
        timestamp = headers.get("webhook-timestamp")
        signatures = headers.get("webhook-signature")
        if not (msg_id and timestamp and signatures and timestamp.isdigit()):
            return False
        signed = f"{msg_id}.{timestamp}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, signed, hashlib.sha256).digest()).decode()
        offered = [s.split(",", 1)[1] for s in signatures.split(" ") if s.startswith("v1,")]
        return any(hmac.compare_digest(expected, s) for s in offered)

    def receive(self, headers: Any, body: bytes) -> tuple[int, dict[str, str]]:
        verified = self.verified(headers, body)
        try:
            event = json.loads(body)
        except ValueError:
            event, verified = None, False
        with self.lock:
            answer = self.answers.pop(0) if self.answers else {"status": 204}
            status = answer["status"] if verified else 400
            self.attempts.append(
                {
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "verified": verified,
                    "status": status,
                    "event": event,
                }
            )
        extra = {"Retry-After": answer["retry_after"]} if "retry_after" in answer else {}
        return status, extra

    def control(self, method: str, path: str, data: dict[str, Any]) -> Any:
        with self.lock:
            if method == "POST" and path == "/answers":
                self.answers.extend(data["answers"])
                return {}
            if method == "GET" and path == "/attempts":
                return self.attempts
        return None


def serve(receiver: Receiver) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.dispatch("GET", b"")

        def do_POST(self) -> None:
            self.dispatch("POST", self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def dispatch(self, method: str, body: bytes) -> None:
            extra: dict[str, str] = {}
            if self.path.startswith("/_control/"):
                answer = receiver.control(method, self.path[len("/_control"):], json.loads(body or b"{}"))
                status, payload = (404, {}) if answer is None else (200, answer)
            elif method == "POST" and self.path == "/hooks":
                (status, extra), payload = receiver.receive(self.headers, body), None
            else:
                status, payload = 404, {}
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that closed its kept-alive connection

    return Server(("127.0.0.1", 0), Handler)


def main() -> None:
    server = serve(Receiver(sys.argv[1]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}/hooks", flush=True)
    sys.stdin.read()  # until the parent closes it or exits


if __name__ == "__main__":
    main()
