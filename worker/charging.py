"""The charge: reserve, then approve, one (subscription, cycle) at a time, safely for money.

``process_charge(engine, charge_id, owner)`` is a plain function (the Celery task is a thin
wrapper). It takes the subscription's lease and becomes the charge's owner, then advances the
charge's state machine one compare-and-set transition at a time until it reaches a final
state or must wait::

    pending|retry_wait --(older cycle open, not held/surfaced? wait)--(attempt n)--> reserving
    retry_wait --(one registration read first: NAVER lists it EXPIRED)--> canceled, subscription
          revoked (a failed read: the retry goes ahead; a merchant-side fault: held)
    reserving --reserve(key n)--> reserved --CAS--> approving --approve(key n)--> succeeded
                                                                              | amount_mismatch
        customer decline (NAVER's answer about the means) --> policy: retry_wait | failed
        TimeExpired (the reservation outlived NAVER's window while we waited; history first)
              --> reserving again, same attempt, next key round (after 3 rounds: held)
        merchant-side fault (401, InvalidParameter, a proxy's 4xx, a code we do not know)
              --> held (no attempt consumed, no final action, no customer notice; alert)
        unknown outcome --> unknown
    unknown|approving(after a crash) --history(paymentId)--> SUCCESS: succeeded
                                     --> FAIL: declined, judged by the history row's own code
                                     --> nothing, subscription not active: canceled, once
                                         the settle window after our last approval call
                                         passed (a request we gave up on may still land)
                                     --> nothing: approve again with the SAME key (a replay,
                                         never a second charge)
    held --(next_attempt_at: backoff)--> held_from (reserving, or unknown: history first)
    pending|retry_wait --(amount above the consent gate's agreed_amount)--> consent_held
        (no attempt consumed, merchant alerted; the walk resumes it, scheduler/consenting.py)
    non-active subscription: pending|retry_wait|reserving|reserved|held --> canceled

Money rules kept here:
* the state is committed *before* each NAVER call (a crash leaves a state that says what may
  have happened); idempotency keys come from (charge, attempt, kind) and are reused on every
  resend; an unknown approval is resolved through history, never sent with a new key;
* the approved amount must equal the reserved amount;
* every transition is a compare-and-set that also requires this run to own the charge and
  renews its lease; a run that lost its lease stops without writing (``LeaseLost``);
* a run is bounded: at most ``call_budget`` NAVER calls and ``max_run`` of wall time, then it
  stops and the charge comes back after a jittered exponential backoff (``backoff_count``), so
  an outage does not become a retry storm and a run never outlives its lease;
* cancel wins: the subscription's status is read before every NAVER call that could move
  money (each try of an approval included), and nothing is approved for a subscription that
  is not active;
* only NAVER's answers about the customer's means consume an attempt; our own faults hold;
* with a global rate limit (``worker.ratelimit``, off by default) every NAVER call first takes
  a slot, after the commit that announces it: a slot too far away (or no Redis, failing
  closed) stops the run before the call, nothing consumed; an approval that waited for its
  slot reads the subscription's status again (cancel wins over the wait).

Transactions (issue 8: a charge costs a few milliseconds of CPU, not tens). A run keeps one
transaction open and commits it right before each NAVER call and at its end; the row of each
NAVER call (``charge_attempts``, stamped with the engine's clock) is written in the transaction
of the transition that call causes, and nothing the run wrote is read back. The happy path is
three transactions, each committed before the call it announces::

    T1  subscription lock + charge ownership, one SELECT of charge + subscription + merchant
        (+ the older-cycle check), pending -> reserving                      | reserve call
    T2  lock renewed and subscription status read in one statement (cancel wins), the
        reservation's row, reserving -> reserved -> approving (one statement)  | approve call
    T3  the approval's row, approving -> succeeded, notification rows, leases given back

Every retry of a call first writes the previous try's row, renews both leases (a run that
lost its charge stops there) and reads the subscription's status again in one transaction.
The hot statements are SQLAlchemy Core, compiled once and run on the driver's cursor
(``charge_store.Prepared``); the rarer
steps (declines, holds, final failures) use ORM sessions joined to the same transaction.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import Connection, Engine, Table, insert
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import FINAL_CHARGE_STATUSES, Charge, Merchant, Notification, Subscription, utcnow
from models import ChargeStatus as CS
from models import FinalAction as FA
from models import NotificationStatus as NS
from models import RevokeReason as RR
from models import SubscriptionStatus as SS
from scheduler.policy import PolicyError, RetryPolicy
from worker import followups, logs, notify
from worker.charge_store import (
    ChargeRow,
    LeaseLost,
    MerchantRow,
    MerchantSettings,
    compare_and_set,
    count_stall,
    insert_attempts,
    last_approval_at,
    later_success,
    note_result,
    older_open_charge,
    release,
    renew_charge,
    renew_lock,
    take_lease,
    trail_text,
    wait_for_older,
)
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import (
    DeclinedError,
    MerchantSideError,
    NaverPayError,
    TransientError,
    UnknownOutcomeError,
    customer_decline,
)
from worker.naverpay.results import PaymentDetail
from worker.ratelimit import Grant, MerchantKey, RateLimited
from worker.recording import attempt_values
from worker.registration_sync import end_subscription, registration_state

log = logging.getLogger(__name__)
T = TypeVar("T")
NOTIFICATIONS = cast(Table, Notification.__table__)
FINAL = frozenset(status.value for status in FINAL_CHARGE_STATUSES)
TIME_EXPIRED = "TimeExpired"  # the reservation outlived NAVER's window: ours to redo, no decline
RESERVE_AGAIN_LIMIT = 3  # key rounds of one attempt that may reserve again before a hold


class Limiter(Protocol):
    """Asked for a slot before every NAVER call (``worker.ratelimit.RedisRateLimiter``)."""

    def acquire(self, merchant: MerchantKey, max_wait: float | None = None) -> Grant | None: ...


@dataclass(frozen=True)
class ChargeEngine:
    """Everything a charge needs, injected: sessions, clients, clock, sleep, timings."""

    sessions: sessionmaker[Session]
    client_for: Callable[[MerchantSettings], NaverPayClient]
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    lease: timedelta = timedelta(minutes=6)
    transient_tries: int = 3
    resolve_tries: int = 4
    backoff_max: float = 8.0
    call_budget: int = 6  # NAVER calls per charge per run (happy path: 2)
    max_run: timedelta | None = None  # wall time per run; default: half the lease
    # Backoffs scale with the lease (6 min in production: 30 s doubling up to 30 min for a
    # charge NAVER has not settled, 1 min up to 1 h for a held one, 1 min for a newer cycle
    # waiting on an older one); tests and demos with a short lease get short waits.
    stall_backoff: tuple[float, float] | None = None  # base, cap (s)
    hold_backoff: tuple[float, float] | None = None  # base, cap (s)
    order_wait: timedelta | None = None
    # How long after an approval call NAVER may still commit it (a request our client gave up
    # on can still land): a cancel ends an unknown charge only once this has passed.
    settle: timedelta | None = None
    rng: random.Random = field(default_factory=random.Random)
    # The global rate limit toward NAVER (``worker.ratelimit``; None: off, the default).
    limiter: Limiter | None = None

    @property
    def stall_delays(self) -> tuple[float, float]:
        """Base and cap of the backoff after a run NAVER did not settle."""
        lease = self.lease.total_seconds()
        return self.stall_backoff or (lease / 12, lease * 5)

    @property
    def hold_delays(self) -> tuple[float, float]:
        """Base and cap of the backoff of a held charge."""
        lease = self.lease.total_seconds()
        return self.hold_backoff or (lease / 6, lease * 10)

    @property
    def order_delay(self) -> timedelta:
        """How long a newer cycle waits before looking at the older one again."""
        return self.order_wait or self.lease / 6

    @property
    def settle_window(self) -> timedelta:
        """How long a sent approval may still land at NAVER (two minutes in production)."""
        return self.settle if self.settle is not None else self.lease / 3

    @property
    def run_limit(self) -> timedelta:
        """How long one run may last: well inside the lease it renews."""
        return self.max_run if self.max_run is not None else self.lease / 2

    def backoff(self, base_cap: tuple[float, float], count: int) -> timedelta:
        """Exponential, capped, with full jitter in [half, whole], so that many charges
        waiting on the same outage do not all wake at once."""
        base, cap = base_cap
        delay = min(cap, base * 2 ** min(count, 20))
        return timedelta(seconds=delay * self.rng.uniform(0.5, 1.0))

    # Built once per engine (tenacity keeps each call's state per thread).

    @functools.cached_property
    def db(self) -> Engine:
        """The engine behind ``sessions``: the charge path runs Core statements on it."""
        return cast(Engine, self.sessions.kw["bind"])

    @functools.cached_property
    def retry_unsettled(self) -> Retrying:
        """Short retries of a call that moves no money (a reservation): same key each try."""
        return self._retrying((TransientError, UnknownOutcomeError))

    @functools.cached_property
    def retry_once(self) -> Retrying:
        """No retry: one read whose failure the caller tolerates (the pre-retry check)."""
        return Retrying(stop=stop_after_attempt(1), sleep=self.sleep, reraise=True)

    @functools.cached_property
    def retry_transient(self) -> Retrying:
        """Short retries of a call only on a transient error (approval, history)."""
        return self._retrying((TransientError,))

    def _retrying(self, retry_on: tuple[type[BaseException], ...]) -> Retrying:
        return Retrying(stop=stop_after_attempt(self.transient_tries),
                        wait=wait_exponential(multiplier=0.5, max=self.backoff_max),
                        retry=retry_if_exception_type(retry_on), sleep=self.sleep, reraise=True)


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
    calls: int = 0


class _NotActive(Exception):
    """The subscription stopped being active between two tries of one approval call."""


class _Stop(Exception):
    """The charge must wait (for a lease, a later attempt, or NAVER to answer)."""

    def __init__(self, resume_at: datetime | None = None, stalled: bool = False) -> None:
        super().__init__()
        self.resume_at, self.stalled = resume_at, stalled


class _Run:
    """One run of one charge: the engine, the charge as this run last wrote it, its owner, and
    the transaction in progress.

    Writes go to one open transaction (:meth:`tx`) that is committed right before the next
    NAVER call (:meth:`commit`) and at the end of the run, so a transition is committed before
    the call it announces, and the rows of the calls made since the last commit
    (``pending``) go out in the same transaction as the transition they caused.
    """

    __slots__ = ("engine", "charge", "owner", "out", "started", "conn", "pending", "active", "locked",
                 "released", "older_fresh", "client", "trail")

    def __init__(self, engine: ChargeEngine, charge: ChargeRow, owner: str, out: ChargeOutcome,
                 started: datetime, conn: Connection) -> None:
        self.engine, self.charge, self.owner, self.out, self.started = engine, charge, owner, out, started
        self.conn: Connection | None = conn  # the lease's transaction, shared by the first step
        self.pending: list[dict[str, Any]] = []  # charge_attempts rows not written yet
        # The subscription is active, as read since the last NAVER call (None: not read since).
        self.active: bool | None = charge.subscription.status == SS.ACTIVE
        self.locked = True  # the subscription lock was taken or renewed in the open transaction
        self.released = False  # a final transition gave the leases back
        self.older_fresh = True  # charge.older_open was read in the open (first) transaction
        self.client: NaverPayClient | None = None
        self.trail: list[tuple[str, str]] = []  # (from, to) of every move, logged in one line

    @property
    def merchant(self) -> MerchantRow:
        return self.charge.subscription.merchant

    # --- transactions ---------------------------------------------------------------------

    def tx(self) -> Connection:
        """The open transaction (begun if none is)."""
        if self.conn is None:
            conn = self.engine.db.connect()
            try:
                conn.begin()
            except BaseException:
                conn.close()
                raise
            self.conn, self.locked = conn, False
        return self.conn

    def commit(self) -> None:
        """Commit the open transaction, with the rows of the calls made since the last one."""
        conn = self.conn
        if conn is None and not self.pending:
            return
        if conn is None:
            conn = self.tx()
        try:
            insert_attempts(conn, self.pending)
            conn.commit()
        finally:
            conn.close()
            self.conn, self.older_fresh = None, False
        self.pending.clear()

    def rollback(self) -> None:
        """Drop the open transaction (the rows of the calls stay pending)."""
        if self.conn is not None:
            try:
                self.conn.close()  # rolls back
            finally:
                self.conn, self.older_fresh = None, False

    def save_calls(self) -> None:
        """After a rollback: the calls this run made are recorded all the same."""
        if self.pending:
            with self.engine.db.begin() as conn:
                insert_attempts(conn, self.pending)
            self.pending.clear()

    def status_read(self, status: str | None) -> bool:
        self.charge.subscription.status = status or "missing"
        self.active = status == SS.ACTIVE
        return self.active

    def lock(self, s: Connection | Session) -> None:
        """First write of a transaction: renew the subscription lock and read its status in
        the same statement (cancel wins: this is the read before the next NAVER call)."""
        if not self.locked:
            until = self.engine.clock() + self.engine.lease
            self.status_read(renew_lock(s, self.charge.subscription_id, self.owner, until))
            self.locked = True

    def checkpoint(self) -> bool:
        """Renew both leases (a run that lost its charge stops here) and read the
        subscription's status; whether it is active."""
        conn = self.tx()
        self.lock(conn)
        now = self.engine.clock()
        if not renew_charge(conn, self.charge.id, self.owner, now + self.engine.lease):
            log.warning("charge %s: run %s lost its lease; stopping without writing",
                        self.charge.id, self.owner)
            raise LeaseLost(self.charge.id)
        return bool(self.active)

    def cas(self, s: Connection | Session, sources: Iterable[CS], target: CS, via: CS | None = None,
            **values: Any) -> bool:
        """A transition of this run (owned, lease renewed; a final one gives the leases back)."""
        final = target in FINAL
        if not final:
            self.lock(s)
        moved = compare_and_set(s, self.charge, sources, target, self.engine.clock(), owner=self.owner,
                                lease=self.engine.lease, release_leases=final, lock=final, via=via,
                                trail=self.trail, **values)
        if moved and final:
            self.released = True
        return moved

    def transition(self, sources: Iterable[CS], target: CS, via: CS | None = None, **values: Any) -> bool:
        """A transition in the open transaction."""
        return self.cas(self.tx(), sources, target, via, **values)

    def note_call(self, kind: str, key: str | None, **kw: Any) -> None:
        """The row of a NAVER call, written with the next transaction."""
        charge = self.charge
        self.pending.append(attempt_values(kind=kind, key=key, charge_id=charge.id, at=self.engine.clock(),
                                           subscription_id=charge.subscription_id,
                                           attempt_no=charge.attempt_count, **kw))


