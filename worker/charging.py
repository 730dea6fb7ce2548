"""The charge: reserve, then approve, one (subscription, cycle) at a time, safely for money.

``process_charge(engine, charge_id, owner)`` is a plain function (the Celery task is a thin
wrapper). It takes the subscription's lease (one charge per recurrentId at a time), then
advances the charge's state machine one compare-and-set transition at a time until it
reaches a final state or must wait::

    pending|retry_wait --(attempt n)--> reserving --reserve(key n)--> reserved
    reserved --CAS--> approving --approve(key n)--> succeeded | amount_mismatch
                                  |-- declined --> policy: retry_wait(next_attempt_at) | failed
                                  '-- unknown outcome --> unknown
    unknown|approving(after a crash) --history(paymentId)--> 01 SUCCESS: succeeded
                                                         --> 01 FAIL: declined (policy)
                                                         --> nothing: approve again with the
                                                             SAME key (a replay, never a
                                                             second charge)
    non-active subscription: pending|retry_wait|reserving|reserved --> canceled (cancel wins)

Money rules kept here: the state is committed *before* each NAVER call (so a crash leaves a
state that says what may have happened); idempotency keys are derived from (charge, attempt,
kind) and reused on every resend; an approval whose outcome is unknown is resolved through
history, never approved blindly with a new key; the approved amount must equal the reserved
amount; two workers racing on a transition cannot both win it (``worker.charge_store`` holds
the lease and the compare-and-set).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import FINAL_CHARGE_STATUSES, Charge, Merchant, Subscription, utcnow
from models import ChargeStatus as CS
from models import FinalAction as FA
from models import SubscriptionStatus as SS
from scheduler.policy import PolicyError, RetryPolicy
from worker import logs, notify
from worker.charge_store import acquire_lease, compare_and_set, load_charge, release_lease
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import (
    DeclinedError,
    NaverPayError,
    PermanentError,
    TransientError,
    UnknownOutcomeError,
)
from worker.naverpay.results import PaymentDetail
from worker.recording import record_attempt

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ChargeEngine:
    """Everything a charge needs, injected: sessions, clients, clock, sleep, timings."""

    sessions: sessionmaker[Session]
    client_for: Callable[[Merchant], NaverPayClient]
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    lease: timedelta = timedelta(minutes=6)
    transient_tries: int = 3
    resolve_tries: int = 4
    backoff_max: float = 8.0


@dataclass
class ChargeOutcome:
    """What one run did; the task enqueues the follow-ups after the commits."""

    charge_id: int
    status: str | None = None
    code: str | None = None  # the last NAVER code seen (for metrics)
    busy: bool = False
    notification_ids: list[int] = field(default_factory=list)
    expire_subscription_id: int | None = None
    resolves: int = 0


class _Stop(Exception):
    """The charge must wait (for a lease, a later attempt, or NAVER to answer)."""


def idempotency_key(charge: Charge, kind: str) -> str:
    """Deterministic per (charge, attempt, kind): every resend of a call reuses it."""
    return f"{charge.merchant_pay_id}-{charge.attempt_count}-{kind}"


def process_charge(engine: ChargeEngine, charge_id: int, owner: str) -> ChargeOutcome:
    """Drive one charge as far as it can go now; see the module docstring."""
    out = ChargeOutcome(charge_id)
    with logs.bind(charge_id=charge_id):
        charge = acquire_lease(engine.sessions, charge_id, owner, engine.clock(), engine.lease)
        if charge is None:
            out.busy = True
            return out
        with logs.bind(recurrent_id=charge.recurrent_id):
            _drive(engine, charge, owner, out)
    return out


def _drive(engine: ChargeEngine, charge: Charge, owner: str, out: ChargeOutcome) -> None:
    try:
        for _ in range(50):  # each step makes one transition; the bound is a safety net
            if charge.status in FINAL_CHARGE_STATUSES:
                break
            stop = False
            try:
                STEPS[CS(charge.status)](engine, charge, out)
            except _Stop:
                stop = True
            # Re-read after every step: it moved the charge on, and another process may have
            # paused the subscription meanwhile.
            charge = load_charge(engine.sessions, charge.id)
            if stop:
                break
        out.status, out.code = charge.status, charge.last_code
    finally:
        release_lease(engine.sessions, charge, owner)


# --- calls ----------------------------------------------------------------------------------

def _call(engine: ChargeEngine, charge: Charge, kind: str, key: str | None,
          fn: Callable[[], T], retry_on: tuple[type[BaseException], ...]) -> T:
    """Call NAVER with short tenacity retries (same key), recording every try."""
    def once() -> T:
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            _record(engine, charge, kind, key, error=exc, elapsed=time.monotonic() - started)
            raise
        _record(engine, charge, kind, key, result=result, elapsed=time.monotonic() - started)
        return result

    retrying = Retrying(
        stop=stop_after_attempt(engine.transient_tries),
        wait=wait_exponential(multiplier=0.5, max=engine.backoff_max),
        retry=retry_if_exception_type(retry_on),
        sleep=engine.sleep,
        reraise=True,
    )
    return retrying(once)


def _record(engine: ChargeEngine, charge: Charge, kind: str, key: str | None, **kw: Any) -> None:
    with engine.sessions.begin() as s:
        record_attempt(s, kind=kind, key=key, charge_id=charge.id,
                       subscription_id=charge.subscription_id, attempt_no=charge.attempt_count, **kw)


def _client(engine: ChargeEngine, charge: Charge) -> NaverPayClient:
    return engine.client_for(charge.subscription.merchant)


def _active(charge: Charge) -> bool:
    return charge.subscription.status == SS.ACTIVE


def _cancel(engine: ChargeEngine, charge: Charge, sources: Iterable[CS]) -> None:
    with engine.sessions.begin() as s:
        compare_and_set(s, charge, sources, CS.CANCELED, engine.clock(), next_attempt_at=None,
                        reason=f"subscription is {charge.subscription.status}; pending attempt canceled")


# --- steps ----------------------------------------------------------------------------------

def _begin_attempt(engine: ChargeEngine, charge: Charge, out: ChargeOutcome) -> None:
    now = engine.clock()
    if not _active(charge):
        return _cancel(engine, charge, (CS.PENDING, CS.RETRY_WAIT))
    if charge.status == CS.RETRY_WAIT and charge.next_attempt_at and charge.next_attempt_at > now:
        raise _Stop  # not due yet; the walk brings it back at next_attempt_at
    with engine.sessions.begin() as s:
        compare_and_set(s, charge, (CS.PENDING, CS.RETRY_WAIT), CS.RESERVING, now,
                        attempt_count=charge.attempt_count + 1, next_attempt_at=None, payment_id=None,
                        lease_until=now + engine.lease)


def _reserve(engine: ChargeEngine, charge: Charge, out: ChargeOutcome) -> None:
    if not _active(charge):
        return _cancel(engine, charge, (CS.RESERVING,))
    sub, key = charge.subscription, idempotency_key(charge, "reserve")
    taxable = charge.amount - charge.tax_free_amount
    try:
        # Reserving moves no money; a resend with the same key is answered by replay.
        reservation = _call(engine, charge, "reserve", key, lambda: _client(engine, charge).reserve_payment(
            recurrent_id=charge.recurrent_id, total_pay_amount=charge.amount,
            tax_scope_amount=taxable, tax_ex_scope_amount=charge.tax_free_amount,
            product_name=sub.product_name, merchant_pay_id=f"{charge.merchant_pay_id}-{charge.attempt_count}",
            merchant_user_id=sub.merchant_user_id, idempotency_key=key,
        ), retry_on=(TransientError, UnknownOutcomeError))
    except (DeclinedError, PermanentError) as exc:
        return _declined(engine, charge, exc.code, str(exc), (CS.RESERVING,), out)
    except NaverPayError as exc:
        _note(engine, charge, exc)
        raise _Stop from exc  # still reserving; the walk retries after the lease
    with engine.sessions.begin() as s:
        compare_and_set(s, charge, (CS.RESERVING,), CS.RESERVED, engine.clock(),
                        payment_id=reservation.payment_id, last_code=reservation.code, last_message=None)


def _approve(engine: ChargeEngine, charge: Charge, out: ChargeOutcome) -> None:
    if not _active(charge):
        return _cancel(engine, charge, (CS.RESERVED,))
    now = engine.clock()
    with engine.sessions.begin() as s:
        # Committed before the call: after a crash, "approving" says "maybe charged".
        if not compare_and_set(s, charge, (CS.RESERVED,), CS.APPROVING, now, lease_until=now + engine.lease):
            return
    _send_approval(engine, charge, out, CS.APPROVING)


def _send_approval(engine: ChargeEngine, charge: Charge, out: ChargeOutcome, source: CS) -> None:
    key = idempotency_key(charge, "approve")
    assert charge.payment_id is not None
    payment_id = charge.payment_id
    try:
        approval = _call(engine, charge, "approve", key, lambda: _client(engine, charge).approve_payment(
            recurrent_id=charge.recurrent_id, payment_id=payment_id, idempotency_key=key,
        ), retry_on=(TransientError,))
    except (DeclinedError, PermanentError) as exc:
        return _declined(engine, charge, exc.code, str(exc), (source,), out)
    except NaverPayError as exc:  # unknown outcome, or transient errors that outlived retries
        with engine.sessions.begin() as s:
            compare_and_set(s, charge, (source,), CS.UNKNOWN, engine.clock(), last_code=exc.code,
                            last_message=str(exc)[:2000])
        return
    _succeed(engine, charge, approval.detail, (source,), out)


def _resolve(engine: ChargeEngine, charge: Charge, out: ChargeOutcome) -> None:
    """Unknown outcome: ask history by paymentId, then act; never approve with a new key."""
    if out.resolves >= engine.resolve_tries:
        raise _Stop  # NAVER keeps not knowing; the walk brings it back after the lease
    if out.resolves:
        engine.sleep(min(engine.backoff_max, 2.0 ** out.resolves))
    out.resolves += 1
    assert charge.payment_id is not None
    payment_id = charge.payment_id
    try:
        page = _call(engine, charge, "history", None,
                     lambda: _client(engine, charge).payment_history(payment_id=payment_id),
                     retry_on=(TransientError,))
    except NaverPayError as exc:
        _note(engine, charge, exc)
        return
    approvals = [row for row in page.rows if row.admission_type_code in (None, "01")]
    status = CS(charge.status)
    if any(row.admission_state == "SUCCESS" for row in approvals):
        row = next(row for row in approvals if row.admission_state == "SUCCESS")
        return _succeed(engine, charge, row, (status,), out)
    if approvals:  # a FAIL row: the approval was refused
        return _declined(engine, charge, charge.last_code or "Fail",
                         "history shows the approval failed", (status,), out)
    # NAVER has no approval for this payment: resend with the SAME key. If it did approve
    # meanwhile, the key makes NAVER replay that answer instead of charging again.
    if status == CS.UNKNOWN:
        with engine.sessions.begin() as s:
            if not compare_and_set(s, charge, (CS.UNKNOWN,), CS.APPROVING, engine.clock()):
                return
    _send_approval(engine, charge, out, CS.APPROVING)


def _succeed(engine: ChargeEngine, charge: Charge, detail: PaymentDetail | None,
             sources: Iterable[CS], out: ChargeOutcome) -> None:
    now = engine.clock()
    approved = detail.total_pay_amount if detail else None
    ok = approved == charge.amount and (detail is None or detail.admission_state in (None, "SUCCESS"))
    with engine.sessions.begin() as s:
        if ok:
            moved = compare_and_set(s, charge, sources, CS.SUCCEEDED, now, approved_amount=approved,
                                    approved_at=now, last_code="Success", last_message=None, lease_until=None)
            event = notify.SUCCEEDED
        else:
            # Money moved but not as reserved: flagged for a human, never reported as success.
            moved = compare_and_set(s, charge, sources, CS.AMOUNT_MISMATCH, now, approved_amount=approved,
                                    approved_at=now, last_code="AmountMismatch", lease_until=None,
                                    last_message=f"approved {approved} won but reserved {charge.amount} won")
            event = notify.AMOUNT_MISMATCH
            log.error("charge %s: approved %s won but reserved %s won", charge.id, approved,
                      charge.amount, extra={"charge_id": charge.id, "recurrent_id": charge.recurrent_id})
        if moved and notify.wanted(charge.subscription.merchant, event):
            out.notification_ids += notify.queue(s, event, _fresh(s, charge), now)


def _declined(engine: ChargeEngine, charge: Charge, code: str | None, message: str,
              sources: Iterable[CS], out: ChargeOutcome) -> None:
    """A refused attempt: the merchant's policy schedules the next one or gives up."""
    now = engine.clock()
    merchant = charge.subscription.merchant
    try:
        policy = RetryPolicy.from_columns(merchant.retry_delays, merchant.max_attempts,
                                          merchant.retryable_codes)
    except PolicyError as exc:
        log.error("merchant %s: %s; using the default policy", merchant.id, exc)
        policy = RetryPolicy.default()
    at = policy.next_attempt_at(charge.attempt_count, code, now)
    with engine.sessions.begin() as s:
        sub = s.get(Subscription, charge.subscription_id)
        assert sub is not None
        common = {"last_code": code, "last_message": message[:2000], "lease_until": None}
        if sub.status != SS.ACTIVE:
            # Paused, canceled or already finally failed meanwhile: no further attempt, and no
            # second final action or notification for the same subscription.
            compare_and_set(s, charge, sources, CS.FAILED, now, next_attempt_at=None,
                            reason=f"declined ({code}) while the subscription was {sub.status}", **common)
            return
        if at is not None:
            moved = compare_and_set(s, charge, sources, CS.RETRY_WAIT, now, next_attempt_at=at, **common)
            if moved and notify.wanted(merchant, notify.ATTEMPT_FAILED):
                out.notification_ids += notify.queue(s, notify.ATTEMPT_FAILED, _fresh(s, charge), now)
            return
        if not compare_and_set(s, charge, sources, CS.FAILED, now, next_attempt_at=None,
                               reason=f"gave up after {charge.attempt_count} attempt(s): {code}", **common):
            return
        if merchant.final_action == FA.EXPIRE:
            sub.status, out.expire_subscription_id = SS.REVOKING, sub.id
        elif merchant.final_action == FA.PAUSE:
            sub.status = SS.PAUSED
        sub.last_error, sub.updated_at = f"charge {charge.id} failed finally: {code}", now
        out.notification_ids += notify.queue(s, notify.FINAL_FAILURE, _fresh(s, charge), now)
    log.warning("charge %s failed finally (%s); final action %s", charge.id, code,
                merchant.final_action, extra={"charge_id": charge.id, "recurrent_id": charge.recurrent_id})


def _fresh(s: Session, charge: Charge) -> Charge:
    row = s.get(Charge, charge.id, populate_existing=True)
    assert row is not None
    return row


def _note(engine: ChargeEngine, charge: Charge, exc: NaverPayError) -> None:
    with engine.sessions.begin() as s:
        s.execute(update(Charge).where(Charge.id == charge.id)
                  .values(last_code=exc.code, last_message=str(exc)[:2000]))


STEPS: dict[CS, Callable[[ChargeEngine, Charge, ChargeOutcome], None]] = {
    CS.PENDING: _begin_attempt,
    CS.RETRY_WAIT: _begin_attempt,
    CS.RESERVING: _reserve,
    CS.RESERVED: _approve,
    CS.APPROVING: _resolve,  # found in "approving" = a run died mid-call: resolve first
    CS.UNKNOWN: _resolve,
}
