"""Registration sync: customers end registrations inside NAVER Pay; billing must notice.

NAVER Pay tells nobody when a customer removes a registration in its app. The only way to
learn it is the registration list (``recurrent/v1/list``), which filters by **registration
time** in windows of at most 31 days and pages (100 rows at most per page). So the sync
*sweeps* it, per merchant, with ``state=EXPIRED``::

    registration_sync row (one per merchant; created on first run:
        since = earliest created_at of the merchant's billable subscriptions - 31 days)

    run (its own beat entry, every BILLING_REGISTRATION_SYNC_INTERVAL s; never part of the walk,
         so a failing list call can never stop billing):
      claim the row (lease_until: one run per merchant at a time)
      up to ``max_pages`` pages:
        window = [window_start, min(window_start + 31 d - 1 s, now)], page ``page``
        every EXPIRED row that is one of the merchant's subscriptions still billable
        (active, paused, invalid, expire_failed) -> end_subscription
        more pages? page + 1.  else: window_start = window end + 1 s, page 1
        window end reached now? sweep done: last_sweep_at = now, window_start = since again
      a NAVER error: last_error (merchant-side faults logged at error), the cursor stays; the
      next run reads the same page again (reading twice is harmless)

    end_subscription (one transaction, compare-and-set on the status):
      subscription -> revoked, revoke_reason registration_ended, last_error says when
      its pending / retry_wait / reserved charges -> canceled (cancel wins; a charge in flight
      is stopped by the engine's own status reads, an approval is resolved through history)
      outbox: one ``registration.ended`` webhook event to the merchant (deduplicated)

Rows appear in the list oldest first, and an ended registration never becomes valid again,
so a page read twice or a row pushed to the next page by a new expiry is harmless: nothing is
skipped. A registration ended in a window already swept is found by the next sweep.

``check_registration`` is the one read the charge engine makes before retrying a declined
charge (worker/charging.py): is this registration still valid at NAVER?
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import Charge, ChargeStatus, Merchant, Notification, RegistrationSync, Subscription
from models import NotificationStatus as NS
from models import RevokeReason as RR
from models import SubscriptionStatus as SS
from models.db import rowcount
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import MerchantSideError, NaverPayError
from worker.naverpay.results import Registration, RegistrationPage

log = logging.getLogger(__name__)

REGISTRATION_ENDED = "registration.ended"
# Subscriptions a registration's end concerns: the ones that could still be billed (or, for
# expire_failed, that a human is told to check: NAVER's list settles it).
ENDABLE = (SS.ACTIVE, SS.PAUSED, SS.INVALID, SS.EXPIRE_FAILED)
CANCELABLE = (ChargeStatus.PENDING, ChargeStatus.RETRY_WAIT, ChargeStatus.RESERVED)
WINDOW = timedelta(days=31) - timedelta(seconds=1)  # NAVER: at most 31 days, ends inclusive
ROWS_PER_PAGE = 100

ClientFor = Callable[[Merchant], NaverPayClient]


@dataclass(frozen=True)
class SyncConfig:
    """How much one periodic run reads (per merchant) and how long it may hold the cursor."""

    max_pages: int = 5
    lease: timedelta = timedelta(minutes=5)
    rows_per_page: int = ROWS_PER_PAGE  # NAVER's maximum


@dataclass
class Ended:
    """One subscription revoked because NAVER lists its registration as ended."""

    subscription_id: int
    recurrent_id: str
    expired_at: datetime | None
    canceled_charge_ids: list[int]


@dataclass
class MerchantSync:
    """What one run did for one merchant."""

    merchant_id: int
    pages: int = 0
    rows: int = 0  # EXPIRED registrations read
    ended: list[Ended] = field(default_factory=list)
    window_start: datetime | None = None  # where the next run continues
    page: int = 1  # the page of that window
    swept: bool = False  # this run reached now
    error: str | None = None
    skipped: str | None = None  # why nothing was read (busy, nothing to sync)


@dataclass
class SyncReport:
    """A run over every merchant; ``notification_ids`` are delivered after the commits."""

    merchants: list[MerchantSync] = field(default_factory=list)
    notification_ids: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``registrations sync --json`` document (see the README); datetimes are left to
        the caller's encoder (the CLI writes ISO-8601 UTC)."""
        return {
            "ended": [{"subscription_id": e.subscription_id, "recurrent_id": e.recurrent_id,
                       "merchant_id": m.merchant_id,
                       "expired_at": e.expired_at,
                       "canceled_charge_ids": e.canceled_charge_ids}
                      for m in self.merchants for e in m.ended],
            "merchants": [{"merchant_id": m.merchant_id, "pages": m.pages, "expired_rows": m.rows,
                           "ended": len(m.ended), "swept_to_now": m.swept,
                           "next_window_start": m.window_start,
                           "error": m.error, "skipped": m.skipped} for m in self.merchants],
        }


