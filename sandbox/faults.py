"""Global fault injection (``POST /_sandbox/faults``): latency, random 5xx, random maintenance.

Faults apply to every NAVER API call, or only to the paths listed in ``apis`` (never to
``/_sandbox/*``), and draw from a seeded random
generator, so a benchmark or a flaky-network test repeats exactly with the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.codes import Answer, Code, fail, server_error

_KEYS = {
    "latencyMs": "latency_ms",
    "errorRate": "error_rate",
    "errorStatus": "error_status",
    "maintenanceRate": "maintenance_rate",
    "seed": "seed",
    "apis": "apis",
}


@dataclass(slots=True)
class Faults:
    """The active global faults; the default injects nothing."""

    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 500
    maintenance_rate: float = 0.0
    seed: int | None = None
    apis: tuple[str, ...] = ()  # only these API paths (e.g. "recurrent/v1/list"); () = every API
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Faults:
        """Parse the control API body (``{}`` means no faults); ValueError names the bad member."""
        faults = cls()
        for key, value in data.items():
            name = _KEYS.get(key)
            if name is None:
                raise ValueError(f"unknown fault member {key!r}")
            setattr(faults, name, _check(key, value))
        faults.rng = random.Random(faults.seed)
        return faults

    def draw(self, api: str = "") -> Answer | None:
        """The injected answer for this request to ``api``, or None to process it normally."""
        if self.apis and api not in self.apis:
            return None
        if self.error_rate and self.rng.random() < self.error_rate:
            return server_error(self.error_status)
        if self.maintenance_rate and self.rng.random() < self.maintenance_rate:
            return fail(Code.MAINTENANCE_ONGOING)
        return None

    def to_json(self) -> dict[str, Any]:
        """The active faults in the control API's names."""
        values = {key: getattr(self, name) for key, name in _KEYS.items()}
        values["apis"] = list(self.apis)
        return values


def _check(key: str, value: Any) -> Any:
    if key == "apis":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ValueError("apis must be a list of API paths, e.g. [\"recurrent/v1/list\"]")
        return tuple(value)
    if key == "seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("seed must be an integer or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number")
    if key in ("errorRate", "maintenanceRate"):
        if value > 1:
            raise ValueError(f"{key} must be between 0 and 1")
        return float(value)
    if key == "errorStatus" and value not in (500, 502, 503, 504):
        raise ValueError("errorStatus must be 500, 502, 503 or 504")
    return int(value)


_STEP_KEYS = {"status", "code", "afterCommit", "holdSeconds"}


@dataclass(frozen=True, slots=True)
class CancelStep:
    """What one ``v1/cancel`` request does instead of (or after) being processed.

    * ``status`` without ``afterCommit``: answer that HTTP 5xx, refund nothing;
    * ``status`` with ``afterCommit``: refund, store the real answer under the idempotency key
      (NAVER did it), then answer the 5xx (a gateway error on the way back);
    * ``holdSeconds`` with ``afterCommit``: refund, store the answer, send it only after that
      many seconds (the client's read timeout loses it);
    * ``code``: answer that NAVER code (HTTP 200) and refund nothing (a code the sandbox's own
      state would not produce here, e.g. ``OverRemainAmount`` when ``doCompareRest`` is sent).
    """

    status: int | None = None
    code: str | None = None
    after_commit: bool = False
    hold_seconds: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> CancelStep:
        """One step of ``POST /_sandbox/cancel-script``; ValueError names what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("each cancel step must be an object")
        unknown = set(data) - _STEP_KEYS
        if unknown:
            raise ValueError(f"unknown cancel step member {sorted(unknown)[0]!r}")
        status, code = data.get("status"), data.get("code")
        after, hold = data.get("afterCommit", False), data.get("holdSeconds", 0)
        if status is not None and (isinstance(status, bool) or status not in range(500, 600)):
            raise ValueError("status must be an HTTP 5xx status")
        if code is not None and (not isinstance(code, str) or not code):
            raise ValueError("code must be a non-empty string")
        if not isinstance(after, bool):
            raise ValueError("afterCommit must be true or false")
        if isinstance(hold, bool) or not isinstance(hold, int | float) or hold < 0:
            raise ValueError("holdSeconds must be a non-negative number")
        if (status is None) == (code is None) and not (after and hold):
            raise ValueError("give exactly one of status or code (or afterCommit with holdSeconds)")
        if code is not None and after:
            raise ValueError("a code step refunds nothing; afterCommit applies to status/holdSeconds")
        if hold and not after:
            raise ValueError("holdSeconds needs afterCommit (an answer held after the refund)")
        return cls(status=status, code=code, after_commit=after, hold_seconds=float(hold))

    def to_json(self) -> dict[str, Any]:
        """The step in the control API's names."""
        return {"status": self.status, "code": self.code, "afterCommit": self.after_commit,
                "holdSeconds": self.hold_seconds}


def cancel_script(data: Mapping[str, Any]) -> list[CancelStep]:
    """``{"steps": [...]}`` -> the steps the next cancel requests consume, in order."""
    steps = data.get("steps", [])
    if not isinstance(steps, list):
        raise ValueError("steps must be a list")
    return [CancelStep.from_json(step) for step in steps]
