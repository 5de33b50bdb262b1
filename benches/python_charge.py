#!/usr/bin/env python3
"""`charge` through the Python binding against the same charge written in plain Python on
the standard `sqlite3` module, in one run, reporting the ratios; and what the binding adds
to the Rust call it wraps.

    python benches/python_charge.py [--charges N] [--rounds R]

It prints, each measured in the same run:
- the binding against the peer single-threaded, on a file at FULL and NORMAL and in memory
  (goal at NORMAL: 1.6x or better);
- 8 threads, each charging its own user, against 8 peer threads with a connection each,
  on a file at NORMAL (goal: 4x or better): the binding releases the GIL and the threads
  share commits;
- the binding's own cost: `charge` called from Python against the same charges looped in
  Rust (`_charge_loop`), in memory (goal: at most 1.2x).

Both sides run on a file in WAL mode with the same `synchronous` setting and busy
timeout, one `BEGIN IMMEDIATE` transaction per charge, and the same work: read the
account, roll its free-tier period and day forward, look up the idempotency key, pick the
source (free tier within its daily limit, then credits), fingerprint the request,
append a ledger row with the balance after, update the account. The rounds alternate
between the two so that a noisy neighbour slows both alike; the best round of each counts.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Tuple

import billing_engine as be

ROOT = Path(__file__).resolve().parents[1]
TARIFFS = ROOT / "examples" / "tariffs.toml"
TZ = timezone(timedelta(hours=3))
COST = Decimal("1")  # `assistant`
FREE_OPS, FREE_PERIOD_DAYS, DAILY_LIMIT = 5, 30, 3


class NotEnoughCredits(Exception):
    pass


class PlainPythonBilling:
    """The peer: the charge a team writes by hand on `sqlite3`, with the same rules and
    guarantees (idempotent per user and key, one write transaction, an append-only
    ledger with the balance after each entry)."""

    SCHEMA = """
        CREATE TABLE IF NOT EXISTS accounts (
            user_id TEXT PRIMARY KEY, credits TEXT NOT NULL,
            free_anchor TEXT NOT NULL, free_period INTEGER NOT NULL, free_used INTEGER NOT NULL,
            day TEXT NOT NULL, used_today INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS ledger (
            id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL, source TEXT,
            operation TEXT, credits_delta TEXT NOT NULL, credits_balance_after TEXT NOT NULL,
            ops_delta INTEGER NOT NULL, idempotency_key TEXT, request_hash TEXT,
            metadata TEXT, created_at TEXT NOT NULL);
        CREATE UNIQUE INDEX IF NOT EXISTS ledger_key ON ledger (user_id, idempotency_key);
        CREATE INDEX IF NOT EXISTS ledger_user ON ledger (user_id, id);
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        self.db.executescript(self.SCHEMA)

    def register_user(self, user_id: str, credits: Decimal, now: datetime) -> None:
        day = now.astimezone(TZ).date().isoformat()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO accounts VALUES (?, ?, ?, 0, 0, ?, 0)", (user_id, str(credits), now.isoformat(), day)
            )

    def credits(self, user_id: str) -> Decimal:
        return Decimal(self.db.execute("SELECT credits FROM accounts WHERE user_id = ?", (user_id,)).fetchone()[0])

    def charge(self, user_id: str, operation: str, key: str, now: datetime) -> Tuple[int, str, Decimal]:
        request_hash = hashlib.sha256(json.dumps([user_id, operation, key]).encode()).hexdigest()
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT id, request_hash, source, credits_balance_after FROM ledger WHERE user_id = ? AND idempotency_key = ?",
                (user_id, key),
            ).fetchone()
            if row is not None:
                db.execute("ROLLBACK")
                if row[1] != request_hash:
                    raise ValueError("IDEMPOTENCY_CONFLICT")
                return row[0], row[2], Decimal(row[3])
            credits_text, anchor, period, free_used, day, used_today = db.execute(
                "SELECT credits, free_anchor, free_period, free_used, day, used_today FROM accounts WHERE user_id = ?",
                (user_id,),
            ).fetchone()
            credits = Decimal(credits_text)
            current_period = (now - datetime.fromisoformat(anchor)).days // FREE_PERIOD_DAYS
            if current_period != period:
                period, free_used = current_period, 0
            today = now.astimezone(TZ).date().isoformat()
            if day != today:
                day, used_today = today, 0
            if free_used < FREE_OPS and used_today < DAILY_LIMIT:
                source, spent, free_used, used_today, ops = "freemium", Decimal(0), free_used + 1, used_today + 1, 1
            elif credits >= COST:
                source, spent, ops = "credits", COST, 0
            else:
                raise NotEnoughCredits(f"{COST} required, {credits} available")
            credits -= spent
            cursor = db.execute(
                "INSERT INTO ledger (user_id, kind, source, operation, credits_delta, credits_balance_after, ops_delta,"
                " idempotency_key, request_hash, metadata, created_at) VALUES (?, 'charge', ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
                (user_id, source, operation, str(-spent), str(credits), ops, key, request_hash, now.isoformat()),
            )
            db.execute(
                "UPDATE accounts SET credits = ?, free_period = ?, free_used = ?, day = ?, used_today = ? WHERE user_id = ?",
                (str(credits), period, free_used, day, used_today, user_id),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        charge_id = cursor.lastrowid
        assert charge_id is not None
        return charge_id, source, credits


def timed(run: Callable[[int], None], charges: int) -> float:
    start = time.perf_counter()
    run(charges)
    return charges / (time.perf_counter() - start)


# (label, synchronous, on a file): the default durability, the faster one, and no disk
# at all, which shows what each side's own code costs once SQLite's I/O is out of the way.
SETUPS = [
    ("file, synchronous=FULL (default)", "FULL", True),
    ("file, synchronous=NORMAL", "NORMAL", True),
    (":memory: (no disk I/O)", "NORMAL", False),
]


def measure(charges: int, rounds: int, synchronous: str, on_file: bool, tmp: str) -> Tuple[float, float]:
    """The best throughput of each side over alternating rounds, in charges per second."""
    best_engine = best_peer = 0.0
    for round_ in range(rounds):
        engine_path = str(Path(tmp, f"engine-{round_}.sqlite3")) if on_file else ":memory:"
        peer_path = str(Path(tmp, f"peer-{round_}.sqlite3")) if on_file else ":memory:"
        engine = be.Billing.open(engine_path, be.Catalog.from_toml_file(TARIFFS), durability=synchronous.lower())
        engine.register_user("u", free_trial=False)
        engine.grant_credits("u", 10**9, idempotency_key="seed", reason="bench")
        peer = PlainPythonBilling(peer_path, synchronous)
        peer.register_user("u", Decimal(10**9), datetime.now(timezone.utc))

        def run_engine(n: int) -> None:
            for i in range(n):
                engine.charge("u", "assistant", idempotency_key=f"k{i}")

        def run_peer(n: int) -> None:
            for i in range(n):
                peer.charge("u", "assistant", f"k{i}", datetime.now(timezone.utc))

        best_engine = max(best_engine, timed(run_engine, charges))
        best_peer = max(best_peer, timed(run_peer, charges))
        # Both did the same work: 3 free ops today, the rest paid with credits.
        assert engine.state("u").credits == Decimal(10**9) - (charges - DAILY_LIMIT)
        assert peer.credits("u") == Decimal(10**9) - (charges - DAILY_LIMIT)
    return best_engine, best_peer


THREADS = 8


def measure_threads(charges: int, rounds: int, tmp: str) -> Tuple[float, float]:
    """The best aggregate throughput of 8 threads, each charging its own user, on a file at
    NORMAL: the binding (one Billing shared by the threads) and the peer (one connection
    per thread, as threads of a plain-Python service would have)."""
    best_engine = best_peer = 0.0
    users = [f"u{n}" for n in range(THREADS)]
    for round_ in range(rounds):
        engine = be.Billing.open(str(Path(tmp, f"t-engine-{round_}.sqlite3")), be.Catalog.from_toml_file(TARIFFS),
                                 durability="normal")
        peer_path = str(Path(tmp, f"t-peer-{round_}.sqlite3"))
        peers = [PlainPythonBilling(peer_path, "NORMAL") for _ in users]
        for user in users:
            engine.register_user(user, free_trial=False)
            engine.grant_credits(user, 10**9, idempotency_key="seed", reason="bench")
            peers[0].register_user(user, Decimal(10**9), datetime.now(timezone.utc))

        def engine_worker(user: str) -> None:
            for i in range(charges):
                engine.charge(user, "assistant", idempotency_key=f"k{i}")

        def peer_worker(n: int) -> None:
            for i in range(charges):
                peers[n].charge(users[n], "assistant", f"k{i}", datetime.now(timezone.utc))

        best_engine = max(best_engine, timed_threads([functools.partial(engine_worker, u) for u in users], charges))
        best_peer = max(best_peer, timed_threads([functools.partial(peer_worker, n) for n in range(THREADS)], charges))
        assert all(engine.state(u).credits == Decimal(10**9) - (charges - DAILY_LIMIT) for u in users)
        assert all(peers[0].credits(u) == Decimal(10**9) - (charges - DAILY_LIMIT) for u in users)
    return best_engine, best_peer


def timed_threads(workers: list[Callable[[], None]], charges: int) -> float:
    threads = [threading.Thread(target=work) for work in workers]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return charges * len(workers) / (time.perf_counter() - start)


def measure_binding_cost(charges: int, rounds: int) -> Tuple[float, float]:
    """The best throughput of `charge` called from Python, and of the same charges looped in
    Rust inside the extension, in memory."""
    best_python = best_rust = 0.0
    for round_ in range(rounds):
        engine = be.Billing.open(":memory:", be.Catalog.from_toml_file(TARIFFS), durability="normal")
        for user in ("py", "rs"):
            engine.register_user(user, free_trial=False)
            engine.grant_credits(user, 10**9, idempotency_key="seed", reason="bench")

        def run_python(n: int) -> None:
            for i in range(n):
                engine.charge("py", "assistant", idempotency_key=f"k{round_}-{i}")

        def run_rust(n: int) -> None:
            engine._native._charge_loop("rs", "assistant", f"k{round_}-", n)

        best_python = max(best_python, timed(run_python, charges))
        best_rust = max(best_rust, timed(run_rust, charges))
    return best_python, best_rust


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--charges", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"charge throughput, {args.charges} charges x {args.rounds} rounds, best round of each (Python {sys.version.split()[0]})")
    print(f"  {'setup':<34} {'binding':>10} {'sqlite3':>10}   ratio")
    for label, synchronous, on_file in SETUPS:
        with tempfile.TemporaryDirectory() as tmp:
            engine, peer = measure(args.charges, args.rounds, synchronous, on_file, tmp)
        goal = "  (goal >= 1.6x)" if synchronous == "NORMAL" and on_file else ""
        print(f"  {label:<34} {engine:8.0f}/s {peer:8.0f}/s   {engine / peer:.2f}x{goal}")
    with tempfile.TemporaryDirectory() as tmp:
        engine, peer = measure_threads(args.charges // THREADS * 2, args.rounds, tmp)
    label = f"{THREADS} threads, file, NORMAL"
    print(f"  {label:<34} {engine:8.0f}/s {peer:8.0f}/s   {engine / peer:.2f}x  (goal >= 4x)")
    python, rust = measure_binding_cost(args.charges, args.rounds)
    print(f"\n  binding cost, :memory:: from Python {python:.0f}/s, looped in Rust {rust:.0f}/s: "
          f"Python takes {rust / python:.2f}x the Rust time  (goal <= 1.20x)")


if __name__ == "__main__":
    main()
