"""``npay-billing retry``: fail fast on refusals, send a real message to a real redis-server,
and ``--wait`` following the charge row (moved by a thread standing in for the worker)."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import redis

from tests.worker.cli_helpers import add_charge, cli, cli_json, subscribe

CLOSED_BROKER = {"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}


@pytest.fixture
def broker(redis_service):
    """The session's redis-server, emptied; returns (env, client)."""
    client = redis.Redis.from_url(redis_service.url)
    client.flushdb()
    yield {"CELERY_BROKER_URL": redis_service.url}, client
    client.close()


def _message(client: redis.Redis) -> tuple[str, list]:
    raw = json.loads(client.lindex("celery", 0))
    body = json.loads(base64.b64decode(raw["body"]))
    return raw["headers"]["task"], body[0]


def test_retry_sends_worker_retry_charge_to_the_broker(db, broker):
    env, client = broker
    charge_id = add_charge(db, subscribe(db), "retry_wait", attempt_count=1)
    result = cli(db.url, "retry", "RE-1", env=env)  # by recurrentId: its latest open charge
    assert result.exit_code == 0, result.output
    assert f"sent worker.retry_charge for charge {charge_id}" in result.output
    assert client.llen("celery") == 1
    assert _message(client) == ("worker.retry_charge", [str(charge_id), False])


def test_retry_json_and_reopen(sqlite_db, broker):
    env, client = broker
    charge_id = add_charge(sqlite_db, subscribe(sqlite_db), "failed", attempt_count=3)
    data = cli_json(sqlite_db.url, "retry", str(charge_id), "--reopen", env=env)
    assert data["action"] == "reopened" and data["previous_status"] == "failed"
    assert _message(client) == ("worker.retry_charge", [str(charge_id), True])


@pytest.mark.parametrize("status, extra, message", [
    ("succeeded", {"payment_id": "P-1"}, "charge 1 already succeeded (paymentId P-1); "
                                          "a paid cycle is never charged again"),
    ("amount_mismatch", {"approved_amount": 9000}, "approved for 9000 won instead of 9900"),
    ("failed", {}, "charge 1 is failed; pass --reopen to try it again"),
])
def test_refused_retries_fail_fast_without_sending(db, status, extra, message):
    add_charge(db, subscribe(db), status, **extra)
    result = cli(db.url, "retry", "1", env=CLOSED_BROKER)  # never reaches the broker
    assert result.exit_code == 1
    assert message in result.stderr and "Traceback" not in result.output


def test_reopen_of_a_revoked_subscription_is_refused(sqlite_db):
    add_charge(sqlite_db, subscribe(sqlite_db, status="revoked"), "failed")
    result = cli(sqlite_db.url, "retry", "1", "--reopen", env=CLOSED_BROKER)
    assert result.exit_code == 1 and "subscription 1 is revoked" in result.stderr


def test_retry_of_unknown_ids(sqlite_db):
    by_id = cli(sqlite_db.url, "retry", "42", env=CLOSED_BROKER)
    assert by_id.exit_code == 1 and "no charge with id 42" in by_id.stderr
    by_rid = cli(sqlite_db.url, "retry", "RE-NOPE", env=CLOSED_BROKER)
    assert by_rid.exit_code == 1 and "no subscription with recurrentId 'RE-NOPE'" in by_rid.stderr


def test_an_unreachable_broker_says_what_to_do(sqlite_db):
    add_charge(sqlite_db, subscribe(sqlite_db), "retry_wait")
    started = time.monotonic()
    result = cli(sqlite_db.url, "retry", "1", env={"CELERY_BROKER_URL": "redis://:pw@127.0.0.1:1/0"})
    assert time.monotonic() - started < 5
    assert result.exit_code == 2
    assert "cannot reach the broker at redis://:***@127.0.0.1:1/0:" in result.stderr
    assert "start redis-server or set CELERY_BROKER_URL" in result.stderr
    assert "pw@" not in result.output


def _worker_stand_in(db, client: redis.Redis, charge_id: int,
                     steps: list[tuple[str, int]]) -> threading.Thread:
    """Moves the charge through ``steps`` (status, attempt_count), as a worker would: once the
    command's message is on the broker (the command has read the charge's starting point by
    then), not after a fixed delay that a loaded machine outruns."""
    def run() -> None:
        assert client.brpop(["celery"], timeout=60), "the command sent no message"
        for status, attempts in steps:
            time.sleep(0.3)
            db.sql("UPDATE charges SET status = :s, attempt_count = :a, "
                   "updated_at = CURRENT_TIMESTAMP WHERE id = :i", s=status, a=attempts, i=charge_id)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_prints_each_transition_until_success(db, broker):
    env, client = broker
    charge_id = add_charge(db, subscribe(db), "retry_wait", attempt_count=1)
    thread = _worker_stand_in(db, client, charge_id, [("reserving", 2), ("approving", 2), ("succeeded", 2)])
    result = cli(db.url, "retry", str(charge_id), "--wait", "--timeout", "10", "--poll", "0.05", env=env)
    thread.join()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "->" in line]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "retry_wait -> reserving (attempt 2)", "reserving -> approving (attempt 2)",
        "approving -> succeeded (attempt 2)"]
    assert all(line.split()[2] == "KST" for line in lines)  # each change is timestamped
    assert f"charge {charge_id} ended succeeded" in result.output


def test_wait_stops_at_retry_wait_after_a_new_attempt_and_exits_1(sqlite_db, broker):
    env, client = broker
    charge_id = add_charge(sqlite_db, subscribe(sqlite_db), "failed", attempt_count=1)
    thread = _worker_stand_in(sqlite_db, client, charge_id, [("retry_wait", 1), ("reserving", 2),
                                                      ("retry_wait", 2)])
    data = cli(sqlite_db.url, "retry", str(charge_id), "--reopen", "--wait", "--timeout", "10",
               "--poll", "0.05", "--json", env=env)
    thread.join()
    assert data.exit_code == 1
    out = json.loads(data.stdout)
    assert out["status"] == "retry_wait" and out["timed_out"] is False
    assert [(t["from"], t["to"]) for t in out["transitions"]] == [
        ("failed", "retry_wait"), ("retry_wait", "reserving"), ("reserving", "retry_wait")]


def test_wait_times_out_when_nothing_happens(sqlite_db, broker):
    env, _ = broker
    add_charge(sqlite_db, subscribe(sqlite_db), "unknown")
    result = cli(sqlite_db.url, "retry", "1", "--wait", "--timeout", "0.3", "--poll", "0.05", env=env)
    assert result.exit_code == 1
    assert "timed out after 0.3 s: charge 1 is unknown (is a worker running?" in result.output
