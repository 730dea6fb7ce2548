"""Reconciliation (정산 대사) against the real sandbox over HTTP, on SQLite and PostgreSQL.

A KST day (2026-11-28) gets charges made the normal way (walk, then the charge state
machine), then mismatches injected at NAVER through the sandbox's control API. The run must
find each one, repair exactly the provable one (a charge left ``unknown`` that history shows
approved) through the state machine, and report the rest: items, run record, metrics, one
webhook. Pure comparisons (the refunds seam, day windows) are unit tests at the end.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from models import Charge, Notification, ReconciliationItem, ReconciliationRun
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from tests.worker.cli_helpers import cli
from worker import notify
from worker.charging import process_charge
from worker.naverpay.results import PaymentDetail
from worker.reconcile_history import windows
from worker.reconcile_match import (
    Kind,
    LocalRefund,
    Resolution,
    compare_refunds,
    merchant_pay_base,
)
from worker.reconciliation import (
    Reconciler,
    day_window,
    parse_day,
    previous_day,
    reconcile_day,
    reconcile_pass,
)
from worker.settings import reconcile_time

DAY = date(2026, 11, 28)
NOON_KST = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # 12:00 in Asia/Seoul


class Books:
    """The database, the sandbox (its clock set to the day), a client and charge engines."""

    def __init__(self, db, sandbox_url):
        self.db, self.sandbox = db, Sandbox(sandbox_url)
        self.sandbox.set_clock(NOON_KST)
        self.clock, self.sleeps = Clock(NOON_KST), Sleeps()
        self.client = make_client(sandbox_url, approval_timeout=0.5)
        # Two NAVER calls per run: reserve and approve; an approval that times out stays unknown
        # (as after a crash), with no budget left to read history.
        self.tight = make_engine(db, self.client, self.clock, self.sleeps, call_budget=2)
        self.engine = make_engine(db, self.client, self.clock, self.sleeps)
        self.progress: list[str] = []
        db.sql("UPDATE merchants SET min_cycle_interval = '1s', webhook_url = 'http://127.0.0.1:9/hook' "
               "WHERE id = 1")

    def subscribe(self, name, behaviour=None, amount=9900):
        rid = self.sandbox.register(behaviour=behaviour)
        self.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
                    "amount, cron) VALUES (:r, :u, 'PLAN-M', '월간 구독', :a, '* * * * * */5')",
                    r=rid, u=f"user-{name}", a=amount)
        return rid

    def charges_due(self):
        """One charge per subscription (every subscription is due once)."""
        walk(self.db.sessions, self.clock())
        report = walk(self.db.sessions, self.clock.advance(seconds=5))
        return {self.charge(cid).recurrent_id: cid for cid in report.new_charge_ids}

    def charge(self, charge_id):
        with self.db.sessions() as s:
            return s.get(Charge, charge_id)

    def next_morning(self):
        """01:00 KST on the day after: when the daily pass runs (NAVER's clock too)."""
        self.clock.now = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
        self.sandbox.set_clock(self.clock.now)

    def reconciler(self):
        return Reconciler(self.engine, rows_per_page=2, progress=self.progress.append)  # 2: many pages


@pytest.fixture
def books(db, sandbox_url):
    b = Books(db, sandbox_url)
    yield b
    b.client.close()


def _metric(kind, resolution):
    return REGISTRY.get_sample_value("npay_reconciliation_mismatches_total",
                                     {"kind": kind, "resolution": resolution}) or 0.0


def _day_with_mismatches(books):
    """Five charges billed normally (one left unknown after NAVER approved it), then NAVER's
    books changed: an amount, a payment history lost, an approval and a cancel we never made."""
    rid = {name: books.subscribe(name, behaviour) for name, behaviour in [
        ("ok", None), ("unknown", {"timeoutAfterCommitTimes": 1, "timeoutSeconds": 2}),
        ("amount", None), ("missing", None), ("refunded", None)]}
    due = books.charges_due()
    ids = {name: due[r] for name, r in rid.items()}
    for name, charge_id in ids.items():
        out = process_charge(books.tight, charge_id, "worker")
        assert out.status == ("unknown" if name == "unknown" else "succeeded"), (name, out.status)
    pid = {name: books.charge(cid).payment_id for name, cid in ids.items()}
    books.sandbox.inject("amount", paymentId=pid["amount"], amount=5000)
    books.sandbox.inject("drop", paymentId=pid["missing"])
    stranger = books.sandbox.inject("approval", amount=12000, merchantPayId="not-ours",
                                    at="20261128183000")["paymentId"]
    books.sandbox.inject("cancel", paymentId=pid["refunded"], amount=3000, at="20261128200000")
    books.next_morning()
    return rid, ids, pid, stranger


def test_a_day_with_injected_mismatches_finds_each_and_repairs_only_the_provable(books):
    rid, ids, pid, stranger = _day_with_mismatches(books)
    before = {k: _metric(k, "reported") for k in ("amount_differs", "missing_at_naver", "unknown_here",
                                                  "refund_unknown_here")}
    repaired_before = _metric("unsettled_here", "repaired")

    report = reconcile_day(books.reconciler(), DAY)

    found = {(f.kind, f.resolution, f.charge_id, f.payment_id) for f in report.findings}
    assert found == {
        (Kind.UNSETTLED_HERE, Resolution.REPAIRED, ids["unknown"], pid["unknown"]),
        (Kind.AMOUNT_DIFFERS, Resolution.REPORTED, ids["amount"], pid["amount"]),
        (Kind.MISSING_AT_NAVER, Resolution.REPORTED, ids["missing"], pid["missing"]),
        (Kind.UNKNOWN_HERE, Resolution.REPORTED, None, stranger),
        (Kind.REFUND_UNKNOWN_HERE, Resolution.REPORTED, ids["refunded"], pid["refunded"]),
    }
    # The repair went through the state machine: history, never a second approval.
    assert books.charge(ids["unknown"]).status == "succeeded"
    approved = books.sandbox.approved(rid["unknown"])
    assert len(approved) == 1 and approved[0]["approvalRequests"] == 1
    # Reported differences are left as they are for a human.
    assert [books.charge(ids[n]).status for n in ("amount", "missing", "refunded", "ok")] == ["succeeded"] * 4
    amount = next(f for f in report.findings if f.kind == Kind.AMOUNT_DIFFERS)
    assert (amount.naver_amount, amount.local_amount) == (5000, 9900)
    assert report.status == "done" and report.naver_rows == 6  # 5 approvals, 1 dropped, 1 injected, 1 cancel
    assert any("page 3/3" in line for line in books.progress)  # paged, 2 rows a page

    with books.db.sessions() as s:
        run = s.get(ReconciliationRun, report.run_id)
        assert (run.day, run.status, run.repaired, run.remaining) == ("2026-11-28", "done", 1, 4)
        items = s.scalars(sa.select(ReconciliationItem).where(ReconciliationItem.run_id == run.id)).all()
        assert sorted(i.kind for i in items) == sorted(k.value for k, *_ in found)
        alerts = s.scalars(sa.select(Notification)
                           .where(Notification.event == notify.RECONCILIATION_MISMATCH)).all()
        assert len(alerts) == 1 and alerts[0].subscription_id is None
        payload = json.loads(alerts[0].payload)
        assert payload["details"]["remaining_by_kind"] == {"amount_differs": 1, "missing_at_naver": 1,
                                                           "unknown_here": 1, "refund_unknown_here": 1}
    for kind, value in before.items():
        assert _metric(kind, "reported") == value + 1
    assert _metric("unsettled_here", "repaired") == repaired_before + 1

    # Re-running the day: a new run, the same differences, no repair twice, no second webhook.
    again = reconcile_day(books.reconciler(), DAY)
    assert again.run_id != report.run_id and not again.repaired
    assert sorted(f.kind for f in again.remaining) == sorted(f.kind for f in report.remaining)
    assert books.sandbox.approved(rid["unknown"])[0]["approvalRequests"] == 1
    with books.db.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Notification)
                        .where(Notification.event == notify.RECONCILIATION_MISMATCH)) == 1


