"""The worker's side of the consent rule on SQLite and PostgreSQL: the engine's re-check before
an attempt (against the real sandbox), price-change and upcoming-charge notices through the
outbox, the signed consent link (Starlette's TestClient), and the CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.testclient import TestClient

from models import Charge, ChargeAttempt, Notification, PriceChange, Subscription
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from tests.worker.cli_helpers import cli, cli_json
from worker.charging import process_charge
from worker.consent import (
    ConsentConfig,
    ConsentError,
    after_walk,
    make_token,
    read_token,
    record_consent,
)
from worker.consent_web import consent_routes

T0 = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
SECRET = "consent-test-secret"
CONFIG = ConsentConfig(secret=SECRET, public_url="https://shop.example/billing")


def naive(moment):
    return moment.replace(tzinfo=None)


def add(db, rid="RE-1", amount=9900, cron="* * * * * */5", **extra):
    cols = {"recurrent_id": rid, "merchant_user_id": "u1", "product_code": "P", "product_name": "월간 구독",
            "amount": amount, "cron": cron, "customer_email": "kim@example.com", **extra}
    names, values = ", ".join(cols), ", ".join(":" + c for c in cols)
    db.sql(f"INSERT INTO subscriptions ({names}) VALUES ({values})", **cols)
    return db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=rid)[0][0]


def change(db, sub_id, new_amount, effective):
    db.sql("INSERT INTO price_changes (subscription_id, new_amount, effective_at) VALUES (:s, :a, :e)",
           s=sub_id, a=new_amount, e=naive(effective))
    return db.sql("SELECT max(id) FROM price_changes")[0][0]


def outbox(db, event):
    with db.sessions() as s:
        query = sa.select(Notification).where(Notification.event == event).order_by(Notification.id)
        return list(s.scalars(query))


def channels_on(db):
    db.sql("UPDATE merchants SET webhook_url = 'http://merchant.test/hook', notify_email = 1, "
           "min_cycle_interval = '1s' WHERE id = 1")


# --- the engine's re-check -------------------------------------------------------------------

def test_a_charge_edited_above_its_agreed_amount_is_held_before_naver_is_called(db, sandbox_url):
    sandbox = Sandbox(sandbox_url)
    clock, sleeps = Clock(T0), Sleeps()
    client = make_client(sandbox_url)
    engine = make_engine(db, client, clock, sleeps)
    db.sql("UPDATE merchants SET min_cycle_interval = '1s', webhook_url = 'http://merchant.test/hook' "
           "WHERE id = 1")
    rid = sandbox.register()
    add(db, rid=rid)
    walk(db.sessions, clock())
    (charge_id,) = walk(db.sessions, clock.advance(seconds=5)).new_charge_ids
    # an operator edits the charge between the walk and the worker
    db.sql("UPDATE charges SET amount = 15000 WHERE id = :i", i=charge_id)
    out = process_charge(engine, charge_id, "w1")
    with db.sessions() as s:
        row = s.get(Charge, charge_id)
        calls = s.scalars(sa.select(ChargeAttempt).where(ChargeAttempt.charge_id == charge_id)).all()
    assert out.status == "consent_held" and row.attempt_count == 0 and calls == []
    assert row.surfaced_at == clock() and row.last_code == "ConsentRequired"
    assert sandbox.payments(rid) == []
    assert [n.event for n in outbox(db, "charge.consent_held")] == ["charge.consent_held"]
    # a message for it again: it waits, nothing is sent
    assert process_charge(engine, charge_id, "w2").status == "consent_held"
    # the walk resumes it at the amount the gate allows (the subscription's, agreed) ...
    report = walk(db.sessions, clock.advance(seconds=1))
    assert report.consent_resumed_ids == [charge_id]
    # ... and NAVER approves exactly that
    assert process_charge(engine, charge_id, "w3").status == "succeeded"
    assert [p["totalPayAmount"] for p in sandbox.approved(rid)] == [9900]
    client.close()


# --- notices -----------------------------------------------------------------------------------

def test_the_price_notice_goes_out_once_within_30_days_before_the_change(db):
    channels_on(db)
    sub = add(db, cron="0 9 1 * *")
    walk(db.sessions, T0)
    raise_ = change(db, sub, 12900, T0 + timedelta(days=40))
    assert after_walk(db.sessions, T0, CONFIG) == []  # 40 days ahead: not yet
    later = T0 + timedelta(days=10, seconds=1)
    ids = after_walk(db.sessions, later, CONFIG)
    assert after_walk(db.sessions, later + timedelta(hours=1), CONFIG) == []  # exactly once
    rows = outbox(db, "price_change.notice")
    assert sorted(r.channel for r in rows) == ["email", "webhook"]
    assert sorted(ids) == sorted(r.id for r in rows)
    payload = json.loads(rows[0].payload)
    assert payload["price_change"] == {"id": raise_, "kind": "change", "old_amount": 9900,
                                       "new_amount": 12900,
                                       "effective_at": (T0 + timedelta(days=40)).isoformat(),
                                       "consent_missing": "keep_old"}
    message = payload["message"]
    assert "12,900원" in message and "9,900원" in message and "2027-01-07" in message  # price, date (KST)
    assert "해지" in message and "동의" in message  # how to cancel, consent
    assert payload["consent_url"].startswith("https://shop.example/billing/consent/")
    assert payload["consent_url"] in message
    with db.sessions() as s:
        assert s.get(PriceChange, raise_).notice_sent_at == later


def test_a_trial_end_is_noticed_and_a_decrease_needs_no_notice(db):
    channels_on(db)
    trial = add(db, rid="RE-T", cron="0 9 1 * *", trial_ends_at=naive(T0 + timedelta(days=14)))
    cheaper = add(db, rid="RE-D", cron="0 9 1 * *")
    walk(db.sessions, T0)
    decrease = change(db, cheaper, 5000, T0 + timedelta(days=5))
    after_walk(db.sessions, T0, CONFIG)
    rows = outbox(db, "price_change.notice")
    assert {r.subscription_id for r in rows} == {trial}
    assert "무료 체험" in json.loads(rows[0].payload)["message"]
    with db.sessions() as s:
        assert "no notice required" in s.get(PriceChange, decrease).note


def test_the_upcoming_notice_is_sent_once_per_cycle_and_never_for_an_unbilled_one(db):
    channels_on(db)
    db.sql("UPDATE merchants SET upcoming_notice_days = 3 WHERE id = 1")
    paid = add(db, rid="RE-P", cron="0 9 10 * *")  # 09:00 KST on the 10th = 00:00 UTC
    add(db, rid="RE-F", cron="0 9 10 * *", trial_ends_at=naive(datetime(2027, 1, 1, tzinfo=UTC)))
    walk(db.sessions, T0)
    cycle = datetime(2026, 12, 10, 0, 0, tzinfo=UTC)
    with db.sessions() as s:
        assert s.get(Subscription, paid).upcoming_notice_at == cycle - timedelta(days=3)
    after_walk(db.sessions, cycle - timedelta(days=4), CONFIG)
    assert outbox(db, "charge.upcoming") == []  # (the trial's end is noticed meanwhile)
    for hours in (0, 1, 30):
        after_walk(db.sessions, cycle - timedelta(days=3) + timedelta(hours=hours), CONFIG)
    rows = outbox(db, "charge.upcoming")
    assert sorted(r.channel for r in rows) == ["email", "webhook"]
    assert {r.subscription_id for r in rows} == {paid}  # the trial's cycle will not be billed
    payload = json.loads(rows[0].payload)
    assert payload["charge"] == {"cycle_at": cycle.isoformat(), "amount": 9900}
    assert "9,900원" in payload["message"] and "2026-12-10 09:00" in payload["message"]
    # the cycle is billed, the next one gets its own notice
    walk(db.sessions, cycle)
    after_walk(db.sessions, datetime(2027, 1, 7, 1, tzinfo=UTC), CONFIG)
    assert len(outbox(db, "charge.upcoming")) == 4


def test_no_upcoming_notice_for_a_raise_that_will_pause(db):
    channels_on(db)
    db.sql("UPDATE merchants SET upcoming_notice_days = 3, consent_missing = 'pause' WHERE id = 1")
    sub = add(db, cron="0 9 10 * *")
    walk(db.sessions, T0)
    change(db, sub, 12900, datetime(2026, 12, 1, tzinfo=UTC))
    after_walk(db.sessions, datetime(2026, 12, 7, 1, tzinfo=UTC), CONFIG)
    assert outbox(db, "charge.upcoming") == []
    assert len(outbox(db, "price_change.notice")) == 2


# --- the consent link -------------------------------------------------------------------------

def test_tokens_are_signed_and_expire():
    token = make_token(SECRET, 7, T0 + timedelta(days=1))
    assert read_token(SECRET, token, T0) == 7
    for bad in (token.replace("7.", "8.", 1), token + "x", "7.123", "garbage"):
        with pytest.raises(ConsentError, match="not valid"):
            read_token(SECRET, bad, T0)
    with pytest.raises(ConsentError, match="not valid"):
        read_token("another-secret", token, T0)
    with pytest.raises(ConsentError, match="expired"):
        read_token(SECRET, token, T0 + timedelta(days=2))


def test_the_consent_link_shows_the_change_and_records_consent_on_post(db):
    db.sql("UPDATE merchants SET consent_missing = 'pause', min_cycle_interval = '1s' WHERE id = 1")
    sub = add(db)
    walk(db.sessions, T0)
    raise_ = change(db, sub, 12900, T0 + timedelta(seconds=10))
    for t in (5, 10):
        walk(db.sessions, T0 + timedelta(seconds=t))
    with db.sessions() as s:
        assert s.get(Subscription, sub).status == "paused"
    clock = Clock(T0 + timedelta(seconds=11))
    app = Starlette(routes=consent_routes(db.sessions, CONFIG, clock))
    token = make_token(SECRET, raise_, T0 + timedelta(days=30))
    with TestClient(app) as http:
        page = http.get(f"/consent/{token}")
        assert page.status_code == 200 and "12,900원" in page.text and "<form method=\"post\">" in page.text
        with db.sessions() as s:
            assert s.get(PriceChange, raise_).consented_at is None  # a GET records nothing
        done = http.post(f"/consent/{token}")
        assert done.status_code == 200 and "동의가 기록되었습니다" in done.text
        assert http.post(f"/consent/{token}").status_code == 200  # idempotent
        assert "이미 동의" in http.get(f"/consent/{token}").text
        assert http.get("/consent/1.99999999999.forged").status_code == 400
        expired = make_token(SECRET, raise_, T0)
        assert http.post(f"/consent/{expired}").status_code == 410
    with db.sessions() as s:
        row = s.get(PriceChange, raise_)
        assert (row.status, row.consent_via, row.consented_at) == ("consented", "link", clock())
        assert s.get(Subscription, sub).status == "active"  # paused for this change: resumed


def test_consent_to_a_withdrawn_change_is_refused(db):
    sub = add(db, cron="0 9 1 * *")
    walk(db.sessions, T0)
    raise_ = change(db, sub, 12900, T0 + timedelta(days=3))
    db.sql("UPDATE price_changes SET status = 'canceled' WHERE id = :i", i=raise_)
    with db.sessions.begin() as s, pytest.raises(ConsentError, match="withdrawn"):
        record_consent(s, raise_, T0, "test")
    app = Starlette(routes=consent_routes(db.sessions, CONFIG, Clock(T0)))
    with TestClient(app) as http:
        assert http.post(f"/consent/{make_token(SECRET, raise_, T0 + timedelta(days=1))}").status_code == 409


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_adds_records_and_shows_consent(db):
    sub = add(db, cron="0 9 1 * *")
    walk(db.sessions, T0)
    added = cli_json(db.url, "consent", "add", str(sub), "--amount", "12900", "--effective", "2027-01-01")
    assert added["new_amount"] == 12900 and added["status"] == "pending"
    assert added["effective_at"] == "2026-12-31T15:00:00+00:00"  # a Seoul date
    shown = cli(db.url, "subscriptions", "show", str(sub))
    assert shown.exit_code == 0, shown.output
    assert "agreed amount: 9,900원" in shown.output and "12,900원" in shown.output
    assert "no consent yet" in shown.output
    recorded = cli_json(db.url, "consent", "record", str(added["id"]), "--via", "phone 2026-11-29")
    assert recorded["status"] == "consented" and recorded["consent_via"] == "cli: phone 2026-11-29"
    assert "consented" in cli(db.url, "subscriptions", "show", str(sub)).output
    data = cli_json(db.url, "subscriptions", "show", str(sub))
    assert data["price_changes"][0]["consented_at"] is not None
    listed = cli_json(db.url, "consent", "list")
    assert [c["id"] for c in listed] == [added["id"]]
    missing = cli(db.url, "consent", "record", "999", "--via", "x")
    assert missing.exit_code == 1 and "no price change with id 999" in missing.output
    both = cli(db.url, "consent", "record", "--via", "x")
    assert both.exit_code == 2 and "either CHANGE_ID or --subscription" in both.output


def test_cli_records_consent_to_an_amount_raised_with_sql(db):
    db.sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")
    sub = add(db)
    for t in (0, 5):
        walk(db.sessions, T0 + timedelta(seconds=t))
    db.sql("UPDATE subscriptions SET amount = 15000 WHERE id = :i", i=sub)
    walk(db.sessions, T0 + timedelta(seconds=10))
    assert "charges held for consent" in cli(db.url, "subscriptions", "show", str(sub)).output
    assert "1 charge(s) held for the customer's consent" in cli(db.url, "status").output
    status = cli_json(db.url, "status")
    assert status["consent_held"] == 1 and status["charges"]["consent_held"] == 1
    retry = cli(db.url, "retry", db.sql("SELECT max(id) FROM charges")[0][0].__str__())
    assert retry.exit_code == 1 and "held for the customer's consent" in retry.output
    result = cli_json(db.url, "consent", "record", "--subscription", str(sub), "--amount", "15000",
                      "--via", "signed form")
    assert result["status"] == "consented"
    # the walk clock is behind the CLI's real clock; the change is effective from the held cycle
    report = walk(db.sessions, T0 + timedelta(seconds=11))
    assert len(report.consent_resumed_ids) == 1
