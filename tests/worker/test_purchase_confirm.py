"""거래완료 (purchase confirm) and 포인트 적립 (point accrual) after a success (issue 9).

Against the real sandbox over HTTP (which models the merchant's contract: a call outside it is
InvalidMerchantType, a second one AlreadyComplete) and both databases: the calls are made only
when the merchant's settings require them, after the configured delay, at most once at NAVER
whatever is lost or retried, with their results recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from models import ChargeAttempt, ChargeFollowup, Notification
from scheduler.walk import walk
from tests.worker.billing import Clock, Sandbox, Sleeps, make_client, make_engine
from tests.worker.cli_helpers import cli, cli_json
from worker.charging import process_charge
from worker.followups import FollowupPolicy, followup_key, needed, run_followups


class World:
    def __init__(self, db, sandbox_url):
        self.db, self.sandbox, self.url = db, Sandbox(sandbox_url), sandbox_url
        self.clock, self.sleeps = Clock(), Sleeps()
        self.client = make_client(sandbox_url)
        self.engine = make_engine(db, self.client, self.clock, self.sleeps)
        db.sql("UPDATE merchants SET min_cycle_interval = '1s', webhook_url = 'http://127.0.0.1:9/h' "
               "WHERE id = 1")

    def contract(self, settlement: str, points: str, delay: str = "0s", sandbox: bool = True) -> None:
        """The merchant's row (and, unless told otherwise, the sandbox's contract) say this."""
        self.db.sql("UPDATE merchants SET settlement_basis = :s, point_basis = :p, followup_delay = :d "
                    "WHERE id = 1", s=settlement, p=points, d=delay)
        if sandbox:
            self.sandbox.configure(settlementBasis=settlement, pointBasis=points)

    def succeeded(self, behaviour: dict | None = None) -> int:
        rid = self.sandbox.register(behaviour=behaviour)
        self.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name,"
                    " amount, cron) VALUES (:r, 'user-1', 'PLAN-M', '월간 구독', 9900, '* * * * * */5')",
                    r=rid)
        walk(self.db.sessions, self.clock())
        (charge_id,) = walk(self.db.sessions, self.clock.advance(seconds=5)).new_charge_ids
        assert process_charge(self.engine, charge_id, "t").status == "succeeded"
        return charge_id

    def run(self, **policy: Any):
        return run_followups(self.db.sessions, lambda _m: self.client, self.clock(), FollowupPolicy(**policy))

    def rows(self, charge_id: int) -> dict[str, ChargeFollowup]:
        with self.db.sessions() as s:
            return {f.kind: f for f in s.scalars(sa.select(ChargeFollowup)
                                                 .where(ChargeFollowup.charge_id == charge_id))}

    def payment(self, charge_id: int) -> dict:
        (pid,) = self.db.sql("SELECT payment_id FROM charges WHERE id = :i", i=charge_id)[0]
        return self.sandbox.payment(pid)

    def calls(self, charge_id: int, kind: str) -> list[tuple[str, str | None, str | None]]:
        with self.db.sessions() as s:
            return [(a.outcome, a.result_code, a.idempotency_key) for a in s.scalars(
                sa.select(ChargeAttempt)
                .where(ChargeAttempt.charge_id == charge_id, ChargeAttempt.kind == kind)
                .order_by(ChargeAttempt.id))]

    def alerts(self, event: str) -> list[dict]:
        with self.db.sessions() as s:
            return [json.loads(p) for p in s.scalars(sa.select(Notification.payload)
                                                     .where(Notification.event == event))]


@pytest.fixture
def world(db, sandbox_url):
    w = World(db, sandbox_url)
    yield w
    w.client.close()


@pytest.mark.parametrize(("settlement", "points", "kinds"), [
    ("payment_date", "auto", []),
    ("trade_confirm", "auto", ["confirm"]),
    ("payment_date", "trade_confirm", ["confirm"]),
    ("payment_date", "manual", ["accrual"]),
    ("trade_confirm", "trade_confirm", ["confirm"]),
    ("trade_confirm", "manual", ["confirm"]),  # points by hand need payment-date settlement
])
def test_the_contract_decides_which_calls_are_owed(settlement, points, kinds):
    assert needed(settlement, points) == kinds


def test_default_contract_calls_nothing(world):
    charge_id = world.succeeded()

    report = world.run()

    assert world.rows(charge_id) == {} and report.done == []
    assert world.payment(charge_id)["confirmRequests"] == 0


def test_trade_confirm_merchant_confirms_each_success_once(world):
    world.contract("trade_confirm", "auto")
    charge_id = world.succeeded()
    assert world.rows(charge_id)["confirm"].status == "pending"

    report = world.run()
    again = world.run()  # nothing left to do: never a second call

    row = world.rows(charge_id)["confirm"]
    assert report.done == [row.id] and again.done == []
    assert row.status == "done" and row.naver_time is not None and row.done_at == world.clock()
    payment = world.payment(charge_id)
    assert payment["confirmRequests"] == 1 and payment["tradeConfirmYmdt"]
    assert [c[:2] for c in world.calls(charge_id, "confirm")] == [("ok", "Success")]


def test_manual_points_merchant_accrues_each_success_once(world):
    world.contract("payment_date", "manual")
    charge_id = world.succeeded()

    world.run()
    world.run()

    assert world.rows(charge_id)["accrual"].status == "done"
    payment = world.payment(charge_id)
    assert payment["accrualRequests"] == 1 and payment["pointSaved"] and payment["confirmRequests"] == 0


def test_the_calls_wait_for_the_configured_delay(world):
    world.contract("trade_confirm", "auto", delay="1h")
    charge_id = world.succeeded()

    assert world.run().done == []
    world.clock.advance(minutes=61)
    assert len(world.run().done) == 1
    assert world.payment(charge_id)["confirmRequests"] == 1


def test_an_answer_we_lost_is_never_a_second_confirm(world):
    world.contract("trade_confirm", "auto")
    charge_id = world.succeeded()
    payment_id = world.payment(charge_id)["paymentId"]
    # NAVER confirmed it, the answer was lost (same key: NAVER replays it).
    key = followup_key(payment_id, "confirm", 0)
    world.client.purchase_confirm(payment_id=payment_id, idempotency_key=key)

    world.run()

    row = world.rows(charge_id)["confirm"]
    assert row.status == "done" and row.last_message == "replayed answer"
    assert world.payment(charge_id)["confirmRequests"] == 1


def test_confirmed_elsewhere_counts_as_done(world):
    world.contract("payment_date", "manual")
    charge_id = world.succeeded()
    payment_id = world.payment(charge_id)["paymentId"]
    world.client.save_naverpoint(payment_id=payment_id, idempotency_key="by-the-merchant-admin")

    world.run()

    row = world.rows(charge_id)["accrual"]
    assert row.status == "done" and row.last_code == "AlreadyComplete"
    assert world.payment(charge_id)["accrualRequests"] == 1


def test_an_outage_is_retried_with_the_same_key(world):
    world.contract("trade_confirm", "auto")
    charge_id = world.succeeded()
    world.sandbox.faults(errorRate=1.0, errorStatus=503, apis=["v1/purchase-confirm"])

    report = world.run()
    row = world.rows(charge_id)["confirm"]
    assert report.waiting == [row.id] and row.status == "pending" and row.attempts == 1
    assert row.next_at > world.clock()
    world.sandbox.faults()
    world.clock.now = row.next_at
    world.run()

    keys = {key for _, _, key in world.calls(charge_id, "confirm")}
    assert len(keys) == 1 and world.rows(charge_id)["confirm"].status == "done"
    assert world.payment(charge_id)["confirmRequests"] == 1


def test_a_setting_that_contradicts_the_contract_is_held_and_alerted(world):
    world.contract("trade_confirm", "auto", sandbox=False)  # NAVER's contract: payment date
    charge_id = world.succeeded()

    report = world.run()

    row = world.rows(charge_id)["confirm"]
    assert report.held == [row.id] and row.status == "held" and row.attempts == 0 and row.key_round == 1
    assert row.last_code == "InvalidMerchantType"
    (alert,) = world.alerts("charge.followup_held")
    assert alert["charge"]["id"] == charge_id and "settlement_basis" in alert["message"]
    # The contract is fixed at NAVER: the held row goes through after its delay, once.
    world.sandbox.configure(settlementBasis="trade_confirm")
    world.clock.now = row.next_at
    world.run()
    assert world.rows(charge_id)["confirm"].status == "done"
    assert world.payment(charge_id)["confirmRequests"] == 1


def test_refusals_end_in_failed_and_a_human_is_told(world):
    world.contract("trade_confirm", "auto")
    charge_id = world.succeeded()
    world.db.sql("UPDATE charges SET payment_id = '20261128NP0000000000' WHERE id = :i", i=charge_id)

    world.run(max_attempts=2)
    world.clock.advance(hours=1)
    report = world.run(max_attempts=2)

    row = world.rows(charge_id)["confirm"]
    assert report.failed == [row.id] and row.status == "failed" and row.attempts == 2
    assert row.last_code == "InvalidPaymentId"
    assert len(world.alerts("charge.followup_failed")) == 1


def test_cli_shows_the_state_and_the_cash_receipt_amount(world):
    world.contract("trade_confirm", "auto")
    charge_id = world.succeeded(behaviour={"payMeans": "BANK"})
    env = {"NAVERPAY_API_BASE": world.url}
    pending = cli(world.db.url, "charges", "show", str(charge_id))
    world.run()

    shown = cli(world.db.url, "charges", "show", str(charge_id))
    data = cli_json(world.db.url, "charges", "show", str(charge_id))
    cash = cli_json(world.db.url, "charges", "cash-amount", str(charge_id), env=env)
    human = cli(world.db.url, "charges", "cash-amount", str(charge_id), env=env)

    assert "purchase confirm (거래완료)" in pending.output and "pending" in pending.output
    assert "purchase confirm (거래완료)" in shown.output and "done" in shown.output
    (followup,) = data["followups"]
    assert followup["kind"] == "confirm" and followup["status"] == "done" and followup["naver_time"]
    assert cash == {"charge_id": charge_id, "payment_id": world.payment(charge_id)["paymentId"],
                    "total_cash_amount": 9900, "supply_cash_amount": 9000, "vat_cash_amount": 900}
    assert "9,900원" in human.output and "현금영수증" in human.output


def test_cli_cash_amount_of_a_charge_that_did_not_succeed_is_refused(world):
    world.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
                 "amount, cron) VALUES ('RE-X', 'u', 'P', 'n', 9900, '0 9 1 * *')")
    world.db.sql("INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount) "
                 "VALUES (1, 'RE-X', '2026-11-01 00:00:00', 'NPB-X', 9900)")

    result = cli(world.db.url, "charges", "cash-amount", "1", env={"NAVERPAY_API_BASE": world.url})

    assert result.exit_code == 1 and "only a succeeded charge" in result.output