def test_a_merchant_level_alert_is_delivered_to_the_merchant_webhook(books):
    books.subscribe("x")
    books.sandbox.inject("approval", amount=9900, at="20261128090000")
    books.next_morning()
    report = reconcile_day(books.reconciler(), DAY)
    assert [f.kind for f in report.remaining] == [Kind.UNKNOWN_HERE]
    sent = []

    def webhook(row, merchant, sub):
        sent.append((row.event, merchant.id, sub))

    status = notify.deliver(books.db.sessions, report.notification_ids[0], {"webhook": webhook},
                            books.clock, books.sleeps)
    assert status == "sent" and sent == [(notify.RECONCILIATION_MISMATCH, 1, None)]


def test_a_clean_day_leaves_nothing_and_the_daily_pass_runs_once(books):
    rid = books.subscribe("ok")
    for charge_id in books.charges_due().values():
        assert process_charge(books.engine, charge_id, "worker").status == "succeeded"
    first = reconcile_pass(books.reconciler(), DAY, once=True)
    assert [(r.status, r.local_charges, r.findings) for r in first] == [("done", 1, [])]
    assert reconcile_pass(books.reconciler(), DAY, once=True) == []  # the day is done
    assert len(reconcile_pass(books.reconciler(), DAY)) == 1  # by hand: a new run
    assert len(books.sandbox.approved(rid)) == 1
    # The next KST day has nothing of it (the charge was approved at 12:00 KST on the 28th).
    assert [r.local_charges for r in reconcile_pass(books.reconciler(), DAY + timedelta(days=1))] == [0]


