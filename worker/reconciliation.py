"""Reconciliation (정산 대사): one KST day of NAVER's payment history against our books.

``reconcile_day(reconciler, day, merchant_id)`` is a plain function (the daily Celery task and
``npay-billing reconcile`` are thin wrappers). Data flow::

    run row (running), committed first: a crash leaves a trace
      -> NAVER history of the day, [D 00:00:00, D 23:59:59] KST, page by page
         (worker.reconcile_history: windows of at most 31 days, retried transient errors)
      -> compare (worker.reconcile_match): rows -> charges by paymentId, else merchantPayKey;
         charges that succeeded that day (approved_at in [D 00:00, D+1 00:00) KST) and are
         missing from the day -> their own history by paymentId (the day boundary: NAVER and
         we stamp an approval a moment apart, maybe on both sides of midnight);
         unknown/approving charges with an approval call that day; cancels against the
         refunds table (``TableRefunds``; matching and the completing rule in
         worker.reconcile_match); a refund NAVER's day does not show -> its own history by
         paymentId before it is reported missing (the day boundary again)
      -> repair the provable: an unsettled_here charge goes through ``process_charge`` (the
         charge state machine: history by paymentId, compare-and-set transitions, leases);
         when history shows nothing it follows the machine's rule, but only once the settle
         window after our last approval call has passed (else: deferred to the next run)
      -> items + run row (done, counts); metrics by kind and resolution; one
         ``reconciliation.mismatch`` webhook (outbox) when anything is left for a human

Idempotent per day: every run is a new record; a repair is a state transition of the charge,
so a second run finds the charge settled and repairs nothing twice. The daily task skips a
(merchant, day) that already has a finished run (``once=True``); the CLI always runs.
Never an UPDATE of a charge's status here: only the state machine moves charges.

Catching up (:func:`daily_pass`, the daily task): a day whose run failed (NAVER down, bad
credentials), died (the worker stopped mid-run) or never started (beat down at 01:00) is owed
until a run of it finishes: each daily pass reconciles, oldest first, every day of the last
``BILLING_RECONCILE_CATCHUP_DAYS`` (default 7) without a finished run, from the merchant's first
finished run on (a first deployment reconciles yesterday only, no back-fill of history), then
yesterday. A run still ``running`` after :data:`ABANDONED_AFTER` is recorded as an error
(abandoned) when its day is reconciled again: the run list never shows a dead run as running.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import (
    Charge,
    ChargeAttempt,
    Merchant,
    ReconciliationItem,
    ReconciliationRun,
    Refund,
    Subscription,
)
from worker import metrics, notify
from worker.charge_store import last_approval_at
from worker.charging import ChargeEngine, process_charge
from worker.naverpay.client import NaverPayClient
from worker.naverpay.kst import KST
from worker.naverpay.results import PaymentDetail
from worker.reconcile_history import fetch_history
from worker.reconcile_match import (
    Finding,
    Kind,
    LocalCharge,
    LocalRefund,
    RefundSource,
    Resolution,
    compare_approval,
    compare_missing,
    compare_refunds,
    is_approval,
    merchant_pay_base,
)

log = logging.getLogger(__name__)
UNSETTLED = ("unknown", "approving")
Progress = Callable[[str], None]


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` as a date; ValueError saying what is wrong."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"day {text!r} is not a date YYYY-MM-DD (a day in Asia/Seoul)") from None


def day_window(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of ``day`` in Asia/Seoul, as aware datetimes."""
    start = datetime.combine(day, time(0), tzinfo=KST)
    return start, start + timedelta(days=1)


def previous_day(now: datetime) -> date:
    """The KST day before the KST day of ``now`` (what the daily pass reconciles)."""
    return (now.astimezone(KST) - timedelta(days=1)).date()


