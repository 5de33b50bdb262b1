#!/usr/bin/env python3
"""The project's one fake chain indexer, shared by the Rust and the Python test suites: a
toy EVM chain per network, the notifications Alchemy's Address Activity webhook would
send about it, and the JSON-RPC a node answers about it. Real HTTP on 127.0.0.1;
Python's standard library only.

    python3 tests/fakes/indexer.py SIGNING_KEY   # prints its base URL, `http://127.0.0.1:PORT`

It runs until its standard input closes, so it ends with the test process that started it.

What it follows:
- Alchemy Notify, Address Activity (https://docs.alchemy.com/reference/address-activity-webhook):
  a notification is `{"webhookId", "id", "createdAt", "type": "ADDRESS_ACTIVITY",
  "event": {"network", "activity": [...]}}`; a token transfer's activity has `category:
  "token"`, `fromAddress`, `toAddress`, `blockNum` (hex), `hash`, `value`, `asset`,
  `rawContract {rawValue (32-byte hex), address, decimals}` and its `log {address, topics,
  data, blockNumber, transactionHash, transactionIndex, blockHash, logIndex, removed}`;
  `removed: true` when a reorg dropped it. `X-Alchemy-Signature` is the hex HMAC-SHA256 of
  the raw body with the webhook's signing key.
- Ethereum JSON-RPC (https://ethereum.org/en/developers/docs/apis/json-rpc/):
  `eth_blockNumber`, and `eth_getTransactionReceipt` (`null` for a transaction the chain
  does not have, else `blockNumber`, `blockHash`, `status` `0x1` or `0x0`).

The control API under `/_control` plays the payer and the chain; each call that makes a
notification returns it as `{"body": "<raw JSON text>", "headers": {...}}`, for the test
to deliver (in any order, any number of times):
- `POST /_control/transfer {"chain_id", "token", "to", "amount", "decimals", "failed"}`: a
  transfer mined in a new block; returns `{"tx_hash", "log_index", "block_number",
  "notification"}`.
- `POST /_control/mine {"chain_id", "blocks"}`: empty blocks; returns `{"head"}`.
- `POST /_control/reorg {"tx_hash"}`: the transfer's block is dropped; returns the
  notification with `removed: true`.
- `POST /_control/notification {"tx_hash", "forged"}`: the transfer's notification again;
  `forged` signs it with another key.

JSON-RPC: `POST /rpc/<chain_id>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NETWORKS = {1: "ETH_MAINNET", 56: "BNB_MAINNET", 137: "MATIC_MAINNET", 11155111: "ETH_SEPOLIA"}
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def word(value: int) -> str:
    return "0x" + format(value, "064x")


class Chain:
    def __init__(self) -> None:
        self.head = 1000
        self.block_hashes: dict[int, str] = {}

    def new_block(self) -> int:
        self.head += 1
        self.block_hashes[self.head] = "0x" + secrets.token_hex(32)
        return self.head


class Indexer:
    def __init__(self, signing_key: str) -> None:
        self.key = signing_key.encode()
        self.lock = threading.Lock()
        self.chains: dict[int, Chain] = {}
        self.transfers: dict[str, dict[str, Any]] = {}

    def chain(self, chain_id: int) -> Chain:
        return self.chains.setdefault(chain_id, Chain())

    def notification(self, transfer: dict[str, Any], forged: bool = False) -> dict[str, Any]:
        chain_id = transfer["chain_id"]
        activity = {
            "blockNum": hex(transfer["block"]),
            "hash": transfer["tx_hash"],
            "fromAddress": transfer["from"],
            "toAddress": transfer["to"],
            "value": int(transfer["amount"]) / 10 ** transfer["decimals"],
            "erc721TokenId": None,
            "erc1155Metadata": None,
            "asset": "USDT",
            "category": "token",
            "rawContract": {"rawValue": word(int(transfer["amount"])), "address": transfer["token"],
                            "decimals": transfer["decimals"]},
            "log": {
                "address": transfer["token"],
                "topics": [TRANSFER_TOPIC, word(int(transfer["from"], 16)), word(int(transfer["to"], 16))],
                "data": word(int(transfer["amount"])),
                "blockNumber": hex(transfer["block"]),
                "transactionHash": transfer["tx_hash"],
                "transactionIndex": "0x0",
                "blockHash": transfer["block_hash"],
                "logIndex": hex(transfer["log_index"]),
                "removed": transfer["removed"],
            },
        }
        body = json.dumps({
            "webhookId": "wh_fakeindexer",
            "id": "whevt_" + secrets.token_hex(8),
            "createdAt": "2026-01-01T12:00:00.000Z",
            "type": "ADDRESS_ACTIVITY",
            "event": {"network": NETWORKS[chain_id], "activity": [activity]},
        })
        key = b"not-the-key" if forged else self.key
        signature = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
        return {"body": body, "headers": {"X-Alchemy-Signature": signature}}

    def control(self, path: str, data: dict[str, Any]) -> Any:
        with self.lock:
            if path == "/transfer":
                chain = self.chain(data["chain_id"])
                block = chain.new_block()
                transfer = {
                    "chain_id": data["chain_id"],
                    "tx_hash": "0x" + secrets.token_hex(32),
                    "log_index": data.get("log_index", 0),
                    "block": block,
                    "block_hash": chain.block_hashes[block],
                    "from": data.get("from", "0x" + "ab" * 20),
                    "to": data["to"],
                    "token": data["token"],
                    "amount": str(data["amount"]),
                    "decimals": data.get("decimals", 6),
                    "failed": bool(data.get("failed", False)),
                    "removed": False,
                }
                self.transfers[transfer["tx_hash"]] = transfer
                return {"tx_hash": transfer["tx_hash"], "log_index": transfer["log_index"], "block_number": block,
                        "notification": self.notification(transfer)}
            if path == "/mine":
                chain = self.chain(data["chain_id"])
                for _ in range(int(data["blocks"])):
                    chain.new_block()
                return {"head": chain.head}
            if path == "/reorg":
                transfer = self.transfers[data["tx_hash"]]
                transfer["removed"] = True
                return self.notification(transfer)
            if path == "/notification":
                return self.notification(self.transfers[data["tx_hash"]], bool(data.get("forged", False)))
        return None

    def rpc(self, chain_id: int, request: dict[str, Any]) -> Any:
        with self.lock:
            chain = self.chain(chain_id)
            method, params = request.get("method"), request.get("params", [])
            if method == "eth_blockNumber":
                return hex(chain.head)
            if method == "eth_getTransactionReceipt":
                transfer = self.transfers.get(params[0])
                if transfer is None or transfer["removed"] or transfer["chain_id"] != chain_id:
                    return None
                return {"transactionHash": transfer["tx_hash"], "blockNumber": hex(transfer["block"]),
                        "blockHash": transfer["block_hash"], "status": "0x0" if transfer["failed"] else "0x1"}
            raise KeyError(method)


def serve(indexer: Indexer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.loads(body or b"{}")
            if self.path.startswith("/_control/"):
                answer = indexer.control(self.path[len("/_control"):], data)
                status, payload = (404, {}) if answer is None else (200, answer)
            elif self.path.startswith("/rpc/"):
                try:
                    result = indexer.rpc(int(self.path[len("/rpc/"):]), data)
                    status, payload = 200, {"jsonrpc": "2.0", "id": data.get("id"), "result": result}
                except (KeyError, IndexError, ValueError):
                    status, payload = 200, {"jsonrpc": "2.0", "id": data.get("id"),
                                            "error": {"code": -32601, "message": "method not found"}}
            else:
                status, payload = 404, {}
            out = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that closed its kept-alive connection

    return Server(("127.0.0.1", 0), Handler)


def main() -> None:
    server = serve(Indexer(sys.argv[1]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes it or exits


if __name__ == "__main__":
    main()
