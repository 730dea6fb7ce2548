"""The database contract: merchants, subscriptions, charges, charge_attempts, notifications
(and, issue 9, charge_followups and registration_sync).

Users add subscriptions by inserting rows with plain SQL, so this schema is a public interface
(documented in the README, created by Alembic, identical on SQLite and PostgreSQL). Every
column a user may leave out has a *server-side* default, so the minimal documented INSERT is
complete. Money is an ``int`` number of won. Constraints protect money: positive amounts, a
tax-free part within the amount, one ``recurrent_id`` per subscription, one charge per
(subscription, cycle) and one ``merchant_pay_id`` per charge.

Charge state machine (every transition is a compare-and-set on ``status``)::

    pending ──▶ reserving ──▶ reserved ──▶ approving ──▶ succeeded
       ▲            │  (reserve declined)      │  ├──▶ amount_mismatch   (flagged, never success)
       │            ▼                          │  └──▶ unknown ──(history)──▶ succeeded | retry_wait | failed
       └──────── retry_wait ◀──── declined ────┘
    retry_wait ──(policy gives up)──▶ failed          any non-final ──▶ canceled (cancel wins; an
    pending ──(missed-cycle rule)──▶ skipped                   approval is resolved through history first)
    reserving|approving|unknown ──(merchant-side fault: 401, InvalidParameter, a proxy's 4xx)──▶ held
    held ──(next_attempt_at, backoff)──▶ held_from (no attempt consumed, no final action)
    (walk) ──▶ consent_held ──(amount <= agreed: consent recorded / amount lowered)──▶ pending
    pending|retry_wait ──(amount above the agreed one: the engine's re-check)──▶ consent_held
    consent_held ──(a later cycle of the subscription comes due)──▶ skipped

Run ownership: a run holds the charge's ``lease_owner`` (and the subscription's ``lock_owner``);
every transition of that run is conditional on still owning it, and renews ``lease_until``.
``prev_status`` is written by every transition (the status the row actually moved from).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from models.types import UTCDateTime

NOW = text("CURRENT_TIMESTAMP")


class Base(DeclarativeBase):
    """Declarative base with named constraints (stable names for migrations)."""


Base.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, enum: type[StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"


class FinalAction(StrEnum):
    """What the worker does with the registration when the policy gives up."""

    EXPIRE = "expire"  # expire the registration at NAVER Pay, subscription -> revoked
    PAUSE = "pause"  # subscription -> paused, registration kept
    NONE = "none"  # nothing: the next cycle is billed as usual


class MissedCycles(StrEnum):
    """How cycles that came due during an outage are billed."""

    LATEST = "latest"  # one charge for the latest missed cycle, the older ones skipped
    ALL = "all"  # one charge per missed cycle
    SKIP = "skip"  # no charge for cycles older than the grace period


class SettlementBasis(StrEnum):
    """What NAVER settles the merchant's payments on (the merchant's contract)."""

    PAYMENT_DATE = "payment_date"  # 결제일 기준 정산: nothing to call for settlement
    TRADE_CONFIRM = "trade_confirm"  # 거래완료 기준 정산: purchase confirm after each charge


class PointBasis(StrEnum):
    """When the customer's NAVER Pay points are accrued (the merchant's contract)."""

    AUTO = "auto"  # NAVER accrues them by itself: nothing to call
    TRADE_CONFIRM = "trade_confirm"  # on 거래완료: purchase confirm after each charge
    MANUAL = "manual"  # 수동 적립 (with payment-date settlement): point accrual after each charge


class FollowupStatus(StrEnum):
    """A purchase confirm or point accrual owed for one succeeded charge."""

    PENDING = "pending"  # due at next_at
    HELD = "held"  # a merchant-side fault (contract setting, credentials): retried, alerted
    DONE = "done"  # NAVER confirmed it (or said it was already done)
    FAILED = "failed"  # NAVER refused it max_attempts times: a human must check
class ConsentMissing(StrEnum):
    """What the walk does at a raise's effective cycle when the customer has not consented."""

    KEEP_OLD = "keep_old"  # keep billing the amount the customer agreed to (a trial: nothing)
    PAUSE = "pause"  # pause the subscription until consent is recorded


