#!/usr/bin/env bash
# Each fuzz target (fuzz/fuzz_targets): its seeds (fuzz/seeds/<target>) replayed, then
# coverage-guided fuzzing (libFuzzer, through cargo fuzz on the nightly toolchain) for
# N seconds, 15 by default. A panic, a wrong error or a changed table fails the run and
# leaves the input in fuzz/artifacts/<target>/.
#   bash fuzz/run.sh          # what tests/all.sh runs
#   bash fuzz/run.sh 600      # ten minutes a target
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-15}
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
for target in catalog input notification calls; do
    corpus=$(mktemp -d)
    log=$(mktemp)
    if ! cargo +nightly fuzz run -s none "$target" "$corpus" "seeds/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        grep -E -A12 "panicked|ERROR|SUMMARY|error" "$log" | head -60 >&2
        echo "fuzz target $target failed (the input is in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    echo "fuzz target $target: ok, $(grep -E '^Done' "$log")"
    rm -rf "$corpus" "$log"
done
