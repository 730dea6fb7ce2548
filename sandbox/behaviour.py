"""Per-registration scripts: what approvals against one ``recurrentId`` do.

A test creates a registration with ``behaviour`` (``POST /_sandbox/registrations``) and every
approval request consumes the script in a fixed order: server errors first, then declines, then
"charge but answer too late", then plain approvals. Only approvals that would otherwise be
processed consume a step (``AlreadyComplete`` or ``TimeExpired`` answers do not).
``reserveCode`` and ``expireCode`` make every reserve / expire of the registration answer that
code (HTTP 200) until the script is replaced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

_KEYS = {
    "serverErrorTimes": "server_error_times",
    "serverErrorStatus": "server_error_status",
    "declineCode": "decline_code",
    "declineTimes": "decline_times",
    "timeoutAfterCommitTimes": "timeout_after_commit_times",
    "timeoutSeconds": "timeout_seconds",
    "latencyMs": "latency_ms",
    "reserveCode": "reserve_code",
    "expireCode": "expire_code",
    "payMeans": "pay_means",
    "cardCorpCode": "card_corp_code",
}


class Step(Enum):
    """What one approval request does."""

    SERVER_ERROR = "server-error"
    DECLINE = "decline"
    COMMIT_THEN_HOLD = "commit-then-hold"
    APPROVE = "approve"


@dataclass(slots=True)
class Behaviour:
    """The remaining script of one registration (counters count down as they are used)."""

    server_error_times: int = 0
    server_error_status: int = 500
    decline_code: str | None = None
    decline_times: int | None = None  # None with a decline_code: decline every approval
    timeout_after_commit_times: int = 0
    timeout_seconds: float = 30.0
    latency_ms: int = 0
    reserve_code: str | None = None
    expire_code: str | None = None  # the expire API answers this code (HTTP 200) instead
    pay_means: str = "CARD"
    card_corp_code: str = "C0"

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Behaviour:
        """Parse the control API's ``behaviour`` object; ValueError names the bad member."""
        behaviour = cls()
        for key, value in (data or {}).items():
            name = _KEYS.get(key)
            if name is None:
                raise ValueError(f"unknown behaviour member {key!r}")
            setattr(behaviour, name, _check(key, value))
        return behaviour

    def next_step(self) -> Step:
        """Consume one step of the script for an approval that is about to be processed."""
        if self.server_error_times > 0:
            self.server_error_times -= 1
            return Step.SERVER_ERROR
        if self.decline_code is not None and self.decline_times is None:
            return Step.DECLINE
        if self.decline_code is not None and self.decline_times:
            self.decline_times -= 1
            return Step.DECLINE
        if self.timeout_after_commit_times > 0:
            self.timeout_after_commit_times -= 1
            return Step.COMMIT_THEN_HOLD
        return Step.APPROVE

    def to_json(self) -> dict[str, Any]:
        """The remaining script, in the control API's names."""
        return {key: getattr(self, name) for key, name in _KEYS.items()}


def _check(key: str, value: Any) -> Any:
    if key in ("declineCode", "reserveCode", "expireCode"):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{key} must be a non-empty string or null")
        return value
    if key == "payMeans":
        if value not in ("CARD", "BANK"):
            raise ValueError("payMeans must be CARD or BANK")
        return value
    if key == "cardCorpCode":
        if not isinstance(value, str) or not value:
            raise ValueError("cardCorpCode must be a non-empty string")
        return value
    if key == "declineTimes" and value is None:
        return None
    return _non_negative(key, value)


def _non_negative(key: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    if key == "timeoutSeconds":
        return float(value)
    if value != int(value):
        raise ValueError(f"{key} must be a whole number")
    if key == "serverErrorStatus" and not 500 <= value <= 599:
        raise ValueError("serverErrorStatus must be a 5xx status")
    return int(value)
