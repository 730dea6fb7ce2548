"""The walk on real SQLite and PostgreSQL: due work in, one charge per cycle out."""

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from models import Charge, make_engine, make_session_factory
from scheduler.walk import WalkConfig, plan_cycles, walk

T0 = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
EVERY_5S = "* * * * * */5"


def add(db, recurrent_id, cron=EVERY_5S, **extra):
    cols = {"recurrent_id": recurrent_id, "merchant_user_id": "u1", "product_code": "P",
            "product_name": "월간 구독", "amount": 9900, "cron": cron, **extra}
    names = ", ".join(cols)
    db.sql(f"INSERT INTO subscriptions ({names}) VALUES ({', '.join(':' + c for c in cols)})", **cols)
    return db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=recurrent_id)[0][0]


def charges(db):
    return [tuple(r) for r in db.sql(
        "SELECT subscription_id, cycle_at, status FROM charges ORDER BY subscription_id, cycle_at")]


def test_first_walk_schedules_then_bills_each_cycle_once(db):
    sub = add(db, "RE-1")
    report = walk(db.sessions, T0)
    assert report.scheduled == 1 and report.charge_ids == []
    assert db.sql("SELECT next_charge_at FROM subscriptions")[0][0] is not None
    report = walk(db.sessions, T0 + timedelta(seconds=6))
    assert len(report.new_charge_ids) == 1
    again = walk(db.sessions, T0 + timedelta(seconds=6))
    assert again.new_charge_ids == []  # nothing new; the charge is leased, not re-enqueued
    assert again.stuck_charge_ids == []
    rows = charges(db)
    assert len(rows) == 1 and rows[0][0] == sub and rows[0][2] == "pending"


def test_walk_skips_superseded_cycles_and_bills_only_the_newest_under_latest(db):
    add(db, "RE-1", next_charge_at=(T0 - timedelta(hours=2)).replace(tzinfo=None))
    report = walk(db.sessions, T0, WalkConfig(missed_grace=timedelta(seconds=12)))
    statuses = [r[2] for r in charges(db)]
    # 2 hours of 5-second cycles: every cycle a later one supersedes is missed and gets a
    # skipped row with a reason (bounded at 100 per walk); none is the newest yet
    assert len(statuses) == 100
    assert report.skipped == 100 and statuses.count("pending") == 0
    # the walk catches up in later passes; only the newest due cycle is billed
    for _ in range(20):
        walk(db.sessions, T0, WalkConfig(missed_grace=timedelta(seconds=12)))
    statuses = [r[2] for r in charges(db)]
    assert len(statuses) == 2 * 720 + 1
    assert statuses.count("pending") == 1
    with db.sessions() as s:
        assert s.scalars(sa.select(Charge.cycle_at).where(Charge.status == "pending")).one() == T0
    reason = db.sql("SELECT reason FROM charges WHERE status = 'skipped' LIMIT 1")[0][0]
    assert "missed_cycles=latest" in reason


@pytest.mark.parametrize(
    ("rule", "cutoff_minutes", "complete", "billed"),
    [
        # the newest due cycle (4) is within the grace: latest/skip bill it alone, all bills all
        ("latest", 3, True, [4]), ("skip", 3, True, [4]), ("all", 3, True, [0, 1, 2, 3, 4]),
        # every cycle is within the grace: a later due cycle still supersedes the older ones
        ("latest", -60, True, [4]), ("skip", -60, True, [4]), ("all", -60, True, [0, 1, 2, 3, 4]),
        # even the newest is past the grace: too late to bill, except under all
        ("latest", 60, True, []), ("skip", 60, True, []), ("all", 60, True, [0, 1, 2, 3, 4]),
        # more cycles are due than were enumerated: none of these is the newest
        ("latest", -60, False, []), ("skip", -60, False, []), ("all", -60, False, [0, 1, 2, 3, 4]),
    ],
)
def test_missed_cycle_rules(rule, cutoff_minutes, complete, billed):
    cycles = [T0 + timedelta(minutes=i) for i in range(5)]
    plan = plan_cycles(cycles, complete=complete, rule=rule,
                       cutoff=T0 + timedelta(minutes=cutoff_minutes))
    assert [i for i, (_, reason) in enumerate(plan) if reason is None] == billed
    assert len(plan) == 5  # every cycle gets a row
    assert all(f"missed_cycles={rule}" in reason for _, reason in plan if reason)


def test_a_single_due_cycle_within_the_grace_is_billed_under_every_rule():
    for rule in ("latest", "all", "skip"):
        plan = plan_cycles([T0], complete=True, rule=rule, cutoff=T0 - timedelta(hours=1))
        assert plan == [(T0, None)]