class PriceChangeStatus(StrEnum):
    """Lifecycle of a ``price_changes`` row."""

    PENDING = "pending"  # waiting for its effective cycle (and, for a raise, the consent)
    CONSENTED = "consented"  # the customer agreed; applied at the effective cycle
    APPLIED = "applied"  # the subscription's amount is the new one
    CANCELED = "canceled"  # withdrawn by the merchant (SQL or the CLI)


class PriceChangeKind(StrEnum):
    """Where a price change comes from."""

    CHANGE = "change"  # inserted by the merchant
    TRIAL = "trial"  # a free trial's end (0 -> amount), added by the walk


class SubscriptionStatus(StrEnum):
    """Lifecycle of a subscription row."""

    ACTIVE = "active"  # billed by the walk
    PAUSED = "paused"  # not billed; pending attempts canceled; resume -> active
    CANCELED = "canceled"  # ended by the merchant; pending attempts canceled
    REVOKING = "revoking"  # final failure: the registration is being expired at NAVER Pay
    REVOKED = "revoked"  # registration expired at NAVER Pay (final failure or merchant cancel)
    INVALID = "invalid"  # the row is unusable (see last_error); fix it and set active
    EXPIRE_FAILED = "expire_failed"  # NAVER would not expire the registration: a human must check


class RevokeReason(StrEnum):
    """Why a subscription's registration is being (or was) expired at NAVER Pay."""

    FINAL_FAILURE = "final_failure"  # the retry policy gave up (final_action=expire)
    MERCHANT_CANCEL = "merchant_cancel"  # the merchant set status = 'canceled' (expire_on_cancel)
    REGISTRATION_ENDED = "registration_ended"  # the customer ended it in NAVER Pay (sync found it)


class ChargeStatus(StrEnum):
    """Where one (subscription, cycle) charge stands."""

    PENDING = "pending"
    RESERVING = "reserving"
    RESERVED = "reserved"
    APPROVING = "approving"
    UNKNOWN = "unknown"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    AMOUNT_MISMATCH = "amount_mismatch"
    SKIPPED = "skipped"
    CANCELED = "canceled"
    HELD = "held"  # a merchant-side fault (credentials, our request, a proxy): waits, alerts, resumes
    # The amount is above what the customer agreed to (a raise by SQL without a consented price
    # change): never billed as it is; alerted; resumes when consent is recorded or the amount
    # is lowered (see scheduler/consent.py).
    CONSENT_HELD = "consent_held"


FINAL_CHARGE_STATUSES = frozenset(
    {
        ChargeStatus.SUCCEEDED,
        ChargeStatus.FAILED,
        ChargeStatus.AMOUNT_MISMATCH,
        ChargeStatus.SKIPPED,
        ChargeStatus.CANCELED,
    }
)
NONFINAL_CHARGE_STATUSES = frozenset(set(ChargeStatus) - FINAL_CHARGE_STATUSES)
# Not final, and a worker may be (or may have been) working on it: the walk re-enqueues these
# once their lease runs out.
INFLIGHT_CHARGE_STATUSES = frozenset(
    {
        ChargeStatus.PENDING,
        ChargeStatus.RESERVING,
        ChargeStatus.RESERVED,
        ChargeStatus.APPROVING,
        ChargeStatus.UNKNOWN,
    }
)
# The NAVER outcome of the current attempt is not settled yet; a charge that stays in one of
# these past a bound is surfaced to a human (``stuck_since`` / ``surfaced_at``).
UNSETTLED_CHARGE_STATUSES = frozenset(
    {ChargeStatus.RESERVING, ChargeStatus.APPROVING, ChargeStatus.UNKNOWN, ChargeStatus.HELD}
)


