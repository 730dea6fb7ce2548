"""The worker's consumer (worker/consumer.py): task events still reach Flower, in batches.

Against a real worker process and redis-server: every task's events are published (Flower's
live view loses nothing), and the events of tasks that ran close together travel in fewer
Redis messages than there are events.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import redis

from tests.processes import Processes, wait_for
from worker.app import app
from worker.consumer import flush_delay


def test_flush_delay_reads_milliseconds_and_refuses_nonsense() -> None:
    assert flush_delay({}) == 0.05
    assert flush_delay({"BILLING_EVENT_FLUSH_MS": "0"}) == 0
    assert flush_delay({"BILLING_EVENT_FLUSH_MS": "250"}) == 0.25
    for bad in ("soon", "-1", "60000"):
        with pytest.raises(ValueError, match="BILLING_EVENT_FLUSH_MS"):
            flush_delay({"BILLING_EVENT_FLUSH_MS": bad})


class EventTap:
    """Every message on Celery's event exchange, as the fanout delivers it (what Flower reads)."""

    def __init__(self, url: str) -> None:
        self.messages: list[list[dict[str, object]]] = []
        self._pubsub = redis.Redis.from_url(url).pubsub()
        self._pubsub.psubscribe("*celeryev*")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage":
                continue
            envelope = json.loads(message["data"])
            raw = envelope["body"]
            if envelope.get("properties", {}).get("body_encoding") == "base64":
                raw = base64.b64decode(raw)
            body = json.loads(raw)
            self.messages.append(body if isinstance(body, list) else [body])

    def events(self, kind: str) -> list[dict[str, object]]:
        return [e for batch in self.messages for e in batch if e.get("type") == kind]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()


@pytest.mark.parametrize("delay_ms", ["300"])
def test_every_task_event_is_published_in_fewer_messages(sqlite_db, redis_service, delay_ms) -> None:  # type: ignore[no-untyped-def]
    redis.Redis.from_url(redis_service.url).flushdb()
    procs = Processes({"DATABASE_URL": sqlite_db.url, "CELERY_BROKER_URL": redis_service.url,
                       "BILLING_EVENT_FLUSH_MS": delay_ms, "BILLING_WALK_INTERVAL": "3600"})
    tap = EventTap(redis_service.url)
    try:
        procs.worker("w", 4, "--pool", "threads")
        procs.wait_log("w", "ready", timeout=60)
        time.sleep(0.5)  # the tap is subscribed before the first task
        with app.connection_for_write(redis_service.url) as conn:
            ids = [app.send_task("worker.retry_charge", args=[f"NO-SUCH-{i}"], connection=conn).id
                   for i in range(12)]
        # A manual retry of something that does not exist is refused and the task succeeds.
        wait_for(lambda: {e["uuid"] for e in tap.events("task-succeeded")} >= set(ids), 30,
                 "a task-succeeded event for every task")
        for kind in ("task-received", "task-started"):
            assert {e["uuid"] for e in tap.events(kind)} >= set(ids), kind
        task_events = [e for batch in tap.messages for e in batch if str(e.get("type")).startswith("task-")]
        task_messages = [b for b in tap.messages if any(str(e.get("type")).startswith("task-") for e in b)]
        assert len(task_events) >= 36
        assert len(task_messages) < len(task_events) / 2  # batched
    except BaseException:
        print(procs.dump_logs())
        raise
    finally:
        procs.stop_all()
        tap.close()
