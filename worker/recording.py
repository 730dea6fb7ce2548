"""Every NAVER Pay call a charge makes is written to ``charge_attempts``, redacted.

The raw body is kept (tests and operators need it) minus personal data: card and account
numbers, approval numbers and user keys are replaced by ``"***"``. The client secret never
reaches a response body, and request headers are never recorded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models import ChargeAttempt
from worker.naverpay.errors import NaverPayError

SENSITIVE = frozenset({
    "cardNo", "cardAuthNo", "bankAccountNo", "primaryPayMeansNo", "userIdentifier",
    "merchantUserKey", "merchantUserId",
})
RAW_LIMIT = 4000


def redact(value: Any) -> Any:
    """A copy of ``value`` with the personal fields masked, recursively."""
    if isinstance(value, Mapping):
        return {k: ("***" if k in SENSITIVE and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redacted_text(raw: Any) -> str | None:
    """The body as redacted JSON text (or the raw text, cut, when it was not JSON)."""
    if raw is None:
        return None
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except ValueError:
            return str(raw)[:RAW_LIMIT]
    return json.dumps(redact(raw), ensure_ascii=False)[:RAW_LIMIT]


def record_attempt(
    session: Session, *, kind: str, key: str | None, charge_id: int | None = None,
    subscription_id: int | None = None, attempt_no: int = 0, result: Any = None,
    error: BaseException | None = None, elapsed: float | None = None, at: datetime | None = None,
) -> ChargeAttempt:
    """Add one ``charge_attempts`` row for a call that returned ``result`` or raised ``error``."""
    row = ChargeAttempt(charge_id=charge_id, subscription_id=subscription_id,
                        attempt_no=attempt_no, kind=kind, idempotency_key=key,
                        elapsed_ms=None if elapsed is None else int(elapsed * 1000))
    if at is not None:  # the caller's (injectable) clock; the database's own clock otherwise
        row.created_at = at
    if error is None:
        row.outcome, row.result_code = "ok", getattr(result, "code", "Success")
        row.message = getattr(result, "message", None)
        row.raw_body = redacted_text(getattr(result, "raw", None))
        row.http_status = 409 if getattr(result, "replayed", False) else 200
    elif isinstance(error, NaverPayError):
        row.outcome = type(error).__name__.removesuffix("Error").lower()
        row.result_code, row.http_status = error.code, error.http_status
        row.message, row.raw_body = str(error)[:RAW_LIMIT], redacted_text(error.raw)
    else:
        row.outcome, row.message = "error", f"{type(error).__name__}: {error}"[:RAW_LIMIT]
    session.add(row)
    return row
