"""거래완료 (purchase confirm) and 포인트 적립 (point accrual) after a successful charge.

NAVER's guide ties both to the merchant's contract, which the merchant's row states
(``merchants.settlement_basis``, ``point_basis``)::

    confirm   needed iff settlement_basis = trade_confirm  or  point_basis = trade_confirm
    accrual   needed iff settlement_basis = payment_date   and point_basis = manual
    (the default, payment_date + auto, needs neither: nothing is called)

Data flow (an outbox, ``charge_followups``, one row per (charge, kind))::

    charge -> succeeded  (worker/charging.py, in the transaction of that transition)
        a pending row per needed kind, next_at = now + merchants.followup_delay
    beat entry ``worker.followups`` (every BILLING_FOLLOWUP_INTERVAL s) -> run_followups:
        claim due rows (pending|held, next_at <= now, lease free; SKIP LOCKED on PostgreSQL)
        one call per row, recorded in charge_attempts (kind confirm | accrual):
          Success, or a 409 replay of it ........................ done (confirmTime kept)
          AlreadyComplete (NAVER did it already: an answer we lost) done
          transient, outcome unknown ............................ pending, attempts + 1, backoff,
                                                                   the SAME key (NAVER replays)
          merchant-side fault (InvalidMerchantType: the contract
          setting is wrong; 401 ...) ............................ held, key_round + 1, retried
                                                                   after hold_delay, alert once
          refused (Fail: the payment was refunded; InvalidPaymentId)
                                                   ............. attempts + 1, key_round + 1,
                                                                   backoff; failed + alert at
                                                                   max_attempts

Never twice at NAVER: the idempotency key is derived from (paymentId, kind, key_round) and the
round changes only after NAVER *refused* the call (which did nothing); every resend of a call
whose outcome is unknown reuses its key, and NAVER's AlreadyComplete counts as done. These
calls move no money, so no charge or subscription state depends on them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import Charge, ChargeFollowup, Merchant, Subscription
from models import FollowupStatus as FS
from models import PointBasis as PB
from models import SettlementBasis as SB
from models.db import rowcount
from scheduler.policy import PolicyError, parse_delays
from worker import notify
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import MerchantSideError, NaverPayError, TransientError, UnknownOutcomeError
from worker.recording import record_attempt

log = logging.getLogger(__name__)
FOLLOWUPS = cast(Table, ChargeFollowup.__table__)
CONFIRM, ACCRUAL = "confirm", "accrual"
TITLES = {CONFIRM: "purchase confirm (거래완료)", ACCRUAL: "point accrual (포인트 적립)"}


@dataclass(frozen=True)
class FollowupPolicy:
    """How often and how long (defaults: 8 refusals, backoff 1 min doubling to 6 h; a held row
    every 10 minutes)."""

    max_attempts: int = 8
    backoff: tuple[float, float] = (60.0, 6 * 3600.0)
    hold_delay: float = 600.0
    lease: timedelta = timedelta(minutes=5)
    batch_size: int = 100

    def delay(self, attempts: int) -> timedelta:
        base, cap = self.backoff
        return timedelta(seconds=min(cap, base * 2 ** min(attempts, 20)))


def needed(settlement_basis: str | None, point_basis: str | None) -> list[str]:
    """The follow-up calls a merchant's contract needs after each successful charge."""
    kinds = []
    if settlement_basis == SB.TRADE_CONFIRM or point_basis == PB.TRADE_CONFIRM:
        kinds.append(CONFIRM)
    if settlement_basis == SB.PAYMENT_DATE and point_basis == PB.MANUAL:
        kinds.append(ACCRUAL)
    return kinds


def delay_of(text: str | None) -> timedelta:
    """``merchants.followup_delay`` ('0s', '10m', '1d'); a bad value is logged and read as 0
    (a success is never held up by a typo)."""
    try:
        (delay,) = parse_delays(text)
    except (PolicyError, ValueError):
        log.error("followup_delay %r: write one number and a unit s, m, h or d, e.g. '1d'; "
                  "using 0s", text)
        return timedelta(0)
    return delay


