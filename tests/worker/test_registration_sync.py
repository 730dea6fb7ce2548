"""Registration sync (issue 9): customers end registrations inside NAVER Pay; billing notices.

Against the real sandbox over HTTP and both databases: the paced sweep of NAVER's registration
list (31-day windows, pages, a cursor per merchant), its isolation from billing, the CLI, and
the charge engine's one read before retrying a declined charge.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from models import Charge, ChargeAttempt, Notification, RegistrationSync, Subscription, utcnow
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from tests.worker.cli_helpers import add_charge, cli
from worker.charging import process_charge
from worker.naverpay.kst import KST
from worker.registration_sync import REGISTRATION_ENDED, SyncConfig, sync_by_hand, sync_registrations

HOOK = "http://127.0.0.1:9/hook"  # never delivered here: the outbox row is what is checked


class RecordingClient:
    """The real client (real HTTP to the sandbox), with the list calls' arguments kept."""

    def __init__(self, client: Any) -> None:
        self.client, self.windows = client, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def list_registrations(self, **kwargs: Any) -> Any:
        self.windows.append(kwargs)
        return self.client.list_registrations(**kwargs)


class SyncWorld:
    def __init__(self, db, sandbox_url):
        self.db, self.sandbox = db, Sandbox(sandbox_url)
        self.client = RecordingClient(make_client(sandbox_url))
        db.sql("UPDATE merchants SET min_cycle_interval = '1s', webhook_url = :h WHERE id = 1", h=HOOK)

    def subscribe(self, recurrent_id: str, status: str = "active", created_days_ago: int = 0) -> int:
        created = (utcnow() - timedelta(days=created_days_ago)).replace(tzinfo=None, microsecond=0)
        self.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name,"
                    " amount, cron, status, seen_status, created_at) VALUES (:r, 'user-1', 'PLAN-M', "
                    "'월간 구독', 9900, '0 9 1 * *', :s, :s, :c)", r=recurrent_id, s=status, c=created)
        return int(self.db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=recurrent_id)[0][0])

    def sync(self, **config: Any):
        return sync_registrations(self.db.sessions, lambda _m: self.client, utcnow(), SyncConfig(**config))

    def sub(self, sub_id: int) -> Subscription:
        with self.db.sessions() as s:
            row = s.get(Subscription, sub_id)
            assert row is not None
            return row

    def events(self) -> list[dict]:
        with self.db.sessions() as s:
            return [json.loads(n.payload) for n in s.scalars(
                sa.select(Notification).where(Notification.event == REGISTRATION_ENDED)
                .order_by(Notification.id))]

    def cursor(self) -> RegistrationSync:
        with self.db.sessions() as s:
            row = s.get(RegistrationSync, 1)
            assert row is not None
            return row


@pytest.fixture
def world(db, sandbox_url):
    w = SyncWorld(db, sandbox_url)
    yield w
    w.client.client.close()


def test_sync_revokes_what_the_customer_ended_and_cancels_pending_charges(world):
    ended, kept, paused = (world.sandbox.register(user=u) for u in ("u1", "u2", "u3"))
    ended_id, kept_id, paused_id = (world.subscribe(ended), world.subscribe(kept),
                                    world.subscribe(paused, status="paused"))
    pending = add_charge(world.db, ended_id, status="retry_wait")
    world.sandbox.end_registration(ended)
    world.sandbox.end_registration(paused)

    report = world.sync()

    for sub_id in (ended_id, paused_id):
        sub = world.sub(sub_id)
        assert (sub.status, sub.seen_status) == ("revoked", "revoked")
        assert sub.revoke_reason == "registration_ended"
        assert "ended the registration in NAVER Pay" in (sub.last_error or "")
    assert world.sub(kept_id).status == "active"
    with world.db.sessions() as s:
        charge = s.get(Charge, pending)
        assert charge is not None and charge.status == "canceled"
        assert "ended in NAVER Pay" in (charge.reason or "")
    events = world.events()
    assert sorted(e["subscription"]["recurrent_id"] for e in events) == sorted([ended, paused])
    first = next(e for e in events if e["subscription"]["id"] == ended_id)
    assert first["canceled_charge_ids"] == [pending] and first["registration"]["expired_at"]
    (merchant,) = report.merchants
    assert merchant.swept and len(merchant.ended) == 2 and merchant.error is None
    assert report.notification_ids and world.cursor().last_sweep_at is not None

    again = world.sync()  # nothing new: no second event, no second revoke
    assert again.merchants[0].ended == [] and len(world.events()) == 2


