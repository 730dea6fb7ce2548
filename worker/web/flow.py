"""What a registration carries from its start to ``returnUrl``: the plan, the customer, and for
CHANGE the subscription whose payment means is replaced.

:class:`Flow` is the state token's payload, typed. :func:`Flow.from_payload` rejects a payload
that lacks a field or has one of the wrong type, naming it (a token is signed, so this only
happens across incompatible versions, but bad input never crashes the return endpoint).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

Action = Literal["NEW", "CHANGE"]


class FlowError(ValueError):
    """A payload that is not a valid flow (names the field)."""


@dataclass(frozen=True)
class Plan:
    """Something the merchant sells by subscription (the demo page's catalog)."""

    code: str
    name: str
    amount: int  # won per cycle
    cron: str
    description: str
    tax_free_amount: int = 0
    timezone: str = "Asia/Seoul"


DEMO_PLANS: tuple[Plan, ...] = (
    Plan("PLAN-M", "월간 구독", 9900, "0 9 1 * *", "매월 1일 오전 9시 결제"),
    Plan("PLAN-Y", "연간 구독", 99000, "0 9 1 1 *", "매년 1월 1일 오전 9시 결제"),
    # Bills every 10 seconds: for `make run`, whose demo merchant allows 5-second cycles.
    Plan("PLAN-DEMO", "데모 구독 (10초마다)", 1000, "* * * * * */10", "10초마다 결제 (데모용)"),
)


@dataclass(frozen=True)
class Flow:
    """One start of the registration flow: everything the return must not take from the query."""

    action: Action
    merchant_id: int
    product_code: str
    product_name: str
    amount: int
    nonce: str | None = None  # always set in a token; None for `registrations complete`
    merchant_user_id: str = ""
    customer_email: str | None = None
    customer_name: str | None = None
    tax_free_amount: int = 0
    cron: str = ""
    timezone: str = "Asia/Seoul"
    subscription_id: int | None = None  # CHANGE only
    target_recurrent_id: str | None = None  # CHANGE only: the registration being replaced

    def to_payload(self) -> dict[str, Any]:
        """The token payload (``exp`` is added by the signer)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Flow:
        """The flow a verified token carries; FlowError naming a missing or mistyped field."""
        values: dict[str, Any] = {}
        for name, kind, required in _FIELDS:
            value = payload.get(name)
            if value is None:
                if required:
                    raise FlowError(f"the state token lacks {name}")
                continue
            if not isinstance(value, kind) or isinstance(value, bool):
                raise FlowError(f"the state token's {name} is not a {kind.__name__}")
            values[name] = value
        if values["action"] not in ("NEW", "CHANGE"):
            raise FlowError(f"the state token's action is {values['action']!r}, not NEW or CHANGE")
        flow = cls(**values)
        if flow.action == "CHANGE" and (flow.subscription_id is None or not flow.target_recurrent_id):
            raise FlowError("a CHANGE state token needs subscription_id and target_recurrent_id")
        if flow.action == "NEW" and (not flow.merchant_user_id or not flow.cron):
            raise FlowError("a NEW state token needs merchant_user_id and cron")
        return flow


_FIELDS: tuple[tuple[str, type, bool], ...] = (
    ("action", str, True), ("nonce", str, True), ("merchant_id", int, True),
    ("product_code", str, True), ("product_name", str, True), ("amount", int, True),
    ("merchant_user_id", str, False), ("customer_email", str, False),
    ("customer_name", str, False), ("tax_free_amount", int, False), ("cron", str, False),
    ("timezone", str, False), ("subscription_id", int, False),
    ("target_recurrent_id", str, False),
)
