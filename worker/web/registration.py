"""Completing a registration: NAVER's ``returnUrl`` (or the CLI) -> approval -> a subscription.

``Registrar.complete(flow, reserve_id, temp_receipt_id)`` is a plain function of the database,
the NAVER client and a clock; the web endpoint and ``npay-billing registrations complete``
call it. One ``registration_attempts`` row per ``reserveId``::

    claim (one transaction)                     approve (NAVER)              finish (one transaction)
    INSERT attempt: approving, leased  ──▶  regist/v1/approval, key from ──▶  NEW: INSERT subscription
      unique reserve_id: a replay finds       the reserveId (a resend is a     CHANGE: move the
      the row and never approves twice        replay at NAVER, never a         subscription and its
      unique state_nonce: one registration    second registration)             open charges to the
      per start of the flow                                                     new recurrentId
      CHANGE: subscription checked and                                        attempt -> completed
      its lock taken (no charge runs)      declined / refused ──▶ failed
                                           transient, unknown, our credentials ──▶ stays approving
                                           (lease given back: a replay or the CLI resumes it)

Replays: ``completed``/``failed`` answer what they answered before; ``approving`` resumes only
once its lease has passed (a concurrent return sees "in progress"); a return whose
tempReceiptId or state nonce differs from the row's is a forgery and changes nothing.

CHANGE (a new payment means for an existing subscription): NAVER's approval of a CHANGE issues
a new ``recurrentId`` and itself ends the old one (``preRecurrentId``), so we never expire the
old registration ourselves. The subscription keeps its id, schedule, charges and pending
retries; only its ``recurrent_id`` moves, with every non-final charge, in one transaction. A
charge whose payment was already reserved under the old registration (reserving, reserved,
approving, unknown, or held from one of those) could not be approved once NAVER has ended it,
so the change is refused while one exists ("try again in a moment"), and the subscription's
lock (the one every charge run takes) is held from the claim to the finish so that no charge
starts in between. Should the lock's lease pass during a very slow approval and a run reserve
under the old registration anyway, that charge is moved too: its approval is then refused as
our request's fault and held for a human, never judged as the customer's decline.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import (
    FINAL_CHARGE_STATUSES,
    Charge,
    Merchant,
    RegistrationAttempt,
    Subscription,
    utcnow,
)
from models import ChargeStatus as CS
from models import RegistrationAttemptStatus as RS
from models import SubscriptionStatus as SS
from models.db import rowcount
from worker.charge_store import MerchantSettings
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import (
    AuthenticationError,
    NaverPayError,
    TransientError,
    UnknownOutcomeError,
)
from worker.naverpay.results import RegistrationApproval
from worker.web.flow import Flow
from worker.web.messages import for_customer

log = logging.getLogger(__name__)

# Charges that will reserve anew under whatever registration the subscription has then.
UNBOUND = (CS.PENDING.value, CS.RETRY_WAIT.value)
FINAL = [status.value for status in FINAL_CHARGE_STATUSES]
CHANGEABLE = (SS.ACTIVE.value, SS.PAUSED.value)


@dataclass(frozen=True)
class Outcome:
    """What completing a registration came to; ``code`` picks the customer's message."""

    status: Literal["completed", "failed", "pending"]
    action: str = "NEW"
    code: str | None = None
    subscription_id: int | None = None
    recurrent_id: str | None = None
    pre_recurrent_id: str | None = None
    replayed: bool = False
    detail: str | None = None  # for the operator (CLI, logs), never shown to the customer

    @property
    def message(self) -> str:
        """The customer's sentence in Korean."""
        if self.status == "completed":
            return ("결제수단이 변경되었습니다. 다음 결제부터 새 결제수단으로 결제됩니다."
                    if self.action == "CHANGE" else "네이버페이 정기결제 등록이 완료되었습니다.")
        return for_customer(self.code)


