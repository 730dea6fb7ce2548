"""Ending a registration at NAVER Pay: the final action ``expire``, and the merchant's cancel.

A subscription reaches ``revoking`` two ways, and leaves it only through :func:`expire`::

    active ──final failure, final_action=expire (charging)──▶ revoking  revoke_reason final_failure
    canceled ──begin_merchant_cancels: expire_on_cancel=1,──▶ revoking  revoke_reason merchant_cancel
               every charge final, no run holds the lease
    revoking ──expire: Success; or NAVER lists the registration──────────▶ revoked
               EXPIRED or does not know it (already expired, unknown id)
    revoking ──merchant-side fault (401, InvalidMerchant, our request)───▶ revoking, HELD: no try
               counted, expire_next_at = now + hold delay, alert EXPIRE_HELD; never revoked
    revoking ──transient, or outcome unknown (retried in the call first)─▶ revoking: expire_attempts
               + 1, expire_next_at = jittered exponential backoff; never gives up
    revoking ──refused (an unmapped code, DeclinedError, PermanentError)──▶ the same, until
               ``max_attempts`` tries: expire_failed, alert EXPIRE_FAILED, log error

NAVER has no documented code for "already expired" or "unknown registration" (the sandbox says
``Fail`` and ``InvalidParameter``), so an answer other than Success is never trusted to mean
either: NAVER's registration list is asked, and only a registration it shows ``EXPIRED`` (or
does not have) counts as done. A 401 is not checked that way: the list would be refused too.

The walk (``_claim_revoking``) enqueues ``revoking`` rows whose ``expire_next_at`` has come
(or is NULL), moving it one lease forward so the next walk does not enqueue them again. Each
scheduled try sends its own idempotency key (derived from the registration and the try's
``expire_next_at``), because NAVER stores a refusal under its key and would replay it for ever
after the cause is fixed; expiring an expired registration is harmless (the list check).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import NONFINAL_CHARGE_STATUSES, Charge, Merchant, Subscription
from models import RevokeReason as RR
from models import SubscriptionStatus as SS
from models.db import rowcount
from worker import notify
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import (
    AuthenticationError,
    MerchantSideError,
    NaverPayError,
    TransientError,
    UnknownOutcomeError,
)
from worker.recording import record_attempt

log = logging.getLogger(__name__)
EXPIRE_REASON = "정기결제 승인이 반복 실패하여 가맹점이 등록을 해지합니다."
CANCEL_REASON = "가맹점의 구독 해지 요청으로 정기결제 등록을 해지합니다."
REASONS = {RR.FINAL_FAILURE.value: EXPIRE_REASON, RR.MERCHANT_CANCEL.value: CANCEL_REASON}


class Verdict(Enum):
    """What an expire try's answer means for the subscription."""

    DONE = "done"  # the registration is ended at NAVER: revoked
    HELD = "held"  # our fault: wait for a fix, alert, never revoked, no try counted
    RETRY = "retry"  # NAVER did not settle it: try again later, without bound
    REFUSED = "refused"  # NAVER said no for a reason we do not know: bounded, then a human


@dataclass(frozen=True)
class ExpirePolicy:
    """How hard and how often to try (defaults: 8 tries NAVER did not settle, spread over one
    to two hours by the jittered backoff; a held try every 5 to 10 minutes)."""

    max_attempts: int = 8  # tries NAVER did not settle, after which a refusal is final
    backoff: tuple[float, float] = (60.0, 6 * 3600.0)  # base and cap (s), doubling per try
    hold_delay: float = 600.0  # a held expire is tried again after this (s), jittered
    call_tries: int = 3  # transient answers retried inside one try (same key)
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int) -> timedelta:
        """Exponential, capped, with jitter in [half, whole] (many rows do not wake at once)."""
        base, cap = self.backoff
        return timedelta(seconds=min(cap, base * 2 ** min(attempts, 20)) * self.rng.uniform(0.5, 1.0))


@dataclass
class ExpireOutcome:
    """What one try did; the task delivers ``notification_ids`` after the commit."""

    status: str
    verdict: Verdict | None = None
    notification_ids: list[int] = field(default_factory=list)


def expire_key(recurrent_id: str, round_: datetime | None = None) -> str:
    """The idempotency key of one scheduled expire try (resends within the try reuse it)."""
    key = "NPBexpire-" + hashlib.sha256(recurrent_id.encode()).hexdigest()[:40]
    return key if round_ is None else f"{key}-{int(round_.timestamp()):x}"


