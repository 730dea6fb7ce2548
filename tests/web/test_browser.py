"""The registration flow in a real browser: Debian's chromium, headless, driven by Playwright.

demo merchant page (our web app, served by uvicorn on loopback) -> NAVER Pay's window (the
sandbox, opened by its SDK shim exactly as NAVER's SDK would be) -> returnUrl -> the result
page; then the worker bills the new subscription. A screenshot of every page is kept under
``var/test-artifacts/browser/<test>/`` for review (``var/`` is not in git).

Skipped, saying why, when chromium or Playwright is missing on a developer's machine; under CI
(``CI`` set) a missing browser fails instead, since ``.ci/run`` installs it. Playwright never
downloads a browser here: it launches ``/usr/bin/chromium`` with a fresh profile.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from models import utcnow
from scheduler.walk import walk
from tests.conftest import Database
from tests.sandbox_control import SandboxControl
from tests.services import ROOT, free_port, wait_until
from tests.worker.billing import Clock, Sleeps, make_client, make_engine
from worker.charging import process_charge
from worker.web import Registrar, WebSettings, create_app

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing under CI: .ci/run should have installed Debian's chromium")
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); browser tests skipped")
    return found


@dataclass
class Shop:
    """The web app on a real port, its database, the sandbox, and a browser page."""

    url: str
    db: Database
    sandbox: SandboxControl
    page: Any
    shots: Path
    count: int = 0

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.shots / f"{self.count:02d}-{name}.png"), full_page=True)

    def subscribe(self, plan: str = "PLAN-DEMO", user: str = "user-browser") -> None:
        """From the demo form to NAVER's window (stops there)."""
        self.page.goto(self.url + "/")
        self.page.check(f'input[name="plan"][value="{plan}"]')
        self.page.fill("#user", user)
        self.page.fill("#email", "browser@example.com")
        self.shot("demo-form")
        self.page.click("#start")
        self.page.wait_for_selector("#npay-button")
        self.shot("order-page")
        self.page.click("#npay-button")
        self.page.wait_for_selector("#confirm")
        self.shot("naverpay-window")

    def result(self, name: str) -> str:
        self.page.wait_for_selector("#result-message")
        self.shot(name)
        return str(self.page.inner_text("#result-message"))


def _serve(app: Any) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="web-under-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=15, what="the web app")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def shop(sqlite_db: Database, sandbox_url: str, tmp_path: Path, request: pytest.FixtureRequest,
         ) -> Iterator[Shop]:
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (make install)")
    client = make_client(sandbox_url)
    registrar = Registrar(sessions=sqlite_db.sessions, client_for=lambda _m: client, clock=utcnow)
    settings = WebSettings(secret=os.urandom(32), client_id="sandbox-client-id",
                           sdk_url=f"{sandbox_url}/sdk/js/naverpay.min.js")
    shots = ARTIFACTS / request.node.name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    try:
        for url in _serve(create_app(registrar, settings)):
            with sync_api.sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
                    args=CHROMIUM_ARGS, locale="ko-KR", viewport={"width": 900, "height": 900})
                try:
                    yield Shop(url, sqlite_db, SandboxControl(sandbox_url), context.new_page(), shots)
                finally:
                    context.close()
    finally:
        client.close()
        print(f"\nscreenshots: {shots}")


def _subscription(db: Database) -> Any:
    rows = db.sql("SELECT id, recurrent_id, amount, cron, merchant_user_id, status FROM subscriptions")
    assert len(rows) == 1, rows
    return rows[0]


def test_register_in_the_window_then_the_worker_bills_the_subscription(shop: Shop) -> None:
    shop.subscribe(plan="PLAN-DEMO")
    shop.page.click("#confirm")

    assert shop.result("registered") == "네이버페이 정기결제 등록이 완료되었습니다."
    sub = _subscription(shop.db)
    assert (sub.amount, sub.cron, sub.merchant_user_id, sub.status) == (
        1000, "* * * * * */10", "user-browser", "active")
    assert shop.sandbox.registration(sub.recurrent_id)["state"] == "VALID"

    shop.db.sql("UPDATE merchants SET min_cycle_interval = '1s'")
    clock = Clock(datetime.now(UTC))
    with make_client(shop.sandbox.url) as client:
        engine = make_engine(shop.db, client, clock, Sleeps())
        walk(shop.db.sessions, clock())
        (charge_id,) = walk(shop.db.sessions, clock.advance(seconds=10)).new_charge_ids
        process_charge(engine, charge_id, "browser-test")
    assert shop.db.sql("SELECT status, approved_amount FROM charges")[0] == ("succeeded", 1000)
    assert [(p["state"], p["totalPayAmount"]) for p in shop.sandbox.payments(sub.recurrent_id)] == [
        ("APPROVED", 1000)]


def test_cancel_in_the_window_shows_the_korean_failure_message(shop: Shop) -> None:
    shop.subscribe(plan="PLAN-M")
    shop.page.click("#cancel")

    message = shop.result("canceled")

    assert message == "네이버페이 결제수단 등록을 취소하셨습니다. 구독하시려면 다시 시도해 주세요."
    assert shop.page.inner_text("#result-title") == "등록하지 못했습니다"
    assert shop.db.sql("SELECT count(*) FROM subscriptions")[0][0] == 0
    assert shop.sandbox.ledger()["registrations"] == []


def test_change_the_payment_means_of_a_subscription(shop: Shop) -> None:
    shop.subscribe(plan="PLAN-M")
    shop.page.click("#confirm")
    shop.result("registered")
    before = _subscription(shop.db)

    shop.page.click("#change-link")
    shop.page.wait_for_selector("#npay-button")
    shop.shot("change-order-page")
    shop.page.click("#npay-button")
    shop.page.wait_for_selector("#confirm")
    assert shop.page.inner_text("#title") == "결제수단 변경"
    shop.page.check('input[name="means"][value="BANK"]')
    shop.shot("change-naverpay-window")
    shop.page.click("#confirm")

    assert shop.result("changed") == "결제수단이 변경되었습니다. 다음 결제부터 새 결제수단으로 결제됩니다."
    after = _subscription(shop.db)
    assert after.id == before.id and after.recurrent_id != before.recurrent_id
    assert (after.amount, after.cron, after.status) == (before.amount, before.cron, "active")
    old, new = (shop.sandbox.registration(r) for r in (before.recurrent_id, after.recurrent_id))
    assert (old["state"], old["expireCalls"]) == ("EXPIRED", 0)
    assert (new["state"], new["behaviour"]["payMeans"]) == ("VALID", "BANK")
