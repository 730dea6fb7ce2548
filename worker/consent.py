"""The worker's side of the consent rule: notices, consent links, recording consent, alerts.

The gate itself (what a cycle may be billed) is :mod:`scheduler.consent`; this module does
what needs the outbox (:mod:`worker.notify`), run by the walk task after each walk
(:func:`after_walk`, each part its own transaction, a failing part never stops the others)::

    price_changes pending, a raise, effective within 30 days, notice not sent
        -> outbox: webhook ``price_change.notice`` + Korean e-mail (price, date, what happens
           without consent, how to cancel, the consent link); notice_sent_at = now (once)
    subscriptions whose upcoming_notice_at has come (merchant ``upcoming_notice_days``)
        -> outbox: ``charge.upcoming`` (webhook and/or e-mail), once per (subscription,
           cycle), only when the consent gate would bill that cycle
    charges consent_held whose alert is due (next_attempt_at <= now)
        -> merchant alert ``charge.consent_held`` (webhook), next_attempt_at = NULL

Consent arrives through the link (:mod:`worker.consent_web`, a signed token: HMAC-SHA256 with
``BILLING_CONSENT_SECRET``, with an expiry) or the CLI (``npay-billing consent record``), both
through :func:`record_consent`. A subscription the rule paused for that change is resumed (the
walk bills from its next cycle after now). Not legal advice: a safe default.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import (
    Charge,
    ChargeStatus,
    ConsentMissing,
    Merchant,
    Notification,
    PriceChange,
    PriceChangeKind,
    Subscription,
)
from models import NotificationStatus as NS
from models import PriceChangeStatus as PCS
from models import SubscriptionStatus as SS
from scheduler.consent import BILL, NOTICE_WINDOW
from scheduler.consenting import open_changes, verdict_for
from scheduler.planning import reschedule_reason
from worker import notify

log = logging.getLogger(__name__)

PRICE_CHANGE_NOTICE = "price_change.notice"
UPCOMING = "charge.upcoming"
LINK_TTL = timedelta(days=60)
NO_LINK = " 동의는 판매자에게 연락해 주세요."  # the notice's words when it carries no link


class ConsentError(Exception):
    """Consent cannot be recorded (or a link read); the message says why."""


@dataclass(frozen=True)
class ConsentConfig:
    """Where consent links point and how they are signed (None: notices carry no link)."""

    secret: str | None = None
    public_url: str = "http://127.0.0.1:8060"  # npay-billing web's default address
    link_ttl: timedelta = LINK_TTL


# --- signed links ----------------------------------------------------------------------------

def _mac(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_token(secret: str, change_id: int, expires_at: datetime) -> str:
    """``<change id>.<expiry, unix>.<HMAC>``: names the change, cannot be forged or extended."""
    body = f"{change_id}.{int(expires_at.timestamp())}"
    return f"{body}.{_mac(secret, 'consent:' + body)}"


def read_token(secret: str, token: str, now: datetime) -> int:
    """The change id a token names; ConsentError when it is malformed, forged or expired."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ConsentError("this consent link is not valid")
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(secret, "consent:" + body), parts[2]):
        raise ConsentError("this consent link is not valid")
    if now.timestamp() > int(parts[1]):
        raise ConsentError("this consent link has expired; ask the shop for a new one")
    return int(parts[0])


def consent_url(config: ConsentConfig, change_id: int, now: datetime) -> str | None:
    """The link the notice carries (None when no secret is configured)."""
    if not config.secret:
        return None
    token = make_token(config.secret, change_id, now + config.link_ttl)
    return f"{config.public_url.rstrip('/')}/consent/{token}"


# --- recording consent -----------------------------------------------------------------------

def record_consent(session: Session, change_id: int, now: datetime, via: str) -> PriceChange:
    """Record the customer's consent to price change ``change_id`` (idempotent). Resumes the
    subscription when the rule paused it for this change."""
    change = session.get(PriceChange, change_id, with_for_update=True)
    if change is None:
        raise ConsentError(f"no price change with id {change_id}")
    if change.status == PCS.CANCELED:
        raise ConsentError(f"price change {change_id} was withdrawn by the shop; nothing to consent to")
    if change.consented_at is None:
        change.consented_at, change.consent_via = now, via[:100]
        if change.status == PCS.PENDING:
            change.status = PCS.CONSENTED
        change.updated_at = now
        log.info("price change %s: consent recorded (%s)", change_id, via)
    sub = session.get(Subscription, change.subscription_id)
    assert sub is not None
    if change.paused_at is not None and sub.status == SS.PAUSED:
        sub.status, sub.last_error, sub.updated_at = SS.ACTIVE, None, now  # the walk resumes it
        change.paused_at = None
        log.info("subscription %s resumed: consent to price change %s recorded", sub.id, change_id)
    session.flush()
    return change


