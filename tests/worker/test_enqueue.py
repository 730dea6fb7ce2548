"""Bulk enqueue (``worker.enqueue``): the messages are the ones Celery itself sends.

Compared field by field with what ``charge.apply_async`` writes to the same real Redis; that a
real worker runs them is shown by the Celery integration tests (the walk task enqueues this
way) and bench/bench_spike.py.
"""

from __future__ import annotations

import base64
import json

import redis

from worker.app import app
from worker.enqueue import enqueue_tasks, task_message
from worker.tasks import charge

PER_MESSAGE = ("id", "root_id", "correlation_id", "delivery_tag", "origin")


def _flat(message: dict) -> dict:  # type: ignore[type-arg]
    flat = {k: v for k, v in message.items() if k not in ("headers", "properties")}
    flat.update({f"h.{k}": v for k, v in message["headers"].items() if k not in PER_MESSAGE})
    flat.update({f"p.{k}": v for k, v in message["properties"].items() if k not in PER_MESSAGE})
    return flat


def test_a_bulk_message_is_the_message_celery_sends(redis_service):
    client = redis.Redis.from_url(redis_service.url)
    client.delete("celery")
    with app.connection_for_write(redis_service.url) as conn:
        charge.apply_async((42,), producer=app.amqp.Producer(conn))
    celery_sent = json.loads(client.rpop("celery"))  # type: ignore[arg-type]
    ours = task_message(app, charge, (42,))
    assert _flat(ours) == _flat(celery_sent)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert json.loads(base64.b64decode(ours["body"]))[0] == [42]


def test_enqueue_sends_one_message_per_id_in_order(redis_service):
    client = redis.Redis.from_url(redis_service.url)
    client.delete("celery")
    assert enqueue_tasks(app, charge, [5, 6, 7], chunk=2, url=redis_service.url) == 3
    messages = [json.loads(m) for m in reversed(client.lrange("celery", 0, -1))]  # BRPOP order
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in messages] == [[5], [6], [7]]
    assert len({m["headers"]["id"] for m in messages}) == 3
    assert [_flat(m) for m in messages] == [_flat(task_message(app, charge, (v,))) for v in (5, 6, 7)]
    assert {m["headers"]["task"] for m in messages} == {"worker.charge"}
    assert enqueue_tasks(app, charge, [], url=redis_service.url) == 0