@contextmanager
def _orm(run: _Run) -> Iterator[Session]:
    """An ORM session inside the run's open transaction (for the rarer steps that load models
    and queue notifications through ``worker.notify``)."""
    session = Session(bind=run.tx(), expire_on_commit=False, autoflush=True)
    try:
        yield session
        session.flush()
    finally:
        session.close()


def idempotency_key(charge: ChargeRow | Charge, kind: str) -> str:
    """Deterministic per (charge, attempt, kind): every resend of a call reuses it. A held
    charge resumes with the next ``key_round``: NAVER may have stored its refusal of our bad
    request under the old key; the paymentId still makes a second approval impossible, and
    history is read first."""
    suffix = f"-{charge.key_round}" if charge.key_round else ""
    return f"{charge.merchant_pay_id}-{charge.attempt_count}-{kind}{suffix}"


def process_charge(engine: ChargeEngine, charge_id: int, owner: str) -> ChargeOutcome:
    """Drive one charge as far as it can go now; see the module docstring."""
    out = ChargeOutcome(charge_id)
    with logs.bind(charge_id=charge_id):
        started = engine.clock()
        conn = engine.db.connect()
        try:
            conn.begin()
            charge = take_lease(conn, charge_id, owner, started, engine.lease)
        except BaseException:
            conn.close()
            raise
        if charge is None or charge.lease_owner != owner:
            conn.close()  # nothing was written
            if charge is None:
                out.busy = True
            else:  # final: nothing to do, no lease taken
                out.status, out.code = charge.status, charge.last_code
            return out
        with logs.bind(recurrent_id=charge.recurrent_id):
            run = _Run(engine, charge, owner, out, started, conn)
            try:
                _drive(run)
            finally:  # one line per run: the statuses it moved the charge through
                if run.trail:
                    log.info("charge %s: %s", charge_id, trail_text(run.trail))
    return out