class NotificationStatus(StrEnum):
    """Outbox row lifecycle."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    NO_CHANNEL = "no_channel"


class Merchant(Base):
    """A NAVER Pay merchant: credentials by reference, retry policy, notification target."""

    __tablename__ = "merchants"
    __table_args__ = (
        CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
        CheckConstraint(_in("final_action", FinalAction), name="final_action_known"),
        CheckConstraint(_in("missed_cycles", MissedCycles), name="missed_cycles_known"),
        CheckConstraint(_in("settlement_basis", SettlementBasis), name="settlement_basis_known"),
        CheckConstraint(_in("point_basis", PointBasis), name="point_basis_known"),
        CheckConstraint(_in("consent_missing", ConsentMissing), name="consent_missing_known"),
        CheckConstraint("upcoming_notice_days IS NULL OR upcoming_notice_days >= 1",
                        name="upcoming_notice_days_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # Credentials: NULL means "the environment's NAVERPAY_* value". The client secret is never
    # stored here, only the name of the environment variable that holds it.
    api_base: Mapped[str | None] = mapped_column(String(200))
    partner_id: Mapped[str | None] = mapped_column(String(100))
    client_id: Mapped[str | None] = mapped_column(String(100))
    client_secret_env: Mapped[str | None] = mapped_column(String(100))
    chain_id: Mapped[str | None] = mapped_column(String(100))
    # Retry policy, plain columns a user can set with SQL.
    retry_delays: Mapped[str] = mapped_column(String(200), server_default="1h,1d,3d")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="4")
    retryable_codes: Mapped[str] = mapped_column(String(500), server_default=(
        "NotEnoughAccountBalance,BankMaintenance,FaultCheckOngoing,BankCheckTime,TimeExpired,Fail"))
    final_action: Mapped[str] = mapped_column(String(20), server_default=FinalAction.EXPIRE.value)
    missed_cycles: Mapped[str] = mapped_column(String(20), server_default=MissedCycles.LATEST.value)
    # Notifications: final failures always; the other events only when listed in notify_on.
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[str | None] = mapped_column(String(200))
    notify_email: Mapped[int] = mapped_column(Integer, server_default="0")
    notify_on: Mapped[str] = mapped_column(String(200), server_default="final_failure")
    # Crons whose cycles come closer than this are refused (same units as retry_delays).
    min_cycle_interval: Mapped[str] = mapped_column(String(20), server_default="1d")
    # 1 = a subscription set to 'canceled' also expires its registration at NAVER Pay.
    expire_on_cancel: Mapped[int] = mapped_column(Integer, server_default="1")
    # The merchant's NAVER contract (issue 9): which follow-up calls a successful charge needs.
    # See ``SettlementBasis``/``PointBasis`` and worker/followups.py.
    settlement_basis: Mapped[str] = mapped_column(String(20), server_default="payment_date")
    point_basis: Mapped[str] = mapped_column(String(20), server_default="auto")
    followup_delay: Mapped[str] = mapped_column(String(20), server_default="0s")  # after approval
    # Consent rule (scheduler/consent.py): at a raise's effective cycle without consent,
    # keep billing the old amount or pause; and the upcoming-charge notice (NULL = off).
    consent_missing: Mapped[str] = mapped_column(String(20), server_default=ConsentMissing.KEEP_OLD.value)
    upcoming_notice_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)


class Subscription(Base):
    """One NAVER Pay registration (recurrentId) billed on a cron schedule."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("tax_free_amount >= 0 AND tax_free_amount <= amount", name="tax_free_range"),
        CheckConstraint(_in("status", SubscriptionStatus), name="status_known"),
        # The walk reads only what is due: (status, next_charge_at) serves both "active and
        # due" and "active and unscheduled (NULL)". Plain composite indexes, not partial ones:
        # SQLite cannot use a partial index for a query whose status is a bound parameter.
        Index("ix_subscriptions_due", "status", "next_charge_at"),
        # Status changes made with SQL (pause, resume, cancel, fix of an invalid row) are found
        # by the walk as rows whose status differs from the one it last acted on.
        Index("ix_subscriptions_seen", "seen_status", "status"),
        Index("ix_subscriptions_upcoming", "upcoming_notice_at"),
        CheckConstraint("agreed_amount IS NULL OR agreed_amount >= 0", name="agreed_amount_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), server_default="1")
    recurrent_id: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_user_id: Mapped[str] = mapped_column(String(100))
    customer_email: Mapped[str | None] = mapped_column(String(200))
    customer_name: Mapped[str | None] = mapped_column(String(100))
    product_code: Mapped[str] = mapped_column(String(100))
    product_name: Mapped[str] = mapped_column(String(200))
    amount: Mapped[int] = mapped_column(Integer)
    tax_free_amount: Mapped[int] = mapped_column(Integer, server_default="0")
    cron: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), server_default="Asia/Seoul")
    status: Mapped[str] = mapped_column(String(20), server_default=SubscriptionStatus.ACTIVE.value)
    next_charge_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    # Lease that makes "one charge per recurrentId at a time" hold across workers.
    lock_owner: Mapped[str | None] = mapped_column(String(64))
    lock_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The status the walk last acted on: when ``status`` differs, someone changed it (SQL, CLI).
    seen_status: Mapped[str] = mapped_column(String(20), server_default=SubscriptionStatus.ACTIVE.value)
    # The cron and zone ``next_charge_at`` was computed from (NULL: set by hand, trusted).
    scheduled_cron: Mapped[str | None] = mapped_column(String(100))
    scheduled_timezone: Mapped[str | None] = mapped_column(String(64))
    # Expiring the registration at NAVER Pay (status revoking): why, tries, next try.
    revoke_reason: Mapped[str | None] = mapped_column(String(30))
    expire_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    expire_next_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Consent rule: the amount the customer last agreed to (set by the walk at first sight:
    # the amount, or 0 during a free trial; raised only by a consented price change, lowered
    # when a lower amount is billed). NULL = not seen by the walk yet.
    agreed_amount: Mapped[int | None] = mapped_column(Integer)
    trial_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # free until then
    # When the upcoming-charge notice of the next cycle is due (set with next_charge_at).
    upcoming_notice_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    merchant: Mapped[Merchant] = relationship(lazy="joined")


REFUND_TOTAL_RULE = ("refund_total >= 0 AND (refund_total = 0 OR "
                     "(approved_amount IS NOT NULL AND refund_total <= approved_amount))")


class Charge(Base):
    """One billing cycle of one subscription, from reservation to a final state."""

    __tablename__ = "charges"
    __table_args__ = (
        UniqueConstraint("subscription_id", "cycle_at", name="uq_charges_subscription_cycle"),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_in("status", ChargeStatus), name="status_known"),
        Index("ix_charges_retry_due", "status", "next_attempt_at"),
        Index("ix_charges_lease", "status", "lease_until"),
        Index("ix_charges_stuck_since", "stuck_since"),
        CheckConstraint(REFUND_TOTAL_RULE, name="refund_total_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    recurrent_id: Mapped[str] = mapped_column(String(64))
    cycle_at: Mapped[datetime] = mapped_column(UTCDateTime())
    merchant_pay_id: Mapped[str] = mapped_column(String(64), unique=True)
    amount: Mapped[int] = mapped_column(Integer)
    tax_free_amount: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(20), server_default=ChargeStatus.PENDING.value)
    payment_id: Mapped[str | None] = mapped_column(String(64))
    attempt_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))  # the run allowed to move it
    prev_status: Mapped[str | None] = mapped_column(String(20))  # what the last transition left
    held_from: Mapped[str | None] = mapped_column(String(20))  # where a held charge resumes
    backoff_count: Mapped[int] = mapped_column(Integer, server_default="0")  # holds / stalled runs
    # Bumped when a held charge resumes: NAVER may have stored its refusal under the old
    # idempotency key and would replay it for ever (the paymentId itself prevents a 2nd charge).
    key_round: Mapped[int] = mapped_column(Integer, server_default="0")
    stuck_since: Mapped[datetime | None] = mapped_column(UTCDateTime())  # unsettled since
    surfaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # reported to a human
    last_code: Mapped[str | None] = mapped_column(String(64))
    last_message: Mapped[str | None] = mapped_column(Text)
    approved_amount: Mapped[int | None] = mapped_column(Integer)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reason: Mapped[str | None] = mapped_column(Text)
    # Refunds (issue 9): won of this charge's refunds that have not failed (requested, in
    # progress or done); raised by one conditional UPDATE when a refund is requested, so it
    # never exceeds approved_amount (CHECK below), and lowered when a refund fails.
    refund_total: Mapped[int] = mapped_column(Integer, server_default="0")
    # The most the customer agreed to for this cycle when the walk created it (the consent
    # gate's answer); the engine re-checks ``amount`` against it before every attempt.
    agreed_amount: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    subscription: Mapped[Subscription] = relationship(lazy="joined")