def sync_registrations(sessions: sessionmaker[Session], client_for: ClientFor, now: datetime,
                       config: SyncConfig = SyncConfig()) -> SyncReport:
    """The periodic pass: every merchant with billable subscriptions, a few pages each, from
    where its last run stopped. Never raises for one merchant's failure."""
    report = SyncReport()
    now = now.replace(microsecond=0)
    for merchant_id in _merchants(sessions):
        try:
            result = _run_cursor(sessions, client_for, merchant_id, now, config, report)
        except Exception as exc:  # noqa: BLE001 - one merchant never stops the others
            log.exception("registration sync of merchant %s failed", merchant_id)
            result = MerchantSync(merchant_id, error=f"{type(exc).__name__}: {exc}"[:500])
        report.merchants.append(result)
    return report


def sync_by_hand(sessions: sessionmaker[Session], client_for: ClientFor, now: datetime,
                 since: datetime | None = None, max_pages: int = 10_000,
                 rows_per_page: int = ROWS_PER_PAGE) -> SyncReport:
    """``npay-billing registrations sync``: one whole sweep per merchant from ``since`` (or the
    merchant's stored/default start) to now, every page; the periodic cursor is not moved."""
    report = SyncReport()
    now = now.replace(microsecond=0)
    for merchant_id in _merchants(sessions):
        start = since or _default_since(sessions, merchant_id, now)
        result = MerchantSync(merchant_id)
        try:
            with sessions() as s:
                merchant = s.get(Merchant, merchant_id)
                assert merchant is not None
                client = client_for(merchant)
            _sweep(sessions, client, result, start.replace(microsecond=0), 1, now, max_pages,
                   rows_per_page, report)
        except NaverPayError as exc:
            result.error = _describe(exc)
            _log_error(merchant_id, exc)
        report.merchants.append(result)
    return report


