"""The refund: one NAVER cancel (full or partial) of a succeeded charge, safely for money.

A refund row is born ``requested`` by ``refund_requests.request_refund`` (which guarantees the
sum of refunds not failed never exceeds the approved amount). ``process_refund(engine,
refund_id, owner)`` is a plain function (the Celery task ``worker.refund_charge`` is a thin
wrapper): it takes the refund's lease, then moves it one compare-and-set at a time, each
committed before the NAVER call it announces::

    requested --(an older refund of this charge unsettled: wait)--CAS--> cancelling
    cancelling --cancel(key, taxScope+taxExScope=cancelAmount, doCompareRest=1, expectedRest)-->
        Success ....................................... succeeded   (refund.succeeded)
        CancelNotComplete ............................. completing  (refund.succeeded; counts as
                                                        refunded; NEVER resent; history confirms)
        503, 429, MaintenanceOngoing, not sent
        (after in-call retries) ....................... requested, after a backoff (same key:
                                                        NAVER stores no such answer)
        PreCancelNotComplete (an earlier cancel is
        still completing), a decline-type code
        (FaultCheckOngoing, BankCheckTime) ............ requested after a backoff, next key round
                                                        (unknown if a send of ours may be pending)
        lost answer, 5xx other than 503 ................ unknown
        unknown code, AlreadyOnGoing .................. unknown, history after ``settle``; a resend
                                                        then uses the next key round
        AlreadyCanceled, RestAmountDiff, OverRemainAmount, other refusals:
            no send of ours may have gone through ..... failed   (refund.failed, amount freed)
            one may have (uncertain) .................. unknown  (history decides)
        merchant-side fault (401, InvalidParameter,
        a proxy's 4xx) ................................ held     (alert refund.held)
    unknown | cancelling found after a crash --history(paymentId)-->
        a cancel row with our key (merchantPayTransactionKey), or, when NAVER echoes no keys,
        NAVER's remaining amount == our expected rest ... succeeded
        nothing, and NAVER refused a resend (AlreadyCanceled, RestAmountDiff, OverRemainAmount):
            within ``settle`` after the last send ........ unknown (history again, backoff)
            after it ..................................... failed
        nothing otherwise ................................ cancelling: resend, SAME key (NAVER
                                                           replays its answer if it had it)
    completing --history shows our row--> succeeded (confirmed; no second event) | wait
    held --(backoff)--> requested, or unknown when a send of ours may have gone through
        (history first); with a new key round, as after PreCancelNotComplete or a decline-type
        code: NAVER stores a coded refusal under its key and would replay it for ever, while
        doCompareRest still refuses a second refund and history knows every round as ours

Money rules kept here:
* one refund of a charge at a time, oldest first (NAVER refuses concurrent cancels anyway), so
  ``expectedRestAmount`` = approved - (refunds of this charge that succeeded or are completing)
  - this refund; set at the first send and sent unchanged on every resend;
* ``doCompareRest`` + the stored idempotency key: a resend of a cancel NAVER already made is a
  replay (same key) or a refusal (the rest moved), never a second refund;
* an unknown outcome is resolved through history before anything is sent again;
* every transition requires this run's lease (``lease_owner``) and renews it; a run whose
  lease was taken over stops without writing (``LeaseLost``);
* a run makes at most ``call_budget`` NAVER calls, then backs off (jittered, exponential).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import Charge, ChargeAttempt, Refund, Subscription, utcnow
from models import RefundStatus as RS
from models.db import rowcount
from worker import notify
from worker.charge_store import MerchantSettings
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import (
    DeclinedError,
    MerchantSideError,
    NaverPayError,
    TransientError,
    UnknownOutcomeError,
)
from worker.naverpay.results import HistoryPage
from worker.recording import attempt_values
from worker.refund_requests import FINAL_STATUSES, REFUNDED, UNSETTLED, queue_refund_event

log = logging.getLogger(__name__)
T = TypeVar("T")

# After a send that may have gone through, these refusals can mean "it did" (NAVER's guide).
RESOLVE_CODES = frozenset({"AlreadyCanceled", "RestAmountDiff", "OverRemainAmount"})
PRE_CANCEL = "PreCancelNotComplete"


@dataclass(frozen=True)
class RefundEngine:
    """Everything a refund needs, injected: sessions, clients, clock, sleep, timings."""

    sessions: sessionmaker[Session]
    client_for: Callable[[MerchantSettings], NaverPayClient]
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    lease: timedelta = timedelta(minutes=6)
    transient_tries: int = 3
    backoff_max: float = 8.0
    call_budget: int = 6
    # How long after a send NAVER may still show it in history (a refusal of a resend is only
    # trusted once this has passed); and the backoff of waiting and held refunds (base, cap).
    settle: timedelta | None = None
    wait_backoff: tuple[float, float] | None = None
    hold_backoff: tuple[float, float] | None = None
    rng: random.Random = field(default_factory=random.Random)

    @property
    def settle_window(self) -> timedelta:
        """Two minutes with the production lease of 6 minutes."""
        return self.settle if self.settle is not None else self.lease / 3

    def backoff(self, base_cap: tuple[float, float] | None, count: int, hold: bool = False) -> timedelta:
        """Exponential, capped, full jitter in [half, whole]; scaled on the lease by default."""
        lease = self.lease.total_seconds()
        base, cap = base_cap or ((lease / 6, lease * 10) if hold else (lease / 24, lease * 5))
        return timedelta(seconds=min(cap, base * 2 ** min(count, 20)) * self.rng.uniform(0.5, 1.0))

    def retrying(self) -> Retrying:
        """Short in-call retries on transient errors only (same key on each try)."""
        return Retrying(stop=stop_after_attempt(self.transient_tries),
                        wait=wait_exponential(multiplier=0.5, max=self.backoff_max),
                        retry=retry_if_exception_type(TransientError), sleep=self.sleep, reraise=True)


@dataclass
class RefundOutcome:
    """What one run did; the task enqueues the notifications after the commits."""

    refund_id: int
    status: str | None = None
    code: str | None = None
    busy: bool = False
    calls: int = 0
    resolves: int = 0
    notification_ids: list[int] = field(default_factory=list)


class LeaseLost(Exception):
    """Another run owns the refund now; this one stops without writing."""


class _Stop(Exception):
    """The refund must wait (a backoff, NAVER, an older refund)."""


@dataclass
class _Run:
    engine: RefundEngine
    owner: str
    out: RefundOutcome
    refund: Refund
    charge: Charge
    merchant: MerchantSettings
    pending: list[dict[str, Any]] = field(default_factory=list)  # charge_attempts rows to write

    @property
    def uncertain(self) -> bool:
        return self.refund.uncertain_since is not None


def process_refund(engine: RefundEngine, refund_id: int, owner: str) -> RefundOutcome:
    """Advance one refund as far as it can go now (see the module docstring)."""
    out = RefundOutcome(refund_id)
    run = _take(engine, refund_id, owner, out)
    if run is None:
        return out
    try:
        while run.refund.status not in FINAL_STATUSES:
            if out.calls >= engine.call_budget:
                _wait(run, engine.backoff(engine.wait_backoff, run.refund.backoff_count))
                break
            STEPS[RS(run.refund.status)](run)
    except _Stop:
        pass
    except LeaseLost:
        log.warning("refund %s: run %s lost its lease; stopped without writing", refund_id, owner)
    finally:
        _release(run)
    out.status, out.code = run.refund.status, run.refund.last_code
    return out


# --- lease and transitions ----------------------------------------------------------------

def _take(engine: RefundEngine, refund_id: int, owner: str, out: RefundOutcome) -> _Run | None:
    now = engine.clock()
    with engine.sessions.begin() as s:
        got = rowcount(s.execute(update(Refund).where(
            Refund.id == refund_id, Refund.status.not_in(list(FINAL_STATUSES)),
            (Refund.lease_owner.is_(None)) | (Refund.lease_until < now) | (Refund.lease_owner == owner))
            .values(lease_owner=owner, lease_until=now + engine.lease)))
        refund = s.get(Refund, refund_id)
        if refund is None:
            log.error("refund %s does not exist", refund_id)
            return None
        out.status, out.code = refund.status, refund.last_code
        if not got:
            out.busy = refund.status not in FINAL_STATUSES
            return None
        charge = s.get(Charge, refund.charge_id)
        assert charge is not None
        merchant = charge.subscription.merchant  # loaded with the charge; detached below
        s.expunge_all()
    return _Run(engine, owner, out, refund, charge, merchant)


def _release(run: _Run) -> None:
    with run.engine.sessions.begin() as s:
        _write_calls(s, run)
        s.execute(update(Refund).where(Refund.id == run.refund.id, Refund.lease_owner == run.owner)
                  .values(lease_owner=None, lease_until=None))


def _write_calls(s: Session, run: _Run) -> None:
    if run.pending:
        s.execute(insert(ChargeAttempt), run.pending)
        run.pending.clear()


def _move(run: _Run, sources: Iterable[RS], target: RS, then: Callable[[Session], None] | None = None,
          **values: Any) -> None:
    """Compare-and-set ``sources -> target`` (this run must own the refund), committed with the
    rows of the calls made since the last transition and whatever ``then`` writes."""
    engine = run.engine
    now = engine.clock()
    with engine.sessions.begin() as s:
        _write_calls(s, run)
        moved = rowcount(s.execute(update(Refund).where(
            Refund.id == run.refund.id, Refund.status.in_([x.value for x in sources]),
            Refund.lease_owner == run.owner)
            .values(status=target.value, lease_until=now + engine.lease, updated_at=now, **values)))
        if not moved:
            raise LeaseLost(run.refund.id)
        if then is not None:
            then(s)
    for name, value in values.items():
        setattr(run.refund, name, value)
    run.refund.status = target.value


def _wait(run: _Run, delay: timedelta, **values: Any) -> None:
    """Stay in the same status until ``now + delay``."""
    status = RS(run.refund.status)
    _move(run, (status,), status, next_attempt_at=run.engine.clock() + delay,
          backoff_count=run.refund.backoff_count + 1, **values)
    raise _Stop


def _due(run: _Run) -> None:
    at = run.refund.next_attempt_at
    if at is not None and at > run.engine.clock():
        raise _Stop


# --- NAVER calls --------------------------------------------------------------------------

def _client(run: _Run) -> NaverPayClient:
    """The merchant's client; a merchant row we cannot build one from (a secret's environment
    variable not set) is our fault: the refund is held, never failed."""
    try:
        return run.engine.client_for(run.merchant)
    except ValueError as exc:
        raise MerchantSideError(f"merchant {run.merchant.id}: {exc}", api="cancel") from exc


def _call(run: _Run, kind: str, key: str | None, fn: Callable[[], T]) -> T:
    """One NAVER call with in-call retries; each try is recorded in ``charge_attempts``."""
    def attempt() -> T:
        started = time.perf_counter()
        run.out.calls += 1
        try:
            result = fn()
        except BaseException as exc:
            _record(run, kind, key, started, error=exc)
            raise
        _record(run, kind, key, started, result=result)
        return result

    return run.engine.retrying()(attempt)


def _record(run: _Run, kind: str, key: str | None, started: float, **outcome: Any) -> None:
    values = attempt_values(kind=kind, key=key, charge_id=run.charge.id,
                            subscription_id=run.charge.subscription_id, attempt_no=run.refund.send_count,
                            elapsed=time.perf_counter() - started, at=run.engine.clock(), **outcome)
    values["refund_id"] = run.refund.id
    run.pending.append(values)


# --- steps --------------------------------------------------------------------------------

def _begin(run: _Run) -> None:
    """requested: send once every older refund of the charge is settled."""
    _due(run)
    engine, refund = run.engine, run.refund
    now = engine.clock()
    with engine.sessions() as s:
        older = s.scalar(select(func.count()).select_from(Refund).where(
            Refund.charge_id == refund.charge_id, Refund.id < refund.id, Refund.status.in_(UNSETTLED)))
        done = s.scalar(select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.charge_id == refund.charge_id, Refund.id != refund.id, Refund.status.in_(REFUNDED)))
    if older:
        _wait(run, engine.backoff(engine.wait_backoff, 0),
              last_message="waiting for an older refund of this charge")
    expected = refund.expected_rest
    if expected is None:
        expected = (run.charge.approved_amount or 0) - int(done or 0) - refund.amount
    _move(run, (RS.REQUESTED,), RS.CANCELLING, expected_rest=expected, send_count=refund.send_count + 1,
          last_sent_at=now, next_attempt_at=None)
    _send(run)


def _send(run: _Run) -> None:
    """cancelling: the cancel call, then the transition its answer causes."""
    refund = run.refund
    assert refund.expected_rest is not None
    key, expected = refund.idempotency_key, refund.expected_rest
    try:
        result = _call(run, "cancel", key, lambda: _client(run).cancel_payment(
            payment_id=refund.payment_id, cancel_amount=refund.amount,
            tax_scope_amount=refund.amount - refund.tax_free_amount,
            tax_ex_scope_amount=refund.tax_free_amount, reason=refund.reason, idempotency_key=key,
            expected_rest_amount=expected, merchant_pay_transaction_key=key))
    except NaverPayError as exc:
        return _refused(run, exc)
    if result.total_rest_amount is not None and result.total_rest_amount != expected:
        log.warning("refund %s: NAVER's remaining amount is %s won, expected %s", refund.id,
                    result.total_rest_amount, expected)
    _succeed(run, (RS.CANCELLING,), pending=result.pending, pay_hist_id=result.pay_hist_id or None,
             rest=result.total_rest_amount, code=result.code)


def _refused(run: _Run, exc: NaverPayError) -> None:
    engine, refund = run.engine, run.refund
    now = engine.clock()
    note: dict[str, Any] = {"last_code": exc.code or type(exc).__name__, "last_message": str(exc)[:2000]}
    if isinstance(exc, UnknownOutcomeError):
        later: dict[str, Any] = {}
        if exc.code is not None and exc.http_status in (200, 409):
            # A code we do not know (or AlreadyOnGoing): NAVER keeps it under this key, so the
            # same key would only replay it. History gets the settle window to show the cancel;
            # after it, a resend goes with the next key round (doCompareRest still guards).
            later = {**_next_key(refund),
                     "next_attempt_at": (refund.last_sent_at or now) + engine.settle_window}
        _move(run, (RS.CANCELLING,), RS.UNKNOWN, uncertain_since=refund.uncertain_since or now, **note,
              **later)
        return  # resolved through history (now, or once the settle window passed)
    if isinstance(exc, MerchantSideError):
        return _hold(run, exc, RS.UNKNOWN if run.uncertain else RS.REQUESTED)
    waiting = isinstance(exc, TransientError | DeclinedError) or exc.code == PRE_CANCEL
    if waiting:
        # Not carried out (or an earlier cancel still completing): later. A coded answer is
        # stored by NAVER under the key and would be replayed for ever, so the next send gets
        # a new key round; transient answers are not stored, the same key goes again.
        target = RS.UNKNOWN if run.uncertain else RS.REQUESTED
        rekey = {} if isinstance(exc, TransientError) else _next_key(refund)
        _move(run, (RS.CANCELLING,), target, next_attempt_at=now + engine.backoff(
            engine.wait_backoff, refund.backoff_count), backoff_count=refund.backoff_count + 1,
            **note, **rekey)
        raise _Stop
    rest = _body_rest(exc)
    if run.uncertain:
        if rest is not None and rest == refund.expected_rest:
            # NAVER's remaining amount is exactly what remains after this refund: it went through.
            return _succeed(run, (RS.CANCELLING,), pending=False, pay_hist_id=None, rest=rest,
                            code=exc.code or "Success")
        _move(run, (RS.CANCELLING,), RS.UNKNOWN, naver_rest_amount=rest, **note)
        return  # an earlier send may have gone through: history decides
    _fail(run, (RS.CANCELLING,), exc.code, _refusal_text(exc, refund, rest))


def _body_rest(exc: NaverPayError) -> int | None:
    """NAVER's remaining amount as a refusal states it (AlreadyCanceled: nothing is left)."""
    if exc.code == "AlreadyCanceled":
        return 0
    value = (exc.body or {}).get("totalRestAmount")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _refusal_text(exc: NaverPayError, refund: Refund, rest: int | None) -> str:
    text = f"NAVER refused the cancel: {exc.code or type(exc).__name__}: {exc.naver_message or exc}"
    if exc.code == "RestAmountDiff":
        before = (refund.expected_rest or 0) + refund.amount
        text += (f"; NAVER's remaining amount is {rest if rest is not None else '?'} won, we expected "
                 f"{before} won before this refund (a refund made outside npay-billing?)")
    elif exc.code == "AlreadyCanceled":
        text += "; NAVER says the payment is already fully canceled"
    elif exc.code == "OverRemainAmount":
        text += f"; {refund.amount} won is more than NAVER has left to cancel"
    return text[:2000]