def test_the_sweep_reads_31_day_windows_a_few_pages_per_run_and_starts_over(world):
    now = utcnow().astimezone(KST)
    stamps = [(now - timedelta(days=d)).strftime("%Y%m%d%H%M%S") for d in (80, 79, 78, 45, 2)]
    rids = [world.sandbox.register_at(stamp, user=f"u{n}") for n, stamp in enumerate(stamps)]
    # The oldest subscription row says how far back the sweep goes (a month before it).
    subs = [world.subscribe(rid, created_days_ago=60) for rid in rids]
    for rid in rids:
        world.sandbox.end_registration(rid)

    runs = []
    while not runs or not runs[-1].merchants[0].swept:
        runs.append(world.sync(max_pages=1, rows_per_page=2))
        assert len(runs) < 20

    assert all(len(r.merchants[0].ended) <= 2 for r in runs)  # one page (2 rows) per run
    assert {world.sub(s).status for s in subs} == {"revoked"}
    windows = [(c["start"], c["end"], c["page"]) for c in world.client.windows]
    assert all(end - start <= timedelta(days=31) for start, end, _ in windows)
    for (s1, e1, p1), (s2, _, p2) in zip(windows, windows[1:], strict=False):
        assert (s2, p2) == (s1, p1 + 1) or (p2 == 1 and s2 == e1 + timedelta(seconds=1))
    assert windows[0][0] <= utcnow() - timedelta(days=90)  # created 60 days ago, minus a month
    cursor = world.cursor()
    assert cursor.window_start == cursor.since and cursor.page == 1 and cursor.last_sweep_at
    assert cursor.ended_found == 5


def test_a_failing_list_call_keeps_the_cursor_and_touches_nothing(world):
    rid = world.sandbox.register()
    sub_id = world.subscribe(rid)
    world.sandbox.end_registration(rid)
    world.sandbox.faults(errorRate=1.0, errorStatus=503, apis=["recurrent/v1/list"])

    report = world.sync()

    (merchant,) = report.merchants
    assert merchant.error and not merchant.swept and merchant.ended == []
    assert world.sub(sub_id).status == "active"
    cursor = world.cursor()
    assert cursor.last_error and cursor.lease_until is None and cursor.page == 1
    start = cursor.window_start
    # Billing goes on: the walk is its own task and never reads the list.
    assert walk(world.db.sessions, utcnow()).failed_steps == []

    world.sandbox.faults()
    calls_before = len(world.client.windows)
    assert world.sync().merchants[0].ended and world.sub(sub_id).status == "revoked"
    assert world.client.windows[calls_before]["start"] == start  # resumed at the page that failed
    assert world.cursor().last_error is None


def test_bad_credentials_are_reported_not_mistaken_for_anything(world, sandbox_url):
    rid = world.sandbox.register()
    sub_id = world.subscribe(rid)
    world.sandbox.end_registration(rid)
    bad = make_client(sandbox_url, client_secret="wrong")

    report = sync_registrations(world.db.sessions, lambda _m: bad, utcnow())

    assert "InvalidMerchant" in (report.merchants[0].error or "")
    assert world.sub(sub_id).status == "active" and world.events() == []
    bad.close()


def test_one_run_per_merchant_at_a_time(world):
    rid = world.sandbox.register()
    world.subscribe(rid)
    world.sync()  # creates the cursor
    world.db.sql("UPDATE registration_sync SET lease_until = :t", t=(utcnow() + timedelta(minutes=1))
                 .replace(tzinfo=None))

    report = world.sync()

    assert report.merchants[0].skipped and report.merchants[0].pages == 0


