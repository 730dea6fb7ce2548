"""Notifications through an outbox: written with the state change, delivered by their own task.

``queue(session, event, charge, now)`` adds one ``notifications`` row per channel *inside the
transaction that changed the charge*, so a notification exists if and only if the change
committed. ``deliver(...)`` claims a row for itself: one conditional UPDATE moves it from
``pending`` (or from ``sending`` whose lease has passed: its owner died) to ``sending`` with a
fresh owner token (``claim_owner``) and a lease, then sends it with short tenacity retries,
and marks it ``sent`` (or back to ``pending``/``failed``) only if it still owns the claim.
A delivery whose worker died leaves the row ``sending``; the walk returns such a row to
``pending`` once its lease has passed, and the next claimant delivers it. Delivery is at least
once: a row sent twice (a worker died between sending and marking, or overstayed its lease)
carries the same ``event_id`` both times, so the receiver drops the duplicate (the webhook's
documented dedup key).

Channels:
* ``webhook`` to the merchant's ``webhook_url``: JSON body, ``X-Npay-Billing-Event-Id``,
  ``X-Npay-Billing-Timestamp`` and ``X-Npay-Billing-Signature: sha256=<hex>`` where the HMAC-
  SHA256 key is the merchant's ``webhook_secret`` and the message is ``"{timestamp}.{body}"``.
* ``email`` to the customer (``subscriptions.customer_email``) over SMTP, in Korean, when the
  merchant has ``notify_email = 1``.
A final failure always produces a row: with no channel configured it is kept with status
``no_channel`` (and logged), so nothing is silently dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, stop_after_attempt, wait_exponential

from models import Charge, Merchant, Notification, Subscription
from models import NotificationStatus as NS
from models.db import rowcount

log = logging.getLogger(__name__)

FINAL_FAILURE = "charge.final_failure"
ATTEMPT_FAILED = "charge.attempt_failed"
SUCCEEDED = "charge.succeeded"
AMOUNT_MISMATCH = "charge.amount_mismatch"
# Merchant alerts: our side (or NAVER's) needs a human; never sent to the customer.
CHARGE_HELD = "charge.held"  # a merchant-side fault holds the charge (credentials, our request)
CHARGE_STUCK = "charge.stuck"  # a charge's outcome stayed unsettled past its bound
EXPIRE_HELD = "subscription.expire_held"  # expiring a registration hit a merchant-side fault
EXPIRE_FAILED = "subscription.expire_failed"  # NAVER would not expire it; a human must check
# Refunds (issue 9): merchant events to the webhook only (never to the customer), sent
# whenever the merchant has a webhook; and two merchant alerts.
REFUND_SUCCEEDED = "refund.succeeded"  # NAVER accepted the cancel (Success or CancelNotComplete)
REFUND_FAILED = "refund.failed"  # NAVER refused it; its amount may be refunded again
REFUND_HELD = "refund.held"  # a merchant-side fault holds the refund (credentials, our request)
REFUND_STUCK = "refund.stuck"  # a refund stayed unsettled past its bound
# A reconciliation run left differences with NAVER's history for a human (merchant-level: the
# row has no subscription; its payload's merchant_id names the merchant).
RECONCILIATION_MISMATCH = "reconciliation.mismatch"
# Issue 9: a purchase confirm / point accrual NAVER refused (held: our setting; failed: gave up).
FOLLOWUP_HELD = "charge.followup_held"
FOLLOWUP_FAILED = "charge.followup_failed"
CONSENT_HELD = "charge.consent_held"  # amount above what the customer agreed to (consent rule)
ALERTS = frozenset({CHARGE_HELD, CHARGE_STUCK, EXPIRE_HELD, EXPIRE_FAILED, REFUND_HELD, REFUND_STUCK,
                    RECONCILIATION_MISMATCH, FOLLOWUP_HELD, FOLLOWUP_FAILED, CONSENT_HELD})
# notify_on names (merchant column) for the optional events; final failure is always sent.
OPTIONAL = {ATTEMPT_FAILED: "attempt_failed", SUCCEEDED: "succeeded", AMOUNT_MISMATCH: "amount_mismatch"}
KST = ZoneInfo("Asia/Seoul")
MAX_DELIVERIES = 8


def korean_text(event: str, charge: Charge, sub: Subscription) -> str:
    """The customer-facing sentence for ``event``."""
    product, amount = sub.product_name, f"{charge.amount:,}원"
    if event == SUCCEEDED:
        return f"[{product}] 정기결제 {amount}이 정상적으로 결제되었습니다."
    if event == ATTEMPT_FAILED:
        at = charge.next_attempt_at
        when = at.astimezone(KST).strftime("%Y-%m-%d %H:%M") if at else ""
        return (f"[{product}] 정기결제 {amount} 승인이 실패했습니다({charge.last_code}). "
                f"{when}에 다시 시도합니다. 결제수단의 잔액과 상태를 확인해 주세요.")
    if event == AMOUNT_MISMATCH:
        return f"[{product}] 정기결제 승인 금액이 요청 금액({amount})과 달라 확인이 필요합니다."
    tail = " 네이버페이 정기결제 등록이 해지되었습니다." if sub.status in ("revoking", "revoked") else ""
    return (f"[{product}] 정기결제 {amount}이 {charge.attempt_count}회 시도 끝에 최종 실패했습니다"
            f"({charge.last_code}).{tail} 결제수단을 확인하신 뒤 다시 신청해 주세요.")


def _payload(event: str, event_id: str, charge: Charge, sub: Subscription, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id, "event": event, "occurred_at": now.isoformat(),
        "merchant_id": sub.merchant_id,
        "subscription": {"id": sub.id, "recurrent_id": sub.recurrent_id, "status": sub.status,
                         "merchant_user_id": sub.merchant_user_id, "product_code": sub.product_code,
                         "product_name": sub.product_name},
        "charge": {"id": charge.id, "cycle_at": charge.cycle_at.isoformat(), "amount": charge.amount,
                   "status": charge.status, "attempt_count": charge.attempt_count,
                   "last_code": charge.last_code, "payment_id": charge.payment_id,
                   "next_attempt_at": charge.next_attempt_at.isoformat() if charge.next_attempt_at else None},
        "message": korean_text(event, charge, sub),
    }


def wanted(merchant: Merchant, event: str) -> bool:
    """Whether ``event`` produces an outbox row at all for this merchant (final failures
    always do); lets callers skip loading rows for events nobody listens to."""
    if event == FINAL_FAILURE:
        return True
    return OPTIONAL.get(event) in {part.strip() for part in (merchant.notify_on or "").split(",")}


def channels(merchant: Merchant, sub: Subscription, event: str) -> list[str]:
    """The channels ``event`` goes to for this merchant and customer."""
    if not wanted(merchant, event):
        return []
    found = []
    if merchant.webhook_url:
        found.append("webhook")
    if merchant.notify_email and sub.customer_email and event != AMOUNT_MISMATCH:
        found.append("email")
    return found


def queue(session: Session, event: str, charge: Charge, now: datetime) -> list[int]:
    """Add outbox rows for ``event`` in the caller's transaction; returns ids to deliver."""
    sub = session.get(Subscription, charge.subscription_id)
    assert sub is not None
    targets = channels(sub.merchant, sub, event)
    if not targets and event == FINAL_FAILURE:
        log.warning("charge %s failed finally but merchant %s has no notification channel",
                    charge.id, sub.merchant_id, extra={"charge_id": charge.id})
        targets = ["none"]
    rows = []
    for channel in targets:
        event_id = uuid.uuid4().hex
        rows.append(Notification(
            event_id=event_id, dedupe_key=f"{event}:{charge.id}:{charge.attempt_count}", event=event,
            channel=channel, subscription_id=sub.id, charge_id=charge.id,
            payload=json.dumps(_payload(event, event_id, charge, sub, now), ensure_ascii=False),
            status=NS.NO_CHANNEL if channel == "none" else NS.PENDING, created_at=now,
            lease_until=now + timedelta(minutes=2)))
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows if row.status == NS.PENDING]