def _resolve(run: _Run) -> None:
    """unknown (or cancelling after a crash): ask history, then act; never a blind resend."""
    engine, refund = run.engine, run.refund
    status = RS(refund.status)
    if status == RS.UNKNOWN:
        _due(run)
    if run.out.resolves >= 3:
        _wait(run, engine.backoff(engine.wait_backoff, refund.backoff_count))
    if run.out.resolves:
        engine.sleep(min(engine.backoff_max, 2.0 ** run.out.resolves))
    run.out.resolves += 1
    now = engine.clock()
    page = _history(run)
    if page is None:
        if status == RS.CANCELLING:
            _move(run, (RS.CANCELLING,), RS.UNKNOWN, uncertain_since=refund.uncertain_since or now)
        _wait(run, engine.backoff(engine.wait_backoff, refund.backoff_count))
        return
    found, rest, hist_id = _evidence(page, refund, run.charge.approved_amount or 0)
    if found:
        return _succeed(run, (status,), pending=False, pay_hist_id=hist_id, rest=rest, code="Success")
    if status == RS.CANCELLING:  # a crash between the commit and the answer: maybe sent
        _move(run, (RS.CANCELLING,), RS.UNKNOWN, uncertain_since=refund.uncertain_since or now)
        status = RS.UNKNOWN
    if refund.last_code in RESOLVE_CODES:
        sent = refund.last_sent_at or now
        if now < sent + engine.settle_window:
            _wait(run, min(sent + engine.settle_window - now + timedelta(seconds=1),
                           engine.backoff(engine.wait_backoff, refund.backoff_count)), naver_rest_amount=rest)
        return _fail(run, (RS.UNKNOWN,), refund.last_code, (
            f"NAVER refused a resend ({refund.last_code}) and its history shows no cancel of ours "
            f"{engine.settle_window.total_seconds():.0f} s after the last send (remaining amount "
            f"{rest} won, expected {refund.expected_rest} won after this refund)"))
    # NAVER has no cancel of ours: resend with the SAME key (a replay if it had it after all).
    _move(run, (RS.UNKNOWN,), RS.CANCELLING, send_count=refund.send_count + 1, last_sent_at=now,
          next_attempt_at=None)
    _send(run)