def test_an_approval_on_both_sides_of_midnight_is_no_mismatch_on_either_day(books):
    """We stamp the approval 23:59:59 KST on the 28th, NAVER 00:00:01 on the 29th: each day's
    run finds the other side (the charge by its own history, the row by its paymentId)."""
    rid = books.subscribe("late")
    books.clock.now = datetime(2026, 11, 28, 14, 59, 54, tzinfo=UTC)
    (charge_id,) = books.charges_due().values()  # the walk moved the clock to 23:59:59 KST
    books.sandbox.set_clock(datetime(2026, 11, 28, 15, 0, 1, tzinfo=UTC))
    assert process_charge(books.engine, charge_id, "worker").status == "succeeded"
    assert books.charge(charge_id).approved_at < day_window(DAY)[1]
    assert books.sandbox.approved(rid)[0]["approvedAt"].startswith("20261129")
    books.clock.now = books.clock.now + timedelta(hours=2)
    books.sandbox.set_clock(books.clock.now)
    on_28, on_29 = (reconcile_day(books.reconciler(), d) for d in (DAY, DAY + timedelta(days=1)))
    assert (on_28.local_charges, on_28.naver_rows, on_28.findings) == (1, 0, [])
    assert (on_29.local_charges, on_29.naver_rows, on_29.findings) == (0, 1, [])


def test_an_unsettled_charge_history_does_not_show_waits_for_the_settle_window(books):
    """The approval call failed with no answer and NAVER has no approval: nothing is proven
    until the settle window after our call passed; then the state machine's own rule applies
    (an active subscription: approve again with the same key, a replay at worst)."""
    rid = books.subscribe("lost", {"serverErrorTimes": 1, "serverErrorStatus": 500})
    (charge_id,) = books.charges_due().values()
    process_charge(books.tight, charge_id, "worker")
    assert books.charge(charge_id).status in ("unknown", "approving")
    assert books.sandbox.approved(rid) == []

    early = reconcile_day(books.reconciler(), DAY)
    assert [(f.kind, f.resolution) for f in early.findings] == [(Kind.UNSETTLED_HERE, Resolution.DEFERRED)]
    assert books.charge(charge_id).status in ("unknown", "approving")

    books.clock.advance(minutes=10)
    late = reconcile_day(books.reconciler(), DAY)
    assert [(f.kind, f.resolution) for f in late.findings] == [(Kind.UNSETTLED_HERE, Resolution.REPAIRED)]
    assert books.charge(charge_id).status == "succeeded"
    assert len(books.sandbox.approved(rid)) == 1


def test_cli_reconcile_json_and_exit_codes(books):
    _day_with_mismatches(books)
    env = {"NAVERPAY_API_BASE": books.sandbox.url}
    result = cli(books.db.url, "reconcile", "--date", "2026-11-28", "--json", env=env)
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    (run,) = data["runs"]
    assert data["day"] == "2026-11-28" and run["window"]["start"] == "2026-11-28T00:00:00+09:00"
    assert run["repaired"] == 1 and run["remaining"] == 4
    assert {i["kind"] for i in run["items"]} >= {"unknown_here", "missing_at_naver"}
    assert "history 2026-11-28: page 1/1" in result.stderr
    table = cli(books.db.url, "reconcile", "--date", "2026-11-28", env=env)
    assert table.exit_code == 1 and "KIND" in table.stdout and "missing_at_naver" in table.stdout
    assert "difference(s) with NAVER remain" in table.stderr
    bad = cli(books.db.url, "reconcile", "--date", "28/11/2026", env=env)
    assert bad.exit_code == 2 and "not a date YYYY-MM-DD" in bad.stderr


