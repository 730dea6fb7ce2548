"""Prometheus metrics for the business, not only the tasks.

With Celery's prefork pool several processes update these; set ``PROMETHEUS_MULTIPROC_DIR``
(``make run`` does) and ``npay-billing metrics`` serves the aggregate. Gauges that describe
the database (unknown outcomes open, notifications pending, walk lag) are computed at scrape
time from the database, so every process agrees on them (:func:`attention_gauges` holds the
ones that call for a human).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from worker.overview import Overview

CHARGES = Counter("npay_charges_total", "Charges that reached an outcome", ["outcome", "code"])
REFUNDS = Counter("npay_refunds_total", "Refund runs by the status they left the refund in",
                  ["outcome", "code"])
RETRIES = Counter("npay_retries_scheduled_total", "Declined attempts scheduled for a retry", ["code"])
EXPIRED = Counter("npay_registrations_expired_total",
                  "Registrations expired at NAVER Pay (final failure or merchant cancel)")
NOTIFICATIONS = Counter("npay_notifications_total", "Notification deliveries", ["channel", "status"])
WALKS = Counter("npay_walks_total", "Walks run")
WALK_ENQUEUED = Counter("npay_walk_enqueued_total", "Charges enqueued by the walk", ["reason"])
RECONCILIATION_RUNS = Counter("npay_reconciliation_runs_total", "Reconciliation runs (정산 대사) by outcome",
                              ["status"])
RECONCILIATION_MISMATCHES = Counter(
    "npay_reconciliation_mismatches_total",
    "Differences between NAVER's payment history and the local books, by kind and resolution",
    ["kind", "resolution"])
NAVER_LATENCY = Histogram(
    "npay_naverpay_request_seconds", "NAVER Pay API latency by endpoint", ["api", "code"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_naverpay(api: str, elapsed: float, code: str | None) -> None:
    """The NAVER Pay client's observer hook."""
    NAVER_LATENCY.labels(api=api, code=code or "none").observe(elapsed)


def attention_gauges(view: Overview) -> list[GaugeMetricFamily]:
    """Gauges read from the database at scrape time that call for a human when they grow:
    held charges, unsettled and surfaced charges with the oldest one's age, registrations that
    could not be expired yet (``revoking``) or at all (``expire_failed``), held and unsettled
    refunds."""
    return [
        GaugeMetricFamily("npay_charges_held", "Charges held by a merchant-side fault", value=view.held),
        GaugeMetricFamily("npay_charges_unsettled",
                          "Charges whose NAVER outcome is not settled (reserving/approving/unknown/held)",
                          value=view.stuck),
        GaugeMetricFamily("npay_charges_surfaced", "Unsettled charges surfaced to a human (past the bound)",
                          value=view.surfaced),
        GaugeMetricFamily("npay_charges_oldest_unsettled_seconds",
                          "Age of the oldest unsettled charge (0 when none)",
                          value=view.oldest_stuck_seconds),
        GaugeMetricFamily("npay_subscriptions_revoking", "Registrations waiting to be expired at NAVER Pay",
                          value=view.subscriptions.get("revoking", 0)),
        GaugeMetricFamily("npay_subscriptions_expire_failed",
                          "Registrations NAVER Pay would not expire (a human must check)",
                          value=view.subscriptions.get("expire_failed", 0)),
        GaugeMetricFamily("npay_refunds_held", "Refunds held by a merchant-side fault",
                          value=view.refunds_held),
        GaugeMetricFamily("npay_refunds_unsettled",
                          "Refunds whose cancel outcome is being resolved (cancelling/unknown/completing)",
                          value=view.refunds_unsettled),
    ]
