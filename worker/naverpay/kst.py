"""NAVER's time format: ``YYYYMMDDHHMMSS`` in Korean time (Asia/Seoul, UTC+9, no DST)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

__all__ = ["KST", "MAX_WINDOW", "check_window", "format_ymdt", "parse_ymdt"]

KST: Final = ZoneInfo("Asia/Seoul")
MAX_WINDOW: Final = timedelta(days=31)
"""Longest start..end window the list and history APIs accept."""


def format_ymdt(moment: datetime) -> str:
    """``moment`` (timezone-aware) as NAVER's ``YYYYMMDDHHMMSS`` in Korean time."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        # A naive datetime could be UTC or local; guessing would shift the window by hours.
        raise ValueError(f"datetime must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(KST).strftime("%Y%m%d%H%M%S")


def parse_ymdt(text: str) -> datetime | None:
    """NAVER's ``YYYYMMDDHHMMSS`` (or bare ``YYYYMMDD``) as an aware datetime, else None.

    Tolerant on purpose: a time NAVER formats differently must not turn a readable payment
    answer into an unreadable one; the original text stays in the result's ``raw``.
    """
    for fmt, length in (("%Y%m%d%H%M%S", 14), ("%Y%m%d", 8)):
        if len(text) == length and text.isdigit():
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=KST)
            except ValueError:
                return None
    return None


def check_window(start: datetime, end: datetime) -> None:
    """Refuse, before sending, a window NAVER would refuse (``TimeConditionError``)."""
    format_ymdt(start)  # both must be aware
    format_ymdt(end)
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    if end - start > MAX_WINDOW:
        raise ValueError(
            f"window {start.isoformat()}..{end.isoformat()} is longer than NAVER's 31 days"
        )