def test_a_run_naver_does_not_answer_is_recorded_as_failed(books):
    books.subscribe("x")
    books.sandbox.faults(errorRate=1.0, errorStatus=503)
    env = {"NAVERPAY_API_BASE": books.sandbox.url}
    result = cli(books.db.url, "reconcile", "--date", "2026-11-28", "--json", env=env)
    assert result.exit_code == 2
    (run,) = json.loads(result.stdout)["runs"]
    assert run["status"] == "error" and run["error"].startswith("TransientError")
    assert f"run {run['run_id']} (merchant 1) failed" in result.stderr
    with books.db.sessions() as s:
        assert s.get(ReconciliationRun, run["run_id"]).status == "error"
    assert cli(books.db.url, "reconcile", "--merchant", "99", env=env).exit_code == 2


def test_cli_reconcile_a_clean_day_exits_0(books):
    books.subscribe("x")
    result = cli(books.db.url, "reconcile", "--date", "2026-11-27",
                 env={"NAVERPAY_API_BASE": books.sandbox.url})
    assert result.exit_code == 0, result.output
    assert "remaining" in result.stdout


def test_the_daily_task_reconciles_yesterday_once(books, monkeypatch):
    """The Celery task's body (called directly: no broker needed for a day with nothing left)."""
    from worker import tasks
    from worker.runtime import runtime

    books.subscribe("x")
    monkeypatch.setenv("DATABASE_URL", books.db.url)
    monkeypatch.setenv("NAVERPAY_API_BASE", books.sandbox.url)
    runtime.cache_clear()
    try:
        first = tasks.reconcile.run("2026-11-28")
        assert list(first.values()) == [0]
        assert len(tasks.reconcile.run("2026-11-28")) == 1  # an explicit day: a new run
    finally:
        runtime.cache_clear()


