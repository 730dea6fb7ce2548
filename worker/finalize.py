"""The final action ``expire``: end the registration at NAVER Pay, then mark it ``revoked``.

Runs as its own task after the charge's final failure committed the subscription as
``revoking``. The expire call uses a key derived from the registration, so resends are
replays. If NAVER cannot be reached the row stays ``revoking`` and the walk retries it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from models import Merchant, Subscription
from models import SubscriptionStatus as SS
from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import NaverPayError, PermanentError, TransientError, UnknownOutcomeError
from worker.recording import record_attempt

log = logging.getLogger(__name__)
EXPIRE_REASON = "정기결제 승인이 반복 실패하여 가맹점이 등록을 해지합니다."


def expire_key(recurrent_id: str) -> str:
    """The idempotency key of the one expire call a registration ever gets."""
    return "NPBexpire-" + hashlib.sha256(recurrent_id.encode()).hexdigest()[:40]


def expire_registration(
    sessions: sessionmaker[Session], client_for: Callable[[Merchant], NaverPayClient],
    subscription_id: int, clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Expire a ``revoking`` subscription's registration; returns the subscription's status."""
    with sessions() as s:
        sub = s.get(Subscription, subscription_id)
        if sub is None or sub.status != SS.REVOKING:
            return sub.status if sub else "missing"
    key = expire_key(sub.recurrent_id)

    def call() -> object:
        started = time.monotonic()
        try:
            result = client_for(sub.merchant).expire_registration(
                recurrent_id=sub.recurrent_id, reason=EXPIRE_REASON, idempotency_key=key)
        except Exception as exc:
            _record(sessions, sub, key, error=exc, elapsed=time.monotonic() - started)
            raise
        _record(sessions, sub, key, result=result, elapsed=time.monotonic() - started)
        return result

    note = None
    try:
        Retrying(stop=stop_after_attempt(3), wait=wait_exponential(multiplier=0.5, max=8), sleep=sleep,
                 retry=retry_if_exception_type((TransientError, UnknownOutcomeError)), reraise=True)(call)
    except PermanentError as exc:
        # NAVER refuses to expire it (already expired, unknown id): either way it cannot be
        # charged again; keep NAVER's words for the operator.
        note = f"expire answered {exc.code}: {exc}"
    except NaverPayError as exc:
        log.warning("expire of subscription %s not confirmed yet: %s", sub.id, exc)
        return SS.REVOKING
    with sessions.begin() as s:
        s.execute(update(Subscription).where(Subscription.id == sub.id, Subscription.status == SS.REVOKING)
                  .values(status=SS.REVOKED, updated_at=clock(),
                          last_error=note or sub.last_error))
    log.info("registration of subscription %s expired at NAVER Pay", sub.id,
             extra={"subscription_id": sub.id, "recurrent_id": sub.recurrent_id})
    return SS.REVOKED


def _record(sessions: sessionmaker[Session], sub: Subscription, key: str, **kw: object) -> None:
    with sessions.begin() as s:
        record_attempt(s, kind="expire", key=key, subscription_id=sub.id, **kw)  # type: ignore[arg-type]
