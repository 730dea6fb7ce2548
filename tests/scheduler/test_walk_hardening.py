"""Regression tests for the walk's money-path defects (issue 7: 1, 2, 7, 8, 9, 13, NAVER's
input limits, held charges), on SQLite and PostgreSQL. Each failed on the code before the fix.
"""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models import Charge, Subscription
from scheduler import cycles
from scheduler.walk import WalkConfig, merchant_pay_id, walk

T0 = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
MONTHLY = "0 9 1 * *"  # 09:00 KST on the 1st = 00:00 UTC


def add(db, recurrent_id, cron=MONTHLY, **extra):
    cols = {"recurrent_id": recurrent_id, "merchant_user_id": "u1", "product_code": "P",
            "product_name": "월간 구독", "amount": 9900, "cron": cron, **extra}
    names = ", ".join(cols)
    db.sql(f"INSERT INTO subscriptions ({names}) VALUES ({', '.join(':' + c for c in cols)})", **cols)
    return db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=recurrent_id)[0][0]


def billed(db, status=None):
    """(subscription_id, cycle_at) of the charges, oldest first; only ``status`` if given."""
    query = sa.select(Charge.subscription_id, Charge.cycle_at).order_by(Charge.subscription_id,
                                                                        Charge.cycle_at)
    if status:
        query = query.where(Charge.status == status)
    with db.sessions() as s:
        return [tuple(r) for r in s.execute(query)]


def sub_row(db, sub_id):
    with db.sessions() as s:
        return s.get(Subscription, sub_id)


def naive(at):
    return at.replace(tzinfo=None)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# -- Defect 1: one bad row, or one failing step, never stops billing ----------------------


@pytest.mark.parametrize("cron", ["0 9 30 2 *", "0 9 31 4 *"])
def test_a_cron_that_never_fires_is_invalid_and_the_others_are_billed(db, cron):
    good = add(db, "RE-good", cron="* * * * * */5")
    bad = add(db, "RE-bad", cron=cron, next_charge_at=naive(T0 - timedelta(seconds=1)))
    walk(db.sessions, T0)
    report = walk(db.sessions, T0 + timedelta(seconds=6))
    row = sub_row(db, bad)
    assert row.status == "invalid" and f"cron '{cron}' never fires" in row.last_error
    assert "write 'L'" in row.last_error
    assert report.failed_steps == [] and [s for s, _ in billed(db)] == [good]


def test_a_row_that_raises_for_any_reason_is_invalid_and_the_others_are_billed(db, monkeypatch):
    # The bad row's cron is fine; computing its cycles blows up for a reason nobody foresaw.
    real = cycles._iter_local

    def exploding(expr, zone, after):
        if expr == "0 9 1 * *" and after.year == 2026:
            raise RuntimeError("disk on fire")
        return real(expr, zone, after)

    due = naive(T0 - timedelta(minutes=1))
    goods = [add(db, f"RE-good-{i}", cron="0 9 2 * *", next_charge_at=due) for i in range(3)]
    bad = add(db, "RE-bad", cron="0 9 1 * *", next_charge_at=due)
    monkeypatch.setattr(cycles, "_iter_local", exploding)
    report = walk(db.sessions, T0)
    assert report.failed_steps == []
    assert sorted(report.new_charge_ids) == sorted(
        c for c, in db.sql("SELECT id FROM charges WHERE status = 'pending'"))
    assert sorted(s for s, _ in billed(db)) == goods
    row = sub_row(db, bad)
    assert row.status == "invalid" and "RuntimeError: disk on fire" in row.last_error
    assert [i for i, _ in report.invalid] == [bad]


def test_a_row_the_database_refuses_is_invalid_and_the_batch_goes_on(db, monkeypatch):
    from scheduler import billing

    real = billing._charge_row
    due = naive(T0 - timedelta(minutes=1))
    ids = [add(db, f"RE-{i}", next_charge_at=due) for i in range(4)]

    def broken(sub, *args):  # a charge row the database must refuse (amount > 0 check)
        row = real(sub, *args)
        return {**row, "amount": 0} if sub.id == ids[1] else row

    monkeypatch.setattr(billing, "_charge_row", broken)
    report = walk(db.sessions, T0)
    assert report.failed_steps == []
    assert sorted(s for s, _ in billed(db)) == [ids[0], ids[2], ids[3]]
    row = sub_row(db, ids[1])
    assert row.status == "invalid" and "the database refused" in row.last_error
    assert len(report.new_charge_ids) == 3