def _confirm(run: _Run) -> None:
    """completing (CancelNotComplete): refunded already; history confirms it, nothing is sent."""
    _due(run)
    engine, refund = run.engine, run.refund
    page = _history(run)
    if page is None:
        _wait(run, engine.backoff(engine.wait_backoff, refund.backoff_count))
    assert page is not None
    found, rest, hist_id = _evidence(page, refund, run.charge.approved_amount or 0)
    if found:
        _move(run, (RS.COMPLETING,), RS.SUCCEEDED, confirmed_at=engine.clock(), pay_hist_id=hist_id,
              naver_rest_amount=rest, next_attempt_at=None, last_message=None)
        raise _Stop
    _wait(run, engine.backoff(engine.wait_backoff, refund.backoff_count),
          last_message="CancelNotComplete: NAVER completes this cancel by itself; waiting for history")


def _resume(run: _Run) -> None:
    """held: after its backoff, back to where it was held; a new key round if nothing of ours
    may be pending at NAVER (NAVER keeps its refusal under the old key)."""
    _due(run)
    refund = run.refund
    target = RS(refund.held_from or RS.UNKNOWN)
    values: dict[str, Any] = {"next_attempt_at": None, "held_from": None}
    if target in (RS.REQUESTED, RS.UNKNOWN):
        values.update(_next_key(refund))
    _move(run, (RS.HELD,), target, **values)


