"""The API of docs/API.md, call by call, through `import billing_engine`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Dict

import pytest

import billing_engine as be
from support import TARIFFS, on_postgres, snapshot


def sources(billing: be.Billing, user: str, operation: str, keys: list[str]) -> list[str]:
    return [billing.charge(user, operation, idempotency_key=key).source for key in keys]


def test_scenario_a_free_user_uses_the_free_tier_within_its_daily_limit_then_credits(
    billing: be.Billing, clock: be.ManualClock
) -> None:
    state = billing.register_user("alice")
    assert (state.plan_code, state.credits, state.freemium_ops_limit, state.daily_limit) == ("FREE", Decimal("10"), 5, 3)
    assert isinstance(state.credits, Decimal) and state.freemium_reset_at.tzinfo is not None

    assert sources(billing, "alice", "generation", ["a1", "a2", "a3"]) == ["freemium"] * 3
    quote = billing.quote("alice", "generation")
    assert (quote.allowed, quote.source, quote.credits_cost, quote.credits_after) == (True, "credits", Decimal(2), Decimal(8))
    charge = billing.charge("alice", "generation", idempotency_key="a4")
    assert (charge.source, charge.credits_spent, charge.credits_balance) == ("credits", Decimal("2"), Decimal("8"))

    clock.advance(days=1)
    assert sources(billing, "alice", "generation", ["a5", "a6", "a7"]) == ["freemium", "freemium", "credits"]
    state = billing.state("alice")
    assert (state.freemium_ops_used, state.freemium_ops_remaining, state.credits) == (5, 0, Decimal("6"))
    assert billing.verify_integrity().ok


def test_scenario_b_subscriber_uses_plan_ops_then_free_tier_then_credits(billing: be.Billing, clock: be.ManualClock) -> None:
    billing.register_user("bob")
    details = billing.activate_subscription("bob", "basic", idempotency_key="pay-1")
    assert (details.plan, details.plan_display, details.is_active) == ("pro", "Basic", True)
    assert details.expires_at == datetime(2026, 1, 31, 9, tzinfo=timezone.utc)

    assert sources(billing, "bob", "assistant", [f"s{n}" for n in range(30)]) == ["subscription"] * 30
    state = billing.state("bob")
    assert (state.subscription_ops_used, state.subscription_ops_remaining, state.daily_limit) == (30, 0, None)
    assert sources(billing, "bob", "generation", ["f1", "f2", "f3", "c1"]) == ["freemium"] * 3 + ["credits"]

    clock.advance(days=30)
    state = billing.state("bob")
    assert (state.plan_code, state.is_active, state.expires_at) == ("FREE", False, None)
    assert billing.verify_integrity().ok


def test_scenario_c_a_refused_charge_names_the_shortfall_and_writes_nothing(
    billing: be.Billing, db: str, clock: be.ManualClock
) -> None:
    billing.register_user("carol", free_trial=False)
    sources(billing, "carol", "assistant", ["k0", "k1", "k2"])
    with pytest.raises(be.DailyLimitReached) as daily:
        billing.charge("carol", "assistant", idempotency_key="k3")
    assert daily.value.code == "DAILY_LIMIT_REACHED" and daily.value.details["limit"] == 3

    clock.advance(days=1)
    sources(billing, "carol", "assistant", ["k4", "k5"])
    before = snapshot(db)
    quote = billing.quote("carol", "generation")
    assert (quote.allowed, quote.source, quote.reason_code) == (False, None, "NOT_ENOUGH_CREDITS")
    with pytest.raises(be.NotEnoughCredits) as refused:
        billing.charge("carol", "generation", idempotency_key="k6")
    assert refused.value.details == {"required": "2", "available": "0", "expired": "0"}
    assert isinstance(refused.value, be.BillingError)
    assert snapshot(db) == before

    billing.grant_credits("carol", Decimal("5"), idempotency_key="topup", reason="support")
    assert billing.charge("carol", "generation", idempotency_key="k6").credits_balance == Decimal("3")


def test_a_replay_returns_the_first_result_and_another_request_under_the_key_conflicts(
    billing: be.Billing, db: str, catalog: be.Catalog
) -> None:
    billing.register_user("dan")
    first = billing.charge("dan", "generation", idempotency_key="req-1", metadata={"prompt_id": 7})
    again = billing.charge("dan", "generation", idempotency_key="req-1", metadata={"prompt_id": 7})
    assert (again.id, again.replayed, first.replayed) == (first.id, True, False)

    other_handle = be.Billing.open(db, catalog)
    assert other_handle.charge("dan", "generation", idempotency_key="req-1", metadata={"prompt_id": 7}).id == first.id
    before = snapshot(db)
    for operation, metadata in (("assistant", {"prompt_id": 7}), ("generation", {"prompt_id": 8})):
        with pytest.raises(be.IdempotencyConflict) as conflict:
            other_handle.charge("dan", operation, idempotency_key="req-1", metadata=metadata)
        assert conflict.value.details == {"idempotency_key": "req-1"}
    assert snapshot(db) == before


def test_refunds_return_the_op_or_the_credits_once(billing: be.Billing) -> None:
    billing.register_user("erin")
    free = billing.charge("erin", "generation", idempotency_key="g1")
    refund = billing.refund_charge(free.id, idempotency_key="r1", reason="generation failed")
    assert (refund.charge_id, refund.source, refund.op_returned, refund.credits_refunded) == (free.id, "freemium", True, Decimal(0))
    assert billing.state("erin").freemium_ops_used == 0
    assert billing.refund_charge(free.id, idempotency_key="r2").replayed

    billing.charge("erin", "generation", idempotency_key="g2")
    billing.charge("erin", "generation", idempotency_key="g3")
    billing.charge("erin", "generation", idempotency_key="g4")
    paid = billing.charge("erin", "generation", idempotency_key="g5")
    assert paid.source == "credits"
    refund = billing.refund_charge(paid.id, idempotency_key="r3")
    assert (refund.credits_refunded, refund.credits_balance) == (Decimal("2"), Decimal("10"))
    with pytest.raises(be.ChargeNotFound) as missing:
        billing.refund_charge(999_999, idempotency_key="r4")
    assert missing.value.details == {"charge_id": 999_999}


def test_the_ledger_pages_newest_first_and_proves_the_balance(billing: be.Billing) -> None:
    billing.register_user("finn", free_trial=False)
    granted = billing.grant_credits("finn", "12.50", idempotency_key="g1", reason="migration")
    assert (granted.kind, granted.credits_delta, granted.credits_balance_after) == ("grant", Decimal("12.50"), Decimal("12.50"))
    billing.grant_credits("finn", -2, idempotency_key="g2", reason="correction")
    for n in range(5):
        billing.charge("finn", "assistant", idempotency_key=f"op{n}")

    entries = billing.ledger("finn", limit=4)
    assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
    rest = billing.ledger("finn", limit=50, before=entries[-1].id)
    assert len(entries) + len(rest) == 7
    assert (rest[-1].idempotency_key, rest[-1].kind) == ("g1", "grant")
    credits_entries = [e for e in entries + rest if e.credits_delta != 0]
    assert sum(e.credits_delta for e in credits_entries) == billing.state("finn").credits == Decimal("8.50")
    charge = next(e for e in rest if e.source == "freemium")
    assert charge.op_day == date(2026, 1, 1) and charge.created_at == datetime(2026, 1, 1, 9, tzinfo=timezone.utc)

    report = billing.verify_integrity()
    assert (report.ok, report.users_checked, report.entries_checked, report.mismatches) == (True, 1, 7, [])
    # to_dict() is JSON-ready: decimals as strings, times as ISO 8601 UTC.
    data = json.loads(json.dumps(entries[0].to_dict()))
    assert (data["credits_balance_after"], data["created_at"], data["kind"]) == ("8.50", "2026-01-01T09:00:00.000Z", "charge")


def test_subscriptions_activate_cancel_and_refuse_what_they_must(billing: be.Billing, db: str) -> None:
    billing.register_user("gus")
    with pytest.raises(be.NoSubscription):
        billing.cancel_subscription("gus")
    with pytest.raises(be.InvalidPlan) as invalid:
        billing.activate_subscription("gus", "gold", idempotency_key="p0")
    assert invalid.value.details["plan_code"] == "gold"

    billing.activate_subscription("gus", "standard", idempotency_key="p1")
    assert billing.activate_subscription("gus", "standard", idempotency_key="p1").is_active  # a replay
    with pytest.raises(be.ActiveSubscription):
        billing.activate_subscription("gus", "premium", idempotency_key="p2")
    before = snapshot(db)
    with pytest.raises(be.NoPaymentMethod):
        billing.set_autorenew("gus", True)
    assert snapshot(db) == before

    details = billing.cancel_subscription("gus")
    assert (details.is_active, details.autorenew_enabled) == (True, False)
    details = billing.cancel_subscription("gus", immediate=True)
    assert (details.is_active, details.plan) == (False, "free")


def test_import_user_keeps_credits_and_clamps_the_free_tier(billing: be.Billing) -> None:
    expires = datetime(2026, 3, 1, tzinfo=timezone.utc)
    state = billing.import_user(
        "old-1", credits=Decimal("42.5"), freemium_used=99, subscription={"plan_code": "basic", "expires_at": expires}
    )
    assert (state.credits, state.freemium_ops_used, state.plan_code, state.expires_at) == (Decimal("42.5"), 5, "basic", expires)
    again = billing.import_user("old-1", credits=0)
    assert again.credits == Decimal("42.5"), "a re-run migration changes nothing"


def test_seed_003_views_have_exactly_the_seed_shapes(billing: be.Billing) -> None:
    billing.register_user("hana")
    billing.charge("hana", "generation", idempotency_key="x")
    assert billing.billing_me("hana").to_dict() == {
        "plan_code": "FREE",
        "plan_name": "Free",
        "expires_at": None,
        "is_active": False,
        "daily_photo_limit": 3,
        "used_today": 1,
        "remaining_today": 2,
        "credits_expiring": [],
        "last_payment": None,
    }
    details = billing.subscription_details("hana").to_dict()
    assert details == {
        "plan": "free",
        "plan_display": "Free",
        "expires_at": None,
        "is_active": False,
        "autorenew_available": False,
        "autorenew_enabled": False,
        "card_bound": False,
        "payment_method": {"is_attached": False, "card_mask": None, "card_brand": None, "method_type": None, "title": None},
    }
    plans = billing.plans()
    assert [p.code for p in plans] == ["FREE", "basic", "standard", "premium"]
    standard = plans[2]
    assert (standard.price, standard.old_price, standard.is_popular) == (Decimal("699.00"), Decimal("899.00"), True)
    data = standard.to_dict()
    assert (data["price"], data["old_price"], data["features"]) == (699, 899, ["ai_recognition", "advanced_stats"])
    assert "old_price" not in plans[1].to_dict()
    cards = billing.plan_cards("hana")
    assert [(c.plan_code, c.is_current, c.action) for c in cards] == [
        ("FREE", True, "none"),
        ("basic", False, "select"),
        ("standard", False, "select"),
        ("premium", False, "select"),
    ]
    billing.activate_subscription("hana", "basic", idempotency_key="paid")
    current = billing.plan_cards("hana")[1]
    assert current.details is not None and current.details.expires_at.tzinfo is not None
    assert (current.action, current.to_dict()["details"]["payment_method"]["is_attached"]) == ("bind_card", False)
    assert billing.payment_method("hana").to_dict() == {
        "is_attached": False, "card_mask": None, "card_brand": None, "method_type": None, "title": None
    }
    assert billing.payments("hana").to_dict() == {"results": []}
    json.dumps([p.to_dict() for p in plans])


def test_bad_arguments_raise_typeerror_or_invalid_argument_naming_the_argument(
    billing: be.Billing, db: str, catalog: be.Catalog
) -> None:
    billing.register_user("ivan")
    before = snapshot(db)
    with pytest.raises(TypeError, match="amount"):
        billing.grant_credits("ivan", 1.5, idempotency_key="g", reason="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_id"):
        billing.charge(42, "generation", idempotency_key="k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="limit"):
        billing.ledger("ivan", limit=True)
    with pytest.raises(TypeError, match="free_trial"):
        billing.register_user("ivan", free_trial=1)  # type: ignore[arg-type]
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: billing.charge("ivan", "generation", idempotency_key=""), "idempotency_key"),
        (lambda: billing.charge("", "generation", idempotency_key="k"), "user_id"),
        (lambda: billing.charge("x" * 10_000, "generation", idempotency_key="k"), "user_id"),
        (lambda: billing.grant_credits("ivan", "ten", idempotency_key="g", reason="x"), "amount"),
        (lambda: billing.ledger("ivan", limit=-1), "limit"),
        (lambda: billing.charge("ivan", "generation", idempotency_key="k", metadata={"x": object()}), "metadata"),
        (lambda: billing.import_user("new", credits=-1), "credits"),
        (lambda: be.Billing.open(db, catalog, durability="eventual"), "durability"),
    ]
    for call, field in cases:
        with pytest.raises(be.InvalidArgument) as invalid:
            call()
        assert (invalid.value.code, invalid.value.details["field"]) == ("INVALID_ARGUMENT", field)
        assert isinstance(invalid.value, ValueError)
    with pytest.raises(be.UnknownOperation) as unknown:
        billing.charge("ivan", "teleport", idempotency_key="k")
    assert unknown.value.details == {"operation": "teleport"}
    with pytest.raises(be.UnknownUser):
        billing.state("nobody")
    assert snapshot(db) == before


def test_every_code_of_the_engine_s_table_has_its_exception_class_and_status() -> None:
    classes = {cls.code: cls for cls in be.BillingError.__subclasses__()}
    table = {code: status for code, status, _retryable in be._native.ERROR_CODES}
    assert set(classes) == set(table), "one class per code of the engine's table, and no other"
    for code, status in table.items():
        assert classes[code].http_status == status, code
        assert be._ERRORS[code] is classes[code]
    assert table["NOT_ENOUGH_CREDITS"] == 402 and classes["INVALID_ARGUMENT"] is be.InvalidArgument


def test_a_panic_in_the_engine_is_an_exception_not_an_abort() -> None:
    with pytest.raises(be.InternalError, match="deliberate panic"):
        be._call(be._native._panic_for_test)


def test_an_invalid_catalog_names_the_field_path() -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "tariffs.toml").read_text()
    with pytest.raises(be.InvalidCatalog) as invalid:
        be.Catalog.from_toml(text.replace('price = "299.00"', "price = 299.0"))
    assert invalid.value.details["path"] == "plans[1].price"
    with pytest.raises(be.InvalidCatalog):
        be.Catalog.from_toml_file("/nonexistent/tariffs.toml")
    valid = be.Catalog.from_toml(text).to_dict()
    assert (valid["currency"], [plan["code"] for plan in valid["plans"]]) == ("RUB", ["FREE", "basic", "standard", "premium"])


def test_the_manual_clock_moves_only_when_told(clock: be.ManualClock) -> None:
    start = clock.now()
    clock.advance(days=1, hours=2, minutes=3, seconds=4)
    assert clock.now() - start == timedelta(days=1, hours=2, minutes=3, seconds=4)
    clock.set(datetime(2027, 5, 1, 12, tzinfo=timezone(timedelta(hours=3))))
    assert clock.now() == datetime(2027, 5, 1, 9, tzinfo=timezone.utc)
    with pytest.raises(be.InvalidArgument):
        clock.set(datetime(2027, 5, 1))
    with pytest.raises(be.InvalidArgument):
        clock.set("yesterday")


def test_one_billing_shared_by_threads_spends_each_credit_once(billing: be.Billing) -> None:
    billing.register_user("jo")  # 10 credits and 3 free ops today: 13 assistant charges fit
    fit = 13
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for attempt in range(6):
            try:
                billing.charge("jo", "assistant", idempotency_key=f"t{n}-{attempt}")
                result = "ok"
            except be.BillingError as error:
                result = error.code
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == fit
    assert set(outcomes) == {"ok", "DAILY_LIMIT_REACHED"}  # the free tier still has ops, for another day
    assert billing.state("jo").credits == 0 and billing.verify_integrity().ok


def test_processes_sharing_one_database_spend_each_credit_once(billing: be.Billing, db: str) -> None:
    import multiprocessing

    from support import TARIFFS
    from workers import charge_many

    billing.register_user("kim")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [pool.apply_async(charge_many, (db, str(TARIFFS), "kim", n, 8, start)) for n in range(4)]
            start.set()
            outcomes = [outcome for result in pending for outcome in result.get(timeout=120)]
    # The workers use the system clock; whatever day it is, 3 free ops and 10 credits fit.
    assert outcomes.count("ok") == 13, outcomes
    assert billing.state("kim").credits == 0 and billing.verify_integrity().ok


def test_reopening_the_database_keeps_everything(db: str, catalog: be.Catalog, clock: be.ManualClock) -> None:
    first = be.Billing.open(db, catalog, clock=clock)
    first.register_user("lea")
    charge = first.charge("lea", "generation", idempotency_key="k")
    del first
    reopened = be.Billing.open(db, catalog, clock=clock)
    assert reopened.state("lea").freemium_ops_used == 1
    assert reopened.charge("lea", "generation", idempotency_key="k").id == charge.id
    assert reopened.register_user("lea").credits == Decimal("10"), "the free trial is awarded once"


def test_the_gil_is_released_while_the_engine_waits(sqlite_path: Path, catalog: be.Catalog) -> None:
    billing = be.Billing.open(sqlite_path, catalog)
    billing.register_user("max")
    # Another process takes the write lock (in this process, a second copy of SQLite
    # would not see the engine's POSIX locks), so the engine's charge has to wait for it.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(sqlite_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    results: list[be.Charge] = []
    waiting = threading.Thread(target=lambda: results.append(billing.charge("max", "assistant", idempotency_key="w")))
    waiting.start()
    # This thread keeps running Python meanwhile. Were the GIL held by the waiting call,
    # it could not, until the engine gave up after its 30 s lock timeout.
    spins, deadline = 0, time.monotonic() + 0.3
    while time.monotonic() < deadline:
        spins += 1
    assert waiting.is_alive() and not results
    holder.communicate("release\n", timeout=10)
    waiting.join(timeout=10)
    assert spins > 1000 and results[0].source == "freemium"


HOLD_WRITE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_arguments_python_holds_but_the_engine_cannot_take_are_invalid_arguments(
    billing: be.Billing, db: str, clock: be.ManualClock
) -> None:
    billing.register_user("olga")
    charge = billing.charge("olga", "generation", idempotency_key="k")
    before = snapshot(db)
    deep: Dict[str, Any] = {}
    for _ in range(100_000):
        deep = {"x": deep}
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: billing.ledger("olga", limit=2**40), "limit"),
        (lambda: billing.ledger("olga", before=2**70), "before"),
        (lambda: billing.refund_charge(2**64, idempotency_key="r"), "charge_id"),
        (lambda: billing.import_user("new", credits=10, freemium_used=2**33), "freemium_used"),
        (lambda: billing.grant_credits("olga", 10**40, idempotency_key="g", reason="x"), "amount"),
        (lambda: billing.charge("olga", "generation", idempotency_key="\ud800"), "idempotency_key"),
        (lambda: billing.charge("ol\udfffga", "generation", idempotency_key="k2"), "user_id"),
        (lambda: billing.create_payment("olga", plan_code="basic", idempotency_key="k", return_url="https://\ud800"), "return_url"),
        (lambda: billing.charge("olga", "generation", idempotency_key="k3", metadata={"a": "\ud800"}), "metadata"),
        (lambda: billing.charge("olga", "generation", idempotency_key="k4", metadata=deep), "metadata"),
        (lambda: clock.advance(days=10**9), "clock"),
        (lambda: clock.advance(days=10**20), "clock"),
    ]
    for call, field in cases:
        with pytest.raises(be.InvalidArgument) as invalid:
            call()
        assert invalid.value.details["field"] == field, invalid.value
    assert snapshot(db) == before
    assert billing.refund_charge(charge.id, idempotency_key="r").charge_id == charge.id


def test_a_lock_held_past_the_timeout_is_busy_with_the_wait_and_writes_nothing(sqlite_path: Path, clock: be.ManualClock) -> None:
    text = TARIFFS.read_text().replace("lock_timeout_ms = 30000", "lock_timeout_ms = 300")
    billing = be.Billing.open(sqlite_path, be.Catalog.from_toml(text), clock=clock)
    billing.register_user("pia")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(sqlite_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        with pytest.raises(be.Busy) as busy:
            billing.charge("pia", "generation", idempotency_key="k")
    finally:
        holder.communicate("release\n", timeout=10)
    assert busy.value.http_status == 503 and busy.value.details["waited_ms"] >= 300
    assert billing.charge("pia", "generation", idempotency_key="k").replayed is False


def _attributes(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") and name != "to_dict"}


def test_every_rust_field_is_an_attribute_the_stub_declares(billing: be.Billing) -> None:
    # Every result class is built by the extension from the engine's Rust type, and the
    # stub must declare exactly its attributes: a field renamed or added in Rust fails here.
    stub = ast.parse((Path(be.__file__).parent / "_native.pyi").read_text())
    declared = {
        node.name: {item.target.id for item in node.body if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)}
        for node in stub.body
        if isinstance(node, ast.ClassDef) and not node.name.startswith(("Native", "_"))
    }
    classes = {name: getattr(be._native, name) for name in declared}
    assert set(classes) == {name for name in dir(be._native) if isinstance(getattr(be._native, name), type)
                            and getattr(be._native, name).__module__ == "billing_engine"}
    for name, cls in classes.items():
        assert _attributes(cls) == declared[name], name
        assert getattr(be, name) is cls, f"billing_engine re-exports {name}"
    # ...and they are the fields of the JSON shape (to_dict), which serde writes from the Rust type
    # (a plan with an old price: the seed 003 shape leaves out a missing one).
    billing.register_user("zed")
    charge = billing.charge("zed", "generation", idempotency_key="z1", metadata={"k": [1, 2.5]})
    samples = [billing.state("zed"), charge, billing.ledger("zed", limit=1)[0], billing.verify_integrity(),
               billing.quote("zed", "generation"), billing.refund_charge(charge.id, idempotency_key="z2"),
               billing.billing_me("zed"), billing.subscription_details("zed"), billing.plans()[2], billing.plan_cards("zed")[0]]
    for result in samples:
        assert set(result.to_dict()) == _attributes(type(result)), type(result).__name__
    entry = billing.ledger("zed", limit=2)[1]
    assert entry.metadata == {"k": [1, 2.5]} and entry.to_dict()["metadata"] == {"k": [1, 2.5]}


def test_a_postgresql_url_opens_that_database_and_its_password_shows_nowhere(db: str, catalog: be.Catalog) -> None:
    refused = "postgresql://billing:s3cret-pw@127.0.0.1:1/billing"
    with pytest.raises(be.StorageError) as unreachable:
        be.Billing.open(refused, catalog)
    assert "s3cret" not in f"{unreachable.value} {unreachable.value.details}"
    with pytest.raises(be.InvalidArgument) as malformed:
        be.Billing.open(refused + "?pool_size=0", catalog)
    assert malformed.value.details["field"] == "location" and "s3cret" not in str(malformed.value)
    if on_postgres():
        # The test server trusts local connections, so any password opens it.
        with_password = db.replace("postgresql://billing@", "postgresql://billing:s3cret-pw@")
        billing = be.Billing.open(with_password, catalog)
        billing.register_user("url-user")
        assert be.Billing.open(db, catalog).state("url-user").credits == Decimal("10")
        assert "s3cret" not in repr(billing) and "billing:***@" in repr(billing)


def test_charge_batch_answers_each_request_in_order_and_refusals_are_their_items(billing: be.Billing) -> None:
    billing.import_user("ann", credits=5, freemium_used=5)
    billing.import_user("bob", credits=1, freemium_used=5)
    before = billing.charge("ann", "generation", idempotency_key="a0")
    results = billing.charge_batch(
        [
            be.ChargeRequest("ann", "generation", "a0"),
            be.ChargeRequest("bob", "generation", "b1"),
            be.ChargeRequest("ann", "no-such-operation", "a2"),
            be.ChargeRequest("ann", "assistant", "a3", metadata={"chat": "c1"}),
            be.ChargeRequest("ghost", "assistant", "g1"),
        ]
    )
    replay, short, unknown, charged, ghost = results
    assert isinstance(replay, be.Charge) and replay.replayed and replay.id == before.id
    assert isinstance(short, be.NotEnoughCredits) and short.details == {"required": "2", "available": "1", "expired": "0"}
    assert isinstance(unknown, be.UnknownOperation) and unknown.http_status == 404
    assert isinstance(charged, be.Charge) and charged.credits_balance == Decimal("2")
    assert isinstance(ghost, be.UnknownUser)
    assert billing.ledger("ann", limit=1)[0].metadata == {"chat": "c1"}
    assert billing.state("bob").credits == 1 and billing.verify_integrity().ok
    assert billing.charge_batch([]) == []


def test_charge_batch_refuses_what_is_not_a_request_before_anything_runs(billing: be.Billing, db: str) -> None:
    billing.import_user("ann", credits=5, freemium_used=5)
    with pytest.raises(TypeError, match="requests"):
        billing.charge_batch(["ann"])  # type: ignore[list-item]
    with pytest.raises(be.InvalidArgument) as raised:
        billing.charge_batch([be.ChargeRequest("ann", "generation", f"k{i}") for i in range(10_001)])
    assert raised.value.details["field"] == "requests"
    with pytest.raises(be.InvalidArgument):
        billing.charge_batch([be.ChargeRequest("ann", "generation", "\ud800")])
    assert billing.state("ann").credits == 5


def test_results_pickle_and_compare_by_value(billing: be.Billing) -> None:
    import pickle

    billing.register_user("pia")
    charge = billing.charge("pia", "generation", idempotency_key="p1", metadata={"k": [1, 2.5]})
    samples = [billing.state("pia"), charge, billing.ledger("pia", limit=1)[0], billing.verify_integrity(),
               billing.quote("pia", "generation"), billing.refund_charge(charge.id, idempotency_key="p2"),
               billing.billing_me("pia"), billing.subscription_details("pia"), billing.plans()[2],
               billing.plan_cards("pia")[0], billing.payment_method("pia"), billing.payments("pia")]
    for result in samples:
        restored = pickle.loads(pickle.dumps(result))
        assert type(restored) is type(result) and restored == result, type(result).__name__
        assert restored.to_dict() == result.to_dict()
    replayed = billing.charge("pia", "generation", idempotency_key="p1", metadata={"k": [1, 2.5]})
    assert replayed != charge and replayed.id == charge.id, "equal but for `replayed`: compared field by field"
    assert charge != billing.charge("pia", "generation", idempotency_key="p3")


@pytest.mark.parametrize("shared_commits", [True, False])
def test_threads_charging_at_once_with_and_without_shared_commits_keep_every_balance_exact(
    sqlite_path: Path, catalog: be.Catalog, shared_commits: bool
) -> None:
    billing = be.Billing.open(sqlite_path, catalog, shared_commits=shared_commits)
    users = [f"t{n}" for n in range(8)]
    for user in users:
        billing.import_user(user, credits=100, freemium_used=5)
    start = threading.Barrier(8)

    def worker(user: str) -> None:
        start.wait()
        for i in range(30):
            billing.charge(user, "assistant", idempotency_key=f"{user}-{i}")

    threads = [threading.Thread(target=worker, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(billing.state(user).credits == 70 for user in users)
    with pytest.raises(TypeError, match="shared_commits"):
        be.Billing.open(sqlite_path, catalog, shared_commits="yes")  # type: ignore[arg-type]