def record_consent_to_amount(session: Session, sub_id: int, amount: int, now: datetime,
                             via: str) -> PriceChange:
    """Consent given by other means to a subscription's amount (e.g. after ``UPDATE
    subscriptions SET amount``): a consented change, effective from its oldest held cycle
    (so that cycle is billed) or now."""
    sub = session.get(Subscription, sub_id)
    if sub is None:
        raise ConsentError(f"no subscription with id {sub_id}")
    if amount <= 0:
        raise ConsentError(f"the amount must be a positive number of won, got {amount}")
    held = session.scalar(select(func.min(Charge.cycle_at)).where(
        Charge.subscription_id == sub_id, Charge.status == ChargeStatus.CONSENT_HELD))
    change = PriceChange(subscription_id=sub_id, new_amount=amount, effective_at=min(now, held or now),
                         status=PCS.PENDING, old_amount=sub.agreed_amount, notice_sent_at=None,
                         created_at=now, updated_at=now)
    session.add(change)
    session.flush()
    return record_consent(session, change.id, now, via)


# --- notices ---------------------------------------------------------------------------------

def _kst(moment: datetime) -> str:
    return moment.astimezone(notify.KST).strftime("%Y-%m-%d")


def notice_text(change: PriceChange, sub: Subscription, merchant: Merchant, old: int,
                link: str | None) -> str:
    """The Korean notice: what changes, from when, what happens without consent, how to cancel."""
    product, new, when = sub.product_name, f"{change.new_amount:,}원", _kst(change.effective_at)
    if change.kind == PriceChangeKind.TRIAL:
        head = (f"[{product}] 무료 체험이 {when}에 종료됩니다. 이후 정기결제 금액은 {new}입니다. "
                "유료 전환에는 고객님의 동의가 필요합니다.")
        without = "동의하지 않으시면 유료 결제는 진행되지 않습니다."
    else:
        head = (f"[{product}] 정기결제 금액이 {when}부터 {old:,}원에서 {new}으로 변경될 예정입니다. "
                "변경된 금액의 결제에는 고객님의 동의가 필요합니다.")
        without = f"동의하지 않으시면 기존 금액({old:,}원)으로 계속 결제됩니다."
    if merchant.consent_missing == ConsentMissing.PAUSE:
        without = "동의하지 않으시면 해당 일자부터 구독이 일시 중지되며 결제되지 않습니다."
    agree = f" 동의하기: {link}" if link else NO_LINK
    cancel = (" 해지를 원하시면 언제든지 판매자 고객센터 또는 네이버페이에서 정기결제를 해지하실 수 있으며, "
              "변경일 전에 해지하시면 변경된 금액은 청구되지 않습니다.")
    return head + " " + without + agree + cancel


def _channels(merchant: Merchant, sub: Subscription) -> list[str]:
    found = ["webhook"] if merchant.webhook_url else []
    if merchant.notify_email and sub.customer_email:
        found.append("email")
    return found


def _outbox(session: Session, event: str, dedupe: str, sub: Subscription, payload: dict[str, Any],
            now: datetime, channels: list[str], charge_id: int | None = None) -> list[int]:
    """One outbox row per channel, at most once per ``dedupe`` key (the unique constraint
    backs the check when two walks race); ids to deliver."""
    ids = []
    for channel in channels:
        if session.scalar(select(Notification.id).where(Notification.dedupe_key == dedupe,
                                                        Notification.channel == channel)) is not None:
            continue
        event_id = uuid.uuid4().hex
        row = Notification(event_id=event_id, dedupe_key=dedupe, event=event, channel=channel,
                           subscription_id=sub.id, charge_id=charge_id,
                           payload=json.dumps({**payload, "event_id": event_id}, ensure_ascii=False),
                           status=NS.NO_CHANNEL if channel == "none" else NS.PENDING, created_at=now,
                           lease_until=now + timedelta(minutes=2))
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue  # another walk queued it first
        if row.status == NS.PENDING:
            ids.append(row.id)
    return ids


def _sub_json(sub: Subscription) -> dict[str, Any]:
    return {"id": sub.id, "recurrent_id": sub.recurrent_id, "status": sub.status,
            "merchant_user_id": sub.merchant_user_id, "product_code": sub.product_code,
            "product_name": sub.product_name}


