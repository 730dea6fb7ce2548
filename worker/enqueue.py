"""Enqueue many ``worker.charge`` messages at once: one Redis pipeline, no per-message round trip.

Why: ``Task.delay`` costs ~1.5 ms per message on this machine (kombu builds a Redis client per
publish, and ``task_send_sent_event`` publishes a second message), so a month-start walk of
100,000 due charges would spend minutes enqueueing. The walk enqueues each batch of new charges
right after the batch commits, through :func:`enqueue_tasks`:

    ids --> one Celery protocol-2 message per id (the same JSON envelope kombu's Redis
            transport writes: headers, properties, base64 body ``[[id], {}, embed]``)
        --> one ``LPUSH queue m1 m2 ...`` per ``chunk`` messages (the order of as many single
            LPUSHes: Celery's BRPOP takes them first in, first out)

The envelope is serialised once per call (:class:`MessageTemplate`) and each message is that
text with its id, task id, delivery tag and body put in: byte for byte ``json.dumps`` of
:func:`task_message` (a test compares them), at a fraction of the cost; the task ids and
delivery tags are version-4 UUIDs drawn from ``os.urandom`` in one call per chunk.

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
import logging
import os
import queue
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery, Task
from celery.utils.nodenames import anon_nodename

log = logging.getLogger(__name__)

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def task_message(app: Celery, task: Task, args: Sequence[Any], task_id: str | None = None,
                 origin: str | None = None, delivery_tag: str | None = None) -> dict[str, Any]:
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
            "body_encoding": "base64", "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }


def uuid4s(count: int) -> list[str]:
    """``count`` random version-4 UUIDs as text (the form ``str(uuid.uuid4())`` gives: 122
    random bits, version nibble 4, variant 10xx), from one ``os.urandom`` call."""
    h = os.urandom(16 * count).hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}{h[i + 17:i + 20]}-"
            f"{h[i + 20:i + 32]}" for i in range(0, 32 * count, 32)]


# The variant nibble keeps its two low random bits under the RFC 4122 variant bits 10.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


class MessageTemplate:
    """:func:`task_message` for one-int-argument tasks, serialised once: :meth:`render` gives
    ``json.dumps(task_message(app, task, (one,), task_id, origin, delivery_tag))`` exactly,
    by putting the per-message values into the envelope's text."""

    _MARK = "npay-enqueue-mark-"

    def __init__(self, app: Celery, task: Task, origin: str | None = None) -> None:
        mark = self._MARK
        message = task_message(app, task, (0,), task_id=f"{mark}id", origin=origin or anon_nodename(),
                               delivery_tag=f"{mark}tag")
        message["body"] = f"{mark}body"
        message["headers"]["argsrepr"] = f"{mark}args"
        text = json.dumps(message).replace("%", "%%")
        for name in ("id", "tag", "body", "args"):
            text = text.replace(f"{mark}{name}", f"%({name})s")
        self.text = text
        self._before, self._after = json.dumps([[0], {}, EMBED]).encode().split(b"0", 1)

    def render(self, one: int, task_id: str, delivery_tag: str) -> str:
        """The message of ``task(one)`` (``one`` an int: its text needs no JSON escaping)."""
        body = base64.b64encode(self._before + str(one).encode() + self._after).decode()
        return self.text % {"id": task_id, "tag": delivery_tag, "body": body, "args": f"({one!r},)"}


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
    template = MessageTemplate(app, task)  # the constant fields, serialised once
    queue = app.conf.task_default_queue
    client = _client(url)
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        keys = uuid4s(2 * len(part))  # a task id and a delivery tag each
        messages = [template.render(one, keys[2 * k], keys[2 * k + 1]) if type(one) is int
                    else json.dumps(task_message(app, task, (one,), keys[2 * k],
                                                 delivery_tag=keys[2 * k + 1]))
                    for k, one in enumerate(part)]
        client.lpush(queue, *messages)
    return len(ids)


class BackgroundSender:
    """:func:`enqueue_tasks` in a thread of its own, so the walk's next batch is read and
    decided while the last one's messages go out (issue 8, the month-start spike).

    Data flow: the walk calls :meth:`send` with a batch's ids *after* that batch committed ->
    a bounded queue (``depth`` batches: a walk ahead of Redis waits, memory stays flat) ->
    the thread sends them in order. :meth:`close` waits until everything queued went out and
    returns the ids that did; a failed batch is logged and left out of them (the caller sends
    those again, or the walk finds them once their lease passed). :meth:`send` never raises
    on a send failure. Use as a context manager: the thread ends on leaving it, whatever
    happened."""

    _STOP = None

    def __init__(self, app: Celery, task: Task, depth: int = 4, url: str | None = None) -> None:
        self._app, self._task, self._url = app, task, url
        self._queue: queue.Queue[list[int] | None] = queue.Queue(maxsize=depth)
        self.sent: list[int] = []
        self._thread = threading.Thread(target=self._run, name="walk-enqueue", daemon=True)
        self._thread.start()

    def send(self, ids: list[int]) -> None:
        """Queue ``ids`` (committed charges) for sending; blocks while ``depth`` are waiting."""
        if ids:
            self._queue.put(list(ids))

    def close(self) -> list[int]:
        """Wait until everything queued was sent (or failed); the ids sent."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        return self.sent

    def __enter__(self) -> BackgroundSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while (ids := self._queue.get()) is not self._STOP:
            try:
                enqueue_tasks(self._app, self._task, ids, url=self._url)
            except Exception:  # noqa: BLE001 - the charges are committed: sent again later
                log.exception("enqueueing %d new charges failed; sent again at the walk's end, or "
                              "taken again once their lease passed", len(ids))
                continue
            self.sent.extend(ids)