def queue_alert(session: Session, event: str, sub: Subscription, now: datetime, *, dedupe: str,
                message: str, charge: Charge | None = None,
                details: dict[str, Any] | None = None) -> list[int]:
    """A merchant alert (``ALERTS``) in the caller's transaction: to the merchant's webhook when
    one is configured (never to the customer), always logged at error. At most one row per
    ``dedupe`` key; returns the ids to deliver."""
    assert event in ALERTS, event
    log.error("%s: %s", event, message, extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id,
                                               "charge_id": charge.id if charge else None})
    merchant = session.get(Merchant, sub.merchant_id)
    if merchant is None or not merchant.webhook_url:
        return []
    key = f"{event}:{dedupe}"
    if session.scalar(select(Notification.id).where(Notification.dedupe_key == key,
                                                    Notification.channel == "webhook")) is not None:
        return []
    event_id = uuid.uuid4().hex
    payload: dict[str, Any] = {
        "event_id": event_id, "event": event, "occurred_at": now.isoformat(), "merchant_id": sub.merchant_id,
        "subscription": {"id": sub.id, "recurrent_id": sub.recurrent_id, "status": sub.status},
        "message": message, "details": details or {}}
    if charge is not None:
        payload["charge"] = {"id": charge.id, "cycle_at": charge.cycle_at.isoformat(),
                             "amount": charge.amount, "status": charge.status, "last_code": charge.last_code,
                             "payment_id": charge.payment_id}
    row = Notification(event_id=event_id, dedupe_key=key, event=event, channel="webhook",
                       subscription_id=sub.id, charge_id=charge.id if charge else None,
                       payload=json.dumps(payload, ensure_ascii=False), status=NS.PENDING, created_at=now,
                       lease_until=now + timedelta(minutes=2))
    session.add(row)
    session.flush()
    return [row.id]