def test_bad_rows_are_flagged_and_the_rest_still_billed(db):
    good = add(db, "RE-good")
    bad_cron = add(db, "RE-cron", cron="0 9 32 * *")
    bad_zone = add(db, "RE-zone", timezone="Mars/Base")
    walk(db.sessions, T0)
    walk(db.sessions, T0 + timedelta(seconds=6))
    rows = {r[0]: (r[1], r[2]) for r in db.sql("SELECT id, status, last_error FROM subscriptions")}
    assert rows[bad_cron] == ("invalid", "cron '0 9 32 * *': invalid day-of-month field '32'")
    assert rows[bad_zone][0] == "invalid" and "unknown time zone 'Mars/Base'" in rows[bad_zone][1]
    assert rows[good] == ("active", None)
    assert [r[0] for r in charges(db)] == [good]


def test_unknown_merchant(db, tmp_path):
    if db.dialect == "postgresql":
        # PostgreSQL enforces the foreign key: the bad INSERT itself fails, loudly.
        with pytest.raises(IntegrityError, match="merchant"):
            add(db, "RE-merchant", merchant_id=42)
        return
    # A plain sqlite3 client does not enforce foreign keys; the walk flags the row instead.
    path = db.url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, "
                     "product_name, amount, cron, merchant_id) VALUES ('RE-m', 'u', 'P', 'n', 100, "
                     "'* * * * *', 42)")
    add(db, "RE-good")
    report = walk(db.sessions, T0)
    assert report.invalid == [(1, "unknown merchant_id 42: no such row in merchants")]
    assert report.scheduled == 1


def test_bad_merchant_policy_flags_its_subscriptions(db):
    db.sql("INSERT INTO merchants (name, retry_delays) VALUES ('sloppy', 'whenever')")
    sub = add(db, "RE-1", merchant_id=2)
    walk(db.sessions, T0)
    status, error = db.sql("SELECT status, last_error FROM subscriptions WHERE id = :i", i=sub)[0]
    assert status == "invalid" and "retry_delays 'whenever'" in error


def test_null_in_a_required_field_is_flagged(db):
    if db.dialect == "postgresql":
        with pytest.raises(IntegrityError, match="(?i)null"):
            add(db, "RE-null", product_name=None)
        return
    # The schema forbids it on both databases; a NULL that slips in anyway (a hand-edited
    # table, a column added later without NOT NULL) is flagged by the walk's validation.
    with pytest.raises(IntegrityError):
        add(db, "RE-null", product_name=None)
    from models import Merchant, Subscription
    from scheduler.validation import problems

    row = Subscription(recurrent_id="RE-x", merchant_user_id=None, product_code="P",
                       product_name="n", amount=None, tax_free_amount=0, cron="0 9 * * *",
                       timezone="Asia/Seoul", merchant=Merchant(id=1, name="d", retry_delays="1h",
                                                                max_attempts=2, retryable_codes="*"))
    assert problems(row) == ["merchant_user_id is empty",
                             "amount must be at least 100 won (NAVER Pay's minimum), got None"]


def test_two_walks_at_once_never_create_a_second_charge(db):
    ids = [add(db, f"RE-{i}") for i in range(30)]
    walk(db.sessions, T0)
    barrier = threading.Barrier(4)
    errors = []

    def run():
        engine = make_engine(db.url)
        try:
            barrier.wait()
            walk(make_session_factory(engine), T0 + timedelta(seconds=11))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = charges(db)
    per_cycle = {}
    for sub_id, cycle_at, _ in rows:
        per_cycle[(sub_id, cycle_at)] = per_cycle.get((sub_id, cycle_at), 0) + 1
    assert set(per_cycle.values()) == {1}
    assert {s for s, _ in per_cycle} == set(ids)
    assert len(rows) == 2 * len(ids)  # two 5-second cycles each in 11 seconds


def test_cancel_wins_over_pending_attempts(db):
    sub = add(db, "RE-1")
    walk(db.sessions, T0)
    walk(db.sessions, T0 + timedelta(seconds=6))
    later = (T0 + timedelta(hours=1)).replace(tzinfo=None)
    db.sql("UPDATE charges SET status = 'retry_wait', next_attempt_at = :t", t=later)
    db.sql("UPDATE subscriptions SET status = 'paused' WHERE id = :i", i=sub)
    report = walk(db.sessions, T0 + timedelta(hours=2))
    assert report.canceled == 1 and report.charge_ids == []
    assert charges(db)[0][2] == "canceled"


def test_retry_due_and_stuck_charges_are_claimed_once_per_lease(db):
    add(db, "RE-1")
    add(db, "RE-2")
    walk(db.sessions, T0)
    walk(db.sessions, T0 + timedelta(seconds=6))
    with db.sessions.begin() as s:
        first, second = s.scalars(sa.select(Charge).order_by(Charge.id)).all()
        first.status, first.lease_until = "retry_wait", None
        first.next_attempt_at = T0 + timedelta(seconds=30)
        second.status = "approving"  # a worker died mid-approval; its lease runs out
    config = WalkConfig(lease=timedelta(seconds=60))
    later = T0 + timedelta(seconds=31)
    report = walk(db.sessions, later, config)
    assert report.retry_charge_ids == [first.id]
    assert walk(db.sessions, later, config).retry_charge_ids == []  # leased now
    report = walk(db.sessions, T0 + timedelta(minutes=10), config)
    assert second.id in report.stuck_charge_ids