class PriceChange(Base):
    """A new amount for a subscription from a date on; a raise needs the customer's consent
    (scheduler/consent.py). Insert with SQL like subscriptions."""

    __tablename__ = "price_changes"
    __table_args__ = (
        CheckConstraint("new_amount > 0", name="new_amount_positive"),
        CheckConstraint(_in("status", PriceChangeStatus), name="status_known"),
        CheckConstraint(_in("kind", PriceChangeKind), name="kind_known"),
        Index("ix_price_changes_open", "subscription_id", "status"),
        Index("ix_price_changes_notice", "status", "notice_sent_at", "effective_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    new_amount: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime())  # first cycle at or after it
    kind: Mapped[str] = mapped_column(String(20), server_default=PriceChangeKind.CHANGE.value)
    status: Mapped[str] = mapped_column(String(20), server_default=PriceChangeStatus.PENDING.value)
    old_amount: Mapped[int | None] = mapped_column(Integer)  # the agreed amount the notice quoted
    notice_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # notice queued
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    consent_via: Mapped[str | None] = mapped_column(String(100))  # link | cli: <how> ...
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # paused for want of consent
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)  # what the walk decided last, for people
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)


class ChargeAttempt(Base):
    """Every NAVER Pay call made for a charge, with its key, result code and redacted body."""

    __tablename__ = "charge_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"), index=True)
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    attempt_no: Mapped[int] = mapped_column(Integer, server_default="0")
    kind: Mapped[str] = mapped_column(String(20))  # reserve | approve | history | expire
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(20))  # ok | declined | transient | ...
    result_code: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    raw_body: Mapped[str | None] = mapped_column(Text)
    elapsed_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    refund_id: Mapped[int | None] = mapped_column(ForeignKey("refunds.id"), index=True)  # cancel calls


