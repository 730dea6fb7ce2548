"""Prometheus metrics for the business, not only the tasks.

With Celery's prefork pool several processes update these; set ``PROMETHEUS_MULTIPROC_DIR``
(``make run`` does) and ``npay-billing metrics`` serves the aggregate. Gauges that describe
the database (unknown outcomes open, notifications pending, walk lag) are computed at scrape
time from the database, so every process agrees on them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHARGES = Counter("npay_charges_total", "Charges that reached an outcome", ["outcome", "code"])
RETRIES = Counter("npay_retries_scheduled_total", "Declined attempts scheduled for a retry", ["code"])
EXPIRED = Counter("npay_registrations_expired_total", "Registrations expired after a final failure")
NOTIFICATIONS = Counter("npay_notifications_total", "Notification deliveries", ["channel", "status"])
WALKS = Counter("npay_walks_total", "Walks run")
WALK_ENQUEUED = Counter("npay_walk_enqueued_total", "Charges enqueued by the walk", ["reason"])
NAVER_LATENCY = Histogram(
    "npay_naverpay_request_seconds", "NAVER Pay API latency by endpoint", ["api", "code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_naverpay(api: str, elapsed: float, code: str | None) -> None:
    """The NAVER Pay client's observer hook."""
    NAVER_LATENCY.labels(api=api, code=code or "none").observe(elapsed)