def queue(conn: Connection, charge_id: int, settlement_basis: str | None, point_basis: str | None,
          followup_delay: str | None, now: datetime) -> int:
    """The rows a succeeded charge owes, in the caller's transaction (the one that made it
    succeed); how many."""
    kinds = needed(settlement_basis, point_basis)
    if not kinds:
        return 0
    at = now + delay_of(followup_delay)
    conn.execute(insert(FOLLOWUPS), [
        {"charge_id": charge_id, "kind": kind, "status": FS.PENDING.value, "next_at": at,
         "attempts": 0, "key_round": 0, "created_at": now, "updated_at": now} for kind in kinds])
    return len(kinds)


def followup_key(payment_id: str, kind: str, key_round: int) -> str:
    """The idempotency key of one round of one call (<= 64 characters, NAVER's limit)."""
    return f"NPB{kind}-{hashlib.sha256(payment_id.encode()).hexdigest()[:40]}-{key_round}"


@dataclass
class FollowupReport:
    """What one run did; the task delivers ``notification_ids`` after the commits."""

    done: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    notification_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "waiting": self.waiting, "held": self.held, "failed": self.failed}


def run_followups(sessions: sessionmaker[Session], client_for: Callable[[Merchant], NaverPayClient],
                  now: datetime, policy: FollowupPolicy = FollowupPolicy(),
                  clock: Callable[[], datetime] | None = None) -> FollowupReport:
    """Claim the due rows and make their calls; one row's failure never stops the others."""
    report = FollowupReport()
    for row_id in claim(sessions, now, policy):
        try:
            process(sessions, client_for, row_id, (clock or (lambda: now))(), policy, report)
        except Exception:  # noqa: BLE001 - the lease runs out and the row is claimed again
            log.exception("follow-up %s failed; it is claimed again after its lease", row_id)
    return report


def claim(sessions: sessionmaker[Session], now: datetime, policy: FollowupPolicy) -> list[int]:
    """Due rows, leased to this run (another run skips them)."""
    due = (ChargeFollowup.status.in_((FS.PENDING, FS.HELD)), ChargeFollowup.next_at <= now,
           or_(ChargeFollowup.lease_until.is_(None), ChargeFollowup.lease_until < now))
    with sessions.begin() as s:
        ids = list(s.scalars(select(ChargeFollowup.id).where(*due).order_by(ChargeFollowup.next_at)
                             .limit(policy.batch_size).with_for_update(skip_locked=True)))
        if ids:
            s.execute(update(ChargeFollowup).where(ChargeFollowup.id.in_(ids), *due)
                      .values(lease_until=now + policy.lease).execution_options(synchronize_session=False))
    return ids


def process(sessions: sessionmaker[Session], client_for: Callable[[Merchant], NaverPayClient],
            row_id: int, now: datetime, policy: FollowupPolicy, report: FollowupReport) -> str:
    """One call for one claimed row; its status afterwards."""
    with sessions() as s:
        row = s.get(ChargeFollowup, row_id)
        charge = s.get(Charge, row.charge_id) if row is not None else None
        if row is None or charge is None or row.status not in (FS.PENDING, FS.HELD):
            return row.status if row is not None else "missing"
        kind, key_round, payment_id = row.kind, row.key_round, charge.payment_id
        sub_id, merchant = charge.subscription_id, charge.subscription.merchant
        client = client_for(merchant)
    if payment_id is None:  # cannot happen for a succeeded charge; never call NAVER blind
        return _write(sessions, row_id, now, report.failed, status=FS.FAILED, last_code="NoPaymentId",
                      last_message="the charge has no paymentId")
    key = followup_key(payment_id, kind, key_round)
    started = time.monotonic()
    try:
        if kind == CONFIRM:
            answer: Any = client.purchase_confirm(payment_id=payment_id, idempotency_key=key)
        else:
            answer = client.save_naverpoint(payment_id=payment_id, idempotency_key=key)
    except NaverPayError as exc:
        _record(sessions, kind, key, row_id, sub_id, error=exc, elapsed=time.monotonic() - started)
        return _failed(sessions, row_id, exc, now, policy, report)
    _record(sessions, kind, key, row_id, sub_id, result=answer, elapsed=time.monotonic() - started)
    return _write(sessions, row_id, now, report.done, status=FS.DONE, done_at=now, last_code=answer.code,
                  last_message="replayed answer" if answer.replayed else None,
                  naver_time=getattr(answer, "confirm_time", None))