def queue_price_notices(session: Session, now: datetime, config: ConsentConfig, limit: int) -> list[int]:
    """Notices of raises (and trial ends) effective within the next 30 days, once each."""
    rows = list(session.scalars(
        select(PriceChange).where(PriceChange.status == PCS.PENDING, PriceChange.notice_sent_at.is_(None),
                                  PriceChange.effective_at <= now + NOTICE_WINDOW)
        .order_by(PriceChange.effective_at).limit(limit).with_for_update(skip_locked=True)))
    ids: list[int] = []
    for change in rows:
        sub = session.get(Subscription, change.subscription_id)
        if sub is None or sub.agreed_amount is None:
            continue  # the walk has not seen the subscription yet: next time
        change.updated_at = change.notice_sent_at = now
        if sub.status in (SS.CANCELED, SS.REVOKING, SS.REVOKED, SS.EXPIRE_FAILED):
            change.note = f"no notice: the subscription is {sub.status}"
            continue
        if change.new_amount <= sub.agreed_amount:
            change.note = "not a raise: applies without consent, no notice required"
            continue
        old = sub.agreed_amount
        change.old_amount = old
        merchant = sub.merchant
        link = consent_url(config, change.id, now)
        payload = {"event": PRICE_CHANGE_NOTICE, "occurred_at": now.isoformat(),
                   "merchant_id": sub.merchant_id, "subscription": _sub_json(sub),
                   "price_change": {"id": change.id, "kind": change.kind, "old_amount": old,
                                    "new_amount": change.new_amount,
                                    "effective_at": change.effective_at.isoformat(),
                                    "consent_missing": merchant.consent_missing},
                   "consent_url": link, "message": notice_text(change, sub, merchant, old, link)}
        channels = _channels(merchant, sub) or ["none"]
        if channels == ["none"]:
            log.warning("price change %s: merchant %s has no channel for the notice; record the "
                        "customer's consent with `npay-billing consent record`", change.id, merchant.id)
        ids += _outbox(session, PRICE_CHANGE_NOTICE, f"{PRICE_CHANGE_NOTICE}:{change.id}", sub, payload,
                       now, channels)
    return ids


def queue_upcoming_notices(session: Session, now: datetime, limit: int) -> list[int]:
    """``charge.upcoming`` N days before each cycle the gate would bill, once per cycle."""
    subs = list(session.scalars(
        select(Subscription).where(Subscription.upcoming_notice_at <= now)
        .order_by(Subscription.upcoming_notice_at).limit(limit)
        .with_for_update(skip_locked=True, of=Subscription)).unique())
    changes = open_changes(session, [s.id for s in subs])
    ids: list[int] = []
    for sub in subs:
        days, cycle = sub.merchant.upcoming_notice_days, sub.next_charge_at
        sub.upcoming_notice_at = None
        if not days or cycle is None or cycle <= now or sub.status != SS.ACTIVE:
            continue
        if cycle - timedelta(days=days) > now:  # next_charge_at was moved by hand: later
            sub.upcoming_notice_at = cycle - timedelta(days=days)
            continue
        verdict = verdict_for(sub, changes[sub.id], cycle)
        if reschedule_reason(sub) is not None or verdict.action != BILL:
            log.info("subscription %s: no upcoming notice for cycle %s (it will not be billed: %s)",
                     sub.id, cycle, verdict.reason or "schedule changed")
            continue
        text = (f"[{sub.product_name}] {cycle.astimezone(notify.KST):%Y-%m-%d %H:%M}에 정기결제 "
                f"{verdict.amount:,}원이 결제될 예정입니다. 해지를 원하시면 결제일 전에 판매자 고객센터 또는 "
                "네이버페이에서 해지하실 수 있습니다.")
        payload = {"event": UPCOMING, "occurred_at": now.isoformat(), "merchant_id": sub.merchant_id,
                   "subscription": _sub_json(sub),
                   "charge": {"cycle_at": cycle.isoformat(), "amount": verdict.amount}, "message": text}
        ids += _outbox(session, UPCOMING, f"{UPCOMING}:{sub.id}:{cycle.astimezone(UTC):%Y%m%d%H%M%S}", sub,
                       payload, now, _channels(sub.merchant, sub))
    return ids


def alert_consent_held(session: Session, now: datetime, limit: int) -> list[int]:
    """The merchant alert of charges the walk created ``consent_held``, once each."""
    held = list(session.scalars(
        select(Charge).where(Charge.status == ChargeStatus.CONSENT_HELD, Charge.next_attempt_at <= now)
        .limit(limit).with_for_update(skip_locked=True, of=Charge)).unique())
    ids: list[int] = []
    for charge in held:
        charge.next_attempt_at = None
        ids += notify.queue_alert(
            session, notify.CONSENT_HELD, charge.subscription, now, dedupe=str(charge.id), charge=charge,
            message=(f"charge {charge.id} (cycle {charge.cycle_at.isoformat()}) is held for the customer's "
                     f"consent: {charge.reason}. Record the consent (`npay-billing consent record "
                     f"--subscription {charge.subscription_id} --amount {charge.amount}`) or lower the "
                     "amount; it is skipped when the next cycle comes due."),
            details={"amount": charge.amount, "agreed_amount": charge.agreed_amount})
    return ids


def after_walk(sessions: sessionmaker[Session], now: datetime, config: ConsentConfig,
               limit: int = 500) -> list[int]:
    """Everything above, each part its own transaction; the outbox ids to deliver."""
    parts: list[tuple[str, Callable[[Session], list[int]]]] = [
        ("price notices", lambda s: queue_price_notices(s, now, config, limit)),
        ("upcoming notices", lambda s: queue_upcoming_notices(s, now, limit)),
        ("consent alerts", lambda s: alert_consent_held(s, now, limit)),
    ]
    ids: list[int] = []
    for name, part in parts:
        try:
            with sessions.begin() as session:
                ids += part(session)
        except Exception:  # noqa: BLE001 - one part failing never stops the others
            log.exception("consent step %r failed; retried on the next walk", name)
    return ids
