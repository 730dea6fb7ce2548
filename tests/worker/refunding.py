"""A world for refund tests: a real database, the sandbox over HTTP, a succeeded charge to refund."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from models import ChargeAttempt, Notification, Refund
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from worker.charging import process_charge
from worker.naverpay.client import NaverPayClient
from worker.refund_requests import request_refund
from worker.refunds import RefundEngine, RefundOutcome, process_refund

WEBHOOK = "http://127.0.0.1:9/hook"  # never delivered here: the outbox rows are what is checked


class RefundWorld:
    """A database, the sandbox, one client (replaceable) and both engines, on a hand-moved clock."""

    def __init__(self, db: Any, sandbox_url: str, **client_overrides: Any) -> None:
        self.db, self.sandbox, self.url = db, Sandbox(sandbox_url), sandbox_url
        self.clock, self.sleeps = Clock(), Sleeps()
        self.client = make_client(sandbox_url, **client_overrides)
        self.charges = make_engine(db, self.client, self.clock, self.sleeps)
        # client_for reads self.client at call time, so a test can swap credentials.
        self.engine = RefundEngine(sessions=db.sessions, client_for=lambda _m: self.client,
                                   clock=self.clock, sleep=self.sleeps, settle=timedelta(seconds=60),
                                   wait_backoff=(2.0, 8.0), hold_backoff=(30.0, 60.0))
        db.sql("UPDATE merchants SET min_cycle_interval = '1s', webhook_url = :u WHERE id = 1", u=WEBHOOK)

    def close(self) -> None:
        self.client.close()

    def paid_charge(self, amount: int = 9900, tax_free: int = 0) -> int:
        """A charge the engine reserved and approved at the sandbox (money taken)."""
        recurrent_id = self.sandbox.register()
        cols = {"recurrent_id": recurrent_id, "merchant_user_id": "user-1", "product_code": "PLAN-M",
                "product_name": "월간 구독", "amount": amount, "tax_free_amount": tax_free,
                "cron": "* * * * * */5"}
        self.db.sql(f"INSERT INTO subscriptions ({', '.join(cols)}) "
                    f"VALUES ({', '.join(':' + c for c in cols)})", **cols)
        walk(self.db.sessions, self.clock())
        report = walk(self.db.sessions, self.clock.advance(seconds=5))
        (charge_id,) = report.new_charge_ids
        assert process_charge(self.charges, charge_id, "charger").status == "succeeded"
        # The subscription keeps billing otherwise; refunds are about this one charge.
        self.db.sql("UPDATE subscriptions SET status = 'paused' WHERE recurrent_id = :r", r=recurrent_id)
        return charge_id

    def request(self, charge_id: int, amount: int | None = None, **kwargs: Any) -> int:
        return request_refund(self.db.sessions, charge_id, self.clock(), amount=amount, **kwargs).id

    def run(self, refund_id: int, owner: str = "test") -> RefundOutcome:
        return process_refund(self.engine, refund_id, owner)

    def later(self, seconds: float) -> None:
        """Move our clock and the sandbox's together."""
        self.clock.advance(seconds=seconds)
        self.sandbox.advance_clock(seconds)

    def refund(self, refund_id: int) -> Refund:
        with self.db.sessions() as s:
            row = s.get(Refund, refund_id)
            assert row is not None
            return row

    def charge_row(self, charge_id: int) -> Any:
        return self.db.sql("SELECT status, approved_amount, refund_total, payment_id FROM charges "
                           "WHERE id = :i", i=charge_id)[0]

    def calls(self, refund_id: int) -> list[tuple[str, str, str | None, str | None]]:
        """(kind, outcome, code, key) of every NAVER call made for the refund."""
        with self.db.sessions() as s:
            rows = s.scalars(sa.select(ChargeAttempt).where(ChargeAttempt.refund_id == refund_id)
                             .order_by(ChargeAttempt.id))
            return [(a.kind, a.outcome, a.result_code, a.idempotency_key) for a in rows]

    def cancel_calls(self, refund_id: int) -> list[tuple[str, str | None, str | None]]:
        calls = self.calls(refund_id)
        return [(outcome, code, key) for kind, outcome, code, key in calls if kind == "cancel"]

    def events(self) -> list[tuple[str, str]]:
        with self.db.sessions() as s:
            return [(n.event, n.dedupe_key) for n in s.scalars(
                sa.select(Notification).where(Notification.event.like("refund.%")).order_by(Notification.id))]

    def naver_cancels(self, charge_id: int) -> list[dict[str, Any]]:
        """The successful cancel rows NAVER's history shows for the charge's payment."""
        payment_id = self.charge_row(charge_id).payment_id
        with make_client(self.url) as client:
            page = client.payment_history(payment_id=payment_id)
        return [{"amount": r.total_pay_amount, "key": r.merchant_pay_transaction_key,
                 "tax_free": r.tax_ex_scope_amount}
                for r in page.rows
                if r.admission_type_code in ("03", "04") and r.admission_state == "SUCCESS"]

    def outside_cancel(self, charge_id: int, amount: int) -> None:
        """A refund made without npay-billing (e.g. in NAVER Pay's merchant center)."""
        payment_id = self.charge_row(charge_id).payment_id
        with make_client(self.url) as client:
            client.cancel_payment(payment_id=payment_id, cancel_amount=amount, tax_scope_amount=amount,
                                  tax_ex_scope_amount=0, reason="outside", idempotency_key="outside-1")


def bad_credentials_client(url: str) -> NaverPayClient:
    return make_client(url, client_secret="wrong-secret")
