"""Defect 12: charges stuck in ``reserving``/``unknown`` are aged and surfaced to a human
(status line, metrics with the oldest age, a merchant webhook event), against the real sandbox
and real SQLite and PostgreSQL. The engine's conservative behaviour is kept: the charge is
still retried with the same key and may settle by itself."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import generate_latest

from models import Charge, Notification
from tests.worker.cli_helpers import add_charge, cli, cli_json, subscribe
from tests.worker.test_charging_hardening import Hardened
from worker import notify
from worker.metrics_server import registry_for
from worker.overview import overview
from worker.settings import Settings
from worker.surfacing import surface_stuck

HOUR = timedelta(hours=1)


@pytest.fixture
def world(db, sandbox_url):
    w = Hardened(db, sandbox_url)
    w.policy(webhook_url="http://127.0.0.1:9/hook", webhook_secret="s", notify_email=1)
    yield w
    w.client.close()


def surface(db, now, after=HOUR):
    with db.sessions.begin() as s:
        return surface_stuck(s, now, after, 100)


def charge(db, charge_id):
    with db.sessions() as s:  # through the ORM: SQLite gives raw SQL datetimes as text
        return s.get(Charge, charge_id)


def alerts(db):
    with db.sessions() as s:
        return [(n.event, n.channel, n.charge_id) for n in s.scalars(
            sa.select(Notification).order_by(Notification.id))]


def test_an_unknown_approval_is_surfaced_once_past_the_bound(world, caplog):
    """Defect 12: an ``unknown`` approval was retried quietly for ever."""
    rid = world.subscribe(behaviour={"serverErrorTimes": 1000}, customer_email="c@example.com")
    charge_id = world.to_unknown_without_approval(rid)
    since = charge(world.db, charge_id).stuck_since
    assert since is not None and charge(world.db, charge_id).surfaced_at is None
    # within the bound: nothing to say
    world.clock.now = since + HOUR - timedelta(seconds=1)
    assert surface(world.db, world.clock()) == 0
    # the engine keeps trying meanwhile (same key), and the charge stays unsettled since then
    assert world.run(charge_id).status in ("unknown", "approving")
    assert charge(world.db, charge_id).stuck_since == since
    # past the bound: surfaced once, with an error log and a merchant alert (never the customer)
    world.clock.advance(seconds=2)
    caplog.set_level(logging.ERROR)
    assert surface(world.db, world.clock()) == 1
    row = charge(world.db, charge_id)
    assert row.status in ("unknown", "approving") and row.surfaced_at == world.clock()
    assert alerts(world.db) == [(notify.CHARGE_STUCK, "webhook", charge_id)]
    assert any("charge.stuck" in r.getMessage() and f"charge {charge_id}" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)
    world.clock.advance(hours=5)
    assert surface(world.db, world.clock()) == 0  # once per stuck episode
    assert len(alerts(world.db)) == 1
    # NAVER recovers: the charge settles by itself and is no longer stuck or surfaced
    world.sandbox.http.post(f"/_sandbox/registrations/{rid}/behaviour", json={}).raise_for_status()
    assert world.run(charge_id).status == "succeeded"
    row = charge(world.db, charge_id)
    assert (row.stuck_since, row.surfaced_at) == (None, None)
    assert len(world.sandbox.approved(rid)) == 1


def test_stuck_reserving_and_held_charges_are_surfaced_and_settled_ones_are_not(db):
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    sid = subscribe(db)
    old, recent = now - 2 * HOUR, now - timedelta(minutes=10)
    reserving = add_charge(db, sid, "reserving", cycle="2026-10-01 00:00:00", stuck_since=old)
    held = add_charge(db, sid, "held", cycle="2026-10-02 00:00:00", stuck_since=old)
    add_charge(db, sid, "unknown", cycle="2026-10-03 00:00:00", stuck_since=recent)
    add_charge(db, sid, "succeeded", cycle="2026-10-04 00:00:00")
    add_charge(db, sid, "unknown", cycle="2026-10-05 00:00:00", stuck_since=old, surfaced_at=recent)
    assert surface(db, now) == 2
    assert {c for _, _, c in alerts(db)} == set()  # no webhook configured: logged only
    assert charge(db, reserving).surfaced_at == now == charge(db, held).surfaced_at


def test_a_charge_stuck_again_later_is_surfaced_again(sqlite_db):
    db = sqlite_db
    db.sql("UPDATE merchants SET webhook_url = 'http://127.0.0.1:9/hook'")
    now = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
    charge_id = add_charge(db, subscribe(db), "unknown", stuck_since=now - 2 * HOUR)
    assert surface(db, now) == 1
    # it settled, then got stuck in a later episode (the engine cleared both columns)
    db.sql("UPDATE charges SET stuck_since = :t, surfaced_at = NULL", t=now + HOUR)
    assert surface(db, now + 3 * HOUR) == 1
    assert [c for _, _, c in alerts(db)] == [charge_id, charge_id]


def test_status_and_metrics_show_what_needs_a_human(db):
    now = datetime.now(UTC)
    sid = subscribe(db)
    subscribe(db, "RE-2", status="revoking")
    subscribe(db, "RE-3", status="expire_failed")
    add_charge(db, sid, "held", cycle="2026-10-01 00:00:00", stuck_since=now - 3 * HOUR)
    add_charge(db, sid, "unknown", cycle="2026-10-02 00:00:00", stuck_since=now - 2 * HOUR,
               surfaced_at=now - HOUR)
    add_charge(db, sid, "reserving", cycle="2026-10-03 00:00:00", stuck_since=now - timedelta(minutes=5))
    data = cli_json(db.url, "status")
    assert (data["held"], data["stuck"], data["surfaced"]) == (1, 3, 1)
    assert 3 * 3600 - 5 <= data["oldest_stuck_seconds"] <= 3 * 3600 + 60
    assert (data["revoking"], data["expire_failed"]) == (1, 1)
    text = cli(db.url, "status").output
    assert "held" in text and "3 charge(s), 1 surfaced to a human, oldest 3h00m" in text
    assert "1 revoking, 1 expire_failed" in text
    metrics = generate_latest(registry_for(db.sessions)).decode()
    assert "npay_charges_held 1.0" in metrics
    assert "npay_charges_surfaced 1.0" in metrics
    assert "npay_subscriptions_expire_failed 1.0" in metrics
    (age,) = [line for line in metrics.splitlines()
              if line.startswith("npay_charges_oldest_unsettled_seconds ")]
    assert 3 * 3600 - 5 <= float(age.split()[1]) <= 3 * 3600 + 60


def test_nothing_stuck_reads_as_zero(sqlite_db):
    with sqlite_db.sessions() as s:
        view = overview(s, datetime.now(UTC))
    assert (view.held, view.stuck, view.surfaced, view.oldest_stuck_seconds) == (0, 0, 0, 0.0)
    assert "unsettled      0 charge(s), 0 surfaced to a human\n" in cli(sqlite_db.url, "status").output


def test_the_bound_is_a_setting():
    assert Settings.from_env({}).surface_after == HOUR
    assert Settings.from_env({"BILLING_SURFACE_AFTER_SECONDS": "600"}).surface_after == timedelta(minutes=10)
    with pytest.raises(ValueError, match="BILLING_SURFACE_AFTER_SECONDS"):
        Settings.from_env({"BILLING_SURFACE_AFTER_SECONDS": "soon"})


def test_status_and_metrics_show_refunds_that_need_a_look(db):
    sid = subscribe(db)
    charge_id = add_charge(db, sid, "succeeded", payment_id="P-1", approved_amount=9900)
    for n, status in enumerate(["held", "unknown", "cancelling", "failed", "succeeded"]):
        db.sql("INSERT INTO refunds (charge_id, subscription_id, payment_id, amount, reason, status, "
               "idempotency_key) VALUES (:c, :s, 'P-1', 100, 'test', :st, :k)",
               c=charge_id, s=sid, st=status, k=f"key-{n}")
    data = cli_json(db.url, "status")
    assert (data["refunds_held"], data["refunds_unsettled"]) == (1, 2)
    assert data["refunds"]["failed"] == 1 and data["refunds"]["requested"] == 0
    text = cli(db.url, "status").output
    assert "1 held (merchant-side fault: resumes by itself), 2 unsettled (resolved via NAVER history), " \
           "1 failed" in text
    metrics = generate_latest(registry_for(db.sessions)).decode()
    assert "npay_refunds_held 1.0" in metrics and "npay_refunds_unsettled 2.0" in metrics
    assert 'npay_refunds{status="succeeded"} 1.0' in metrics
