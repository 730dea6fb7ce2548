"""The Redis broker transport: kombu's, with one reused ``redis.Redis`` per channel.

kombu's Redis channel builds a new ``redis.Redis`` object for every operation that is not a
consume: each publish (tasks, and the worker's task events for Flower), each ack pipeline,
each requeue (``Channel.conn_or_acquire``). Building one copies redis-py's ~80 response
callbacks into a fresh case-insensitive dict; a worker does three or four of these per charge,
which `bench/profile_worker.py` measured at ~15 % of a worker's CPU (bench/RESULTS.md).

The object holds no socket of its own: every command borrows a connection from the channel's
pool and gives it back, and redis-py documents a client as safe to share between threads, so
one per channel serves every thread of the threads pool. Pipelines stay per use
(``client.pipeline()`` per call, as kombu does), and when kombu replaces the channel's pool
(after a connection error) the next operation builds a new client on the new pool.

Everything else — message format, queues, acknowledgement, the visibility timeout, the unacked
index that brings a dead worker's messages back — is kombu's, unchanged. ``celeryconfig.py``
selects this transport (``broker_transport``) for ``redis://`` and ``rediss://`` broker URLs
only; ``BILLING_BROKER_TRANSPORT=kombu`` selects kombu's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    """kombu's Redis channel; ``conn_or_acquire`` reuses one client on the current pool."""

    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[no-untyped-call]
        yield shared


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