@dataclass(frozen=True)
class TableRefunds:
    """The :class:`RefundSource` over the ``refunds`` table."""

    sessions: sessionmaker[Session]

    def refunds(self, merchant_id: int, payment_ids: Collection[str], start: datetime,
                end: datetime) -> list[LocalRefund]:
        subs = select(Subscription.id).where(Subscription.merchant_id == merchant_id)
        mine = Refund.subscription_id.in_(subs)
        accepted = and_(mine, or_(and_(Refund.status == "succeeded", Refund.refunded_at >= start,
                                       Refund.refunded_at < end),
                                  and_(Refund.status == "completing", Refund.refunded_at < end)))
        wheres = [accepted, *(Refund.payment_id.in_(chunk) for chunk in _chunks(sorted(payment_ids)))]
        found: dict[int, LocalRefund] = {}
        with self.sessions() as s:
            for where in wheres:
                for r in s.scalars(select(Refund).where(where)):
                    found[r.id] = LocalRefund(r.id, r.payment_id, r.amount, r.status, r.idempotency_key,
                                              r.pay_hist_id or None, r.refunded_at)
        return sorted(found.values(), key=lambda r: r.refund_id)


@dataclass(frozen=True)
class Reconciler:
    """What a run needs, injected: the charge engine (sessions, clients, clock, settle window),
    the local refunds (``TableRefunds``; None: every cancel at NAVER is unknown here), how long
    a ``completing`` refund may be missing from NAVER's history, paging and progress output."""

    engine: ChargeEngine
    refunds: RefundSource | None = None
    completing_grace: timedelta = timedelta(days=1)
    rows_per_page: int = 100
    progress: Progress = lambda _line: None
    naver_tries: int = 3


@dataclass
class RunReport:
    """One run's outcome (also what ``--json`` prints)."""

    run_id: int
    merchant_id: int
    day: date
    status: str = "running"
    naver_rows: int = 0
    local_charges: int = 0
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    notification_ids: list[int] = field(default_factory=list)
    expire_subscription_ids: list[int] = field(default_factory=list)

    @property
    def repaired(self) -> list[Finding]:
        return [f for f in self.findings if f.resolution == Resolution.REPAIRED]

    @property
    def remaining(self) -> list[Finding]:
        """What is left for a human (reported) or for the next run (deferred)."""
        return [f for f in self.findings if f.resolution != Resolution.REPAIRED]

    def to_json(self) -> dict[str, Any]:
        start, end = day_window(self.day)
        counts: dict[str, int] = {}
        for f in self.remaining:
            counts[f.kind.value] = counts.get(f.kind.value, 0) + 1
        return {"run_id": self.run_id, "merchant_id": self.merchant_id, "day": self.day.isoformat(),
                "window": {"start": start.isoformat(), "end": end.isoformat()},
                "status": self.status, "error": self.error, "naver_rows": self.naver_rows,
                "local_charges": self.local_charges, "repaired": len(self.repaired),
                "remaining": len(self.remaining), "remaining_by_kind": counts,
                "items": [_item_json(f) for f in self.findings]}


def _item_json(f: Finding) -> dict[str, Any]:
    return {"kind": f.kind.value, "resolution": f.resolution.value, "charge_id": f.charge_id,
            "payment_id": f.payment_id, "merchant_pay_id": f.merchant_pay_id,
            "naver_amount": f.naver_amount, "local_amount": f.local_amount,
            "local_status": f.local_status, "detail": f.detail}


# A run takes minutes; one still "running" this long after it started has died with its worker.
ABANDONED_AFTER = timedelta(hours=12)


def already_reconciled(session: Session, merchant_id: int, day: date) -> bool:
    """Whether a finished run exists for (merchant, day): the daily pass runs once a day."""
    return bool(session.scalar(select(exists().where(
        ReconciliationRun.merchant_id == merchant_id, ReconciliationRun.day == day.isoformat(),
        ReconciliationRun.status == "done"))))


def _billing_merchants(session: Session) -> list[int]:
    """Every merchant with a subscription."""
    return list(session.scalars(select(Merchant.id).where(
        exists().where(Subscription.merchant_id == Merchant.id)).order_by(Merchant.id)))


