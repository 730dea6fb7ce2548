"""Serves ``/metrics`` for Prometheus: the workers' counters plus gauges read from the database.

Workers run in several processes (Celery's prefork pool), so their counters are written to
``PROMETHEUS_MULTIPROC_DIR`` and aggregated here with prometheus-client's multiprocess
collector. Gauges that describe the database (unknown outcomes open, notifications
pending, the walk's lag, rows by status) are computed at scrape time, so they are right
whichever process changed them. Started by ``npay-billing metrics`` (``make run`` does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from worker.metrics import attention_gauges
from worker.overview import overview


class DatabaseCollector(Collector):
    """Business gauges read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.sessions() as s:
            view = overview(s, utcnow(), next_limit=0)
        by_charge = GaugeMetricFamily("npay_charges", "Charges by status", labels=["status"])
        for status, count in view.charges.items():
            by_charge.add_metric([status], count)
        by_sub = GaugeMetricFamily("npay_subscriptions", "Subscriptions by status", labels=["status"])
        for status, count in view.subscriptions.items():
            by_sub.add_metric([status], count)
        by_refund = GaugeMetricFamily("npay_refunds", "Refunds by status", labels=["status"])
        for status, count in view.refunds.items():
            by_refund.add_metric([status], count)
        yield by_charge
        yield by_sub
        yield by_refund
        yield GaugeMetricFamily("npay_unknown_outcomes_open",
                                "Charges whose approval outcome is being resolved", value=view.unknown_open)
        yield GaugeMetricFamily("npay_registrations_expired",
                                "Subscriptions whose registration was expired after a final failure",
                                value=view.subscriptions.get("revoked", 0))
        yield GaugeMetricFamily("npay_notifications_pending", "Outbox rows not delivered yet",
                                value=view.notifications_pending)
        yield GaugeMetricFamily("npay_walk_lag_seconds", "Now minus the oldest due item",
                                value=view.lag_seconds)
        yield from attention_gauges(view)


def registry_for(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """Workers' multiprocess counters (when configured) plus the database gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(DatabaseCollector(sessions))
    return registry


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def serve(sessions: sessionmaker[Session], host: str = "127.0.0.1", port: int = 9808) -> None:
    """Serve ``/metrics`` until interrupted."""
    app = make_wsgi_app(registry_for(sessions))
    with make_server(host, port, app, handler_class=_Quiet) as server:
        server.serve_forever()
