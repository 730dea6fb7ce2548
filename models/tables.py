"""The database contract: merchants, subscriptions, charges, charge_attempts, notifications.

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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    merchant: Mapped[Merchant] = relationship(lazy="joined")


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), server_default=NOW)

    subscription: Mapped[Subscription] = relationship(lazy="joined")


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
