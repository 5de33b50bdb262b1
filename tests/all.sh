#!/usr/bin/env bash
# Every test of the project, as the README's second command and CI run it.
set -euo pipefail
cd "$(dirname "$0")/.."

# A throwaway PostgreSQL cluster for this run (stopped when it ends): BILLING_TEST_POSTGRES.
source tests/postgres_cluster.sh

# The engine: unit, scenario, catalog, race (threads and processes), property tests, and
# the PostgreSQL store's own; the benches once each in test mode; then the doc examples,
# and the docs build without broken links.
cargo test --workspace --all-targets --features billing-engine/postgres
cargo test -p billing-engine --doc --features postgres
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet --features billing-engine/postgres

# The conformance suite again on the other stores, through the same test code: SQLite's
# `:memory:` and PostgreSQL (a schema of its own per test).
CONFORMANCE="--test scenarios --test race --test payments --test yookassa_shop --test model --test plan_cards --test batch --test metering --test lots --test events --test audit --test crypto --test overview"
BILLING_TEST_STORE=memory cargo test -q -p billing-engine --features postgres $CONFORMANCE
BILLING_TEST_STORE=postgres cargo test -q -p billing-engine --features postgres $CONFORMANCE
echo "conformance suite: sqlite file, :memory:, postgresql"
# The crash run (30 s of workers killed at random; on SQLite it ran above) on PostgreSQL.
BILLING_TEST_STORE=postgres cargo test -q -p billing-engine --features postgres --test crash

# Coverage-guided fuzzing (cargo fuzz, nightly): each target's seeds replayed, then 10 s
# of fuzzing; `bash fuzz/run.sh 600` fuzzes longer.
bash fuzz/run.sh 10

# The README's demo still runs and its ledger still proves every balance.
cargo run -q --example quickstart > /dev/null
echo "quickstart demo: ok"

# The Python binding, installed the way users install it (`pip install ./bindings-python`,
# maturin as the PEP 517 backend) into a venv of its own; then its tests, the type check
# of the package and its stubs, and the FastAPI and Django examples.
# The operators' page is tested in a real browser: Debian's chromium, headless, through
# Debian's chromedriver (no browser download), installed when missing.
command -v chromium >/dev/null && command -v chromedriver >/dev/null || install_debian_packages chromium chromium-driver
command -v chromium >/dev/null && command -v chromedriver >/dev/null \
    || { echo "chromium and chromedriver are needed for the browser test and could not be installed" >&2; exit 1; }
VENV=target/python-venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bindings-python/requirements-test.txt
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings-python
"$VENV/bin/python" -m mypy --strict bindings-python/python/billing_engine bindings-python/tests examples/fastapi examples/billing_workers.py benches/python_charge.py
for store in sqlite postgres; do
    export BILLING_TEST_STORE=$store
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider bindings-python/tests
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider examples/fastapi
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider examples/django
done
unset BILLING_TEST_STORE
# The benchmark script still runs (a short run; its numbers come from a full one).
"$VENV/bin/python" benches/python_charge.py --charges 50 --rounds 1 > /dev/null
# The comparison script reports from criterion's files, so CI cannot run it in full: it
# must at least compile (a broken string once reached main).
"$VENV/bin/python" -m py_compile benches/compare.py
echo "python benchmark scripts: ok"

# The UniFFI binding: Kotlin and Swift sources generated from the built library (the
# engine's records come from its own `billing_engine` namespace: in Kotlin the package
# billing.engine.core, in Swift a second file of the same module); the Kotlin run on the JVM by
# Maven (JUnit, JNA) against the real cdylib; the Swift checked for its API (compiling it
# needs a Swift toolchain, which CI lacks).
bash bindings-uniffi/generate.sh target/uniffi
SWIFT=$(cat target/uniffi/BillingEngine.swift target/uniffi/BillingEngineCore.swift)
for api in "open class BillingEngine" "public static func openWithClock(path: String, tariffsToml: String, clock: ManualClock)" \
    "open func planCards(userId: String)throws  -> [PlanCard]" "open func charge(userId: String, operation: String, idempotencyKey: String" \
    "open func quote(" "open func chargeBatch(requests: [ChargeRequest])" "open func checkUsage(" "open func trackUsage(" "open func reserve(" "open func capture(" "open func entitlements(" "open func ledger(" "open func billingMe(" "open func subscriptionDetails(" "open func registerUser(" \
    "open func verifyIntegrity()throws  -> IntegrityReport" "open func userEvents(" "open func payments(" "open func auditLog(" \
    "public struct Event" "public struct AuditRecord" "public struct PlanCard" "public enum CardAction" \
    "public struct LedgerEntry" "public enum EntryKind" "enum BillingError: Swift.Error" \
    "case NotEnoughCredits(required: String, available: String, expired: String"; do
    grep -qF "$api" <<< "$SWIFT" || { echo "the Swift binding lacks: $api" >&2; exit 1; }
done
for f in BillingEngineFFI BillingEngineCoreFFI; do
    [ -f "target/uniffi/$f.h" ] && [ -f "target/uniffi/$f.modulemap" ]
done
# The mobile library carries no HTTP client: mobile apps pay through their server.
if cargo tree -q -p billing-engine-uniffi -e normal | grep -qE "ureq|rustls"; then
    echo "the UniFFI library links the payment client" >&2; exit 1
fi
echo "swift binding: generated, API present"
mvn -B --no-transfer-progress -f bindings-uniffi/kotlin-tests/pom.xml test
