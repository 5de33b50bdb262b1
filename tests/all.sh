#!/usr/bin/env bash
# Every test of the project, as the README's second command and CI run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# The engine: unit, scenario, catalog, race (threads and processes), property tests;
# the benches once each in test mode; then the doc examples, and the docs build without
# broken links.
cargo test --workspace --all-targets
cargo test --workspace --doc
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

# The README's demo still runs and its ledger still proves every balance.
cargo run -q --example quickstart > /dev/null
echo "quickstart demo: ok"