class Refused(Exception):
    """Not approved, nothing stored: ``code`` is the customer's message key."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code, self.detail = code, detail


def registration_key(reserve_id: str) -> str:
    """The idempotency key of the approval of ``reserve_id`` (the same on every resend)."""
    return "NPBreg-" + hashlib.sha256(reserve_id.encode()).hexdigest()[:40]


def lock_owner(reserve_id: str) -> str:
    """Who holds a subscription's lock while its CHANGE is approved."""
    return "registration-" + hashlib.sha256(reserve_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Registrar:
    """Completes registrations; collaborators injected (sessions, clients, clock, sleep)."""

    sessions: sessionmaker[Session]
    client_for: Callable[[MerchantSettings], NaverPayClient]
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    lease: timedelta = timedelta(minutes=6)
    tries: int = 3  # approval calls on a transient error (same key each time)

    def complete(self, flow: Flow | None, reserve_id: str, temp_receipt_id: str) -> Outcome:
        """Approve ``reserve_id`` once and record it; see the module docstring.

        ``flow`` is what the state token carried (or the CLI's options); None resumes an
        attempt already recorded for ``reserve_id``.
        """
        if not reserve_id or not temp_receipt_id:
            return Outcome("failed", code="missing_result", detail="reserveId and tempReceiptId are required")
        now = self.clock()
        if flow is None:
            claimed = self._existing(None, reserve_id, temp_receipt_id, now)
        else:
            claimed = self._claim(flow, reserve_id, temp_receipt_id, now)
        if isinstance(claimed, Outcome):
            return claimed
        attempt, merchant = claimed
        return self._approve(attempt, merchant)

    # -- claim ----------------------------------------------------------------------------------

    def _claim(self, flow: Flow, reserve_id: str, temp_receipt_id: str, now: datetime,
               ) -> Outcome | tuple[RegistrationAttempt, Merchant]:
        try:
            with self.sessions.begin() as s:
                seen = s.scalar(select(RegistrationAttempt.id)
                                .where(RegistrationAttempt.reserve_id == reserve_id))
                if seen is not None:  # a replay: answered from the row, before any other check
                    raise _Seen
                merchant = s.get(Merchant, flow.merchant_id)
                if merchant is None:
                    raise Refused("state_invalid", f"no merchant {flow.merchant_id}")
                if flow.action == "CHANGE":
                    self._take_subscription(s, flow, lock_owner(reserve_id), now)
                attempt = RegistrationAttempt(
                    reserve_id=reserve_id, temp_receipt_id=temp_receipt_id, state_nonce=flow.nonce,
                    action_type=flow.action, status=RS.APPROVING.value, merchant_id=flow.merchant_id,
                    subscription_id=flow.subscription_id, target_recurrent_id=flow.target_recurrent_id,
                    merchant_user_id=flow.merchant_user_id or None, customer_email=flow.customer_email,
                    customer_name=flow.customer_name, product_code=flow.product_code,
                    product_name=flow.product_name, amount=flow.amount,
                    tax_free_amount=flow.tax_free_amount, cron=flow.cron or None, timezone=flow.timezone,
                    lease_until=now + self.lease, created_at=now, updated_at=now)
                s.add(attempt)
                s.flush()
                return attempt, merchant
        except Refused as refused:
            log.info("registration %s refused before approval: %s", _short(reserve_id), refused.detail)
            return Outcome("failed", flow.action, refused.code, detail=refused.detail)
        except (_Seen, IntegrityError):  # this reserveId, or this token, was seen before
            return self._existing(flow, reserve_id, temp_receipt_id, now)

    def _take_subscription(self, s: Session, flow: Flow, owner: str, now: datetime) -> None:
        """CHANGE: the subscription may change means now; take its lock (no charge runs)."""
        sub = s.scalars(select(Subscription).where(Subscription.id == flow.subscription_id)
                        .with_for_update(of=Subscription)).first()
        if sub is None or sub.merchant_id != flow.merchant_id:
            raise Refused("change_not_allowed", f"no subscription {flow.subscription_id} of this merchant")
        if sub.recurrent_id != flow.target_recurrent_id:
            raise Refused("change_stale", f"subscription {sub.id} is on another registration now")
        if sub.status not in CHANGEABLE:
            raise Refused("change_not_allowed", f"subscription {sub.id} is {sub.status}")
        bound = s.scalar(select(Charge.id).where(
            Charge.subscription_id == sub.id, Charge.status.not_in([*FINAL, *UNBOUND]),
            or_(Charge.status != CS.HELD.value, Charge.held_from.is_(None),
                Charge.held_from != CS.RESERVING.value)).limit(1))
        if bound is not None:
            raise Refused("change_busy", f"charge {bound} has a payment under the old registration")
        taken = s.execute(update(Subscription).where(
            Subscription.id == sub.id,
            or_(Subscription.lock_until.is_(None), Subscription.lock_until < now,
                Subscription.lock_owner == owner))
            .values(lock_owner=owner, lock_until=now + self.lease))
        if not rowcount(taken):
            raise Refused("change_busy", f"a charge of subscription {sub.id} is running")

    def _existing(self, flow: Flow | None, reserve_id: str, temp_receipt_id: str, now: datetime,
                  ) -> Outcome | tuple[RegistrationAttempt, Merchant]:
        """A return for a reserveId (or token) seen before: answer it again, or resume it."""
        action = flow.action if flow is not None else "NEW"
        with self.sessions.begin() as s:
            attempt = s.scalars(select(RegistrationAttempt)
                                .where(RegistrationAttempt.reserve_id == reserve_id)).first()
            if attempt is None:
                if flow is None:
                    return Outcome("failed", code="state_invalid", detail=(
                        f"no registration attempt for reserveId {reserve_id}; give the plan "
                        "(or --change) to start one"))
                log.warning("registration %s refused: its state token was already used", _short(reserve_id))
                return Outcome("failed", action, "state_used", replayed=True,
                               detail="this state token already completed another registration")
            if attempt.temp_receipt_id != temp_receipt_id or (
                    flow is not None and flow.nonce is not None and attempt.state_nonce != flow.nonce):
                log.warning("registration %s refused: forged return (tempReceiptId or state differ)",
                            _short(reserve_id))
                return Outcome("failed", attempt.action_type, "forged_return", replayed=True,
                               detail="tempReceiptId or state token differ from the recorded attempt")
            if attempt.status != RS.APPROVING:
                return _recorded(attempt)
            resumed = s.execute(update(RegistrationAttempt).where(
                RegistrationAttempt.id == attempt.id, RegistrationAttempt.status == RS.APPROVING.value,
                or_(RegistrationAttempt.lease_until.is_(None), RegistrationAttempt.lease_until < now))
                .values(lease_until=now + self.lease, updated_at=now))
            if not rowcount(resumed):
                return Outcome("pending", attempt.action_type, "pending", replayed=True,
                               detail="another completion of this registration is in progress")
            if attempt.action_type == "CHANGE" and attempt.subscription_id is not None:
                owner = lock_owner(reserve_id)  # best effort: the finish moves whatever exists
                s.execute(update(Subscription).where(
                    Subscription.id == attempt.subscription_id,
                    or_(Subscription.lock_until.is_(None), Subscription.lock_until < now,
                        Subscription.lock_owner == owner))
                    .values(lock_owner=owner, lock_until=now + self.lease))
            merchant = s.get(Merchant, attempt.merchant_id)
            assert merchant is not None  # a foreign key
            return attempt, merchant

    # -- approve ---------------------------------------------------------------------------------

    def _approve(self, attempt: RegistrationAttempt, merchant: Merchant) -> Outcome:
        retrying = Retrying(stop=stop_after_attempt(self.tries), wait=wait_exponential(multiplier=0.2, max=2),
                            retry=retry_if_exception_type(TransientError), sleep=self.sleep, reraise=True)
        try:
            client = self.client_for(merchant)
            answer = retrying(client.approve_registration, reserve_id=attempt.reserve_id,
                              temp_receipt_id=attempt.temp_receipt_id,
                              idempotency_key=registration_key(attempt.reserve_id))
        except (TransientError, UnknownOutcomeError, AuthenticationError) as exc:
            # Nothing known to be refused: keep it resumable (same key) and say "in progress".
            level = logging.ERROR if not isinstance(exc, TransientError) else logging.WARNING
            log.log(level, "registration %s: approval not confirmed, resumable: %s",
                    _short(attempt.reserve_id), exc.message)
            self._note(attempt, exc.code, exc.message)
            return Outcome("pending", attempt.action_type, "pending", detail=exc.message)
        except NaverPayError as exc:  # NAVER refused this reserveId/tempReceiptId
            log.info("registration %s: NAVER refused the approval: %s",
                     _short(attempt.reserve_id), exc.message)
            self._fail(attempt, exc.code, exc.message)
            return Outcome("failed", attempt.action_type, "approval_failed", detail=exc.message)
        except ValueError as exc:  # the merchant's configuration (e.g. its secret's variable)
            log.error("registration %s: cannot call NAVER: %s", _short(attempt.reserve_id), exc)
            self._note(attempt, None, str(exc))
            return Outcome("pending", attempt.action_type, "pending", detail=str(exc))
        return self._finish(attempt, answer)

    def _note(self, attempt: RegistrationAttempt, code: str | None, message: str) -> None:
        """Keep the attempt resumable at once (lease given back), with what went wrong."""
        with self.sessions.begin() as s:
            s.execute(update(RegistrationAttempt).where(RegistrationAttempt.id == attempt.id,
                                                        RegistrationAttempt.status == RS.APPROVING.value)
                      .values(lease_until=None, last_code=code, last_error=message[:2000],
                              updated_at=self.clock()))

    def _fail(self, attempt: RegistrationAttempt, code: str | None, message: str) -> None:
        with self.sessions.begin() as s:
            s.execute(update(RegistrationAttempt).where(RegistrationAttempt.id == attempt.id,
                                                        RegistrationAttempt.status == RS.APPROVING.value)
                      .values(status=RS.FAILED.value, lease_until=None, last_code=code,
                              last_error=message[:2000], updated_at=self.clock()))
            if attempt.action_type == "CHANGE" and attempt.subscription_id is not None:
                _unlock(s, attempt)

    # -- finish ----------------------------------------------------------------------------------

    def _finish(self, attempt: RegistrationAttempt, answer: RegistrationApproval) -> Outcome:
        now = self.clock()
        try:
            with self.sessions.begin() as s:
                if attempt.action_type == "CHANGE":
                    subscription_id = _move(s, attempt, answer, now)
                else:
                    subscription_id = _create(s, attempt, answer.recurrent_id)
                done = s.execute(update(RegistrationAttempt).where(
                    RegistrationAttempt.id == attempt.id, RegistrationAttempt.status == RS.APPROVING.value)
                    .values(status=RS.COMPLETED.value, recurrent_id=answer.recurrent_id,
                            subscription_id=subscription_id, lease_until=None, last_code=answer.code,
                            last_error=None, updated_at=now))
                if not rowcount(done):
                    raise _Conflict("the attempt was finished by another completion meanwhile")
        except (_Conflict, IntegrityError) as exc:
            detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            log.error("registration %s approved at NAVER (recurrentId %s) but not recorded: %s",
                      _short(attempt.reserve_id), answer.recurrent_id, detail)
            return self._after_conflict(attempt, answer, detail)
        log.info("registration %s completed: %s subscription %s on recurrentId %s",
                 _short(attempt.reserve_id), attempt.action_type, subscription_id, answer.recurrent_id)
        return Outcome("completed", attempt.action_type, subscription_id=subscription_id,
                       recurrent_id=answer.recurrent_id, pre_recurrent_id=answer.pre_recurrent_id)

    def _after_conflict(self, attempt: RegistrationAttempt, answer: RegistrationApproval,
                        detail: str) -> Outcome:
        with self.sessions() as s:
            current = s.get(RegistrationAttempt, attempt.id)
            if current is not None and current.status != RS.APPROVING:
                return _recorded(current)  # a concurrent completion recorded it: its answer
        with self.sessions.begin() as s:
            s.execute(update(RegistrationAttempt).where(RegistrationAttempt.id == attempt.id,
                                                        RegistrationAttempt.status == RS.APPROVING.value)
                      .values(status=RS.FAILED.value, recurrent_id=answer.recurrent_id, lease_until=None,
                              last_code="internal", last_error=detail[:2000], updated_at=self.clock()))
            if attempt.action_type == "CHANGE":
                _unlock(s, attempt)
        return Outcome("failed", attempt.action_type, "internal", recurrent_id=answer.recurrent_id,
                       detail=detail)


class _Seen(Exception):
    """The reserveId has a row already."""


class _Conflict(Exception):
    """The database no longer matches what the approval was for (a human must look)."""


def _create(s: Session, attempt: RegistrationAttempt, recurrent_id: str) -> int:
    """NEW: the subscription, exactly as a user's INSERT would make it (the walk schedules it)."""
    values = {"merchant_id": attempt.merchant_id, "recurrent_id": recurrent_id,
              "merchant_user_id": attempt.merchant_user_id, "customer_email": attempt.customer_email,
              "customer_name": attempt.customer_name, "product_code": attempt.product_code,
              "product_name": attempt.product_name, "amount": attempt.amount,
              "tax_free_amount": attempt.tax_free_amount, "cron": attempt.cron,
              "timezone": attempt.timezone}
    return int(s.execute(insert(Subscription).values(**values).returning(Subscription.id)).scalar_one())


def _move(s: Session, attempt: RegistrationAttempt, answer: RegistrationApproval, now: datetime) -> int:
    """CHANGE: the subscription and its open charges follow the new recurrentId."""
    old, new = attempt.target_recurrent_id, answer.recurrent_id
    if answer.pre_recurrent_id is not None and answer.pre_recurrent_id != old:
        raise _Conflict(f"NAVER replaced {answer.pre_recurrent_id}, not {old}")
    moved = s.execute(update(Subscription).where(Subscription.id == attempt.subscription_id,
                                                 Subscription.recurrent_id == old)
                      .values(recurrent_id=new, updated_at=now))
    if not rowcount(moved):
        raise _Conflict(f"subscription {attempt.subscription_id} is no longer on recurrentId {old}")
    s.execute(update(Charge).where(Charge.subscription_id == attempt.subscription_id,
                                   Charge.status.not_in(FINAL))
              .values(recurrent_id=new))
    _unlock(s, attempt)
    assert attempt.subscription_id is not None
    return attempt.subscription_id


def _unlock(s: Session, attempt: RegistrationAttempt) -> None:
    s.execute(update(Subscription).where(and_(Subscription.id == attempt.subscription_id,
                                              Subscription.lock_owner == lock_owner(attempt.reserve_id)))
              .values(lock_owner=None, lock_until=None))


def _recorded(attempt: RegistrationAttempt) -> Outcome:
    """The answer an attempt already settled gives to every replay."""
    if attempt.status == RS.COMPLETED:
        return Outcome("completed", attempt.action_type, subscription_id=attempt.subscription_id,
                       recurrent_id=attempt.recurrent_id,
                       pre_recurrent_id=attempt.target_recurrent_id, replayed=True)
    code = "internal" if attempt.last_code == "internal" else "approval_failed"
    return Outcome("failed", attempt.action_type, code, replayed=True, detail=attempt.last_error)


def _short(reserve_id: str) -> str:
    """A reserveId shortened for logs (it is not secret, only long)."""
    return reserve_id if len(reserve_id) <= 24 else reserve_id[:24] + "..."