def _drive(run: _Run) -> None:
    resume_at: datetime | None = None
    try:
        for _ in range(50):  # each step makes one transition; the bound is a safety net
            if run.charge.status in FINAL:
                break
            before = run.charge.status, run.charge.key_round
            try:
                STEPS[CS(run.charge.status)](run)
            except _Stop as stop:
                resume_at = _stalled(run) if stop.stalled else stop.resume_at
                break
            # (reserving -> ... -> reserving in one step is progress: a new key round)
            if (run.charge.status, run.charge.key_round) == before and before[0] != CS.UNKNOWN:
                break  # the step could not move it (cancel or another writer won): stop here
            # (unknown -> resend -> unknown again: resolve once more, within the run's bounds)
        if not run.released:
            release(run.tx(), run.charge.id, run.charge.subscription_id, run.owner, resume_at)
        run.commit()
    except LeaseLost:
        run.rollback()
        run.save_calls()
        run.out.status = None  # another run owns it now; it reports the outcome
        return
    except BaseException:
        run.rollback()
        try:
            run.save_calls()
        except Exception:  # noqa: BLE001 - the original error matters more
            log.exception("charge %s: could not record its NAVER calls", run.charge.id)
        raise
    run.out.status, run.out.code = run.charge.status, run.charge.last_code


