"""Reconciliation of refunds: NAVER's cancel rows of a KST day against the ``refunds`` table.

Over HTTP against the sandbox, on SQLite and PostgreSQL: refunds made through our refund
engine (``process_refund``) reconcile clean; a cancel made at NAVER only is
``refund_unknown_here``; a refund whose amount differs is ``refund_differs``. The matching
rules (payHistId, any key round, keyless rows) and the ``completing`` grace are unit tests of
``compare_refunds`` at the end.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.worker.cli_helpers import cli
from tests.worker.test_reconciliation import DAY, Books
from worker.charging import process_charge
from worker.naverpay.results import PaymentDetail
from worker.reconcile_match import Kind, LocalRefund, Resolution, compare_refunds
from worker.reconciliation import Reconciler, TableRefunds, reconcile_day
from worker.refund_requests import request_refund
from worker.refunds import RefundEngine, process_refund


class RefundBooks(Books):
    """Books (a KST day at NAVER and here) with a refund engine on the same clock."""

    def __init__(self, db, sandbox_url):
        super().__init__(db, sandbox_url)
        self.refund_engine = RefundEngine(sessions=db.sessions, client_for=lambda _m: self.client,
                                          clock=self.clock, sleep=self.sleeps,
                                          settle=timedelta(seconds=60))

    def paid(self, name):
        """A charge approved at NAVER; its subscription paused (this test is about one charge)."""
        rid = self.subscribe(name)
        (charge_id,) = self.charges_due().values()
        assert process_charge(self.engine, charge_id, "worker").status == "succeeded"
        self.db.sql("UPDATE subscriptions SET status = 'paused' WHERE recurrent_id = :r", r=rid)
        return charge_id

    def refund(self, charge_id, amount):
        refund = request_refund(self.db.sessions, charge_id, self.clock(), amount=amount)
        assert process_refund(self.refund_engine, refund.id, "refunder").status == "succeeded"
        return refund.id

    def with_refunds(self):
        return Reconciler(self.engine, TableRefunds(self.db.sessions), progress=self.progress.append)


@pytest.fixture
def books(db, sandbox_url):
    b = RefundBooks(db, sandbox_url)
    yield b
    b.client.close()


def _kinds(report):
    return sorted((f.kind.value, f.resolution.value, f.payment_id, f.naver_amount, f.local_amount)
                  for f in report.findings)


def test_partial_refunds_made_by_our_engine_reconcile_clean(books):
    charge_id = books.paid("a")
    books.refund(charge_id, 3000)
    books.clock.advance(seconds=30)
    books.sandbox.advance_clock(30)
    books.refund(charge_id, 2000)
    books.next_morning()
    report = reconcile_day(books.with_refunds(), DAY)
    assert report.status == "done" and report.naver_rows == 3  # one approval, two cancels
    assert report.findings == []
    # Without the refunds table wired, the same day reports both cancels as unknown here.
    bare = reconcile_day(books.reconciler(), DAY)
    assert [f.kind for f in bare.findings] == [Kind.REFUND_UNKNOWN_HERE] * 2


def test_a_cancel_made_at_naver_only_is_unknown_here_next_to_our_own(books):
    charge_id = books.paid("a")
    books.refund(charge_id, 3000)
    pid = books.charge(charge_id).payment_id
    books.clock.advance(seconds=30)
    books.sandbox.advance_clock(30)
    books.sandbox.inject("cancel", paymentId=pid, amount=3000, at="20261128200000")  # same amount
    books.next_morning()
    report = reconcile_day(books.with_refunds(), DAY)
    assert _kinds(report) == [("refund_unknown_here", "reported", pid, 3000, None)]
    assert report.findings[0].charge_id == charge_id


def test_a_refund_whose_amount_differs_is_reported(books):
    charge_id = books.paid("a")
    refund_id = books.refund(charge_id, 3000)
    pid = books.charge(charge_id).payment_id
    books.db.sql("UPDATE refunds SET amount = 2500 WHERE id = :i", i=refund_id)  # our books drifted
    books.next_morning()
    report = reconcile_day(books.with_refunds(), DAY)
    assert _kinds(report) == [("refund_differs", "reported", pid, 3000, 2500)]
    assert report.findings[0].refund_id == refund_id


def test_a_refund_succeeded_here_that_naver_does_not_show_is_missing_at_naver(books):
    charge_id = books.paid("a")
    refund_id = books.refund(charge_id, 3000)
    pid = books.charge(charge_id).payment_id
    # Our row no longer carries what identifies NAVER's cancel (key, payHistId), and the amount
    # differs, so nothing at NAVER matches it; NAVER's own cancel becomes unknown here.
    books.db.sql("UPDATE refunds SET idempotency_key = 'rfzzzz', pay_hist_id = 'other', amount = 1000 "
                 "WHERE id = :i", i=refund_id)
    books.next_morning()
    report = reconcile_day(books.with_refunds(), DAY)
    # NAVER's row carries a key that is not ours now: no fallback by paymentId for keyed rows.
    assert _kinds(report) == [("refund_missing_at_naver", "reported", pid, None, 1000),
                              ("refund_unknown_here", "reported", pid, 3000, None)]


def test_a_completing_refund_is_not_missing_until_its_grace_passes(books):
    """CancelNotComplete: NAVER accepted the cancel and completes it by itself. Not in NAVER's
    history of the day yet: no difference while younger than a day; after that it is
    reported; once NAVER completes it (its row stamped on a later day), it is clean again."""
    charge_id = books.paid("a")
    books.sandbox.configure(cancelNotCompleteNext=1, cancelNotCompleteSeconds=3 * 86400)
    refund = request_refund(books.db.sessions, charge_id, books.clock(), amount=4000)
    assert process_refund(books.refund_engine, refund.id, "refunder").status == "completing"
    pid = books.charge(charge_id).payment_id
    books.next_morning()  # 13 hours after NAVER accepted it
    assert reconcile_day(books.with_refunds(), DAY).findings == []

    def later(days):
        books.clock.advance(days=days)
        books.sandbox.set_clock(books.clock.now)

    later(1)  # a day and 13 hours: NAVER should have completed it by now
    report = reconcile_day(books.with_refunds(), DAY)
    assert _kinds(report) == [("refund_missing_at_naver", "reported", pid, None, 4000)]
    assert (report.findings[0].local_status, report.findings[0].refund_id) == ("completing", refund.id)
    later(3)  # NAVER completed it, stamped on a later day: its own history shows it
    done = reconcile_day(books.with_refunds(), DAY)
    assert (done.naver_rows, done.findings) == (1, [])  # the day shows only the approval


def test_cli_reconcile_reads_the_refunds_table(books):
    charge_id = books.paid("a")
    books.refund(charge_id, 3000)
    books.next_morning()
    env = {"NAVERPAY_API_BASE": books.sandbox.url}
    result = cli(books.db.url, "reconcile", "--date", "2026-11-28", "--json", env=env)
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert (run["naver_rows"], run["remaining"], run["items"]) == (2, 0, [])


# --- the matching rules (pure) ----------------------------------------------------------------

def _cancel(pid, amount, key=None, hist=None):
    return PaymentDetail(payment_id=pid, total_pay_amount=amount, admission_type_code="04",
                         admission_state="SUCCESS", merchant_pay_transaction_key=key, pay_hist_id=hist)


NOW = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)


def test_match_by_pay_hist_id_then_any_key_round():
    local = [LocalRefund(1, "P1", 1000, "succeeded", "rfaaa-2", pay_hist_id="H1"),
             LocalRefund(2, "P1", 500, "succeeded", "rfbbb-1")]
    # H1 carries round 0's key of refund 1; the second row carries round 3 of refund 2.
    cancels = [_cancel("P1", 1000, "rfaaa", "H1"), _cancel("P1", 500, "rfbbb-3", "H2")]
    assert compare_refunds(cancels, local, now=NOW) == []


def test_a_keyed_row_of_someone_else_does_not_take_our_refund():
    local = [LocalRefund(1, "P1", 1000, "succeeded", "rfaaa")]
    findings = compare_refunds([_cancel("P1", 1000, "outside-1")], local, now=NOW)
    assert sorted(f.kind.value for f in findings) == ["refund_missing_at_naver", "refund_unknown_here"]


def test_keyless_rows_match_by_amount_after_the_keyed_ones():
    local = [LocalRefund(1, "P1", 700, "succeeded", "rfaaa"), LocalRefund(2, "P1", 300, "succeeded", "rfbbb")]
    assert compare_refunds([_cancel("P1", 300), _cancel("P1", 700, "rfaaa")], local, now=NOW) == []


def test_a_completing_refund_is_not_missing_within_its_grace():
    accepted = NOW - timedelta(hours=3)
    completing = LocalRefund(1, "P1", 1000, "completing", "rfaaa", refunded_at=accepted)
    assert compare_refunds([], [completing], now=NOW) == []  # NAVER completes it by itself
    assert compare_refunds([], [completing], now=None) == []
    late = compare_refunds([], [completing], now=accepted + timedelta(days=1, seconds=1))
    assert [(f.kind, f.resolution, f.refund_id) for f in late] == [
        (Kind.REFUND_MISSING_AT_NAVER, Resolution.REPORTED, 1)]
    # Once NAVER shows it, it is clean even before the refund engine confirms it here.
    assert compare_refunds([_cancel("P1", 1000, "rfaaa", "H1")], [completing], now=NOW) == []


def test_a_cancel_of_a_refund_not_refunded_here_differs():
    for status in ("unknown", "failed", "requested"):
        findings = compare_refunds([_cancel("P1", 1000, "rfaaa")],
                                   [LocalRefund(1, "P1", 1000, status, "rfaaa")], now=NOW)
        assert [(f.kind, f.local_status) for f in findings] == [(Kind.REFUND_DIFFERS, status)]
