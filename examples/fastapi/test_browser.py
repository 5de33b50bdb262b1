"""The operators' overview page in a real browser: Debian's chromium, headless, driven by
Selenium through Debian's chromedriver (``tests/all.sh`` installs both when missing). The
test seeds a known history through the engine, serves the app over real HTTP with
uvicorn, and checks that the page's cards show the MRR, ARPU, active subscriptions and
churn that a hand calculation gives, that a filter narrows the transactions table, and
that a payment's page shows its history and ledger entries. It saves a screenshot to
``target/overview.png``."""

from __future__ import annotations

import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

import billing_engine as be

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "bindings-python" / "tests")]
from app import create_app  # noqa: E402
from fake_yookassa import SECRET_KEY, SHOP_ID, YOOKASSA_ADDR, FakeYooKassa  # noqa: E402
from support import new_database  # noqa: E402

TOKEN = "admin-token-for-the-browser-test"
START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
SCREENSHOT = HERE.parents[1] / "target" / "overview.png"


def day(n: int, minutes: int = 0) -> datetime:
    return START + timedelta(days=n, minutes=minutes)


def buy(billing: be.Billing, fake: FakeYooKassa, user: str, plan: str, key: str, save: bool = False) -> str:
    created = billing.create_payment(user, plan_code=plan, save_payment_method=save, idempotency_key=key)
    fake.pay(created.yookassa_payment_id)
    body = fake.notification("payment.succeeded", created.yookassa_payment_id)
    assert billing.handle_yookassa_webhook(body, remote_addr=YOOKASSA_ADDR).status == "applied"
    return created.payment_id


def seed(billing: be.Billing, fake: FakeYooKassa, clock: be.ManualClock) -> None:
    """Day 0: u1 (monthly, renewing), u2 (yearly), u3 and u4 (monthly) subscribe. Day 10:
    u4 is refunded. Day 29: u1 renews. Day 30: u3's month ends. Day 45: u4 returns."""
    for user in ["u1", "u2", "u3", "u4"]:
        billing.register_user(user)
    buy(billing, fake, "u1", "PRO_MONTHLY", "b1", save=True)
    billing.set_autorenew("u1", True)
    buy(billing, fake, "u2", "PRO_YEARLY", "b2")
    buy(billing, fake, "u3", "PRO_MONTHLY", "b3")
    refunded = buy(billing, fake, "u4", "PRO_MONTHLY", "b4")
    clock.set(day(10))
    billing.refund_payment(refunded)
    clock.set(day(29))
    assert billing.process_due().renewals_created == 1
    clock.set(day(30, minutes=1))
    billing.process_due()
    clock.set(day(45))
    buy(billing, fake, "u4", "PRO_MONTHLY", "b4-again")
    clock.set(day(50))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    fake = FakeYooKassa()
    clock = be.ManualClock(START)
    config = be.YooKassaConfig(SHOP_ID, SECRET_KEY, api_url=fake.url, return_url="https://app.example/done", timeout_s=2)
    catalog = be.Catalog.from_toml_file(HERE.parent / "web_tariffs.toml")
    billing = be.Billing.open(new_database(tmp_path), catalog, clock=clock, yookassa=config)
    seed(billing, fake, clock)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(billing, admin_token=TOKEN), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    fake.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "Debian's chromium and chromium-driver are needed: tests/all.sh installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1700"]:
        options.add_argument(argument)
    session = webdriver.Chrome(options=options, service=Service(driver))
    yield session
    session.quit()


def money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}".replace(",", " ")


def card(browser: WebDriver, key: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f"#kpi-{key} .value").text


def navigate(browser: WebDriver, action: Callable[[], None]) -> None:
    """Runs an action that loads a new page and waits until the old page is gone and the new
    one has loaded, so that nothing reads an element of the page being replaced."""
    old_page = browser.find_element(By.TAG_NAME, "html")
    action()
    wait = WebDriverWait(browser, 10)
    wait.until(expected_conditions.staleness_of(old_page))
    wait.until(lambda b: b.execute_script("return document.readyState") == "complete")


def rows(browser: WebDriver) -> List[str]:
    return [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#transactions tr")[1:]]


def test_the_overview_page_shows_the_hand_calculated_numbers_and_its_filter_narrows_the_table(
    served: str, browser: WebDriver
) -> None:
    # Without the token the page is refused, and the token is never echoed.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{served}/admin/overview")
    assert refused.value.code == 401

    browser.get(f"{served}/admin/overview?token={TOKEN}")
    assert "token=" not in browser.current_url, "the token goes into a cookie, out of the address"
    assert TOKEN not in browser.page_source

    # By hand, at day 50: in force are u1's renewed month (299.00), u2's year (2990.00 / 12
    # = 249.166667 a month) and u4's return (299.00). u3's month ended on day 30; u4's
    # first month was cut on day 10.
    yearly_monthly = (Decimal("2990.00") / 12).quantize(Decimal("0.000001"))
    mrr = Decimal("299.00") * 2 + yearly_monthly
    assert card(browser, "mrr") == money(mrr)
    assert card(browser, "arpu") == money(mrr / 3)
    assert card(browser, "active") == "3"
    # Churn over the 30 days before: paying on day 20 were u1, u2 and u3; of them, u3 no
    # longer pays: 1 / 3.
    assert card(browser, "churn") == "33.3%"
    assert browser.find_elements(By.CSS_SELECTOR, "#revenue-chart rect.gross")

    # Seven money movements: five payments, the renewal... and the refund.
    assert len(rows(browser)) == 7
    Select(browser.find_element(By.NAME, "status")).select_by_value("refund")
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "#filters button").click)
    assert "status=refund" in browser.current_url
    filtered = rows(browser)
    assert len(filtered) == 1 and "refund" in filtered[0] and "u4" in filtered[0], filtered

    SCREENSHOT.parent.mkdir(exist_ok=True)
    browser.get(f"{served}/admin/overview")
    browser.save_screenshot(str(SCREENSHOT))

    # One payment's page: its status history and ledger entries.
    navigate(browser, browser.find_element(By.CSS_SELECTOR, "#transactions a").click)
    history = browser.find_element(By.ID, "history").text
    entries = browser.find_element(By.ID, "entries").text
    assert "payment.succeeded.v1" in history and "subscription_activated" in entries, (history, entries)
