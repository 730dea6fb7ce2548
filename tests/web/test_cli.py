"""``npay-billing registrations complete`` for merchants who run their own front end."""

from __future__ import annotations

import pytest

from tests.web.conftest import World
from tests.worker.cli_helpers import cli

pytestmark = pytest.mark.integration

PLAN = ("--user", "user-42", "--product-code", "PLAN-M", "--product-name", "월간 구독",
        "--amount", "9900", "--cron", "0 9 1 * *")


@pytest.fixture
def env(sqlite_world: World) -> dict[str, str]:
    return {"NAVERPAY_API_BASE": sqlite_world.sandbox.url}


def test_complete_creates_the_subscription_once(sqlite_world: World, env: dict[str, str]) -> None:
    reserve_id, temp = sqlite_world.window.register()
    args = ("registrations", "complete", "--reserve-id", reserve_id, "--temp-receipt-id", temp)

    first = cli(sqlite_world.db.url, *args, *PLAN, env=env)
    again = cli(sqlite_world.db.url, *args, env=env)  # no plan: resumes what is recorded

    assert first.exit_code == 0, first.output
    assert "subscription 1 created on recurrentId" in first.output
    assert again.exit_code == 0 and "(already recorded)" in again.output
    [sub] = sqlite_world.subscriptions()
    assert (sub.merchant_user_id, sub.amount, sub.cron) == ("user-42", 9900, "0 9 1 * *")


def test_complete_with_change_moves_the_subscription(sqlite_world: World, env: dict[str, str]) -> None:
    first = sqlite_world.window.register()
    cli(sqlite_world.db.url, "registrations", "complete", "--reserve-id", first[0],
        "--temp-receipt-id", first[1], *PLAN, env=env)
    [before] = sqlite_world.subscriptions()
    reserve_id, temp = sqlite_world.window.register(action="CHANGE", target=before.recurrent_id)

    result = cli(sqlite_world.db.url, "registrations", "complete", "--reserve-id", reserve_id,
                 "--temp-receipt-id", temp, "--change", before.recurrent_id, env=env)

    assert result.exit_code == 0, result.output
    [after] = sqlite_world.subscriptions()
    assert after.id == before.id and after.recurrent_id != before.recurrent_id
    assert f"subscription {before.id} moved to recurrentId {after.recurrent_id}" in result.output


@pytest.mark.parametrize(("extra", "complaint"), [
    (("--user", "u"), "--product-code, --product-name, --amount, --cron required"),
    (("--user", "u", "--product-code", "P", "--product-name", "N", "--amount", "0", "--cron", "0 9 1 * *"),
     "--amount must be a positive"),
    (("--user", "u", "--product-code", "P", "--product-name", "N", "--amount", "100", "--cron", "61 9 1 * *"),
     "61"),
])
def test_a_bad_plan_is_refused_before_naver_is_asked(sqlite_world: World, env: dict[str, str],
                                                    extra: tuple[str, ...], complaint: str) -> None:
    reserve_id, temp = sqlite_world.window.register()

    result = cli(sqlite_world.db.url, "registrations", "complete", "--reserve-id", reserve_id,
                 "--temp-receipt-id", temp, *extra, env=env)

    assert result.exit_code == 2 and complaint in result.output
    assert sqlite_world.sandbox.ledger()["registrations"] == []


def test_an_unknown_reserve_id_without_a_plan_says_what_to_give(sqlite_world: World,
                                                               env: dict[str, str]) -> None:
    result = cli(sqlite_world.db.url, "registrations", "complete", "--reserve-id", "R-unknown",
                 "--temp-receipt-id", "T", env=env)

    assert result.exit_code == 1 and "give the plan" in result.output


def test_npay_billing_web_serves_the_consent_links_of_price_change_notices(
        sqlite_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The consent link a notice carries points at `npay-billing web`: the app it serves has the
    registration pages and the consent routes (GET shows, POST records)."""
    from datetime import timedelta

    from starlette.testclient import TestClient

    from models import PriceChange, utcnow
    from worker.cli.support import Env
    from worker.cli.web import web_app
    from worker.consent import make_token

    db = sqlite_world.db
    monkeypatch.setenv("BILLING_CONSENT_SECRET", "s3cret")
    monkeypatch.setenv("NAVERPAY_API_BASE", sqlite_world.sandbox.url)
    db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, amount, "
           "cron, agreed_amount) VALUES ('RE-1', 'user-1', 'PLAN-M', '월간 구독', 9900, '0 9 1 * *', 9900)")
    db.sql("INSERT INTO price_changes (subscription_id, new_amount, effective_at, old_amount) "
           "VALUES (1, 12900, :at, 9900)", at=utcnow() + timedelta(days=20))
    token = make_token("s3cret", 1, utcnow() + timedelta(days=30))
    env = Env(db.url)
    try:
        with TestClient(web_app(env)) as http:
            assert http.get("/healthz").status_code == 200
            page = http.get(f"/consent/{token}")
            assert page.status_code == 200 and "12,900원" in page.text
            assert http.post(f"/consent/{token}").status_code == 200
            assert http.get("/consent/1.1.forged").status_code == 400
    finally:
        env.close()
    with db.sessions() as s:
        change = s.get(PriceChange, 1)
        assert change is not None and change.consented_at is not None and change.consent_via == "link"