def _stalled(run: _Run) -> datetime:
    """NAVER did not settle the charge within this run's budget: come back after a backoff
    that grows with every stalled run (and is jittered)."""
    engine, charge = run.engine, run.charge
    resume_at = engine.clock() + engine.backoff(engine.stall_delays, charge.backoff_count)
    count_stall(run.tx(), charge.id, run.owner)
    charge.backoff_count += 1
    log.warning("charge %s: NAVER has not settled it in this run (%s calls); next run after %s",
                charge.id, run.out.calls, resume_at.isoformat())
    return resume_at


# --- calls ----------------------------------------------------------------------------------

def _call(run: _Run, kind: str, key: str | None, fn: Callable[[], T], retrying: Retrying) -> T:
    """Call NAVER with short tenacity retries (same key), recording every try, within the
    run's call budget and time limit. The open transaction is committed before each try."""
    tries = 0

    def once() -> T:
        nonlocal tries
        _within_bounds(run)
        if tries:
            # The previous try's row is written, the leases renewed (a run that lost its
            # charge stops here) and, cancel wins, the subscription read again.
            active = run.checkpoint()
            if kind == "approve" and not active:
                raise _NotActive
        run.commit()
        if _throttle(run) and kind == "approve":  # after the commit: never wait in a transaction
            # Waited for a slot: cancel wins over the wait as over a retry.
            if not run.checkpoint():
                raise _NotActive
            run.commit()
        tries += 1
        run.out.calls += 1
        run.active = None  # the next call that could move money reads the status again
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            run.note_call(kind, key, error=exc, elapsed=time.monotonic() - started)
            raise
        run.note_call(kind, key, result=result, elapsed=time.monotonic() - started)
        return result

    return retrying(once)


def _throttle(run: _Run) -> bool:
    """Wait for the merchant's slot under the global rate limit (if one is set), at most the
    run's remaining time; a slot further away (or, failing closed, no Redis) stops the run
    before the call: the charge stays where it is and the walk brings it back then. Whether
    it waited (the caller reads the subscription's status again before an approval)."""
    engine = run.engine
    if engine.limiter is None:
        return False
    left = (engine.run_limit - (engine.clock() - run.started)).total_seconds()
    try:
        grant = engine.limiter.acquire(run.merchant, max_wait=left)
    except RateLimited as exc:
        log.info("charge %s: %s", run.charge.id, exc)
        delay = timedelta(seconds=exc.retry_after * engine.rng.uniform(1.0, 1.2))
        raise _Stop(resume_at=engine.clock() + delay) from exc
    return grant is not None and grant.wait > 0


def _in_bounds(run: _Run) -> bool:
    """Whether this run may still call NAVER (calls left, time left)."""
    engine = run.engine
    return run.out.calls < engine.call_budget and engine.clock() - run.started < engine.run_limit


def _within_bounds(run: _Run) -> None:
    """Stop (and come back after a backoff) once this run used its NAVER calls or its time."""
    if not _in_bounds(run):
        raise _Stop(stalled=True)


def _client(run: _Run) -> NaverPayClient:
    """The merchant's client, looked up once per run (from the merchant row this run read, so
    a credentials fix takes effect with the next run, without a restart)."""
    if run.client is None:
        run.client = run.engine.client_for(run.merchant)
    return run.client


def _active(run: _Run) -> bool:
    """Read now, not from the run's start: a pause or cancel wins over the next call. The read
    made in the open transaction since the last NAVER call is the one (no second read)."""
    if run.active is None:
        return run.checkpoint()
    return run.active


