"""The application's own settings: one frozen object built from the environment.

Celery's settings live in ``celeryconfig.py``; these are the worker's. See the README's
configuration table (DESIGN.md section 6 is the contract).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from models.db import database_url_from_env
from scheduler.walk import WalkConfig
from worker.consent import ConsentConfig
from worker.naverpay.config import NaverPayConfig


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the worker reads from the environment, read once."""

    database_url: str
    naverpay: NaverPayConfig = field(repr=False)
    walk_interval: float = 10.0
    lease: timedelta = timedelta(minutes=6)
    walk: WalkConfig = WalkConfig()
    # A charge unsettled (reserving/approving/unknown/held) this long is surfaced to a human.
    surface_after: timedelta = timedelta(hours=1)
    # The daily reconciliation (정산 대사) of yesterday's KST day runs at this KST time.
    reconcile_at: tuple[int, int] = (1, 0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "billing@localhost"
    consent: ConsentConfig = field(default=ConsentConfig(), repr=False)  # consent links

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read ``DATABASE_URL``, ``NAVERPAY_*``, ``BILLING_*`` and ``SMTP_*``."""
        lease = timedelta(seconds=_number(environ, "BILLING_LEASE_SECONDS", 360))
        walk = WalkConfig(
            batch_size=int(_number(environ, "BILLING_BATCH_SIZE", 500)),
            lease=lease,
            missed_grace=timedelta(seconds=_number(environ, "BILLING_MISSED_GRACE_SECONDS", 3600)),
        )
        return cls(
            database_url=database_url_from_env(environ),
            naverpay=NaverPayConfig.from_env(environ),
            walk_interval=_number(environ, "BILLING_WALK_INTERVAL", 10),
            lease=lease,
            walk=walk,
            surface_after=timedelta(seconds=_number(environ, "BILLING_SURFACE_AFTER_SECONDS", 3600)),
            reconcile_at=reconcile_time(environ),
            smtp_host=environ.get("SMTP_HOST", "127.0.0.1"),
            smtp_port=int(_number(environ, "SMTP_PORT", 25)),
            smtp_from=environ.get("SMTP_FROM", "billing@localhost"),
            consent=ConsentConfig(secret=environ.get("BILLING_CONSENT_SECRET") or None,
                                  public_url=environ.get("BILLING_PUBLIC_URL", "http://127.0.0.1:8060")),
        )


def reconcile_catch_up(environ: Mapping[str, str] = os.environ) -> int:
    """``BILLING_RECONCILE_CATCHUP_DAYS`` (default 7, 0 = yesterday only): how many days before
    yesterday the daily reconciliation looks back for days no run finished. ValueError names a
    bad value."""
    raw = environ.get("BILLING_RECONCILE_CATCHUP_DAYS", "") or "7"
    if not raw.strip().isdigit() or int(raw) > 366:
        raise ValueError(f"BILLING_RECONCILE_CATCHUP_DAYS={raw!r} is not a number of days from 0 to 366")
    return int(raw)


def reconcile_time(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``BILLING_RECONCILE_AT`` (``HH:MM`` in Asia/Seoul, default ``01:00``): when the daily
    reconciliation of the previous KST day runs. ValueError names a bad value."""
    raw = environ.get("BILLING_RECONCILE_AT", "") or "01:00"
    hour, _, minute = raw.partition(":")
    if not (hour.isdigit() and minute.isdigit() and int(hour) < 24 and int(minute) < 60):
        raise ValueError(f"BILLING_RECONCILE_AT={raw!r} is not a time HH:MM (Asia/Seoul)")
    return int(hour), int(minute)
