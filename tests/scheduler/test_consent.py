"""The consent gate in the walk (전자상거래법; DESIGN 4.9: a raised amount is not billed
without the customer's consent), on SQLite and PostgreSQL.

Cycles every 5 seconds from T0 (the merchant allows 1 s cycles, see conftest); price changes
take effect a few cycles later. Given/when/then: a subscription, a change (or an SQL edit),
walks at the cycles; then the charges the walk made, and what they are billed.
"""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from models import Charge, Notification, PriceChange, Subscription
from scheduler.walk import walk
from worker.consent import alert_consent_held, record_consent, record_consent_to_amount

T0 = datetime(2026, 11, 28, 3, 0, 0, tzinfo=UTC)
EVERY_5S = "* * * * * */5"


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def naive(moment):
    return moment.replace(tzinfo=None)


def add(db, rid="RE-1", amount=9900, **extra):
    cols = {"recurrent_id": rid, "merchant_user_id": "u1", "product_code": "P", "product_name": "월간 구독",
            "amount": amount, "cron": EVERY_5S, "customer_email": "kim@example.com", **extra}
    names, values = ", ".join(cols), ", ".join(":" + c for c in cols)
    db.sql(f"INSERT INTO subscriptions ({names}) VALUES ({values})", **cols)
    return db.sql("SELECT id FROM subscriptions WHERE recurrent_id = :r", r=rid)[0][0]


def change(db, sub_id, new_amount, effective):
    """A price change as a user inserts it with SQL."""
    db.sql("INSERT INTO price_changes (subscription_id, new_amount, effective_at) VALUES (:s, :a, :e)",
           s=sub_id, a=new_amount, e=naive(effective))
    return db.sql("SELECT max(id) FROM price_changes")[0][0]


def charges(db, sub_id):
    """(seconds after T0, status, amount) of the subscription's charges, oldest first."""
    with db.sessions() as s:
        rows = s.scalars(sa.select(Charge).where(Charge.subscription_id == sub_id).order_by(Charge.cycle_at))
        return [(int((c.cycle_at - T0).total_seconds()), c.status, c.amount) for c in rows]


def billable(db, sub_id):
    return [(t, amount) for t, status, amount in charges(db, sub_id) if status == "pending"]


def sub_row(db, sub_id):
    with db.sessions() as s:
        return s.get(Subscription, sub_id)


def change_row(db, change_id):
    with db.sessions() as s:
        return s.get(PriceChange, change_id)


def consent(db, change_id, when, via="test"):
    with db.sessions.begin() as s:
        record_consent(s, change_id, when, via)


def walks(db, *seconds):
    return [walk(db.sessions, at(t)) for t in seconds]


def test_a_raise_without_consent_keeps_billing_the_old_amount(db):
    sub = add(db)
    walks(db, 0)
    raise_ = change(db, sub, 12900, at(10))
    walks(db, 5, 10, 15)
    assert billable(db, sub) == [(5, 9900), (10, 9900), (15, 9900)]
    row = change_row(db, raise_)
    assert row.status == "pending" and row.applied_at is None and "no consent" in row.note
    assert sub_row(db, sub).amount == 9900 and sub_row(db, sub).agreed_amount == 9900
    # consent arrives: the next cycle is billed at the new amount, never one before it
    consent(db, raise_, at(16))
    walks(db, 20)
    assert billable(db, sub)[-1] == (20, 12900)
    assert change_row(db, raise_).status == "applied"
    assert (sub_row(db, sub).amount, sub_row(db, sub).agreed_amount) == (12900, 12900)


def test_a_raise_without_consent_pauses_when_the_merchant_says_so(db):
    db.sql("UPDATE merchants SET consent_missing = 'pause' WHERE id = 1")
    sub = add(db)
    walks(db, 0)
    raise_ = change(db, sub, 12900, at(10))
    walks(db, 5, 10, 15)
    # (cycle 5's charge, never run in this test, is canceled with the pause: cancel wins)
    assert charges(db, sub)[0][::2] == (5, 9900)
    assert charges(db, sub)[1][:2] == (10, "skipped")  # the cycle is not lost: skipped, with why
    assert all(amount != 12900 for _t, status, amount in charges(db, sub) if status == "pending")
    row = sub_row(db, sub)
    assert row.status == "paused" and "no consent recorded" in row.last_error
    assert change_row(db, raise_).paused_at is not None
    # consent resumes the subscription; the paused cycles stay unbilled, the next one is new
    consent(db, raise_, at(17))
    assert sub_row(db, sub).status == "active"
    walks(db, 20, 25)
    assert billable(db, sub) == [(25, 12900)]


def test_a_raise_with_consent_is_billed_from_its_effective_cycle(db):
    sub = add(db)
    walks(db, 0)
    raise_ = change(db, sub, 12900, at(10))
    consent(db, raise_, at(1))
    walks(db, 5, 10, 15)
    assert billable(db, sub) == [(5, 9900), (10, 12900), (15, 12900)]
    assert [c.agreed_amount for c in _charge_rows(db, sub)] == [9900, 12900, 12900]


def _charge_rows(db, sub):
    with db.sessions() as s:
        query = sa.select(Charge).where(Charge.subscription_id == sub).order_by(Charge.cycle_at)
        return list(s.scalars(query))


