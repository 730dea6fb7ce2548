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


def attempt_values(
    *, kind: str, key: str | None, charge_id: int | None = None, subscription_id: int | None = None,
    attempt_no: int = 0, result: Any = None, error: BaseException | None = None,
    elapsed: float | None = None, at: datetime | None = None,
) -> dict[str, Any]:
    """The column values of one ``charge_attempts`` row for a call that returned ``result`` or
    raised ``error`` (for a Core INSERT; :func:`record_attempt` wraps them in a model)."""
    values: dict[str, Any] = {
        "charge_id": charge_id, "subscription_id": subscription_id, "attempt_no": attempt_no,
        "kind": kind, "idempotency_key": key, "elapsed_ms": None if elapsed is None else int(elapsed * 1000)}
    if at is not None:  # the caller's (injectable) clock; the database's own clock otherwise
        values["created_at"] = at
    if error is None:
        values["outcome"], values["result_code"] = "ok", getattr(result, "code", "Success")
        values["message"] = getattr(result, "message", None)
        values["raw_body"] = redacted_text(getattr(result, "raw", None))
        values["http_status"] = 409 if getattr(result, "replayed", False) else 200
    elif isinstance(error, NaverPayError):
        values["outcome"] = type(error).__name__.removesuffix("Error").lower()
        values["result_code"], values["http_status"] = error.code, error.http_status
        values["message"], values["raw_body"] = str(error)[:RAW_LIMIT], redacted_text(error.raw)
    else:
        values["outcome"], values["message"] = "error", f"{type(error).__name__}: {error}"[:RAW_LIMIT]
        values["result_code"] = values["http_status"] = values["raw_body"] = None
    return values


def record_attempt(
    session: Session, *, kind: str, key: str | None, charge_id: int | None = None,
    subscription_id: int | None = None, attempt_no: int = 0, result: Any = None,
    error: BaseException | None = None, elapsed: float | None = None, at: datetime | None = None,
) -> ChargeAttempt:
    """Add one ``charge_attempts`` row for a call that returned ``result`` or raised ``error``."""
    row = ChargeAttempt(**attempt_values(kind=kind, key=key, charge_id=charge_id,
                                         subscription_id=subscription_id, attempt_no=attempt_no,
                                         result=result, error=error, elapsed=elapsed, at=at))
    session.add(row)
    return row