def reconcile_pass(rec: Reconciler, day: date, merchant_ids: Sequence[int] | None = None, *,
                   once: bool = False) -> list[RunReport]:
    """Reconcile ``day`` for each merchant (default: every merchant with a subscription), each
    in its own run: one merchant's failure (recorded on its run's report) never stops the
    others. ``once`` skips a merchant whose day already has a finished run (the daily task
    uses :func:`daily_pass`, which also catches up on earlier days)."""
    with rec.engine.sessions() as s:
        if merchant_ids is None:
            merchant_ids = _billing_merchants(s)
        todo = [m for m in merchant_ids if not (once and already_reconciled(s, m, day))]
    return [reconcile_day(rec, day, merchant_id) for merchant_id in todo]


def owed_days(session: Session, merchant_id: int, yesterday: date, catch_up: int) -> list[date]:
    """The days the daily pass owes ``merchant_id``, oldest first: each of the ``catch_up``
    days before ``yesterday`` that has no finished run, counted only after the merchant's
    first finished run, then ``yesterday`` unless it has one."""
    earliest = yesterday - timedelta(days=catch_up)
    done = set(session.scalars(select(ReconciliationRun.day).where(
        ReconciliationRun.merchant_id == merchant_id, ReconciliationRun.status == "done",
        ReconciliationRun.day >= earliest.isoformat())))
    first = session.scalar(select(func.min(ReconciliationRun.day)).where(
        ReconciliationRun.merchant_id == merchant_id, ReconciliationRun.status == "done"))
    days = [yesterday - timedelta(days=k) for k in range(catch_up, 0, -1)]
    days = [d for d in days if first is not None and d.isoformat() > first]
    return [d for d in [*days, yesterday] if d.isoformat() not in done]


def daily_pass(rec: Reconciler, yesterday: date, catch_up: int = 7) -> list[RunReport]:
    """The daily task's pass: for every merchant with a subscription, each owed day
    (:func:`owed_days`) in its own run, oldest first; a failure is recorded on its run (and
    that day is owed again tomorrow), never stopping the other days or merchants."""
    with rec.engine.sessions() as s:
        todo = [(m, d) for m in _billing_merchants(s) for d in owed_days(s, m, yesterday, catch_up)]
    for merchant_id, day in todo:
        if day != yesterday:
            log.warning("reconciling %s for merchant %s again: no run of that day finished", day,
                        merchant_id, extra={"merchant_id": merchant_id})
    return [reconcile_day(rec, day, merchant_id) for merchant_id, day in todo]


def reconcile_day(rec: Reconciler, day: date, merchant_id: int = 1) -> RunReport:
    """Reconcile one merchant's KST ``day``; see the module docstring. A failure (NAVER
    unreachable, bad credentials) is logged and recorded on the run (``status`` error), whose
    report is returned; only an unknown merchant raises (ValueError)."""
    sessions, clock = rec.engine.sessions, rec.engine.clock
    with sessions.begin() as s:
        merchant = s.get(Merchant, merchant_id)
        if merchant is None:
            raise ValueError(f"no merchant with id {merchant_id}")
        now = clock()
        run = ReconciliationRun(merchant_id=merchant_id, day=day.isoformat(), started_at=now)
        s.add(run)
        s.flush()
        # Runs of this day that never finished and cannot still be going: recorded as such.
        s.execute(update(ReconciliationRun).where(
            ReconciliationRun.merchant_id == merchant_id, ReconciliationRun.day == day.isoformat(),
            ReconciliationRun.status == "running", ReconciliationRun.started_at < now - ABANDONED_AFTER,
        ).values(status="error", finished_at=now,
                 error=f"abandoned: not finished {ABANDONED_AFTER.total_seconds() / 3600:.0f} h after it "
                       f"started (its worker stopped?); the day is reconciled again by run {run.id}"))
        report = RunReport(run.id, merchant_id, day)
        s.expunge(merchant)
    try:
        client = rec.engine.client_for(merchant)
        rows = fetch_history(client, *day_window(day), rows_per_page=rec.rows_per_page,
                             progress=rec.progress, tries=rec.naver_tries, sleep=rec.engine.sleep,
                             backoff_max=rec.engine.backoff_max)
        report.naver_rows = len(rows)
        findings = _compare(rec, client, report, rows)
        report.findings = [_repair(rec, report, f) for f in findings]
        report.status = "done"
    except Exception as exc:  # noqa: BLE001 - recorded on the run, logged, shown by the caller
        log.exception("reconciliation of %s for merchant %s failed", day, merchant_id)
        report.status, report.error = "error", f"{type(exc).__name__}: {exc}"[:2000]
    _finish(rec, report)
    return report