def _next_key(refund: Refund) -> dict[str, Any]:
    """A new key round ``<base>-<n>``, stored before the send that uses it. Safe even when an
    earlier send may have gone through: ``doCompareRest`` makes NAVER refuse a second refund,
    and history recognises every round of this refund as ours (same base)."""
    base = refund.idempotency_key.split("-")[0]
    return {"key_round": refund.key_round + 1, "idempotency_key": f"{base}-{refund.key_round + 1}"}


def _history(run: _Run) -> HistoryPage | None:
    payment_id = run.refund.payment_id
    try:
        return _call(run, "cancel_history", None, lambda: _client(run).payment_history(payment_id=payment_id))
    except MerchantSideError as exc:
        _hold(run, exc, RS.UNKNOWN if run.refund.status != RS.COMPLETING else RS.COMPLETING)
    except NaverPayError:
        return None
    return None


def _evidence(page: HistoryPage, refund: Refund, approved: int) -> tuple[bool, int, str | None]:
    """(our cancel is in history, NAVER's remaining amount, its payHistId).

    Ours = a successful cancel row carrying one of this refund's keys. When NAVER echoes no key
    on any cancel row, the fallback is the amount: NAVER's remaining amount equal to what
    remains after this refund."""
    cancels = [row for row in page.rows if row.admission_type_code in ("03", "04")
               and row.admission_state in (None, "SUCCESS")]
    rest = approved - sum(row.total_pay_amount for row in cancels)
    base = refund.idempotency_key.split("-")[0]
    for row in cancels:
        key = row.merchant_pay_transaction_key or ""
        if key == base or key.startswith(base + "-"):
            return True, rest, row.pay_hist_id
    echoed = any(row.merchant_pay_transaction_key for row in cancels)
    return (not echoed and bool(cancels) and rest == refund.expected_rest), rest, None