def queue_merchant_alert(session: Session, event: str, merchant: Merchant, now: datetime, *,
                         dedupe: str, message: str, details: dict[str, Any]) -> list[int]:
    """A merchant alert about no one subscription (reconciliation): webhook only, at most one
    row per ``dedupe`` key, always logged at error; returns the ids to deliver."""
    assert event in ALERTS, event
    log.error("%s: %s", event, message, extra={"merchant_id": merchant.id})
    key = f"{event}:{dedupe}"
    if not merchant.webhook_url or session.scalar(select(Notification.id).where(
            Notification.dedupe_key == key, Notification.channel == "webhook")) is not None:
        return []
    event_id = uuid.uuid4().hex
    payload = {"event_id": event_id, "event": event, "occurred_at": now.isoformat(),
               "merchant_id": merchant.id, "message": message, "details": details}
    row = Notification(event_id=event_id, dedupe_key=key, event=event, channel="webhook",
                       payload=json.dumps(payload, ensure_ascii=False), status=NS.PENDING,
                       created_at=now, lease_until=now + timedelta(minutes=2))
    session.add(row)
    session.flush()
    return [row.id]


# --- delivery -------------------------------------------------------------------------------

class Sender(Protocol):
    """Sends one notification; raises on failure."""

    def __call__(self, notification: Notification, merchant: Merchant, sub: Subscription | None) -> None: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` (the ``X-Npay-Billing-Signature`` header) is :func:`sign`'s value
    for ``body`` sent at ``timestamp``: what a receiver checks (``npay-billing inbox`` does)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class WebhookSender:
    """POSTs the payload to the merchant's webhook, signed."""

    http: httpx.Client
    clock: Callable[[], datetime]

    def __call__(self, notification: Notification, merchant: Merchant, sub: Subscription | None) -> None:
        assert merchant.webhook_url
        body = notification.payload.encode()
        timestamp = str(int(self.clock().timestamp()))
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "X-Npay-Billing-Event-Id": notification.event_id,
                   "X-Npay-Billing-Timestamp": timestamp}
        if merchant.webhook_secret:
            headers["X-Npay-Billing-Signature"] = sign(merchant.webhook_secret, timestamp, body)
        response = self.http.post(merchant.webhook_url, content=body, headers=headers)
        response.raise_for_status()


@dataclass(frozen=True)
class EmailSender:
    """Sends the Korean message to the customer over SMTP."""

    host: str
    port: int
    sender: str

    def __call__(self, notification: Notification, merchant: Merchant, sub: Subscription | None) -> None:
        assert sub is not None, "e-mails go to a subscription's customer"
        payload = json.loads(notification.payload)
        message = EmailMessage()
        message["From"], message["To"] = self.sender, sub.customer_email
        message["Subject"] = f"[{sub.product_name}] 정기결제 안내"
        message["X-Npay-Billing-Event-Id"] = notification.event_id
        message.set_content(payload["message"])
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.send_message(message)


def deliver(sessions: sessionmaker[Session], notification_id: int, senders: dict[str, Sender],
            clock: Callable[[], datetime], sleep: Callable[[float], None],
            lease: timedelta = timedelta(minutes=2)) -> str:
    """Claim, send and mark one notification; returns its status afterwards."""
    owner = uuid.uuid4().hex
    claimed = _claim(sessions, notification_id, owner, clock(), lease)
    if isinstance(claimed, str):
        return claimed
    row, merchant, sub = claimed
    try:
        Retrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=4),
                 sleep=sleep, reraise=True)(senders[row.channel], row, merchant, sub)
    except Exception as exc:  # noqa: BLE001 - any failure of a channel is recorded, retried later
        status = NS.FAILED if row.attempts >= MAX_DELIVERIES else NS.PENDING
        log.warning("notification %s (%s) not delivered: %s", notification_id, row.channel, exc)
        if _release(sessions, notification_id, owner, status=status,
                    last_error=f"{type(exc).__name__}: {exc}"[:2000],
                    lease_until=clock() + timedelta(seconds=30 * 2 ** min(row.attempts, 8))):
            return status
        return _status(sessions, notification_id)  # another delivery holds (or sent) it now
    if not _release(sessions, notification_id, owner, status=NS.SENT, sent_at=clock(), last_error=None):
        # Our claim ran out while we sent and another delivery took the row over: it sends
        # the same event_id again (at least once) and marks it itself.
        log.warning("notification %s sent, but its claim passed to another delivery meanwhile",
                    notification_id)
    return NS.SENT


def _claim(sessions: sessionmaker[Session], notification_id: int, owner: str, now: datetime,
           lease: timedelta) -> str | tuple[Notification, Merchant, Subscription | None]:
    """Take the row for ``owner`` (pending, or sending by an owner whose lease passed); the row
    with its merchant and subscription, or the row's status when someone else has it."""
    with sessions.begin() as s:
        claimed = rowcount(s.execute(
            update(Notification).where(
                Notification.id == notification_id,
                or_(Notification.status == NS.PENDING,
                    (Notification.status == NS.SENDING) & (Notification.lease_until < now)))
            .values(status=NS.SENDING, claim_owner=owner, lease_until=now + lease,
                    attempts=Notification.attempts + 1)
        ))
        row = s.get(Notification, notification_id, populate_existing=True)
        if row is None:
            return "missing"
        if not claimed:
            return row.status  # already sent, or a live delivery holds it
        if row.subscription_id is None:  # a merchant-level alert (queue_merchant_alert)
            merchant = s.get(Merchant, json.loads(row.payload)["merchant_id"])
            assert merchant is not None
            return row, merchant, None
        sub = s.get(Subscription, row.subscription_id)
        assert sub is not None
        return row, sub.merchant, sub


def _status(sessions: sessionmaker[Session], notification_id: int) -> str:
    with sessions() as s:
        return s.scalar(select(Notification.status).where(Notification.id == notification_id)) or "missing"


def _release(sessions: sessionmaker[Session], notification_id: int, owner: str, **values: Any) -> bool:
    """Write the delivery's result only if ``owner`` still holds the claim; whether it did."""
    with sessions.begin() as s:
        return bool(rowcount(s.execute(
            update(Notification).where(Notification.id == notification_id,
                                       Notification.status == NS.SENDING,
                                       Notification.claim_owner == owner)
            .values(claim_owner=None, **values))))
