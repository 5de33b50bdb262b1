#!/usr/bin/env python3
"""Runs the charge benchmarks once and prints the engine's throughput as a ratio of
the bare-SQLite floor's (goal: 0.8x or better), and how charge cost changes as the
ledger grows. Ratios, not absolute times: the machines are shared and noisy.

    python3 benches/compare.py            # run the benches, then report
    python3 benches/compare.py --report   # report the last run only
"""
import json
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


if __name__ == "__main__":
    main()