def test_cli_sync_since_date_json(world, sandbox_url):
    rid = world.sandbox.register_at((utcnow().astimezone(KST) - timedelta(days=50)).strftime("%Y%m%d%H%M%S"))
    sub_id = world.subscribe(rid)  # created today: the default start would miss it
    world.sandbox.end_registration(rid)
    env = {"NAVERPAY_API_BASE": sandbox_url}
    since = (utcnow().astimezone(KST) - timedelta(days=60)).strftime("%Y-%m-%d")

    result = cli(world.db.url, "registrations", "sync", "--since", since, "--json", env=env)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["recurrent_id"] for e in data["ended"]] == [rid]
    assert data["ended"][0]["subscription_id"] == sub_id and data["ended"][0]["expired_at"]
    (merchant,) = data["merchants"]
    assert merchant["swept_to_now"] and merchant["pages"] >= 2 and merchant["error"] is None
    assert world.sub(sub_id).status == "revoked"
    with world.db.sessions() as s:  # a hand run leaves the periodic cursor alone
        assert s.get(RegistrationSync, 1) is None
    future = cli(world.db.url, "registrations", "sync", "--since", "2999-01-01", env=env)
    assert future.exit_code == 2 and "in the future" in future.output
    bad = cli(world.db.url, "registrations", "sync", "--since", "yesterday", env=env)
    assert bad.exit_code == 2 and "--since" in bad.output


def test_cli_help_names_the_group():
    result = cli("sqlite://", "registrations", "sync", "--help")

    assert result.exit_code == 0 and "--since" in result.output and "--json" in result.output
    assert "registrations" in cli("sqlite://", "--help").output


def test_cli_sync_exit_code_1_when_naver_cannot_be_read(world, sandbox_url):
    world.subscribe(world.sandbox.register())
    world.sandbox.faults(errorRate=1.0, errorStatus=503, apis=["recurrent/v1/list"])

    result = cli(world.db.url, "registrations", "sync", env={"NAVERPAY_API_BASE": sandbox_url})

    assert result.exit_code == 1 and "503" in result.output


def test_hand_sync_with_nothing_to_do(world):
    report = sync_by_hand(world.db.sessions, lambda _m: world.client, utcnow())

    assert report.merchants == [] and world.client.windows == []


# --- the charge engine's check before a retry -------------------------------------------------

class ListWithBadCredentials:
    """The good client for everything but the registration list (a real 401 from the sandbox)."""

    def __init__(self, good: Any, bad: Any) -> None:
        self.good, self.bad = good, bad

    def __getattr__(self, name: str) -> Any:
        return getattr(self.good, name)

    def list_registrations(self, **kwargs: Any) -> Any:
        return self.bad.list_registrations(**kwargs)


class RetryWorld:
    def __init__(self, db, sandbox_url):
        self.db, self.sandbox = db, Sandbox(sandbox_url)
        self.clock, self.sleeps = Clock(), Sleeps()
        self.client = make_client(sandbox_url)
        self.engine = make_engine(db, self.client, self.clock, self.sleeps)
        db.sql("UPDATE merchants SET min_cycle_interval = '1s', retry_delays = '30s', max_attempts = 3, "
               "webhook_url = :h WHERE id = 1", h=HOOK)

    def declined_once(self) -> tuple[str, int]:
        rid = self.sandbox.register(behaviour={"declineCode": "NotEnoughAccountBalance", "declineTimes": 1})
        self.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name,"
                    " amount, cron) VALUES (:r, 'user-1', 'PLAN-M', '월간 구독', 9900, '* * * * * */5')",
                    r=rid)
        walk(self.db.sessions, self.clock())
        (charge_id,) = walk(self.db.sessions, self.clock.advance(seconds=5)).new_charge_ids
        assert process_charge(self.engine, charge_id, "t").status == "retry_wait"
        self.clock.advance(seconds=31)
        return rid, charge_id

    def charge(self, charge_id: int) -> Charge:
        with self.db.sessions() as s:
            row = s.get(Charge, charge_id)
            assert row is not None
            return row

    def kinds(self, charge_id: int) -> list[tuple[str, str]]:
        with self.db.sessions() as s:
            return [(a.kind, a.outcome) for a in s.scalars(
                sa.select(ChargeAttempt).where(ChargeAttempt.charge_id == charge_id)
                .order_by(ChargeAttempt.id))]