def _cancel(run: _Run, sources: Iterable[CS], why: str = "") -> None:
    status = run.charge.subscription.status
    run.transition(sources, CS.CANCELED, next_attempt_at=None, lease_until=None,
                   reason=f"subscription is {status}; pending attempt canceled{why}")


def _wanted(merchant: MerchantRow, event: str) -> bool:
    return notify.wanted(cast(Merchant, merchant), event)  # reads notify_on only


# --- steps ----------------------------------------------------------------------------------

def _begin_attempt(run: _Run) -> None:
    engine, charge = run.engine, run.charge
    now = engine.clock()
    if not _active(run):
        return _cancel(run, (CS.PENDING, CS.RETRY_WAIT))
    if charge.status == CS.RETRY_WAIT and charge.next_attempt_at and charge.next_attempt_at > now:
        raise _Stop  # not due yet; the walk brings it back at next_attempt_at
    if charge.agreed_amount is not None and charge.amount > charge.agreed_amount:
        return _hold_for_consent(run)
    # Read with the lease when this is the run's first transaction; otherwise now.
    older = charge.older_open if run.older_fresh else older_open_charge(run.tx(), charge)
    if older is not None:
        # One registration's cycles run oldest first: an older cycle still open (retrying,
        # unknown, held) must end before a newer one moves money.
        log.info("charge %s waits for the older cycle's charge %s", charge.id, older)
        if charge.status == CS.RETRY_WAIT:
            wait_for_older(run.tx(), charge.id, run.owner, now + engine.order_delay)
        raise _Stop(resume_at=now + engine.order_delay)
    if charge.status == CS.RETRY_WAIT and _registration_ended(run):
        return
    run.transition((CS.PENDING, CS.RETRY_WAIT), CS.RESERVING, attempt_count=charge.attempt_count + 1,
                   next_attempt_at=None, payment_id=None, held_from=None, backoff_count=0, key_round=0)


def _registration_ended(run: _Run) -> bool:
    """Before a declined charge is retried: one read of its registration at NAVER (issue 9).
    Ended (the customer removed it in NAVER Pay): the charge is canceled and the subscription
    revoked, instead of a retry. A merchant-side fault holds the charge like any other; any
    other failure of the read is logged and the retry goes ahead. Whether it was handled."""
    charge = run.charge
    try:
        page = _call(run, "registration", None, lambda: _client(run).list_registrations(
            recurrent_id=charge.recurrent_id), run.engine.retry_once)
    except MerchantSideError as exc:
        _hold(run, exc, CS.RETRY_WAIT, (CS.RETRY_WAIT,))
        return True
    except NaverPayError as exc:
        log.warning("charge %s: registration check failed (%s); retrying all the same", charge.id, exc)
        return False
    check = registration_state(page, charge.recurrent_id)
    if not check.ended:
        return False
    now = run.engine.clock()
    with _orm(run) as s:
        if not run.cas(s, (CS.RETRY_WAIT,), CS.CANCELED, next_attempt_at=None, lease_until=None,
                       reason="the registration was ended in NAVER Pay; no retry"):
            return True
        sub = s.get(Subscription, charge.subscription_id)
        assert sub is not None
        end_subscription(s, sub, now, check.expired_at, run.out.notification_ids)
    log.warning("charge %s canceled: its registration was ended in NAVER Pay", charge.id,
                extra={"charge_id": charge.id, "recurrent_id": charge.recurrent_id})
    return True


def _reserve(run: _Run) -> None:
    charge = run.charge
    if not _active(run):
        return _cancel(run, (CS.RESERVING,))
    sub, key = charge.subscription, idempotency_key(charge, "reserve")
    taxable = charge.amount - charge.tax_free_amount
    try:
        # Reserving moves no money; a resend with the same key is answered by replay.
        reservation = _call(run, "reserve", key, lambda: _client(run).reserve_payment(
            recurrent_id=charge.recurrent_id, total_pay_amount=charge.amount,
            tax_scope_amount=taxable, tax_ex_scope_amount=charge.tax_free_amount,
            product_name=sub.product_name, merchant_pay_id=f"{charge.merchant_pay_id}-{charge.attempt_count}",
            merchant_user_id=sub.merchant_user_id, idempotency_key=key,
        ), run.engine.retry_unsettled)
    except NaverPayError as exc:
        if customer_decline(exc):
            return _declined(run, exc.code, str(exc), (CS.RESERVING,))
        if isinstance(exc, TransientError | UnknownOutcomeError):
            _note(run, exc)
            raise _Stop(stalled=True) from exc  # still reserving; back after a backoff
        return _hold(run, exc, CS.RESERVING, (CS.RESERVING,))
    reserved: dict[str, Any] = {"payment_id": reservation.payment_id, "last_code": reservation.code,
                                "last_message": None}
    run.lock(run.tx())  # the subscription's status, read after the reservation (cancel wins)
    if run.active and _in_bounds(run):
        # reserving -> reserved -> approving in one statement (the transitions _approve makes),
        # committed before the approval call: after a crash, "approving" says "maybe charged".
        if run.transition((CS.RESERVING,), CS.APPROVING, via=CS.RESERVED, **reserved):
            _send_approval(run)
        return
    run.transition((CS.RESERVING,), CS.RESERVED, **reserved)  # _approve cancels, or stops


def _approve(run: _Run) -> None:
    if not _active(run):
        return _cancel(run, (CS.RESERVED,))
    _within_bounds(run)  # a run that cannot send the approval now does not announce it
    # Committed before the call: after a crash, "approving" says "maybe charged".
    if run.transition((CS.RESERVED,), CS.APPROVING):
        _send_approval(run)


