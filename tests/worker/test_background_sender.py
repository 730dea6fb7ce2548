"""``worker.enqueue.BackgroundSender``: the walk's batches of committed charges go out from a
thread of their own, in order, each id once; a batch that fails is logged and left out of
``sent`` (the walk task sends those again at its end), and the others still go out."""

from __future__ import annotations

import base64
import json
import logging

import redis

from tests.services import free_port
from worker.app import app
from worker.enqueue import BackgroundSender
from worker.tasks import charge


def _queued(client: redis.Redis) -> list[int]:
    messages = [json.loads(m) for m in reversed(client.lrange("celery", 0, -1))]  # BRPOP order
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]


def test_batches_go_out_in_order_each_id_once(redis_service) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_service.url)
    client.delete("celery")
    batches = [list(range(start, start + 500)) for start in range(1, 5001, 500)]
    with BackgroundSender(app, charge, depth=2, url=redis_service.url) as sender:
        for batch in batches:
            sender.send(batch)
        sender.send([])  # nothing to send: nothing queued
    expected = [i for batch in batches for i in batch]
    assert sender.sent == expected
    assert _queued(client) == expected
    assert sender.close() == expected  # closing again changes nothing


def test_a_failed_batch_is_left_out_of_sent_and_the_thread_ends(caplog) -> None:  # type: ignore[no-untyped-def]
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    caplog.set_level(logging.ERROR)
    sender = BackgroundSender(app, charge, url=dead)
    sender.send([1, 2, 3])
    assert sender.close() == []
    assert not sender._thread.is_alive()
    assert any("enqueueing 3 new charges failed" in r.getMessage() for r in caplog.records)
