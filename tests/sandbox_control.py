"""The sandbox's ``/_sandbox`` control API, for tests and benchmarks (not part of NAVER's API)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx


class SandboxControl:
    """The sandbox's ``/_sandbox`` control API (not part of NAVER's API)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def _post(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.http.post(path, json=payload or {})
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    def register(self, behaviour: dict[str, Any] | None = None, *, user: str = "user-42",
                 product: str = "PLAN-M") -> str:
        """A VALID registration without the browser step; returns its recurrentId."""
        payload = {"merchantUserId": user, "productCode": product, "productName": "월간 구독",
                   "behaviour": behaviour or {}}
        return str(self._post("/_sandbox/registrations", payload)["recurrentId"])

    def register_at(self, registered: str, *, user: str = "user-42", product: str = "PLAN-M") -> str:
        """A VALID registration made at ``registered`` (``YYYYMMDDHHMMSS`` KST)."""
        payload = {"merchantUserId": user, "productCode": product, "productName": "월간 구독",
                   "behaviour": {}, "registYmdt": registered}
        return str(self._post("/_sandbox/registrations", payload)["recurrentId"])

    def end_registration(self, recurrent_id: str, reason: str = "고객이 네이버페이에서 해지") -> None:
        """The customer ends the registration inside NAVER Pay (EXPIRED, requester 1)."""
        self._post(f"/_sandbox/registrations/{recurrent_id}/expire", {"expireReason": reason})

    def authorize(self, reserve_id: str) -> str:
        """Stand in for the customer on NAVER's registration page; returns tempReceiptId."""
        return str(self._post(f"/_sandbox/registrations/{reserve_id}/authorize")["tempReceiptId"])

    def onetime_payment(self, amount: int = 5000) -> str:
        """A one-time payment the buyer authenticated, waiting for apply; returns paymentId."""
        payload = {"merchantPayKey": f"order-{uuid.uuid4().hex[:8]}", "productName": "단건",
                   "totalPayAmount": amount, "taxScopeAmount": amount, "taxExScopeAmount": 0,
                   "merchantUserKey": "user-42"}
        return str(self._post("/_sandbox/onetime-payments", payload)["paymentId"])

    def configure(self, **options: Any) -> None:
        """Change sandbox options (reset before each test by the ``sandbox_url`` fixture)."""
        self._post("/_sandbox/config", options)

    def faults(self, **faults: Any) -> None:
        """Inject transport faults (``apis=[...]`` limits them to those API paths)."""
        self._post("/_sandbox/faults", faults)

    def ledger(self, recurrent_id: str | None = None) -> dict[str, Any]:
        """Everything the sandbox did with money (optionally for one registration)."""
        params = {"recurrentId": recurrent_id} if recurrent_id else {}
        response = self.http.get("/_sandbox/ledger", params=params)
        response.raise_for_status()
        return dict(response.json())

    def payment(self, payment_id: str) -> dict[str, Any]:
        """One payment of the ledger."""
        (found,) = [p for p in self.ledger()["payments"] if p["paymentId"] == payment_id]
        return dict(found)

    def payments(self, recurrent_id: str) -> list[dict[str, Any]]:
        """Every payment of one registration."""
        return [p for p in self.ledger(recurrent_id)["payments"] if p["recurrentId"] == recurrent_id]

    def approved(self, recurrent_id: str) -> list[dict[str, Any]]:
        """The APPROVED payments of one registration (what was really charged)."""
        return [p for p in self.payments(recurrent_id) if p["state"] == "APPROVED"]

    def registration(self, recurrent_id: str) -> dict[str, Any]:
        """One registration as the sandbox sees it (VALID or EXPIRED)."""
        regs = self.ledger(recurrent_id)["registrations"]
        return dict(next(r for r in regs if r["recurrentId"] == recurrent_id))

    # -- refunds (issue 9) -------------------------------------------------------------------

    def cancel_script(self, *steps: dict[str, Any]) -> None:
        """What the next cancels do (a 5xx before/after the refund, a held answer, a code)."""
        self._post("/_sandbox/cancel-script", {"steps": list(steps)})

    def advance_clock(self, seconds: float) -> None:
        """Move the sandbox's clock forward (deferred cancels complete, keys expire)."""
        self._post("/_sandbox/clock", {"advanceSeconds": seconds})
    def inject(self, kind: str, **fields: Any) -> dict[str, Any]:
        """A reconciliation mismatch at NAVER (``sandbox.inject``): approval, amount, cancel, drop."""
        return dict(self._post("/_sandbox/inject", {"kind": kind, **fields}))

    def set_clock(self, moment: Any) -> None:
        """Move the sandbox clock so that it reads ``moment`` (an aware datetime) now."""
        from datetime import datetime

        from sandbox.clock import parse_ymdt

        now = parse_ymdt(self.http.get("/_sandbox/clock").json()["now"])
        self._post("/_sandbox/clock", {"advanceSeconds": (moment - now).total_seconds()})
        assert isinstance(moment, datetime)