def _send_approval(run: _Run) -> None:
    charge = run.charge
    key = idempotency_key(charge, "approve")
    assert charge.payment_id is not None
    payment_id = charge.payment_id
    try:
        approval = _call(run, "approve", key, lambda: _client(run).approve_payment(
            recurrent_id=charge.recurrent_id, payment_id=payment_id, idempotency_key=key,
        ), run.engine.retry_transient)
    except _NotActive:
        # A try may still be in flight at NAVER: history (after the settle window) decides.
        run.transition((CS.APPROVING,), CS.UNKNOWN, last_message="subscription stopped between tries")
        return
    except NaverPayError as exc:
        if exc.code == TIME_EXPIRED:
            return _reserve_again(run, exc, CS.APPROVING)
        if customer_decline(exc):
            return _declined(run, exc.code, str(exc), (CS.APPROVING,))
        if isinstance(exc, TransientError | UnknownOutcomeError):
            run.transition((CS.APPROVING,), CS.UNKNOWN, last_code=exc.code, last_message=str(exc)[:2000])
            return
        # NAVER refused our request itself: it did not approve. Resuming still reads history
        # first (held_from unknown), so a mistaken classification can never charge twice.
        return _hold(run, exc, CS.UNKNOWN, (CS.APPROVING,))
    _succeed(run, approval.detail, (CS.APPROVING,))


def _resolve(run: _Run) -> None:
    """Unknown outcome: ask history by paymentId, then act; never approve with a new key."""
    engine, charge, out = run.engine, run.charge, run.out
    if out.resolves >= engine.resolve_tries:
        raise _Stop(stalled=True)  # NAVER keeps not knowing; back after a backoff
    if out.resolves:
        run.commit()  # never sleep inside a transaction
        engine.sleep(min(engine.backoff_max, 2.0 ** out.resolves))
    out.resolves += 1
    status = CS(charge.status)
    assert charge.payment_id is not None
    payment_id = charge.payment_id
    try:
        page = _call(run, "history", None, lambda: _client(run).payment_history(payment_id=payment_id),
                     engine.retry_transient)
    except MerchantSideError as exc:
        return _hold(run, exc, CS.UNKNOWN, (status,))
    except NaverPayError as exc:
        _note(run, exc)
        return _resolve(run)
    approvals = [row for row in page.rows if row.admission_type_code in (None, "01")]
    success = next((row for row in approvals if row.admission_state == "SUCCESS"), None)
    if success is not None:
        return _succeed(run, success, (status,))
    if approvals:  # a FAIL row: the approval was refused; judge it by that row's own result
        code, message = _history_result(approvals[-1])
        if code == TIME_EXPIRED:
            return _reserve_again(run, DeclinedError(message, api="approve", code=code), status)
        return _declined(run, code, message, (status,))
    if not _active(run):
        # Cancel wins: NAVER has no approval, so none will be sent; the reservation expires.
        # But an approval we sent moments ago may still land (our client gave up, NAVER did
        # not): history is only trusted once the settle window after the last send passed.
        sent = last_approval_at(run.tx(), charge, [row["created_at"] for row in run.pending
                                                   if row["kind"] == "approve"])
        if sent is not None and engine.clock() < sent + engine.settle_window:
            raise _Stop(resume_at=sent + engine.settle_window)
        return _cancel(run, (status,), "; history shows no approval, none will be sent")
    # NAVER has no approval for this payment: resend with the SAME key. If it did approve
    # meanwhile, the key makes NAVER replay that answer instead of charging again.
    if status == CS.UNKNOWN and not run.transition((CS.UNKNOWN,), CS.APPROVING):
        return
    _send_approval(run)


def _reserve_again(run: _Run, exc: NaverPayError, status: CS) -> None:
    """NAVER answered ``TimeExpired``: the reservation outlived NAVER's reserve->approve window
    because *we* waited (a worker died between the two calls, a hold, a stall, a backoff). That
    says nothing about the customer's means, so no attempt is consumed, the customer hears
    nothing and no final action runs: the charge reserves again (a new key round, so a new
    paymentId) within the same attempt and approves that.

    History is read first (one call, on a rare path): an approval NAVER committed under this
    paymentId before the window closed is a success, never a reason to reserve again. A charge
    that keeps expiring (``RESERVE_AGAIN_LIMIT`` rounds: our flow cannot beat NAVER's window)
    is held like our other faults, which alerts the merchant and backs off."""
    charge = run.charge
    assert charge.payment_id is not None
    payment_id = charge.payment_id
    try:
        page = _call(run, "history", None, lambda: _client(run).payment_history(payment_id=payment_id),
                     run.engine.retry_transient)
    except MerchantSideError as held:
        return _hold(run, held, CS.UNKNOWN, (status,))
    except NaverPayError as failed:
        # History cannot be read now: unknown (history decides later) is the safe state.
        run.transition((status,), CS.UNKNOWN, last_code=failed.code, last_message=str(failed)[:2000])
        return
    success = next((row for row in page.rows if row.admission_type_code in (None, "01")
                    and row.admission_state == "SUCCESS"), None)
    if success is not None:
        return _succeed(run, success, (status,))
    if charge.key_round >= RESERVE_AGAIN_LIMIT:
        return _hold(run, exc, CS.RESERVING, (status,))
    log.warning("charge %s: reservation %s expired before its approval (%s); reserving again",
                charge.id, payment_id, exc.code)
    run.transition((status,), CS.RESERVING, payment_id=None, key_round=charge.key_round + 1,
                   last_code=exc.code, last_message=f"reservation {payment_id} expired; reserving again")