def begin_merchant_cancels(session: Session, now: datetime, limit: int = 500,
                           lease: timedelta = timedelta(minutes=6)) -> list[int]:
    """Move ``canceled`` subscriptions of merchants with ``expire_on_cancel = 1`` to ``revoking``
    (reason merchant_cancel) once none of their charges is still open (so no approval can be in
    flight at NAVER) and no run holds their lease; the ids to enqueue for :func:`expire`. Their
    ``expire_next_at`` is one lease ahead, so the walk re-enqueues them only if that is lost."""
    open_charge = select(Charge.id).where(
        Charge.subscription_id == Subscription.id,
        Charge.status.in_([status.value for status in NONFINAL_CHARGE_STATUSES])).exists()
    opted_in = select(Merchant.id).where(Merchant.id == Subscription.merchant_id,
                                         Merchant.expire_on_cancel == 1).exists()
    ids = list(session.scalars(
        select(Subscription.id).where(
            Subscription.status == SS.CANCELED, Subscription.revoke_reason.is_(None), opted_in,
            ~open_charge, or_(Subscription.lock_until.is_(None), Subscription.lock_until < now))
        .limit(limit).with_for_update(skip_locked=True)))
    if ids:
        session.execute(
            update(Subscription).where(Subscription.id.in_(ids), Subscription.status == SS.CANCELED)
            .values(status=SS.REVOKING, seen_status=SS.REVOKING, revoke_reason=RR.MERCHANT_CANCEL,
                    expire_attempts=0, expire_next_at=now + lease, updated_at=now)
            .execution_options(synchronize_session=False))
        log.info("merchant cancel: %d subscription(s) to expire at NAVER Pay", len(ids))
    return ids


def expire_registration(
    sessions: sessionmaker[Session], client_for: Callable[[Merchant], NaverPayClient],
    subscription_id: int, clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
    policy: ExpirePolicy | None = None,
) -> str:
    """:func:`expire`, returning only the subscription's status afterwards."""
    return expire(sessions, client_for, subscription_id, clock, sleep, policy).status


def expire(
    sessions: sessionmaker[Session], client_for: Callable[[Merchant], NaverPayClient],
    subscription_id: int, clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
    policy: ExpirePolicy | None = None,
) -> ExpireOutcome:
    """One try at expiring a ``revoking`` subscription's registration; see the module docstring."""
    policy = policy or ExpirePolicy()
    with sessions() as s:
        sub = s.get(Subscription, subscription_id)
        if sub is None or sub.status != SS.REVOKING:
            return ExpireOutcome(sub.status if sub else "missing")
    client = client_for(sub.merchant)
    error = _send(sessions, client, sub, sleep, policy)
    if error is None:
        return _revoked(sessions, sub, clock(), note=None)
    if not isinstance(error, AuthenticationError):
        state = _listed_state(sessions, client, sub)
        if state in ("EXPIRED", "absent"):
            shown = "expired" if state == "EXPIRED" else "unknown"
            return _revoked(sessions, sub, clock(), note=(
                f"expire answered {error.code or type(error).__name__}: {error}; NAVER Pay lists "
                f"the registration as {shown}, so it cannot be charged again"))
    return _not_yet(sessions, sub, error, classify(error), clock(), policy)


def classify(error: NaverPayError) -> Verdict:
    """The verdict on an expire that failed with ``error`` while the registration is still (as
    far as NAVER's list shows) valid."""
    if isinstance(error, MerchantSideError):
        return Verdict.HELD
    if isinstance(error, TransientError | UnknownOutcomeError):
        return Verdict.RETRY
    return Verdict.REFUSED  # DeclinedError (unmapped codes), PermanentError


def _send(sessions: sessionmaker[Session], client: NaverPayClient, sub: Subscription,
          sleep: Callable[[float], None], policy: ExpirePolicy) -> NaverPayError | None:
    """The expire call, transient answers retried with the same key; the error, if any."""
    key = expire_key(sub.recurrent_id, sub.expire_next_at)
    reason = REASONS.get(sub.revoke_reason or "", EXPIRE_REASON)

    def call() -> object:
        started = time.monotonic()
        try:
            result = client.expire_registration(recurrent_id=sub.recurrent_id, reason=reason,
                                                idempotency_key=key)
        except Exception as exc:
            _record(sessions, sub, "expire", key, error=exc, elapsed=time.monotonic() - started)
            raise
        _record(sessions, sub, "expire", key, result=result, elapsed=time.monotonic() - started)
        return result

    try:
        Retrying(stop=stop_after_attempt(policy.call_tries), sleep=sleep, reraise=True,
                 wait=wait_exponential(multiplier=0.5, max=8),
                 retry=retry_if_exception_type((TransientError, UnknownOutcomeError)))(call)
    except NaverPayError as exc:
        return exc
    return None


