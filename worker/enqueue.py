"""Enqueue many ``worker.charge`` messages at once: one Redis pipeline, no per-message round trip.

Why: ``Task.delay`` costs ~1.5 ms per message on this machine (kombu builds a Redis client per
publish, and ``task_send_sent_event`` publishes a second message), so a month-start walk of
100,000 due charges would spend minutes enqueueing. The walk enqueues each batch of new charges
right after the batch commits, through :func:`enqueue_tasks`:

    ids --> one Celery protocol-2 message per id (the same JSON envelope kombu's Redis
            transport writes: headers, properties, base64 body ``[[id], {}, embed]``)
        --> LPUSH onto the task's queue list, ``chunk`` messages per pipeline round trip

Each message is one task with one id, exactly as ``charge.delay(id)`` sends it (a test
compares the two field by field, and the Celery integration tests run messages sent this way
through a real worker). Not sent: the ``task-sent`` event (Flower shows the task from
``task-received`` on). A broker that is not Redis falls back to ``apply_async`` one by one.

A message lost here (Redis down after the commit) is not lost work: the charge row is committed
with a lease, and the walk takes it again once the lease has passed (DESIGN.md sec. 3.2).
"""

from __future__ import annotations

import base64
import functools
import json
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery, Task
from celery.utils.nodenames import anon_nodename

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def task_message(app: Celery, task: Task, args: Sequence[Any], task_id: str | None = None,
                 origin: str | None = None) -> dict[str, Any]:
    """The envelope ``task.apply_async(args)`` puts on a Redis broker (protocol 2, JSON)."""
    task_id = task_id or str(uuid.uuid4())
    conf = app.conf
    hard = task.time_limit if task.time_limit is not None else conf.task_time_limit
    soft = task.soft_time_limit if task.soft_time_limit is not None else conf.task_soft_time_limit
    body = json.dumps([list(args), {}, EMBED]).encode()
    queue = conf.task_default_queue
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task.name, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [hard, soft], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(tuple(args)), "kwargsrepr": "{}", "origin": origin or anon_nodename(),
            "ignore_result": bool(task.ignore_result), "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": app.thread_oid, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }


def enqueue_tasks(app: Celery, task: Task, ids: Sequence[int], chunk: int = 2000,
                  url: str | None = None) -> int:
    """Send ``task(id)`` for every id (to ``url``, default the app's broker); how many."""
    if not ids:
        return 0
    url = url or str(app.conf.broker_url or "")
    routed = bool(app.conf.task_routes or app.conf.task_queues)
    if not url.startswith(("redis://", "rediss://", "unix://")) or routed:
        for one in ids:
            task.apply_async((one,))
        return len(ids)
    template = task_message(app, task, (0,))  # the constant fields, looked up once
    queue = app.conf.task_default_queue
    headers, properties = template["headers"], template["properties"]
    client = _client(url)
    for start in range(0, len(ids), chunk):
        pipe = client.pipeline(transaction=False)
        for one in ids[start:start + chunk]:
            task_id = str(uuid.uuid4())
            body = json.dumps([[one], {}, EMBED]).encode()
            message = {**template, "body": base64.b64encode(body).decode(),
                       "headers": {**headers, "id": task_id, "root_id": task_id, "argsrepr": f"({one!r},)"},
                       "properties": {**properties, "correlation_id": task_id,
                                      "delivery_tag": str(uuid.uuid4())}}
            pipe.lpush(queue, json.dumps(message))
        pipe.execute()
    return len(ids)