def _history_result(row: PaymentDetail) -> tuple[str, str]:
    """The code and message of a refused approval as its history row gives them; NAVER's
    generic decline ``Fail`` when the row carries none (never a stale code of ours)."""
    raw = row.raw or {}
    code = next((str(raw[k]) for k in ("admissionResultCode", "resultCode", "code") if raw.get(k)), "Fail")
    message = next((str(raw[k]) for k in ("admissionResultMessage", "resultMessage", "message")
                    if raw.get(k)), "payment history shows the approval failed")
    return code, message


def _resume(run: _Run) -> None:
    """A held charge whose backoff has passed goes back to where it was held."""
    engine, charge = run.engine, run.charge
    resume_to = CS(charge.held_from or CS.UNKNOWN)
    if not _active(run):
        if resume_to in (CS.APPROVING, CS.UNKNOWN):
            run.transition((CS.HELD,), CS.UNKNOWN)  # history decides before the cancel
            return
        return _cancel(run, (CS.HELD,))
    if charge.next_attempt_at and charge.next_attempt_at > engine.clock():
        raise _Stop
    run.transition((CS.HELD,), resume_to, next_attempt_at=None, key_round=charge.key_round + 1)


def _hold_for_consent(run: _Run) -> None:
    """The consent re-check before an attempt: the charge's amount was edited above what the
    consent gate allowed when the walk created it (``agreed_amount``). Never billed as it is:
    held, surfaced, the merchant alerted; no attempt consumed (the walk resumes it when the
    gate bills the cycle again)."""
    engine, charge = run.engine, run.charge
    now = engine.clock()
    reason = (f"amount {charge.amount:,}원 is above the {charge.agreed_amount:,}원 the customer agreed to "
              "for this cycle: held until consent is recorded or the amount is lowered")
    with _orm(run) as s:
        if not run.cas(s, (CS.PENDING, CS.RETRY_WAIT), CS.CONSENT_HELD, next_attempt_at=None,
                       surfaced_at=now, last_code="ConsentRequired", reason=reason):
            return
        sub = s.get(Subscription, charge.subscription_id)
        assert sub is not None
        run.out.notification_ids += notify.queue_alert(
            s, notify.CONSENT_HELD, sub, now, dedupe=str(charge.id), charge=_fresh(s, charge),
            message=f"charge {charge.id} is held for consent: {reason}",
            details={"amount": charge.amount, "agreed_amount": charge.agreed_amount})


def _consent_wait(run: _Run) -> None:
    """A ``consent_held`` charge waits for the walk (consent, a lower amount); cancel wins."""
    if not _active(run):
        return _cancel(run, (CS.CONSENT_HELD,))
    raise _Stop


def _hold(run: _Run, exc: NaverPayError, resume_to: CS, sources: Iterable[CS]) -> None:
    """A merchant-side fault: our credentials, our request, a proxy, or a code we do not know.
    No attempt is consumed, no final action runs, the customer hears nothing; the merchant is
    alerted and the charge resumes by itself after a backoff (credentials are read again)."""
    engine, charge = run.engine, run.charge
    now = engine.clock()
    at = now + engine.backoff(engine.hold_delays, charge.backoff_count)
    with _orm(run) as s:
        code = exc.code or type(exc).__name__
        if not run.cas(s, sources, CS.HELD, held_from=resume_to.value, next_attempt_at=at,
                       backoff_count=charge.backoff_count + 1, last_code=code,
                       last_message=str(exc)[:2000]):
            return
        sub = s.get(Subscription, charge.subscription_id)
        assert sub is not None
        run.out.notification_ids += notify.queue_alert(
            s, notify.CHARGE_HELD, sub, now, dedupe=str(charge.id), charge=_fresh(s, charge),
            message=(f"charge {charge.id} is held: NAVER refused our request ({code}: "
                     f"{exc}); check the merchant's credentials and settings. It resumes by itself "
                     f"from {at.isoformat()}, or now with `npay-billing retry {charge.id}`."),
            details={"code": exc.code, "http_status": exc.http_status, "resume_at": at.isoformat()})


def _succeed(run: _Run, detail: PaymentDetail | None, sources: Iterable[CS]) -> None:
    engine, charge, out = run.engine, run.charge, run.out
    now = engine.clock()
    approved = detail.total_pay_amount if detail else None
    ok = approved == charge.amount and (detail is None or detail.admission_state in (None, "SUCCESS"))
    if ok:
        moved = run.transition(sources, CS.SUCCEEDED, approved_amount=approved, approved_at=now,
                               last_code="Success", last_message=None, held_from=None)
        event = notify.SUCCEEDED
    else:
        # Money moved but not as reserved: flagged for a human, never reported as success.
        moved = run.transition(sources, CS.AMOUNT_MISMATCH, approved_amount=approved, approved_at=now,
                               last_code="AmountMismatch",
                               last_message=f"approved {approved} won but reserved {charge.amount} won")
        event = notify.AMOUNT_MISMATCH
        log.error("charge %s: approved %s won but reserved %s won", charge.id, approved,
                  charge.amount, extra={"charge_id": charge.id, "recurrent_id": charge.recurrent_id})
    if moved and _wanted(run.merchant, event):  # in the transaction of the transition
        out.notification_ids += queue_notifications(run.tx(), event, charge, now)
    if moved and ok:  # purchase confirm / point accrual, when the merchant's contract needs them
        m = run.merchant
        followups.queue(run.tx(), charge.id, m.settlement_basis, m.point_basis, m.followup_delay, now)