# --- comparison -------------------------------------------------------------------------------

def _local(c: Charge) -> LocalCharge:
    return LocalCharge(c.id, c.merchant_pay_id, c.payment_id, c.status, c.amount, c.approved_amount)


def _compare(rec: Reconciler, client: NaverPayClient, report: RunReport,
             rows: Sequence[PaymentDetail]) -> list[Finding]:
    start, end = day_window(report.day)
    with rec.engine.sessions() as s:
        by_pid, by_mpid = _charges_for(s, rows)
        day_charges = _day_charges(s, report.merchant_id, start, end)
    report.local_charges = len(day_charges)
    findings: list[Finding] = []
    settled_pids = set()
    for row in rows:
        if not is_approval(row):
            continue
        charge = by_pid.get(row.payment_id) or by_mpid.get(merchant_pay_base(row.merchant_pay_key) or "")
        if row.admission_state in (None, "SUCCESS"):
            settled_pids.add(row.payment_id)
            found = compare_approval(row, charge)
        elif charge is not None and charge.payment_id == row.payment_id and charge.status in UNSETTLED:
            settled_pids.add(row.payment_id)
            found = Finding(Kind.UNSETTLED_HERE, "NAVER refused the approval; our charge has no outcome yet",
                            payment_id=row.payment_id, merchant_pay_id=charge.merchant_pay_id,
                            charge_id=charge.id, naver_amount=row.total_pay_amount,
                            local_amount=charge.amount, local_status=charge.status)
        else:
            continue  # a refused approval of a charge that knows it (declined, retried)
        if found is not None:
            findings.append(found)
    for charge in day_charges:
        if charge.payment_id in settled_pids or charge.payment_id is None:
            continue
        findings.extend(_outside_the_day(client, charge))
    local_refunds = _refunds(rec, report.merchant_id, rows, start, end)
    for found in compare_refunds([r for r in rows if not is_approval(r)], local_refunds,
                                 {pid: c.id for pid, c in by_pid.items()}, now=rec.engine.clock(),
                                 completing_grace=rec.completing_grace):
        if found.kind == Kind.REFUND_MISSING_AT_NAVER and _cancelled_elsewhere(client, found, local_refunds):
            continue
        findings.append(found)
    return findings


def _cancelled_elsewhere(client: NaverPayClient, found: Finding, local: Sequence[LocalRefund] | None) -> bool:
    """Whether the payment's own history shows the cancel of a refund the day did not show
    (stamped on another KST day)."""
    refund = next((r for r in local or () if r.refund_id == found.refund_id), None)
    if refund is None or found.payment_id is None:
        return False
    rows = client.payment_history(payment_id=found.payment_id).rows
    as_done = replace(refund, status="succeeded")  # only the matching matters here
    return not any(f.kind == Kind.REFUND_MISSING_AT_NAVER
                   for f in compare_refunds([r for r in rows if not is_approval(r)], [as_done]))