def _listed_state(sessions: sessionmaker[Session], client: NaverPayClient, sub: Subscription) -> str | None:
    """The registration's state in NAVER's list ("absent" when NAVER does not have it), or None
    when the list cannot be read (then nothing is concluded from it)."""
    started = time.monotonic()
    try:
        page = client.list_registrations(recurrent_id=sub.recurrent_id)
    except NaverPayError as exc:
        _record(sessions, sub, "registration", None, error=exc, elapsed=time.monotonic() - started)
        return None
    _record(sessions, sub, "registration", None, result=page, elapsed=time.monotonic() - started)
    rows = [row for row in page.registrations if row.recurrent_id == sub.recurrent_id]
    if not rows:
        return "absent"
    return (rows[0].recurrent_state or "").upper() or None


def _revoked(sessions: sessionmaker[Session], sub: Subscription, now: datetime,
             note: str | None) -> ExpireOutcome:
    with sessions.begin() as s:
        moved = rowcount(s.execute(
            update(Subscription).where(Subscription.id == sub.id, Subscription.status == SS.REVOKING)
            .values(status=SS.REVOKED, seen_status=SS.REVOKED, updated_at=now, expire_next_at=None,
                    last_error=note or sub.last_error)))
    if not moved:
        return ExpireOutcome(_status(sessions, sub.id))
    log.info("registration of subscription %s expired at NAVER Pay (%s)", sub.id, sub.revoke_reason,
             extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})
    return ExpireOutcome(SS.REVOKED, Verdict.DONE)


def _not_yet(sessions: sessionmaker[Session], sub: Subscription, error: NaverPayError, verdict: Verdict,
             now: datetime, policy: ExpirePolicy) -> ExpireOutcome:
    """Write a try that did not end the registration: held, retried, or given up on."""
    code = error.code or type(error).__name__
    tries = sub.expire_attempts + (verdict is not Verdict.HELD)
    gave_up = verdict is Verdict.REFUSED and tries >= policy.max_attempts
    at = now + (timedelta(seconds=policy.hold_delay * policy.rng.uniform(0.5, 1.0))
                if verdict is Verdict.HELD else policy.delay(tries - 1))
    message = f"expire try {tries} of the registration: {code}: {error}"[:2000]
    out = ExpireOutcome(SS.EXPIRE_FAILED if gave_up else SS.REVOKING, verdict)
    with sessions.begin() as s:
        row = s.get(Subscription, sub.id, populate_existing=True)
        if row is None or row.status != SS.REVOKING:
            return ExpireOutcome(row.status if row else "missing")
        row.expire_attempts, row.last_error, row.updated_at = tries, message, now
        row.expire_next_at = None if gave_up else at
        if gave_up:
            row.status = row.seen_status = SS.EXPIRE_FAILED
        out.notification_ids = _alert(s, row, verdict, gave_up, error, at, now)
    log.log(logging.INFO if verdict is Verdict.RETRY else logging.WARNING,
            "expire of subscription %s not done (%s, %s): %s", sub.id, verdict.value, code, error,
            extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})
    return out


def _alert(s: Session, sub: Subscription, verdict: Verdict, gave_up: bool, error: NaverPayError,
           at: datetime, now: datetime) -> list[int]:
    code = error.code or type(error).__name__
    details = {"code": error.code, "http_status": error.http_status, "expire_attempts": sub.expire_attempts,
               "revoke_reason": sub.revoke_reason}
    if gave_up:
        return notify.queue_alert(
            s, notify.EXPIRE_FAILED, sub, now, dedupe=f"{sub.id}:{sub.expire_attempts}", details=details,
            message=(f"NAVER Pay would not expire the registration of subscription {sub.id} after "
                     f"{sub.expire_attempts} tries (last: {code}: {error}); it may still be valid at "
                     f"NAVER Pay. Check it there, then set the subscription's status to 'revoked' "
                     f"(or back to 'revoking' to try again)."))
    if verdict is Verdict.HELD:
        return notify.queue_alert(
            s, notify.EXPIRE_HELD, sub, now, dedupe=f"{sub.id}:{sub.expire_attempts}",
            details={**details, "resume_at": at.isoformat()},
            message=(f"expiring the registration of subscription {sub.id} is held: NAVER Pay refused "
                     f"our request ({code}: {error}); check the merchant's credentials and settings. "
                     f"It is tried again by itself from {at.isoformat()}; it is never marked "
                     f"revoked until NAVER Pay confirms."))
    return []


def _status(sessions: sessionmaker[Session], subscription_id: int) -> str:
    with sessions() as s:
        return s.scalar(select(Subscription.status).where(Subscription.id == subscription_id)) or "missing"


def _record(sessions: sessionmaker[Session], sub: Subscription, kind: str, key: str | None,
            **kw: object) -> None:
    with sessions.begin() as s:
        record_attempt(s, kind=kind, key=key, subscription_id=sub.id, **kw)  # type: ignore[arg-type]
