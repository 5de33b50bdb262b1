#!/usr/bin/env python3
"""Runs the charge benchmarks once and prints the engine's throughput as a ratio of
the bare-SQLite floor's (goal: 0.8x or better), and how charge cost changes as the
ledger grows; then the PostgreSQL benchmark (benches/postgres.rs): the engine against a
bare `postgres` floor, with 1, 2, 4 and 8 clients on different users and on one user.
Ratios, not absolute times: the machines are shared and noisy.

    python3 benches/compare.py                 # run the benches, then report
    python3 benches/compare.py --report        # report the last SQLite run only
    python3 benches/compare.py --no-postgres   # SQLite only

The PostgreSQL benchmark uses the server at BILLING_TEST_POSTGRES, or starts a throwaway
cluster with tests/postgres_cluster.sh.
"""
import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"


def mean_ns(*parts):
    path = CRITERION.joinpath(*parts, "new", "estimates.json")
    return json.loads(path.read_text())["mean"]["point_estimate"]


def main():
    if "--report" not in sys.argv:
        subprocess.run(
            ["cargo", "bench", "-p", "billing-engine", "--bench", "charge", "--", "--noplot"],
            cwd=ROOT,
            check=True,
        )
    print("\ncharge throughput, engine / bare rusqlite floor (same pragmas, same run):")
    for group in ("charge_full", "charge_normal"):
        engine, floor = mean_ns(group, "engine"), mean_ns(group, "bare_sqlite")
        print(f"  {group:<14} engine {engine / 1000:8.1f} us  floor {floor / 1000:8.1f} us  ratio {floor / engine:.2f}x  (goal >= 0.80x)")
    print("\ncharge cost as the ledger grows (engine, synchronous=NORMAL):")
    base = mean_ns("ledger_growth", "engine", "1000")
    for rows in ("1000", "100000", "1000000"):
        cost = mean_ns("ledger_growth", "engine", rows)
        print(f"  {int(rows):>9,} rows  {cost / 1000:8.1f} us  {cost / base:.2f}x of 1k")
    if "--report" not in sys.argv and "--no-postgres" not in sys.argv:
        print("\ncharge on PostgreSQL (charges/s; engine and floor in the same run):")
        bench = "cargo bench -q -p billing-engine --features postgres --bench postgres"
        if not os.environ.get("BILLING_TEST_POSTGRES"):
            bench = f"set -e; source tests/postgres_cluster.sh >/dev/null; {bench}"
        subprocess.run(["bash", "-c", bench], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