class Notification(Base):
    """Outbox: written in the transaction of the state change, delivered by its own task."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("dedupe_key", "channel", name="uq_notifications_dedupe_channel"),
        CheckConstraint(_in("status", NotificationStatus), name="status_known"),
        Index("ix_notifications_pending", "status", "lease_until"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    dedupe_key: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(20))  # webhook | email
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"))
    payload: Mapped[str] = mapped_column(Text)  # JSON
    status: Mapped[str] = mapped_column(String(20), server_default=NotificationStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_owner: Mapped[str | None] = mapped_column(String(64))  # the delivery that holds it
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)


# --- Refunds (issue 9) ------------------------------------------------------------------------


class RefundStatus(StrEnum):
    """Where one requested refund stands (the machine is drawn in ``worker/refunds.py``)."""

    REQUESTED = "requested"  # stored with its key; not sent yet, or waiting to be sent again
    CANCELLING = "cancelling"  # committed before the cancel call: found here = maybe sent
    UNKNOWN = "unknown"  # the cancel's outcome is unknown: history decides before any resend
    COMPLETING = "completing"  # CancelNotComplete: refunded (NAVER completes it), history confirms
    HELD = "held"  # a merchant-side fault (credentials, our request): waits, alerts, resumes
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # NAVER refused it; its amount is free again


FINAL_REFUND_STATUSES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})
# Refunds whose money NAVER has taken back (or will, by itself): the charge's refunded total.
REFUNDED_STATUSES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.COMPLETING})


class Refund(Base):
    """One requested refund of a succeeded charge (full or partial), with NAVER's tax split.

    ``amount`` = ``amount - tax_free_amount`` (NAVER's ``taxScopeAmount``) + ``tax_free_amount``
    (``taxExScopeAmount``). ``idempotency_key`` is stored before the first cancel call and sent
    on every resend (also as ``merchantPayTransactionKey``, which NAVER echoes in history).
    """

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("tax_free_amount >= 0 AND tax_free_amount <= amount", name="tax_free_range"),
        CheckConstraint(_in("status", RefundStatus), name="status_known"),
        Index("ix_refunds_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("charges.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id"))
    payment_id: Mapped[str] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(Integer)
    tax_free_amount: Mapped[int] = mapped_column(Integer, server_default="0")
    reason: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(20), server_default=RefundStatus.REQUESTED.value)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    key_round: Mapped[int] = mapped_column(Integer, server_default="0")
    # NAVER's remaining amount after this refund, as we expect it (doCompareRest); set once,
    # when the refund is first sent, and sent unchanged on every resend.
    expected_rest: Mapped[int | None] = mapped_column(Integer)
    send_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Since when a send of ours may have gone through unanswered (NULL: every send was answered).
    uncertain_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    held_from: Mapped[str | None] = mapped_column(String(20))
    backoff_count: Mapped[int] = mapped_column(Integer, server_default="0")
    last_code: Mapped[str | None] = mapped_column(String(64))
    last_message: Mapped[str | None] = mapped_column(Text)
    pay_hist_id: Mapped[str | None] = mapped_column(String(64))  # NAVER's id of the cancel
    naver_rest_amount: Mapped[int | None] = mapped_column(Integer)  # NAVER's remaining, last seen
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # NAVER accepted it
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # seen in history
    surfaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # reported to a human
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
# --- reconciliation (정산 대사): one run per (merchant, KST day, pass), its items -------------

class ReconciliationRun(Base):
    """One pass comparing NAVER's payment history of a KST day with the local books."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (Index("ix_reconciliation_runs_day", "day", "merchant_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"))
    day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, a day in Asia/Seoul
    status: Mapped[str] = mapped_column(String(20), server_default="running")  # running|done|error
    naver_rows: Mapped[int] = mapped_column(Integer, server_default="0")
    local_charges: Mapped[int] = mapped_column(Integer, server_default="0")
    repaired: Mapped[int] = mapped_column(Integer, server_default="0")
    remaining: Mapped[int] = mapped_column(Integer, server_default="0")  # left for a human
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ReconciliationItem(Base):
    """One difference a run found, and what became of it (repaired, reported, deferred)."""

    __tablename__ = "reconciliation_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    resolution: Mapped[str] = mapped_column(String(20))
    charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"))
    payment_id: Mapped[str | None] = mapped_column(String(64))
    merchant_pay_id: Mapped[str | None] = mapped_column(String(128))
    naver_amount: Mapped[int | None] = mapped_column(Integer)
    local_amount: Mapped[int | None] = mapped_column(Integer)
    local_status: Mapped[str | None] = mapped_column(String(20))
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
# --- issue 9: registration sync, purchase confirm and point accrual --------------------------

class ChargeFollowup(Base):
    """Outbox of the calls a succeeded charge owes NAVER after the sale: ``confirm`` (거래완료)
    and ``accrual`` (포인트 적립), one row per (charge, kind), written in the transaction that
    made the charge succeed; driven by worker/followups.py."""

    __tablename__ = "charge_followups"
    __table_args__ = (
        UniqueConstraint("charge_id", "kind", name="uq_charge_followups_charge_kind"),
        CheckConstraint("kind IN ('confirm', 'accrual')", name="kind_known"),
        CheckConstraint(_in("status", FollowupStatus), name="status_known"),
        Index("ix_charge_followups_due", "status", "next_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    charge_id: Mapped[int] = mapped_column(ForeignKey("charges.id"))
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), server_default=FollowupStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # refusals and unsettled tries
    key_round: Mapped[int] = mapped_column(Integer, server_default="0")  # bumped after a refusal only
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_code: Mapped[str | None] = mapped_column(String(64))
    last_message: Mapped[str | None] = mapped_column(Text)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    naver_time: Mapped[datetime | None] = mapped_column(UTCDateTime())  # confirmTime
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)


class RegistrationSync(Base):
    """Where the registration sync of one merchant stands: it sweeps NAVER's registration list
    (state EXPIRED) in windows of at most 31 days of registration time, from ``since`` to now,
    a few pages per run, and starts over when it reaches now (worker/registration_sync.py)."""

    __tablename__ = "registration_sync"

    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime())  # sweep from here (operator may set it)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime())  # the window being read
    page: Mapped[int] = mapped_column(Integer, server_default="1")  # next page of that window
    sweep_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_sweep_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # last full sweep ended
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())  # one run at a time
    last_error: Mapped[str | None] = mapped_column(Text)
    ended_found: Mapped[int] = mapped_column(Integer, server_default="0")  # subscriptions revoked