@pytest.mark.parametrize("missing", ["keep_old", "pause"])
def test_a_free_trial_turns_paid_only_with_consent(db, missing):
    db.sql("UPDATE merchants SET consent_missing = :m WHERE id = 1", m=missing)
    sub = add(db, trial_ends_at=naive(at(12)))
    walks(db, 0)
    row = sub_row(db, sub)
    assert row.agreed_amount == 0  # free: the customer agreed to nothing paid yet
    with db.sessions() as s:
        trial = s.scalars(sa.select(PriceChange).where(PriceChange.subscription_id == sub)).one()
    assert (trial.kind, trial.new_amount, trial.old_amount, trial.effective_at) == ("trial", 9900, 0, at(12))
    walks(db, 5, 10, 15)
    assert [(t, s) for t, s, _a in charges(db, sub)] == [(5, "skipped"), (10, "skipped"), (15, "skipped")]
    assert billable(db, sub) == []
    assert sub_row(db, sub).status == ("paused" if missing == "pause" else "active")
    consent(db, trial.id, at(16))
    walks(db, 20, 25)
    assert billable(db, sub)[-1] == (25, 9900)
    assert sub_row(db, sub).agreed_amount == 9900


def test_a_trial_consented_in_time_bills_its_first_paid_cycle(db):
    sub = add(db, trial_ends_at=naive(at(12)))
    walks(db, 0)
    trial_id = db.sql("SELECT id FROM price_changes WHERE subscription_id = :s", s=sub)[0][0]
    consent(db, trial_id, at(3))
    walks(db, 5, 10, 15)
    assert [(t, s, a) for t, s, a in charges(db, sub)] == [(5, "skipped", 9900), (10, "skipped", 9900),
                                                        (15, "pending", 9900)]


def test_a_decrease_applies_without_consent_and_a_raise_back_needs_it(db):
    sub = add(db)
    walks(db, 0)
    change(db, sub, 5000, at(10))
    walks(db, 5, 10)
    assert billable(db, sub) == [(5, 9900), (10, 5000)]
    assert (sub_row(db, sub).amount, sub_row(db, sub).agreed_amount) == (5000, 5000)
    # a decrease by SQL applies directly too, and lowers what the customer agreed to
    db.sql("UPDATE subscriptions SET amount = 4000 WHERE id = :i", i=sub)
    walks(db, 15)
    assert billable(db, sub)[-1] == (15, 4000) and sub_row(db, sub).agreed_amount == 4000
    # back to 9900 by SQL: the customer was billed 4000 last; 9900 is a raise now
    db.sql("UPDATE subscriptions SET amount = 9900 WHERE id = :i", i=sub)
    walks(db, 20)
    assert charges(db, sub)[-1] == (20, "consent_held", 9900)


def test_an_sql_raise_is_held_surfaced_alerted_and_never_billed(db):
    db.sql("UPDATE merchants SET webhook_url = 'http://merchant.test/hook' WHERE id = 1")
    sub = add(db)
    walks(db, 0, 5)
    db.sql("UPDATE subscriptions SET amount = 15000 WHERE id = :i", i=sub)
    (report,) = walks(db, 10)
    assert report.new_charge_ids == [] and report.consent_held == 1
    held = _charge_rows(db, sub)[-1]
    assert (held.status, held.amount, held.agreed_amount) == ("consent_held", 15000, 9900)
    assert held.surfaced_at == at(10) and "agreed to" in held.reason
    # the merchant is alerted once, however many walks see it
    for t in (10, 11):
        with db.sessions.begin() as s:
            alert_consent_held(s, at(t), 50)
    with db.sessions() as s:
        alerts = s.scalars(sa.select(Notification).where(Notification.event == "charge.consent_held")).all()
    assert len(alerts) == 1 and alerts[0].charge_id == held.id and alerts[0].channel == "webhook"
    # nothing happens until consent or a lower amount; the next cycle supersedes the held one
    walks(db, 12)
    assert _charge_rows(db, sub)[-1].status == "consent_held"
    walks(db, 15)
    assert charges(db, sub)[-2:] == [(10, "skipped", 15000), (15, "consent_held", 15000)]
    assert all(amount == 9900 for _t, amount in billable(db, sub))


def test_a_held_charge_resumes_once_consent_is_recorded(db):
    sub = add(db)
    walks(db, 0, 5)
    db.sql("UPDATE subscriptions SET amount = 15000 WHERE id = :i", i=sub)
    walks(db, 10)
    held = _charge_rows(db, sub)[-1]
    with db.sessions.begin() as s:
        record_consent_to_amount(s, sub, 15000, at(11), "cli: phone")
    (report,) = walks(db, 12)
    assert report.consent_resumed_ids == [held.id] and held.id in report.charge_ids
    assert charges(db, sub)[-1] == (10, "pending", 15000)
    assert sub_row(db, sub).agreed_amount == 15000
    walks(db, 15)
    assert billable(db, sub)[-1] == (15, 15000)


def test_a_held_charge_resumes_at_the_lowered_amount(db):
    sub = add(db)
    walks(db, 0, 5)
    db.sql("UPDATE subscriptions SET amount = 15000 WHERE id = :i", i=sub)
    walks(db, 10)
    db.sql("UPDATE subscriptions SET amount = 9000 WHERE id = :i", i=sub)
    (report,) = walks(db, 12)
    assert len(report.consent_resumed_ids) == 1
    assert charges(db, sub)[-1] == (10, "pending", 9000) and sub_row(db, sub).agreed_amount == 9000


def test_a_held_charge_of_a_paused_subscription_is_canceled(db):
    sub = add(db)
    walks(db, 0, 5)
    db.sql("UPDATE subscriptions SET amount = 15000 WHERE id = :i", i=sub)
    walks(db, 10)
    db.sql("UPDATE subscriptions SET status = 'paused' WHERE id = :i", i=sub)
    walks(db, 11)
    assert charges(db, sub)[-1] == (10, "canceled", 15000)


def test_existing_rows_and_minimal_inserts_agree_to_their_amount(db):
    sub = add(db)
    assert sub_row(db, sub).agreed_amount is None  # not seen yet
    walks(db, 0)
    assert sub_row(db, sub).agreed_amount == 9900
