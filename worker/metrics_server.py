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
from datetime import datetime
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import Charge, Notification, Subscription, utcnow
from models import ChargeStatus as CS
from models import NotificationStatus as NS
from models import SubscriptionStatus as SS


def walk_lag_seconds(session: Session, now: datetime) -> float:
    """Now minus the oldest due item (a subscription cycle or a retry); 0 when none is due."""
    oldest_cycle = session.scalar(select(func.min(Subscription.next_charge_at)).where(
        Subscription.status == SS.ACTIVE, Subscription.next_charge_at <= now))
    oldest_retry = session.scalar(select(func.min(Charge.next_attempt_at)).where(
        Charge.status == CS.RETRY_WAIT, Charge.next_attempt_at <= now))
    # func.min keeps the column's type, so these come back as aware UTC datetimes.
    due = [t for t in (oldest_cycle, oldest_retry) if t is not None]
    return max(0.0, (now - min(due)).total_seconds()) if due else 0.0


class DatabaseCollector(Collector):
    """Business gauges read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        with self.sessions() as s:
            charges: dict[str, int] = {status: n for status, n in s.execute(
                select(Charge.status, func.count()).group_by(Charge.status))}
            subs: dict[str, int] = {status: n for status, n in s.execute(
                select(Subscription.status, func.count()).group_by(Subscription.status))}
            pending = s.scalar(select(func.count()).where(
                Notification.status.in_((NS.PENDING, NS.SENDING)))) or 0
            lag = walk_lag_seconds(s, now)
        by_charge = GaugeMetricFamily("npay_charges", "Charges by status", labels=["status"])
        for status in CS:
            by_charge.add_metric([status.value], charges.get(status.value, 0))
        by_sub = GaugeMetricFamily("npay_subscriptions", "Subscriptions by status", labels=["status"])
        for sub_status in SS:
            by_sub.add_metric([sub_status.value], subs.get(sub_status.value, 0))
        yield by_charge
        yield by_sub
        yield GaugeMetricFamily("npay_unknown_outcomes_open",
                                "Charges whose approval outcome is being resolved",
                                value=charges.get(CS.UNKNOWN.value, 0) + charges.get(CS.APPROVING.value, 0))
        yield GaugeMetricFamily("npay_registrations_expired",
                                "Subscriptions whose registration was expired after a final failure",
                                value=subs.get(SS.REVOKED.value, 0))
        yield GaugeMetricFamily("npay_notifications_pending", "Outbox rows not delivered yet",
                                value=pending)
        yield GaugeMetricFamily("npay_walk_lag_seconds", "Now minus the oldest due item", value=lag)


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