def test_the_beat_entry_follows_the_kst_setting():
    import subprocess
    import sys

    code = "import celeryconfig as c; s = c.beat_schedule['reconcile']; print(s['task'], s['schedule'])"
    out = subprocess.run([sys.executable, "-c", code], env={"BILLING_RECONCILE_AT": "00:30", "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("worker.reconcile <crontab: 30 15 * * *")  # 00:30 KST = 15:30 UTC


# --- pure parts -----------------------------------------------------------------------------

def test_kst_day_boundaries():
    start, end = day_window(DAY)
    assert start.astimezone(UTC) == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    assert end - start == timedelta(days=1)
    assert list(windows(start, end)) == [(start, end - timedelta(seconds=1))]  # inclusive seconds
    long = list(windows(start, start + timedelta(days=40)))
    assert len(long) == 2 and all(hi - lo < timedelta(days=31) for lo, hi in long)
    assert long[1][0] == long[0][1] + timedelta(seconds=1)
    assert previous_day(datetime(2026, 11, 28, 14, 59, tzinfo=UTC)) == date(2026, 11, 27)  # 23:59 KST
    assert previous_day(datetime(2026, 11, 28, 15, 0, tzinfo=UTC)) == date(2026, 11, 28)  # 00:00 KST
    with pytest.raises(ValueError, match="not a date YYYY-MM-DD"):
        parse_day("2026-13-01")


def test_reconcile_time_setting():
    assert reconcile_time({}) == (1, 0)
    assert reconcile_time({"BILLING_RECONCILE_AT": "00:30"}) == (0, 30)
    with pytest.raises(ValueError, match="BILLING_RECONCILE_AT='25:00'"):
        reconcile_time({"BILLING_RECONCILE_AT": "25:00"})


def test_merchant_pay_key_to_charge_key():
    assert merchant_pay_base("sub-7-20261128T030000-2") == "sub-7-20261128T030000"
    assert merchant_pay_base("order") == "order"
    assert merchant_pay_base(None) is None


def _cancel(pid, amount, key=None):
    return PaymentDetail(payment_id=pid, total_pay_amount=amount, admission_type_code="04",
                         admission_state="SUCCESS", merchant_pay_transaction_key=key)


def test_refunds_seam_without_a_refunds_table_reports_every_cancel():
    findings = compare_refunds([_cancel("P1", 1000), _cancel("P2", 500)], None, {"P1": 7})
    assert [(f.kind, f.payment_id, f.charge_id, f.naver_amount) for f in findings] == [
        (Kind.REFUND_UNKNOWN_HERE, "P1", 7, 1000), (Kind.REFUND_UNKNOWN_HERE, "P2", None, 500)]


def test_refunds_seam_with_local_refunds():
    local = [LocalRefund(1, "P1", 1000, "succeeded", "rf-1"),  # matches by key
             LocalRefund(2, "P2", 400, "succeeded"),  # amount differs
             LocalRefund(3, "P3", 700, "succeeded"),  # NAVER shows no cancel
             LocalRefund(4, "P4", 300, "pending")]  # not done here: not missing at NAVER
    findings = compare_refunds([_cancel("P1", 1000, "rf-1"), _cancel("P2", 500), _cancel("P5", 200)], local)
    assert sorted((f.kind.value, f.payment_id) for f in findings) == [
        ("refund_differs", "P2"), ("refund_missing_at_naver", "P3"), ("refund_unknown_here", "P5")]


# --- catching up: days no run finished ----------------------------------------------------------

def _runs(books, *rows):
    """Past runs as the table would hold them: (day, status, started_at or None)."""
    for day, status, started in rows:
        books.db.sql("INSERT INTO reconciliation_runs (merchant_id, day, status, started_at) "
                     "VALUES (1, :d, :s, :t)", d=day, s=status, t=started or "2026-11-20 16:00:00")


def _days(reports):
    return [(r.day.isoformat(), r.status) for r in reports]


def test_the_daily_pass_catches_up_days_whose_run_failed_died_or_never_ran(books):
    from worker.reconciliation import daily_pass

    books.subscribe("x")
    books.next_morning()
    _runs(books, ("2026-11-20", "done", None), ("2026-11-24", "done", None),
          ("2026-11-25", "error", None),  # NAVER was down
          ("2026-11-27", "done", None))  # (26th: beat did not run at all)
    reports = daily_pass(books.reconciler(), DAY, catch_up=7)
    assert _days(reports) == [("2026-11-21", "done"), ("2026-11-22", "done"), ("2026-11-23", "done"),
                              ("2026-11-25", "done"), ("2026-11-26", "done"), ("2026-11-28", "done")]
    assert daily_pass(books.reconciler(), DAY, catch_up=7) == []  # nothing owed any more
    # a shorter look-back leaves older days alone
    books.db.sql("DELETE FROM reconciliation_runs WHERE day IN ('2026-11-22', '2026-11-23')")
    assert _days(daily_pass(books.reconciler(), DAY, catch_up=5)) == [("2026-11-23", "done")]


def test_a_merchant_never_reconciled_is_owed_yesterday_only(books):
    from worker.reconciliation import daily_pass

    books.subscribe("x")
    books.next_morning()
    _runs(books, ("2026-11-26", "error", None))  # failed, but nothing ever finished: no back-fill
    assert _days(daily_pass(books.reconciler(), DAY, catch_up=7)) == [("2026-11-28", "done")]


def test_a_run_that_died_is_recorded_as_abandoned_when_its_day_is_reconciled_again(books):
    from worker.reconciliation import daily_pass

    books.subscribe("x")
    books.next_morning()  # 2026-11-28 16:00 UTC
    _runs(books, ("2026-11-28", "running", "2026-11-28 03:00:00"),  # 13 h ago: its worker died
          ("2026-11-28", "running", "2026-11-28 15:00:00"))  # an hour ago: may still be going
    (report,) = daily_pass(books.reconciler(), DAY, catch_up=7)
    rows = books.db.sql("SELECT id, status, error FROM reconciliation_runs ORDER BY id")
    assert [(status, (error or "")[:40]) for _, status, error in rows] == [
        ("error", "abandoned: not finished 12 h after it st"), ("running", ""), ("done", "")]
    assert rows[0][2].endswith(f"the day is reconciled again by run {report.run_id}")


def test_the_catch_up_setting():
    from worker.settings import reconcile_catch_up

    assert reconcile_catch_up({}) == 7 and reconcile_catch_up({"BILLING_RECONCILE_CATCHUP_DAYS": "0"}) == 0
    for bad in ("-1", "a week", "400"):
        with pytest.raises(ValueError, match="BILLING_RECONCILE_CATCHUP_DAYS"):
            reconcile_catch_up({"BILLING_RECONCILE_CATCHUP_DAYS": bad})