# --- registration (issue 10): the return from NAVER Pay's registration window ----------------

class RegistrationAttemptStatus(StrEnum):
    """Where completing one NAVER registration (one ``reserveId``) stands."""

    APPROVING = "approving"  # approval sent or about to be; outcome not recorded yet (resumable)
    COMPLETED = "completed"  # approved, and the subscription created (NEW) or moved (CHANGE)
    FAILED = "failed"  # NAVER refused the approval, or we refused before calling it


class RegistrationAttempt(Base):
    """One return from NAVER Pay's registration window that asked for approval.

    ``reserve_id`` is unique: a replayed return (reload, back button, a forged copy) finds the
    row and never approves twice. ``state_nonce`` is unique: one signed state token (one start
    of the flow) yields at most one registration. The plan and customer fields are copied
    from the token, so the approval can be resumed (``npay-billing registrations complete``).
    """

    __tablename__ = "registration_attempts"
    __table_args__ = (
        CheckConstraint(_in("status", RegistrationAttemptStatus), name="status_known"),
        CheckConstraint("action_type IN ('NEW', 'CHANGE')", name="action_type_known"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reserve_id: Mapped[str] = mapped_column(String(200), unique=True)
    temp_receipt_id: Mapped[str] = mapped_column(String(100))
    state_nonce: Mapped[str | None] = mapped_column(String(64), unique=True)
    action_type: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), server_default=RegistrationAttemptStatus.APPROVING.value)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchants.id"), server_default="1")
    # NEW: the subscription created; CHANGE: the subscription whose means is changed.
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))
    target_recurrent_id: Mapped[str | None] = mapped_column(String(64))  # CHANGE: the old one
    recurrent_id: Mapped[str | None] = mapped_column(String(64))  # what the approval issued
    merchant_user_id: Mapped[str | None] = mapped_column(String(100))
    customer_email: Mapped[str | None] = mapped_column(String(200))
    customer_name: Mapped[str | None] = mapped_column(String(100))
    product_code: Mapped[str | None] = mapped_column(String(100))
    product_name: Mapped[str | None] = mapped_column(String(200))
    amount: Mapped[int | None] = mapped_column(Integer)
    tax_free_amount: Mapped[int] = mapped_column(Integer, server_default="0")
    cron: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), server_default="Asia/Seoul")
    last_code: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    # A completion in progress holds the row until then (a concurrent return waits).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
