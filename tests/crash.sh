#!/usr/bin/env bash
# A long crash run (tests/crash.rs): workers killed at random for N minutes, then the
# ledger checked against what they logged.
#   bash tests/crash.sh --minutes 10              # on a SQLite file
#   bash tests/crash.sh --minutes 10 --postgres   # on a throwaway PostgreSQL cluster
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=1 store=sqlite
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --postgres) store=postgres; shift ;;
        *) echo "usage: tests/crash.sh --minutes N [--postgres]" >&2; exit 2 ;;
    esac
done
if [ "$store" = postgres ]; then
    source tests/postgres_cluster.sh
fi
BILLING_TEST_STORE=$store BILLING_CRASH_SECONDS=$((minutes * 60)) \
    cargo test --release -p billing-engine --features postgres --test crash -- --nocapture workers_killed