def _merchants(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as s:
        return list(s.scalars(select(Subscription.merchant_id)
                              .where(Subscription.status.in_(ENDABLE)).distinct()
                              .order_by(Subscription.merchant_id)))


def _default_since(sessions: sessionmaker[Session], merchant_id: int, now: datetime) -> datetime:
    """The stored start of the merchant's sweep, or a month before its oldest billable row
    (a registration is made before the merchant inserts its subscription)."""
    with sessions() as s:
        stored = s.scalar(select(RegistrationSync.since).where(RegistrationSync.merchant_id == merchant_id))
        if stored is not None:
            return stored
        oldest = s.scalar(select(func.min(Subscription.created_at))
                          .where(Subscription.merchant_id == merchant_id, Subscription.status.in_(ENDABLE)))
    return ((oldest or now) - timedelta(days=31)).replace(microsecond=0)


def _run_cursor(sessions: sessionmaker[Session], client_for: ClientFor, merchant_id: int,
                now: datetime, config: SyncConfig, report: SyncReport) -> MerchantSync:
    result = MerchantSync(merchant_id)
    cursor = _claim(sessions, merchant_id, now, config)
    if cursor is None:
        result.skipped = "another run holds this merchant's sync"
        return result
    since, window_start, page = cursor
    try:
        with sessions() as s:
            merchant = s.get(Merchant, merchant_id)
            assert merchant is not None
            client = client_for(merchant)
        window_start, page = _sweep(sessions, client, result, window_start, page, now,
                                    config.max_pages, config.rows_per_page, report)
    except NaverPayError as exc:
        window_start, page = result.window_start or window_start, result.page
        result.error = _describe(exc)
        _log_error(merchant_id, exc)
    finally:
        _release(sessions, merchant_id, since, window_start, page, now, result)
    return result


def _sweep(sessions: sessionmaker[Session], client: NaverPayClient, result: MerchantSync,
           window_start: datetime, page: int, now: datetime, max_pages: int, rows_per_page: int,
           report: SyncReport) -> tuple[datetime, int]:
    """Read pages from (window_start, page) on; returns where the next read starts. Keeps
    ``result.window_start`` and ``result.page`` current, so an error resumes at the page that
    failed."""
    while result.pages < max_pages:
        if window_start > now:  # nothing can be registered after now (a start set ahead by hand)
            result.swept, result.window_start = True, None
            return window_start, 1
        result.window_start = window_start
        result.page = page
        end = min(window_start + WINDOW, now)
        found = client.list_registrations(start=window_start, end=end, state="EXPIRED",
                                          page=page, rows_per_page=rows_per_page)
        result.pages += 1
        result.rows += len(found.registrations)
        _end_listed(sessions, result, found.registrations, now, report)
        if found.registrations and page < found.total_page_count:
            page += 1
            continue
        if end >= now:
            result.swept = True
            result.window_start = None
            return window_start, 1  # the caller starts the next sweep over
        window_start, page = end + timedelta(seconds=1), 1
    result.window_start, result.page = window_start, page
    return window_start, page


def _end_listed(sessions: sessionmaker[Session], result: MerchantSync, rows: Iterable[Registration],
                now: datetime, report: SyncReport) -> None:
    expired = {row.recurrent_id: row for row in rows if (row.recurrent_state or "").upper() == "EXPIRED"}
    if not expired:
        return
    with sessions.begin() as s:
        subs = list(s.scalars(select(Subscription).where(
            Subscription.merchant_id == result.merchant_id, Subscription.recurrent_id.in_(list(expired)),
            Subscription.status.in_(ENDABLE))))
        for sub in subs:
            row = expired[sub.recurrent_id]
            ended = end_subscription(s, sub, now, row.expire_ymdt, report.notification_ids)
            if ended is not None:
                result.ended.append(ended)


def end_subscription(s: Session, sub: Subscription, now: datetime, expired_at: datetime | None,
                     notification_ids: list[int]) -> Ended | None:
    """NAVER lists ``sub``'s registration as ended: revoke it, cancel its pending charges, and
    queue ``registration.ended``, in the caller's transaction. None if its status moved
    meanwhile (compare-and-set)."""
    when = f" at {expired_at.isoformat()}" if expired_at else ""
    note = f"the customer ended the registration in NAVER Pay{when} (registration list)"
    moved = rowcount(s.execute(
        update(Subscription).where(Subscription.id == sub.id, Subscription.status.in_(ENDABLE))
        .values(status=SS.REVOKED, seen_status=SS.REVOKED, revoke_reason=RR.REGISTRATION_ENDED,
                expire_next_at=None, last_error=note, updated_at=now)
        .execution_options(synchronize_session=False)))
    if not moved:
        return None
    charge_ids = list(s.scalars(select(Charge.id).where(Charge.subscription_id == sub.id,
                                                        Charge.status.in_(CANCELABLE))))
    if charge_ids:
        s.execute(update(Charge).where(Charge.id.in_(charge_ids), Charge.status.in_(CANCELABLE))
                  .values(status=ChargeStatus.CANCELED, next_attempt_at=None, updated_at=now,
                          reason="the registration was ended in NAVER Pay; pending attempt canceled")
                  .execution_options(synchronize_session=False))
    s.refresh(sub)
    notification_ids += _queue_event(s, sub, now, expired_at, charge_ids)
    log.warning("subscription %s revoked: %s", sub.id, note,
                extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})
    return Ended(sub.id, sub.recurrent_id, expired_at, charge_ids)


