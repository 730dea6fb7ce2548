"""``npay-billing refund``: store with the over-refund guard, a real message to a real redis-server,
and ``--wait`` following the refund while a thread stands in for the worker (the real engine
against the sandbox over HTTP)."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import redis

from tests.worker.cli_helpers import cli, cli_json
from tests.worker.refunding import RefundWorld

CLOSED_BROKER = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}


@pytest.fixture
def broker(redis_service):
    client = redis.Redis.from_url(redis_service.url)
    client.flushdb()
    yield {"CELERY_BROKER_URL": redis_service.url}, client
    client.close()


@pytest.fixture
def world(db, sandbox_url):
    w = RefundWorld(db, sandbox_url)
    yield w
    w.close()


def _messages(client: redis.Redis) -> list[tuple[str, list]]:
    found = []
    for raw in client.lrange("celery", 0, -1):
        message = json.loads(raw)
        found.append((message["headers"]["task"], json.loads(base64.b64decode(message["body"]))[0]))
    return found


def test_refund_json_stores_the_refund_and_sends_its_id(world, broker):
    env, client = broker
    charge_id = world.paid_charge(9900)
    data = cli_json(world.db.url, "refund", str(charge_id), "--amount", "3000", "--reason", "부분 환불",
                    env=env)
    refund = data["refund"]
    assert (refund["amount"], refund["tax_free_amount"], refund["tax_scope_amount"]) == (3000, 0, 3000)
    assert refund["status"] == "requested" and refund["reason"] == "부분 환불"
    assert refund["idempotency_key"].startswith("rf")
    assert data["charge"]["refund_total"] == 3000 and data["charge"]["refundable_amount"] == 6900
    assert data["charge"]["refunded_amount"] == 0
    assert _messages(client) == [("worker.refund_charge", [refund["id"]])]


def test_over_refund_is_refused_before_anything_is_sent(world):
    charge_id = world.paid_charge(9900)
    result = cli(world.db.url, "refund", str(charge_id), "--amount", "10000", env=CLOSED_BROKER)
    assert result.exit_code == 1
    assert "has only 9,900 won left to refund" in result.stderr and "Traceback" not in result.output
    assert world.db.sql("SELECT count(*) FROM refunds")[0][0] == 0


def test_unreachable_broker_keeps_the_refund_for_the_walk(world):
    charge_id = world.paid_charge(9900)
    result = cli(world.db.url, "refund", str(charge_id), env=CLOSED_BROKER)
    assert result.exit_code == 2
    assert "is stored (requested)" in result.stderr and "the walk sends it" in result.stderr
    assert world.db.sql("SELECT status, amount FROM refunds")[0] == ("requested", 9900)


def _worker_stand_in(world: RefundWorld, client: redis.Redis) -> threading.Thread:
    """Takes the refund message off the queue and runs the refund, as a worker would."""
    def run() -> None:
        for _ in range(200):
            raw = client.lpop("celery")
            if raw:
                message = json.loads(raw)
                refund_id = json.loads(base64.b64decode(message["body"]))[0][0]
                world.run(refund_id, owner="stand-in")
                return
            time.sleep(0.05)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_follows_the_refund_to_success_and_charges_show_the_total(world, broker):
    env, client = broker
    charge_id = world.paid_charge(9900)
    thread = _worker_stand_in(world, client)
    result = cli(world.db.url, "refund", str(charge_id), "--amount", "4000", "--wait", "--timeout", "20",
                 "--poll", "0.05", "--json", env=env)
    thread.join()
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "succeeded" and data["timed_out"] is False
    assert [t["to"] for t in data["transitions"]][-1] == "succeeded"
    assert data["charge"]["refunded_amount"] == 4000 and data["refund"]["pay_hist_id"]
    shown = cli_json(world.db.url, "charges", "show", str(charge_id))
    assert shown["charge"]["refunded_amount"] == 4000 and shown["charge"]["refund_total"] == 4000
    assert [r["status"] for r in shown["refunds"]] == ["succeeded"]
    assert [a["kind"] for a in shown["attempts"]][-1] == "cancel"
    text = cli(world.db.url, "charges", "show", str(charge_id)).output
    assert "refunded  4,000원 of 9,900원" in text


def test_wait_reports_a_refused_refund_and_exits_1(world, broker):
    env, client = broker
    charge_id = world.paid_charge(9900)
    world.outside_cancel(charge_id, 1000)  # NAVER's rest is no longer what we expect
    thread = _worker_stand_in(world, client)
    result = cli(world.db.url, "refund", str(charge_id), "--amount", "2000", "--wait", "--timeout", "20",
                 "--poll", "0.05", env=env)
    thread.join()
    assert result.exit_code == 1
    assert "ended failed: NAVER refused the cancel: RestAmountDiff" in result.output
