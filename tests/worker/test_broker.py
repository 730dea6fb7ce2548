"""The broker transport (worker/broker.py) against a real redis-server.

What must hold: it is kombu's Redis transport in every observable way (a message goes out and
comes back, an unacknowledged message stays in the unacked index that brings a dead worker's
messages back, an ack removes it), and it builds one redis client per channel instead of one
per operation, a new one when kombu replaces the channel's connection pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_py
from kombu import Connection

from worker.broker import Channel, Transport

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def connection(redis_service):  # type: ignore[no-untyped-def]
    conn = Connection(redis_service.url, transport="worker.broker:Transport")
    yield conn
    conn.release()


def test_the_connection_uses_this_transport_and_its_channel(connection) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(connection.transport, Transport)
    assert isinstance(connection.default_channel, Channel)


def test_operations_share_one_client_until_the_pool_is_replaced(connection) -> None:  # type: ignore[no-untyped-def]
    channel = connection.default_channel
    with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
        assert first is second
        assert first.connection_pool is channel.pool
        assert first.ping()
    given = object()
    with channel.conn_or_acquire(given) as passed:  # a client handed in is used as it is
        assert passed is given
    channel._pool = None  # what kombu does when it drops the pool (e.g. after an error)
    with channel.conn_or_acquire() as third:
        assert third is not first
        assert third.connection_pool is channel.pool
        assert third.ping()


def test_a_message_is_unacked_until_acknowledged_then_gone(connection, redis_service) -> None:  # type: ignore[no-untyped-def]
    raw = redis_py.Redis.from_url(redis_service.url)
    queue = connection.SimpleQueue("broker-test")
    try:
        queue.put({"charge_id": 42})
        message = queue.get(timeout=5)
        assert message.payload == {"charge_id": 42}
        # Delivered, not acknowledged: kombu's unacked index holds it (a dead worker's message
        # is restored from there after the visibility timeout).
        assert raw.hlen("unacked") == 1
        message.ack()
        assert raw.hlen("unacked") == 0
        assert raw.llen("broker-test") == 0
    finally:
        queue.close()
        raw.delete("broker-test")


def _configured_transport(**env: str) -> str:
    code = "import celeryconfig; print(getattr(celeryconfig, 'broker_transport', None))"
    full = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BILLING_BROKER"))}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**full, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_celeryconfig_selects_it_for_redis_urls_only() -> None:
    assert _configured_transport() == "worker.broker:Transport"
    tls = "rediss://redis.example:6380/0"
    assert _configured_transport(CELERY_BROKER_URL=tls) == "worker.broker:Transport"
    assert _configured_transport(CELERY_BROKER_URL="amqp://guest@localhost//") == "None"
    assert _configured_transport(BILLING_BROKER_TRANSPORT="kombu") == "None"