def test_a_failing_step_is_reported_and_the_other_steps_still_run(db, monkeypatch):
    from scheduler import walk as walk_module

    sub = add(db, "RE-1", next_charge_at=naive(T0 - timedelta(minutes=1)))
    add(db, "RE-2", next_charge_at=naive(T0 - timedelta(minutes=1)))
    walk(db.sessions, T0)
    db.sql("UPDATE charges SET status = 'retry_wait', lease_until = NULL, next_attempt_at = :t "
           "WHERE subscription_id = :s", t=naive(T0), s=sub)

    def broken(*args):
        raise RuntimeError("cancel step broke")

    monkeypatch.setattr(walk_module, "cancel_inactive", broken)
    report = walk(db.sessions, T0 + timedelta(seconds=1))
    assert report.failed_steps == [("cancel", "RuntimeError: cancel step broke")]
    assert len(report.retry_charge_ids) == 1  # the later steps ran


# -- Defect 2: merchant_pay_id cannot collide; a conflict skips one row, never the batch ----


COLLIDING = ("20261128RE0000142514ZStYYU", "20261128RE0000703398ZStYYU")  # 40-bit digests equal


def test_recurrent_ids_whose_old_digests_collide_are_both_billed(db):
    ids = [add(db, rid, next_charge_at=naive(T0 - timedelta(minutes=1))) for rid in COLLIDING]
    report = walk(db.sessions, T0)
    assert report.failed_steps == [] and len(report.new_charge_ids) == 2
    assert sorted(s for s, _ in billed(db)) == sorted(ids)
    pay_ids = {r[0] for r in db.sql("SELECT merchant_pay_id FROM charges")}
    assert pay_ids == {merchant_pay_id(i, T0 - timedelta(minutes=1)) for i in ids}


def test_merchant_pay_id_fits_naver_limits_for_the_largest_id():
    from scheduler import planning

    longest = merchant_pay_id(2**63 - 1, utc(2026, 12, 1))
    assert len(longest) <= planning.MERCHANT_PAY_ID_MAX
    # what the engine sends: merchantPayId + "-attempt", and the idempotency key built on it
    assert len(f"{longest}-999-approve-999") <= 64
    assert merchant_pay_id(1, utc(2026, 12, 1)) != merchant_pay_id(11, utc(2026, 12, 1))


def test_an_insert_conflict_on_merchant_pay_id_skips_that_row_only(db):
    cycle = T0 - timedelta(minutes=1)
    a, b, c = (add(db, f"RE-{i}", next_charge_at=naive(cycle)) for i in range(3))
    # A row of subscription a already holds the merchant_pay_id b's cycle will want.
    db.sql("INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount, "
           "status) VALUES (:s, 'RE-0', :t, :m, 9900, 'succeeded')",
           s=a, t=naive(cycle - timedelta(days=30)), m=merchant_pay_id(b, cycle))
    report = walk(db.sessions, T0)
    assert report.failed_steps == [] and report.conflicts == 1
    assert sorted(s for s, _ in billed(db, "pending")) == [a, c]
    assert sub_row(db, b).status == "active"


# -- Defect 7: cycles that fell while a subscription was not active are never billed -------


def test_a_pause_resumed_by_sql_bills_no_paused_cycle(db):
    db.sql("UPDATE merchants SET missed_cycles = 'all'")
    sub = add(db, "RE-1")
    walk(db.sessions, T0)  # 28 Nov: next cycle 1 Dec
    db.sql("UPDATE subscriptions SET status = 'paused' WHERE id = :i", i=sub)
    for day in (utc(2026, 11, 29), utc(2026, 12, 1, 0, 1), utc(2027, 1, 1, 0, 1)):
        walk(db.sessions, day)
    db.sql("UPDATE subscriptions SET status = 'active' WHERE id = :i", i=sub)  # 15 March
    report = walk(db.sessions, utc(2027, 3, 15))
    assert billed(db) == [] and report.charge_ids == [] and report.resumed == 1
    assert sub_row(db, sub).next_charge_at == utc(2027, 4, 1)
    walk(db.sessions, utc(2027, 4, 1, 0, 0, 30))
    assert billed(db) == [(sub, utc(2027, 4, 1))]


def test_an_invalid_row_fixed_and_reactivated_bills_no_cycle_of_its_invalid_time(db):
    db.sql("UPDATE merchants SET missed_cycles = 'all'")
    sub = add(db, "RE-1")
    walk(db.sessions, T0)  # next cycle 1 Dec
    db.sql("UPDATE subscriptions SET cron = '0 9 32 * *' WHERE id = :i", i=sub)
    walk(db.sessions, utc(2026, 12, 1, 0, 1))
    assert sub_row(db, sub).status == "invalid"
    db.sql("UPDATE subscriptions SET cron = :c, status = 'active' WHERE id = :i", c=MONTHLY, i=sub)
    report = walk(db.sessions, utc(2027, 2, 10))
    assert billed(db) == [] and report.resumed == 1
    walk(db.sessions, utc(2027, 3, 1, 0, 1))
    assert billed(db) == [(sub, utc(2027, 3, 1))]