def _outside_the_day(client: NaverPayClient, charge: LocalCharge) -> list[Finding]:
    """A charge of the day that the day's history does not show: read its own history."""
    if charge.status in UNSETTLED:
        return [Finding(Kind.UNSETTLED_HERE, "no outcome here; NAVER's history of the day shows none",
                        payment_id=charge.payment_id, merchant_pay_id=charge.merchant_pay_id,
                        charge_id=charge.id, local_amount=charge.amount, local_status=charge.status)]
    assert charge.payment_id is not None
    rows = client.payment_history(payment_id=charge.payment_id).rows
    success = next((r for r in rows if is_approval(r) and r.admission_state in (None, "SUCCESS")), None)
    if success is not None:  # approved on the other side of midnight: compare it all the same
        found = compare_approval(success, charge)
        return [found] if found is not None else []
    missing = compare_missing(charge, rows)
    return [missing] if missing is not None else []


ByKey = dict[str, LocalCharge]


def _charges_for(s: Session, rows: Sequence[PaymentDetail]) -> tuple[ByKey, ByKey]:
    """Charges (of any merchant) the rows point at, by paymentId and by merchant_pay_id."""
    pids = sorted({r.payment_id for r in rows})
    bases = sorted({b for r in rows if (b := merchant_pay_base(r.merchant_pay_key))})
    by_pid: ByKey = {}
    by_mpid: ByKey = {}
    for chunk in _chunks(pids):
        for c in s.scalars(select(Charge).where(Charge.payment_id.in_(chunk))):
            by_pid[c.payment_id or ""] = _local(c)
    for chunk in _chunks(bases):
        for c in s.scalars(select(Charge).where(Charge.merchant_pay_id.in_(chunk))):
            by_mpid[c.merchant_pay_id] = _local(c)
    return by_pid, by_mpid


def _day_charges(s: Session, merchant_id: int, start: datetime, end: datetime) -> list[LocalCharge]:
    """The merchant's charges the day should show: approved that day (succeeded or flagged),
    or without an outcome (unknown/approving) after an approval call that day."""
    mine = Charge.subscription_id.in_(select(Subscription.id).where(Subscription.merchant_id == merchant_id))
    approved = select(Charge).where(mine, Charge.status.in_(("succeeded", "amount_mismatch")),
                                    Charge.approved_at >= start, Charge.approved_at < end)
    called = select(ChargeAttempt.charge_id).where(ChargeAttempt.kind == "approve",
                                                   ChargeAttempt.created_at >= start,
                                                   ChargeAttempt.created_at < end)
    unsettled = select(Charge).where(mine, Charge.status.in_(UNSETTLED), Charge.id.in_(called))
    charges = {c.id: _local(c) for c in s.scalars(approved)}
    charges.update({c.id: _local(c) for c in s.scalars(unsettled)})
    return sorted(charges.values(), key=lambda c: c.id)


def _refunds(rec: Reconciler, merchant_id: int, rows: Sequence[PaymentDetail], start: datetime,
             end: datetime) -> list[LocalRefund] | None:
    if rec.refunds is None:
        return None
    return rec.refunds.refunds(merchant_id, sorted({r.payment_id for r in rows if not is_approval(r)}),
                               start, end)


def _chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


# --- repair (through the charge state machine only) -------------------------------------------

