"""A whole charge (walk, reserve, approve) with and without a chain id, against the sandbox.

The client is built per merchant row by ``worker.runtime.merchant_config``, as the worker does,
so these also show which chain id a ``merchants`` row makes the worker send.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models import Charge, Merchant
from scheduler.walk import walk
from tests.conftest import Database
from tests.worker.billing import Clock, Sandbox, Sleeps
from worker.charging import ChargeEngine, process_charge
from worker.naverpay import NaverPayClient, NaverPayConfig
from worker.runtime import merchant_config

pytestmark = pytest.mark.integration


class Billing:
    """SQLite, the sandbox, and clients made from the merchant rows like the worker's."""

    def __init__(self, db: Database, sandbox_url: str, base: NaverPayConfig) -> None:
        self.db, self.sandbox, self.clock = db, Sandbox(sandbox_url), Clock()
        self.base = base
        self.configs: list[NaverPayConfig] = []
        self.clients: list[NaverPayClient] = []
        self.engine = ChargeEngine(sessions=db.sessions, client_for=self.client_for,
                                   clock=self.clock, sleep=Sleeps())
        db.sql("UPDATE merchants SET min_cycle_interval = '1s' WHERE id = 1")

    def client_for(self, merchant: Merchant) -> NaverPayClient:
        config = merchant_config(self.base, merchant)
        self.configs.append(config)
        self.clients.append(NaverPayClient(config))
        return self.clients[-1]

    def charge_once(self, **merchant: Any) -> tuple[Charge, str]:
        if merchant:
            sets = ", ".join(f"{k} = :{k}" for k in merchant)
            self.db.sql(f"UPDATE merchants SET {sets} WHERE id = 1", **merchant)
        recurrent_id = self.sandbox.register()
        self.db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, "
                    "product_name, amount, cron) VALUES (:r, 'user-1', 'PLAN-M', '월간 구독', "
                    "9900, '* * * * * */5')", r=recurrent_id)
        walk(self.db.sessions, self.clock())
        (charge_id,) = walk(self.db.sessions, self.clock.advance(seconds=5)).new_charge_ids
        process_charge(self.engine, charge_id, "chain-test")
        with self.db.sessions() as session:
            charge = session.get(Charge, charge_id)
            assert charge is not None
            return charge, recurrent_id

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def billing(sqlite_db: Database, sandbox_url: str) -> Iterator[Billing]:
    world = Billing(sqlite_db, sandbox_url, NaverPayConfig(
        api_base=sandbox_url, read_timeout=5.0, approval_timeout=5.0))
    yield world
    world.close()


def test_a_charge_succeeds_without_any_chain_id(billing: Billing) -> None:
    charge, recurrent_id = billing.charge_once()

    assert charge.status == "succeeded" and charge.approved_amount == 9900
    assert {c.chain_id for c in billing.configs} == {None}
    assert [p["state"] for p in billing.sandbox.ledger(recurrent_id)["payments"]] == ["APPROVED"]


def test_a_merchant_rows_chain_id_is_sent(billing: Billing) -> None:
    billing.sandbox.configure(requireChainId=True, chainIds=["group-a"])

    charge, recurrent_id = billing.charge_once(chain_id="group-a")

    assert charge.status == "succeeded"
    assert {c.chain_id for c in billing.configs} == {"group-a"}
    assert [p["state"] for p in billing.sandbox.ledger(recurrent_id)["payments"]] == ["APPROVED"]