@pytest.fixture
def retry_world(db, sandbox_url):
    w = RetryWorld(db, sandbox_url)
    yield w
    w.client.close()


def test_a_retry_reads_the_registration_once_and_ends_a_dead_one(retry_world):
    w = retry_world
    rid, charge_id = w.declined_once()
    w.sandbox.end_registration(rid)

    out = process_charge(w.engine, charge_id, "t")

    charge = w.charge(charge_id)
    assert out.status == "canceled" and charge.attempt_count == 1
    assert "ended in NAVER Pay" in (charge.reason or "")
    assert w.kinds(charge_id)[-1] == ("registration", "ok")
    assert len(w.sandbox.payments(rid)) == 1  # no new reservation for a dead registration
    with w.db.sessions() as s:
        sub = s.scalars(sa.select(Subscription).where(Subscription.recurrent_id == rid)).one()
        assert (sub.status, sub.revoke_reason) == ("revoked", "registration_ended")
        events = list(s.scalars(sa.select(Notification.event).where(Notification.subscription_id == sub.id)))
    assert REGISTRATION_ENDED in events and out.notification_ids


def test_a_valid_registration_is_retried_after_one_read(retry_world):
    w = retry_world
    rid, charge_id = w.declined_once()

    assert process_charge(w.engine, charge_id, "t").status == "succeeded"

    kinds = [k for k, _ in w.kinds(charge_id)]
    assert kinds == ["reserve", "approve", "registration", "reserve", "approve"]
    assert len(w.sandbox.approved(rid)) == 1


def test_a_failed_read_never_blocks_the_retry(retry_world):
    w = retry_world
    rid, charge_id = w.declined_once()
    w.sandbox.faults(errorRate=1.0, errorStatus=503, apis=["recurrent/v1/list"])

    assert process_charge(w.engine, charge_id, "t").status == "succeeded"

    assert ("registration", "transient") in w.kinds(charge_id)
    assert len(w.sandbox.approved(rid)) == 1


def test_a_merchant_side_fault_on_the_read_holds_the_charge(retry_world, sandbox_url):
    w = retry_world
    rid, charge_id = w.declined_once()
    bad = make_client(sandbox_url, client_secret="wrong")
    held_engine = make_engine(w.db, ListWithBadCredentials(w.client, bad), w.clock, w.sleeps)

    out = process_charge(held_engine, charge_id, "t")

    charge = w.charge(charge_id)
    assert out.status == "held" and charge.held_from == "retry_wait" and charge.attempt_count == 1
    assert len(w.sandbox.payments(rid)) == 1  # no attempt consumed, nothing reserved
    with w.db.sessions() as s:
        assert "charge.held" in s.scalars(sa.select(Notification.event)).all()
    # Credentials fixed: the held charge resumes, reads again and retries.
    w.clock.now = charge.next_attempt_at + timedelta(seconds=1)
    assert process_charge(w.engine, charge_id, "t").status == "succeeded"
    assert w.charge(charge_id).attempt_count == 2
    bad.close()


def test_a_start_set_ahead_by_hand_reads_nothing_and_fails_nothing(world):
    world.subscribe(world.sandbox.register())
    world.sync()  # creates the cursor
    ahead = (utcnow() + timedelta(days=3)).replace(tzinfo=None, microsecond=0)
    world.db.sql("UPDATE registration_sync SET since = :t, window_start = :t", t=ahead)
    calls = len(world.client.windows)

    report = world.sync()

    assert report.merchants[0].swept and report.merchants[0].error is None
    assert len(world.client.windows) == calls


def test_the_sync_and_the_followups_have_their_own_beat_entries():
    import celeryconfig
    from worker import tasks  # noqa: F401 - registers the tasks
    from worker.app import app

    entries = {entry["task"] for entry in celeryconfig.beat_schedule.values()}

    assert {"scheduler.walk", "worker.sync_registrations", "worker.followups"} <= entries
    assert {"worker.sync_registrations", "worker.followups"} <= set(app.tasks)