def queue_notifications(conn: Connection, event: str, charge: ChargeRow, now: datetime) -> list[int]:
    """``notify.queue`` for a charge this run holds (rows as the run last read and wrote
    them): the same outbox rows, same channels and payload, without loading them again.
    For the events of a settled approval (succeeded, amount mismatch)."""
    assert event in (notify.SUCCEEDED, notify.AMOUNT_MISMATCH), event
    sub = charge.subscription
    rows = []
    for channel in notify.channels(cast(Merchant, sub.merchant), cast(Subscription, sub), event):
        event_id = uuid.uuid4().hex
        payload = notify._payload(event, event_id, cast(Charge, charge), cast(Subscription, sub), now)
        rows.append({"event_id": event_id, "dedupe_key": f"{event}:{charge.id}:{charge.attempt_count}",
                     "event": event, "channel": channel, "subscription_id": sub.id, "charge_id": charge.id,
                     "payload": json.dumps(payload, ensure_ascii=False), "status": NS.PENDING,
                     "created_at": now, "lease_until": now + timedelta(minutes=2)})
    if not rows:
        return []
    return list(conn.execute(insert(NOTIFICATIONS).returning(NOTIFICATIONS.c.id), rows).scalars())


def _policy(merchant: MerchantRow) -> RetryPolicy:
    try:
        return RetryPolicy.from_columns(merchant.retry_delays, merchant.max_attempts,
                                        merchant.retryable_codes)
    except PolicyError as exc:
        log.error("merchant %s: %s; using the default policy", merchant.id, exc)
        return RetryPolicy.default()


def _declined(run: _Run, code: str | None, message: str, sources: Iterable[CS]) -> None:
    """NAVER refused the customer's means: the merchant's policy schedules the next attempt
    or gives up (final failure, final action, the customer told once)."""
    engine, charge, out = run.engine, run.charge, run.out
    now = engine.clock()
    merchant = run.merchant
    at = _policy(merchant).next_attempt_at(charge.attempt_count, code, now)
    with _orm(run) as s:
        sub = s.get(Subscription, charge.subscription_id)
        assert sub is not None
        common: dict[str, Any] = {"last_code": code, "last_message": message[:2000], "lease_until": None}
        if sub.status != SS.ACTIVE:
            # Paused, canceled or already finally failed meanwhile: no further attempt, and no
            # second final action or notification for the same subscription.
            run.cas(s, sources, CS.FAILED, next_attempt_at=None,
                    reason=f"declined ({code}) while the subscription was {sub.status}", **common)
            return
        if at is not None:
            moved = run.cas(s, sources, CS.RETRY_WAIT, next_attempt_at=at, **common)
            if moved and _wanted(merchant, notify.ATTEMPT_FAILED):
                out.notification_ids += notify.queue(s, notify.ATTEMPT_FAILED, _fresh(s, charge), now)
            return
        later = later_success(s, charge)
        reason = f"gave up after {charge.attempt_count} attempt(s): {code}"
        if later is not None:
            reason += f"; a later cycle (charge {later}) succeeded, so the registration is kept"
        if not run.cas(s, sources, CS.FAILED, next_attempt_at=None, reason=reason, **common):
            return
        if later is None:
            _final_action(sub, merchant, out, now)
        sub.last_error, sub.updated_at = f"charge {charge.id} failed finally: {code}", now
        out.notification_ids += notify.queue(s, notify.FINAL_FAILURE, _fresh(s, charge), now)
    log.warning("charge %s failed finally (%s); final action %s", charge.id, code,
                "none (a later cycle succeeded)" if later is not None else merchant.final_action,
                extra={"charge_id": charge.id, "recurrent_id": charge.recurrent_id})


def _final_action(sub: Subscription, merchant: MerchantRow, out: ChargeOutcome, now: datetime) -> None:
    if merchant.final_action == FA.EXPIRE:
        sub.status = sub.seen_status = SS.REVOKING
        sub.revoke_reason, sub.expire_attempts, sub.expire_next_at = RR.FINAL_FAILURE, 0, None
        out.expire_subscription_id = sub.id
    elif merchant.final_action == FA.PAUSE:
        sub.status = sub.seen_status = SS.PAUSED


def _fresh(s: Session, charge: ChargeRow) -> Charge:
    row = s.get(Charge, charge.id, populate_existing=True)
    assert row is not None
    return row


def _note(run: _Run, exc: NaverPayError) -> None:
    if not note_result(run.tx(), run.charge.id, run.owner, exc.code, str(exc)[:2000]):
        raise LeaseLost(run.charge.id)  # another run owns it now
    run.charge.last_code = exc.code


STEPS: dict[CS, Callable[[_Run], None]] = {
    CS.PENDING: _begin_attempt,
    CS.RETRY_WAIT: _begin_attempt,
    CS.RESERVING: _reserve,
    CS.RESERVED: _approve,
    CS.APPROVING: _resolve,  # found in "approving" = a run died mid-call: resolve first
    CS.UNKNOWN: _resolve,
    CS.HELD: _resume,
    CS.CONSENT_HELD: _consent_wait,
}