def test_the_walk_records_the_status_it_saw_through_its_index(db):
    ids = [add(db, f"RE-{i}") for i in range(3)]
    walk(db.sessions, T0)
    db.sql("UPDATE subscriptions SET status = 'paused' WHERE id = :i", i=ids[0])
    db.sql("UPDATE subscriptions SET status = 'canceled' WHERE id = :i", i=ids[1])
    report = walk(db.sessions, T0 + timedelta(seconds=1))
    assert report.statuses == 2
    assert [r[0] for r in db.sql("SELECT seen_status FROM subscriptions ORDER BY id")] == [
        "paused", "canceled", "active"]
    assert walk(db.sessions, T0 + timedelta(seconds=2)).statuses == 0


# -- Defect 8: a cron or zone edited with SQL bills no cycle of the old schedule -----------


def test_changing_the_cron_bills_no_cycle_of_the_old_schedule(db):
    db.sql("UPDATE merchants SET missed_cycles = 'all'")
    sub = add(db, "RE-1")
    walk(db.sessions, utc(2026, 11, 2))  # next cycle 1 Dec on the old schedule
    db.sql("UPDATE subscriptions SET cron = '0 9 15 * *' WHERE id = :i", i=sub)  # on 28 Nov
    for at in (utc(2026, 11, 28), utc(2026, 12, 1, 0, 0, 30), utc(2026, 12, 15, 0, 0, 30),
               utc(2026, 12, 20)):
        walk(db.sessions, at)
    assert billed(db) == [(sub, utc(2026, 12, 15))]


def test_changing_the_time_zone_reschedules_on_the_new_zone(db):
    sub = add(db, "RE-1")
    walk(db.sessions, utc(2026, 11, 2))  # 1 Dec 09:00 KST = 00:00 UTC
    db.sql("UPDATE subscriptions SET timezone = 'UTC' WHERE id = :i", i=sub)
    report = walk(db.sessions, utc(2026, 12, 1, 0, 0, 30))
    assert billed(db) == [] and report.rescheduled == 1
    assert sub_row(db, sub).next_charge_at == utc(2026, 12, 1, 9)  # 09:00 UTC the same day
    walk(db.sessions, utc(2026, 12, 1, 9, 0, 30))
    assert billed(db) == [(sub, utc(2026, 12, 1, 9))]


# -- Defect 9: crons that multiply charges are refused, saying what to write ---------------


@pytest.mark.parametrize(
    ("cron", "interval", "fragment"),
    [
        ("R 9 * * *", "1d", "random or hashed value (R/H)"),
        ("0 0 9 * * *", "1d", "write 5 fields"),
        ("*/5 * * * *", "1d", "bills cycles 5m apart"),
        ("0 9 1,2 * *", "2d", "bills cycles 1d apart"),
        ("0 0 9 * * *", "5s", "bills cycles 1s apart (its 6th field is read as seconds, last)"),
    ],
)
def test_crons_that_multiply_charges_make_the_row_invalid(db, cron, interval, fragment):
    db.sql("UPDATE merchants SET min_cycle_interval = :m", m=interval)
    sub = add(db, "RE-1", cron=cron)
    good = add(db, "RE-2", cron=MONTHLY)
    report = walk(db.sessions, T0)
    row = sub_row(db, sub)
    assert row.status == "invalid" and fragment in row.last_error
    assert report.scheduled == 1 and sub_row(db, good).status == "active"


def test_an_unreadable_min_cycle_interval_is_a_merchant_problem(db):
    db.sql("UPDATE merchants SET min_cycle_interval = 'daily'")
    sub = add(db, "RE-1")
    walk(db.sessions, T0)
    assert "min_cycle_interval 'daily'" in sub_row(db, sub).last_error


# -- Defect 13: missed = superseded by a later due cycle -------------------------------------


def test_an_18_minute_gap_in_10_second_cycles_bills_one_charge_under_latest(db):
    sub = add(db, "RE-demo", cron="* * * * * */10")
    walk(db.sessions, T0)
    walk(db.sessions, T0 + timedelta(seconds=10))  # the walk runs, then stops (Ctrl-C)
    assert len(billed(db, "pending")) == 1
    back = T0 + timedelta(minutes=18, seconds=10)
    reports = [walk(db.sessions, back) for _ in range(3)]
    new = [c for r in reports for c in r.new_charge_ids]
    assert len(new) == 1  # 108 cycles fell due in the gap: only the newest is billed
    assert billed(db, "pending")[-1] == (sub, back)
    assert len(billed(db, "skipped")) == 107  # every other cycle has its skipped row


