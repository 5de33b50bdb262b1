#!/usr/bin/env python3
"""Runs the charge benchmarks once and prints the engine's throughput as a ratio of
the bare-SQLite floor's (goal: 0.8x or better), and how charge cost changes as the
ledger grows; then the PostgreSQL benchmark (benches/postgres.rs): the engine against a
bare `postgres` floor, with 1, 2, 4 and 8 clients on different users and on one user.
Ratios, not absolute times: the machines are shared and noisy.

    python3 benches/compare.py                 # run the benches, then report
    python3 benches/compare.py --report        # report the last SQLite run only
    python3 benches/compare.py --no-postgres   # SQLite only
    python3 benches/compare.py --long          # and the ledger grown to 10M rows (minutes)

It prints, besides: `charge_batch` of 1,000 against the floor doing 100 and 1,000 charges per
transaction (goal: 250k charges/s), and 8 threads at FULL with shared commits against the
same 8 threads with one commit each (goal: 4x). Ledger growth: goal at most 1.15x the 1k cost.
Metering: `check_usage` and `track_usage` against the floor's charge, `track_usage_batch`
of 1,000 records (goal: 200k records/s), and `check_usage` with 1k and 10M usage events
stored (goal: flat). The operators' `overview` at 1M users against the bare SQL sum of their
MRR (benches/overview.rs; goal: under a second).

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
    long = "--long" in sys.argv
    if "--report" not in sys.argv:
        env = dict(os.environ, BILLING_BENCH_LONG="1") if long else None
        subprocess.run(
            ["cargo", "bench", "-p", "billing-engine", "--bench", "charge", "--", "--noplot"],
            cwd=ROOT,
            check=True,
            env=env,
        )
    print("\ncharge throughput, engine / bare rusqlite floor (same pragmas, same run):")
    for group in ("charge_full", "charge_normal"):
        engine, floor = mean_ns(group, "engine"), mean_ns(group, "bare_sqlite")
        print(f"  {group:<14} engine {engine / 1000:8.1f} us  floor {floor / 1000:8.1f} us  ratio {floor / engine:.2f}x  (goal >= 0.80x)")
    print("\ncharge_batch of 1,000 at synchronous=NORMAL (charges/s):")
    engine = 1000 / (mean_ns("charge_batch", "engine_1000") / 1e9)
    for floor_name in ("floor_100", "floor_1000", "floor_on_engine_schema_1000"):
        floor = 1000 / (mean_ns("charge_batch", floor_name) / 1e9)
        print(f"  engine {engine:9,.0f}/s  {floor_name:<27} {floor:9,.0f}/s  ratio {engine / floor:.2f}x  (goal: 250,000/s)")
    shared, alone = mean_ns("threads_full", "shared_commits"), mean_ns("threads_full", "one_commit_each")
    print("\n8 threads charging 8 users at synchronous=FULL, one handle (per charge):")
    print(f"  shared commits {shared / 1000:8.1f} us  one commit each {alone / 1000:8.1f} us  "
          f"ratio {alone / shared:.2f}x  (goal >= 4x)")
    print("\ncharge cost as the ledger grows (engine, synchronous=NORMAL):")
    base = mean_ns("ledger_growth", "engine", "1000")
    for rows in ("1000", "100000", "1000000", "10000000"):
        if rows == "10000000" and not (CRITERION / "ledger_growth" / "engine" / rows).exists():
            continue
        cost = mean_ns("ledger_growth", "engine", rows)
        print(f"  {int(rows):>10,} rows  {cost / 1000:8.1f} us  {cost / base:.2f}x of 1k  (goal <= 1.15x)")
    print("\nmetered usage at synchronous=NORMAL, against the floor's charge in the same group:")
    floor = mean_ns("metering", "floor_charge")
    for name in ("check_usage", "track_usage"):
        cost = mean_ns("metering", name)
        print(f"  {name:<12} {cost / 1000:8.1f} us  floor charge {floor / 1000:8.1f} us  ratio {floor / cost:.2f}x")
    batch = 1000 / (mean_ns("usage_batch", "track_usage_batch_1000") / 1e9)
    print(f"  track_usage_batch of 1,000: {batch:9,.0f} records/s  (goal: 200,000/s)")
    print("\ncheck_usage cost as usage history grows:")
    base = mean_ns("check_growth", "check_usage", "1000")
    for events in ("1000", "10000000"):
        cost = mean_ns("check_growth", "check_usage", events)
        print(f"  {int(events):>10,} events  {cost / 1000:8.1f} us  {cost / base:.2f}x of 1k  (goal: flat)")
    if "--report" not in sys.argv:
        subprocess.run(
            ["cargo", "bench", "-p", "billing-engine", "--bench", "overview", "--", "--noplot"], cwd=ROOT, check=True
        )
    if (CRITERION / "overview" / "engine").exists():
        engine, floor = mean_ns("overview", "engine"), mean_ns("overview", "floor_mrr_sum")
        print("\noverview at 1M users (one period and one payment each, half of them in force):")
        print(f"  overview {engine / 1e6:8.1f} ms  floor (the MRR sum alone) {floor / 1e6:8.1f} ms  "
              f"ratio {floor / engine:.2f}x  (goal: under a second)")
    if "--report" not in sys.argv and "--no-postgres" not in sys.argv:
        print("\ncharge on PostgreSQL (charges/s; engine and floor in the same run):")
        bench = "cargo bench -q -p billing-engine --features postgres --bench postgres"
        if not os.environ.get("BILLING_TEST_POSTGRES"):
            bench = f"set -e; source tests/postgres_cluster.sh >/dev/null; {bench}"
        subprocess.run(["bash", "-c", bench], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