# --- endings ------------------------------------------------------------------------------

def _succeed(run: _Run, sources: Iterable[RS], *, pending: bool, pay_hist_id: str | None,
             rest: int | None, code: str) -> None:
    now = run.engine.clock()
    first = run.refund.refunded_at is None
    target = RS.COMPLETING if pending else RS.SUCCEEDED

    def event(s: Session) -> None:
        if first:  # once: CancelNotComplete already told the merchant
            run.out.notification_ids += queue_refund_event(s, notify.REFUND_SUCCEEDED, run.refund.id, now)

    _move(run, sources, target, then=event, refunded_at=run.refund.refunded_at or now,
          confirmed_at=None if pending else now, pay_hist_id=pay_hist_id, naver_rest_amount=rest,
          last_code=code, last_message=None, next_attempt_at=None, backoff_count=0)
    log.info("refund %s of charge %s: %s (%s won)", run.refund.id, run.charge.id, target.value,
             run.refund.amount, extra={"charge_id": run.charge.id})
    if pending:
        raise _Stop  # history confirms it later


def _fail(run: _Run, sources: Iterable[RS], code: str | None, reason: str) -> None:
    now = run.engine.clock()
    refund = run.refund

    def give_back(s: Session) -> None:
        s.execute(update(Charge).where(Charge.id == refund.charge_id)
                  .values(refund_total=Charge.refund_total - refund.amount))
        run.out.notification_ids += queue_refund_event(s, notify.REFUND_FAILED, refund.id, now)

    _move(run, sources, RS.FAILED, then=give_back, last_code=code, last_message=reason,
          next_attempt_at=None)
    log.warning("refund %s of charge %s failed: %s", refund.id, run.charge.id, reason,
                extra={"charge_id": run.charge.id})