def _queue_event(s: Session, sub: Subscription, now: datetime, expired_at: datetime | None,
                 charge_ids: list[int]) -> list[int]:
    """One ``registration.ended`` webhook row for the merchant (none without a webhook)."""
    merchant = s.get(Merchant, sub.merchant_id)
    key = f"{REGISTRATION_ENDED}:{sub.id}"
    if merchant is None or not merchant.webhook_url or s.scalar(
            select(Notification.id).where(Notification.dedupe_key == key)) is not None:
        return []
    event_id = uuid.uuid4().hex
    payload = {
        "event_id": event_id, "event": REGISTRATION_ENDED, "occurred_at": now.isoformat(),
        "merchant_id": sub.merchant_id,
        "subscription": {"id": sub.id, "recurrent_id": sub.recurrent_id, "status": sub.status,
                         "merchant_user_id": sub.merchant_user_id, "product_code": sub.product_code,
                         "product_name": sub.product_name, "revoke_reason": sub.revoke_reason},
        "registration": {"expired_at": expired_at.isoformat() if expired_at else None},
        "canceled_charge_ids": charge_ids,
        "message": (f"[{sub.product_name}] 고객이 네이버페이에서 정기결제 등록을 해지했습니다. "
                    "구독이 종료되었습니다."),
    }
    row = Notification(event_id=event_id, dedupe_key=key, event=REGISTRATION_ENDED, channel="webhook",
                       subscription_id=sub.id, payload=json.dumps(payload, ensure_ascii=False),
                       status=NS.PENDING, created_at=now, lease_until=now + timedelta(minutes=2))
    s.add(row)
    s.flush()
    return [row.id]


def _claim(sessions: sessionmaker[Session], merchant_id: int, now: datetime,
           config: SyncConfig) -> tuple[datetime, datetime, int] | None:
    """Take the merchant's cursor for one run (created on first use); None if a run holds it."""
    since = _default_since(sessions, merchant_id, now)
    with sessions.begin() as s:
        if s.get(RegistrationSync, merchant_id) is None:
            s.add(RegistrationSync(merchant_id=merchant_id, since=since, window_start=since, page=1))
            s.flush()
    with sessions.begin() as s:
        moved = rowcount(s.execute(
            update(RegistrationSync).where(
                RegistrationSync.merchant_id == merchant_id,
                or_(RegistrationSync.lease_until.is_(None), RegistrationSync.lease_until < now))
            .values(lease_until=now + config.lease)
            .execution_options(synchronize_session=False)))
        if not moved:
            return None
        row = s.get(RegistrationSync, merchant_id)
        assert row is not None
        if row.sweep_started_at is None or row.window_start <= row.since:
            row.sweep_started_at = now
        return row.since, max(row.window_start, row.since), row.page


def _release(sessions: sessionmaker[Session], merchant_id: int, since: datetime, window_start: datetime,
             page: int, now: datetime, result: MerchantSync) -> None:
    values: dict[str, Any] = {"lease_until": None, "last_run_at": now, "last_error": result.error,
                              "window_start": window_start, "page": page}
    if result.swept:
        values.update(window_start=since, page=1, last_sweep_at=now, sweep_started_at=None)
    with sessions.begin() as s:
        s.execute(update(RegistrationSync).where(RegistrationSync.merchant_id == merchant_id)
                  .values(ended_found=RegistrationSync.ended_found + len(result.ended), **values)
                  .execution_options(synchronize_session=False))


def _describe(exc: NaverPayError) -> str:
    return f"{exc.code or type(exc).__name__}: {exc}"[:500]


def _log_error(merchant_id: int, exc: NaverPayError) -> None:
    level = logging.ERROR if isinstance(exc, MerchantSideError) else logging.WARNING
    log.log(level, "registration sync of merchant %s: the list call failed (%s); the next run "
            "reads the same page again", merchant_id, _describe(exc))


# --- the charge engine's check before a retry -------------------------------------------------

@dataclass(frozen=True)
class RegistrationCheck:
    """What NAVER's list says about one registration: ended (with when), or not."""

    ended: bool
    expired_at: datetime | None = None
    state: str | None = None


def check_registration(client: NaverPayClient, recurrent_id: str) -> RegistrationCheck:
    """One read of one registration's state (raises the client's errors; the caller decides:
    a failed read never blocks a retry)."""
    return registration_state(client.list_registrations(recurrent_id=recurrent_id), recurrent_id)


def registration_state(page: RegistrationPage, recurrent_id: str) -> RegistrationCheck:
    """What a list answer says about ``recurrent_id``. Only a row NAVER shows ``EXPIRED``
    counts as ended (a registration NAVER does not list is not concluded from: the reserve
    will say)."""
    rows = [row for row in page.registrations if row.recurrent_id == recurrent_id]
    if not rows:
        return RegistrationCheck(ended=False, state="absent")
    state = (rows[0].recurrent_state or "").upper()
    return RegistrationCheck(ended=state == "EXPIRED", expired_at=rows[0].expire_ymdt, state=state)