def _repair(rec: Reconciler, report: RunReport, finding: Finding) -> Finding:
    """Settle an ``unsettled_here`` charge through ``process_charge``; report the rest."""
    if finding.kind != Kind.UNSETTLED_HERE or finding.charge_id is None:
        return finding
    engine = rec.engine
    if finding.naver_amount is None:  # history shows nothing: only after the settle window
        with engine.sessions() as s:  # one session at a time (SQLite takes a write lock)
            charge = s.get(Charge, finding.charge_id)
        sent = last_approval_at(engine.sessions, charge) if charge is not None else None
        if sent is not None and engine.clock() < sent + engine.settle_window:
            return finding.resolved(Resolution.DEFERRED, "NAVER shows no approval yet, and our last "
                                    "approval call may still land (settle window): next run",
                                    finding.local_status)
    try:
        out = process_charge(engine, finding.charge_id, f"reconcile:{report.run_id}:{uuid.uuid4().hex[:8]}")
    except Exception as exc:  # noqa: BLE001 - one charge never stops the run
        log.exception("reconciliation: charge %s could not be settled", finding.charge_id)
        return finding.resolved(Resolution.DEFERRED, f"settling it failed: {type(exc).__name__}: {exc}",
                                finding.local_status)
    report.notification_ids += out.notification_ids
    if out.expire_subscription_id is not None:
        report.expire_subscription_ids.append(out.expire_subscription_id)
    if out.busy or out.status is None or out.status in UNSETTLED or out.status == "held":
        return finding.resolved(Resolution.DEFERRED, "another run holds the charge, or NAVER did not "
                                f"settle it now ({out.status or 'busy'}): next run", out.status)
    if out.status == "amount_mismatch":
        return Finding(Kind.AMOUNT_DIFFERS, "history settled it, but NAVER approved another amount "
                       "(flagged amount_mismatch)", finding.payment_id, finding.merchant_pay_id,
                       finding.charge_id, finding.naver_amount, finding.local_amount, out.status)
    how = "NAVER's history settled it" if finding.naver_amount is not None else \
        "history showed no approval; the state machine followed its rule"
    return finding.resolved(Resolution.REPAIRED, f"{how}: {finding.local_status} -> {out.status}", out.status)


# --- records, metrics, webhook ----------------------------------------------------------------

def _finish(rec: Reconciler, report: RunReport) -> None:
    now = rec.engine.clock()
    with rec.engine.sessions.begin() as s:
        run = s.get(ReconciliationRun, report.run_id)
        assert run is not None
        run.status, run.error, run.finished_at = report.status, report.error, now
        run.naver_rows, run.local_charges = report.naver_rows, report.local_charges
        run.repaired, run.remaining = len(report.repaired), len(report.remaining)
        s.add_all(ReconciliationItem(
            run_id=report.run_id, kind=f.kind.value, resolution=f.resolution.value, charge_id=f.charge_id,
            payment_id=f.payment_id, merchant_pay_id=f.merchant_pay_id, naver_amount=f.naver_amount,
            local_amount=f.local_amount, local_status=f.local_status, detail=f.detail, created_at=now)
            for f in report.findings)
        if report.remaining and report.status == "done":
            report.notification_ids += _alert(s, report, now)
    metrics.RECONCILIATION_RUNS.labels(status=report.status).inc()
    for f in report.findings:
        metrics.RECONCILIATION_MISMATCHES.labels(kind=f.kind.value, resolution=f.resolution.value).inc()


def _alert(s: Session, report: RunReport, now: datetime) -> list[int]:
    """One ``reconciliation.mismatch`` webhook per distinct set of leftovers of a day."""
    merchant = s.get(Merchant, report.merchant_id)
    assert merchant is not None
    left = report.remaining
    keys = sorted(f"{f.kind}:{f.payment_id}:{f.charge_id}:{f.resolution}" for f in left)
    fingerprint = hashlib.sha256("|".join(keys).encode()).hexdigest()[:16]
    summary = report.to_json()
    details = {"run_id": report.run_id, "day": summary["day"],
               "remaining_by_kind": summary["remaining_by_kind"], "items": list(map(_item_json, left[:100]))}
    return notify.queue_merchant_alert(
        s, notify.RECONCILIATION_MISMATCH, merchant, now,
        dedupe=f"{report.merchant_id}:{summary['day']}:{fingerprint}", details=details,
        message=(f"reconciliation of {summary['day']} (KST) left {len(left)} difference(s) with NAVER's "
                 f"payment history for a human: {summary['remaining_by_kind']}; "
                 f"see `npay-billing reconcile --date {summary['day']}` or run {report.run_id}"))