def _hold(run: _Run, exc: NaverPayError, resume_to: RS) -> None:
    engine, refund = run.engine, run.refund
    now = engine.clock()
    at = now + engine.backoff(engine.hold_backoff, refund.backoff_count, hold=True)
    code = exc.code or type(exc).__name__

    def alert(s: Session) -> None:
        sub = s.get(Subscription, refund.subscription_id)
        assert sub is not None
        run.out.notification_ids += notify.queue_alert(
            s, notify.REFUND_HELD, sub, now, dedupe=f"refund-{refund.id}-{refund.backoff_count}",
            message=(f"refund {refund.id} of charge {refund.charge_id} is held: NAVER refused our "
                     f"request ({code}: {exc}); check the merchant's credentials and settings. It "
                     f"resumes by itself from {at.isoformat()}."),
            details={"refund_id": refund.id, "code": exc.code, "http_status": exc.http_status})

    _move(run, (RS(refund.status),), RS.HELD, then=alert, held_from=resume_to.value, next_attempt_at=at,
          backoff_count=refund.backoff_count + 1, last_code=code, last_message=str(exc)[:2000])
    raise _Stop


STEPS: dict[RS, Callable[[_Run], None]] = {
    RS.REQUESTED: _begin,
    RS.CANCELLING: _resolve,  # found here at the start of a run: a run died mid-call
    RS.UNKNOWN: _resolve,
    RS.COMPLETING: _confirm,
    RS.HELD: _resume,
}