@pytest.mark.parametrize(("rule", "charged"), [("latest", 1), ("skip", 1), ("all", 4)])
def test_missed_cycle_rules_after_a_one_minute_outage(db, rule, charged):
    db.sql("UPDATE merchants SET missed_cycles = :r", r=rule)
    add(db, "RE-1", cron="* * * * * */15", next_charge_at=naive(T0 - timedelta(seconds=45)))
    report = walk(db.sessions, T0)
    assert len(report.new_charge_ids) == charged and report.skipped == 4 - charged


def test_the_newest_cycle_past_the_grace_is_not_billed_under_latest(db):
    add(db, "RE-1", next_charge_at=naive(utc(2026, 11, 1)))
    report = walk(db.sessions, T0)  # 1 Nov is 27 days late; the grace is 1 hour
    assert report.new_charge_ids == [] and report.skipped == 1
    reason = db.sql("SELECT reason FROM charges")[0][0]
    assert "past the grace period (missed_cycles=latest)" in reason


# -- NAVER's input limits: the row is invalid, NAVER is never asked ------------------------


@pytest.mark.parametrize(
    ("columns", "fragment"),
    [
        ({"amount": 99}, "amount must be at least 100 won"),
        ({"product_name": "가" * 129}, "product_name is 129 characters; NAVER Pay takes at most 128"),
    ],
)
def test_naver_input_limits_make_the_row_invalid_before_any_charge(db, columns, fragment):
    sub = add(db, "RE-1", next_charge_at=naive(T0 - timedelta(minutes=1)), **columns)
    report = walk(db.sessions, T0)
    assert report.charge_ids == [] and billed(db) == []
    assert fragment in sub_row(db, sub).last_error


def test_limits_on_ids_and_the_tax_free_part():
    from models import Merchant
    from scheduler.validation import limit_problems

    def row(**over):
        values = {"recurrent_id": "RE-1", "merchant_user_id": "u", "product_code": "P",
                  "product_name": "n", "amount": 1000, "tax_free_amount": 0, "cron": MONTHLY,
                  "timezone": "Asia/Seoul", **over}
        return Subscription(**values, merchant=Merchant(id=1, name="m"))

    assert limit_problems(row()) == []
    assert limit_problems(row(tax_free_amount=1001)) == [
        "tax_free_amount must be between 0 and amount (1000), got 1001"]
    assert limit_problems(row(tax_free_amount=-1))[0].startswith("tax_free_amount must be between")
    assert limit_problems(row(recurrent_id="R" * 65)) == [
        "recurrent_id is 65 characters; NAVER Pay takes at most 64"]
    assert limit_problems(row(merchant_user_id="u" * 101)) == [
        "merchant_user_id is 101 characters; NAVER Pay takes at most 100"]


# -- Held charges resume through the walk ---------------------------------------------------


def test_held_charges_are_claimed_once_their_backoff_has_passed(db):
    add(db, "RE-1", next_charge_at=naive(T0 - timedelta(minutes=1)))
    add(db, "RE-2", next_charge_at=naive(T0 - timedelta(minutes=1)))
    walk(db.sessions, T0)
    first, second = (r[0] for r in db.sql("SELECT id FROM charges ORDER BY id"))
    db.sql("UPDATE charges SET status = 'held', held_from = 'reserving', lease_until = NULL, "
           "next_attempt_at = :t WHERE id = :i", t=naive(T0 + timedelta(minutes=5)), i=first)
    db.sql("UPDATE charges SET status = 'held', held_from = 'unknown', next_attempt_at = :t, "
           "lease_until = :l WHERE id = :i", t=naive(T0 + timedelta(minutes=1)),
           l=naive(T0 + timedelta(minutes=30)), i=second)  # a run still holds it
    config = WalkConfig(lease=timedelta(minutes=6))
    assert walk(db.sessions, T0 + timedelta(minutes=4), config).held_charge_ids == []
    report = walk(db.sessions, T0 + timedelta(minutes=5), config)
    assert report.held_charge_ids == [first] and first in report.charge_ids
    assert walk(db.sessions, T0 + timedelta(minutes=6), config).held_charge_ids == []  # leased
    assert walk(db.sessions, T0 + timedelta(minutes=31), config).held_charge_ids == [first, second]


# -- Performance: the new steps read through indexes, never the whole table ---------------


def test_the_subscription_steps_search_an_index(sqlite_db):
    from scheduler import billing

    queries = [billing.resumed_rows(T0), billing.new_rows(T0), billing.due_rows(T0),
               sa.select(Subscription.id).where(Subscription.seen_status == "active",
                                                Subscription.status.in_(billing.NOT_ACTIVE))]
    sent = []
    sa.event.listen(sqlite_db.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, params, *rest: sent.append((statement, params)))
    with sqlite_db.engine.connect() as conn:
        for query in queries:
            conn.execute(query.limit(500))  # the statement and parameters SQLite really gets
            statement, params = sent[-1]
            plan = [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)]
            assert plan[0].startswith("SEARCH subscriptions USING"), plan
