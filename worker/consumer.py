"""The worker's consumer: Celery's, with its task events (Flower's live view) sent in batches.

Celery buffers a worker's task events (received, started, succeeded, ...) and asks its event
loop to flush the buffer as soon as it can after each one; at hundreds of charges per second
that is about one Redis publish per event, three per charge, ~10 % of a worker's CPU
(bench/RESULTS.md). Here the first event after a flush schedules the next flush
``BILLING_EVENT_FLUSH_MS`` later (default 50 ms) on the event loop, so every event of that
window goes out in the one ``task.multi`` message Celery already sends for a buffer (and
Celery itself still flushes at once when 24 events are waiting). Flower sees a task's events at
most that much later; nothing else changes (events carry no money state: a charge's state is
in the database). ``BILLING_EVENT_FLUSH_MS=0`` restores Celery's flush per loop turn. Events
buffered when a worker is killed are lost, as with Celery's own buffer.

``celeryconfig.py`` selects it (``worker_consumer``).
"""

from __future__ import annotations

import os
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from vine import promise

__all__ = ["Consumer", "flush_delay"]


def flush_delay(environ: Any = os.environ) -> float:
    """Seconds between a buffered event and its flush (``BILLING_EVENT_FLUSH_MS``)."""
    raw = environ.get("BILLING_EVENT_FLUSH_MS", "50")
    try:
        milliseconds = float(raw)
    except ValueError:
        raise ValueError(f"BILLING_EVENT_FLUSH_MS must be a number of milliseconds, got {raw!r}") from None
    if not 0 <= milliseconds <= 5000:
        raise ValueError(f"BILLING_EVENT_FLUSH_MS must be between 0 and 5000, got {raw!r}")
    return milliseconds / 1000


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer; buffered task events are flushed at most once per flush delay."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._event_flush_delay = flush_delay()
        self._event_flush_pending = False
        self._schedule_event_flush_promise = promise(self._schedule_event_flush)
        self._delayed_event_flush_promise = promise(self._delayed_event_flush)

    def on_send_event_buffered(self) -> None:
        # Called on whichever thread sent the event; the loop's own thread schedules the flush.
        if not self.hub:
            return
        if self._event_flush_delay <= 0:
            super().on_send_event_buffered()
        elif not self._event_flush_pending:  # a cheap early out; the loop thread decides
            self.hub.call_soon(self._schedule_event_flush_promise)

    def _schedule_event_flush(self) -> None:
        if not self._event_flush_pending:
            self._event_flush_pending = True
            self.hub.call_later(self._event_flush_delay, self._delayed_event_flush_promise)

    def _delayed_event_flush(self) -> None:
        self._event_flush_pending = False
        self._flush_events()