def _failed(sessions: sessionmaker[Session], row_id: int, exc: NaverPayError, now: datetime,
            policy: FollowupPolicy, report: FollowupReport) -> str:
    code, message = exc.code or type(exc).__name__, str(exc)[:2000]
    if exc.code == "AlreadyComplete":  # NAVER has it: an earlier answer of ours was lost
        return _write(sessions, row_id, now, report.done, status=FS.DONE, done_at=now, last_code=code,
                      last_message="NAVER Pay says it was already done")
    with sessions.begin() as s:
        row = s.get(ChargeFollowup, row_id)
        assert row is not None
        if isinstance(exc, TransientError | UnknownOutcomeError):  # maybe done: same key again
            _set(row, now, status=FS.PENDING, attempts=row.attempts + 1,
                 next_at=now + policy.delay(row.attempts), last_code=code, last_message=message)
            report.waiting.append(row_id)
        elif isinstance(exc, MerchantSideError):  # our setting or credentials: no try counted
            _set(row, now, status=FS.HELD, key_round=row.key_round + 1, last_code=code, last_message=message,
                 next_at=now + timedelta(seconds=policy.hold_delay))
            report.held.append(row_id)
            report.notification_ids += _alert(s, row, notify.FOLLOWUP_HELD, (
                f"{TITLES[row.kind]} of charge {row.charge_id} is held: NAVER Pay refused our request "
                f"({code}: {exc}). Check the merchant's settlement_basis / point_basis against its "
                f"NAVER Pay contract, and its credentials; it is tried again by itself."))
        else:  # refused: nothing was done; a new round may pass (e.g. after a fix)
            attempts = row.attempts + 1
            gave_up = attempts >= policy.max_attempts
            _set(row, now, status=FS.FAILED if gave_up else FS.PENDING, attempts=attempts,
                 key_round=row.key_round + 1, next_at=None if gave_up else now + policy.delay(attempts),
                 last_code=code, last_message=message)
            (report.failed if gave_up else report.waiting).append(row_id)
            if gave_up:
                report.notification_ids += _alert(s, row, notify.FOLLOWUP_FAILED, (
                    f"NAVER Pay refused the {TITLES[row.kind]} of charge {row.charge_id} "
                    f"{attempts} times (last: {code}: {exc}); a human must check it."))
        return row.status


def _set(row: ChargeFollowup, now: datetime, **values: Any) -> None:
    for name, value in values.items():
        setattr(row, name, value)
    row.lease_until, row.updated_at = None, now


def _write(sessions: sessionmaker[Session], row_id: int, now: datetime, bucket: list[int],
           **values: Any) -> str:
    with sessions.begin() as s:
        moved = rowcount(s.execute(
            update(ChargeFollowup).where(ChargeFollowup.id == row_id,
                                         ChargeFollowup.status.in_((FS.PENDING, FS.HELD)))
            .values(lease_until=None, updated_at=now, **values)
            .execution_options(synchronize_session=False)))
    if moved:
        bucket.append(row_id)
    return str(values.get("status", ""))


def _alert(s: Session, row: ChargeFollowup, event: str, message: str) -> list[int]:
    charge = s.get(Charge, row.charge_id)
    assert charge is not None
    sub = s.get(Subscription, charge.subscription_id)
    assert sub is not None
    return notify.queue_alert(s, event, sub, row.updated_at, dedupe=f"{row.id}:{row.key_round}:{row.status}",
                              message=message, charge=charge,
                              details={"kind": row.kind, "code": row.last_code, "attempts": row.attempts})


def _record(sessions: sessionmaker[Session], kind: str, key: str, row_id: int, subscription_id: int,
            **kw: Any) -> None:
    with sessions.begin() as s:
        charge_id = s.scalar(select(ChargeFollowup.charge_id).where(ChargeFollowup.id == row_id))
        record_attempt(s, kind=kind, key=key, charge_id=charge_id, subscription_id=subscription_id, **kw)
