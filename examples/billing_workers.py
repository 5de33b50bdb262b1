"""The workers that run beside the FastAPI or Django service, on the same database:

    python billing_workers.py events                 # consume the outbox: print each event, then acknowledge it
    python billing_workers.py deliver URL            # POST the outbox to URL, signed (EVENTS_SECRET=whsec_...)
    python billing_workers.py reconcile              # re-check crypto payments with the chain (ETH_RPC_URL_<chain id>)

Each runs once with ``--once``, else every ``--every`` seconds. ``BILLING_DB`` and
``BILLING_TARIFFS`` are the service's.

An events consumer handles each event and acknowledges it only then: a consumer that
dies in between gets the event again (delivery is at least once), so a handler is
idempotent by ``event_id``. Here the handler is ``print``; a quota service would apply
``plan.changed.v1`` to its limits.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import billing_engine as be

Handler = Callable[[be.Event], None]


def consume(billing: be.Billing, handle: Handler, *, consumer: str = "events-worker", limit: int = 100) -> int:
    """Hands each event after ``consumer``'s cursor to ``handle``, in order, acknowledging
    each once handled; how many it handled."""
    handled = 0
    while events := billing.poll_events(consumer, limit=limit):
        for event in events:
            handle(event)
            billing.ack_events(consumer, event.event_id)
            handled += 1
    return handled


def rpc_reader(urls: Mapping[int, str]) -> Callable[[int, str], Optional[be.TxReceipt]]:
    """``reconcile_crypto``'s ``fetch``: a transaction's receipt from a node's JSON-RPC
    (``eth_getTransactionReceipt`` and ``eth_blockNumber``), one URL per chain id."""

    def call(chain_id: int, method: str, params: list[Any]) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        request = urllib.request.Request(urls[chain_id], data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def fetch(chain_id: int, tx_hash: str) -> Optional[be.TxReceipt]:
        receipt = call(chain_id, "eth_getTransactionReceipt", [tx_hash])
        if receipt is None:
            return None
        head = int(call(chain_id, "eth_blockNumber", []), 16)
        block = int(receipt["blockNumber"], 16)
        return be.TxReceipt(block, receipt.get("blockHash"), head - block + 1, receipt.get("status") == "0x0")

    return fetch


def rpc_urls_from_env(environ: Mapping[str, str]) -> Dict[int, str]:
    prefix = "ETH_RPC_URL_"
    return {int(name[len(prefix):]): url for name, url in environ.items() if name.startswith(prefix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job", choices=["events", "deliver", "reconcile"])
    parser.add_argument("url", nargs="?", help="deliver: the endpoint")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--every", type=float, default=10)
    args = parser.parse_args()
    tariffs = os.environ.get("BILLING_TARIFFS", str(Path(__file__).parent / "web_tariffs.toml"))
    billing = be.Billing.open(os.environ.get("BILLING_DB", "billing.sqlite3"), be.Catalog.from_toml_file(tariffs))
    while True:
        if args.job == "events":
            consume(billing, lambda event: print(json.dumps(event.to_dict()), flush=True))
        elif args.job == "deliver":
            print(billing.deliver_events(args.url, os.environ["EVENTS_SECRET"]).to_dict(), flush=True)
        else:
            print(billing.reconcile_crypto(rpc_reader(rpc_urls_from_env(os.environ))).to_dict(), flush=True)
        if args.once:
            return
        time.sleep(args.every)


if __name__ == "__main__":
    main()
