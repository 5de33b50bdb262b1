"""The project's one fake chain indexer (``tests/fakes/indexer.py``, shared with the Rust
suite), started as a process on 127.0.0.1: it mines transfers, hands back the signed
Alchemy notifications they make, and answers a node's JSON-RPC about its chains."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import billing_engine as be

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "fakes" / "indexer.py"
SIGNING_KEY = "whsec_fake_indexer_signing_key"
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
GATEWAY = "0x7a16ff8270133f063aab6c9977183d9e72835428"  # the example tariffs' gateway

Notification = Tuple[bytes, Dict[str, str]]


class FakeIndexer:
    def __init__(self) -> None:
        # Standard input stays open: the fake exits when it closes.
        self._process = subprocess.Popen(
            [sys.executable, str(SCRIPT), SIGNING_KEY], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def close(self) -> None:
        self._process.kill()
        self._process.wait()

    def _post(self, path: str, body: Dict[str, Any]) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    @staticmethod
    def _notification(value: Dict[str, Any]) -> Notification:
        return value["body"].encode(), dict(value["headers"])

    def pay(self, amount: str, *, failed: bool = False) -> Tuple[str, Notification]:
        """A USDT transfer of ``amount`` base units to the gateway on Ethereum, mined in a
        new block: its transaction hash and its notification."""
        mined = self._post("/_control/transfer",
                           {"chain_id": 1, "token": USDT, "to": GATEWAY, "amount": amount, "failed": failed})
        return mined["tx_hash"], self._notification(mined["notification"])

    def mine(self, blocks: int) -> int:
        return int(self._post("/_control/mine", {"chain_id": 1, "blocks": blocks})["head"])

    def reorg(self, tx_hash: str) -> Notification:
        return self._notification(self._post("/_control/reorg", {"tx_hash": tx_hash}))

    def forged(self, tx_hash: str) -> Notification:
        return self._notification(self._post("/_control/notification", {"tx_hash": tx_hash, "forged": True}))

    def _rpc(self, chain_id: int, method: str, params: list[Any]) -> Any:
        answer = self._post(f"/rpc/{chain_id}", {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        return answer["result"]

    def receipt(self, chain_id: int, tx_hash: str) -> Optional[be.TxReceipt]:
        """What a host's ``reconcile_crypto`` callback reads from its node."""
        head = int(self._rpc(chain_id, "eth_blockNumber", []), 16)
        receipt = self._rpc(chain_id, "eth_getTransactionReceipt", [tx_hash])
        if receipt is None:
            return None
        block = int(receipt["blockNumber"], 16)
        return be.TxReceipt(block, receipt["blockHash"], head - block + 1, receipt["status"] == "0x0")
