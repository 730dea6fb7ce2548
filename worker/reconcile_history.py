"""NAVER's side of reconciliation: every payment-history row of a time range.

``fetch_history`` splits ``[start, end)`` into windows NAVER accepts (at most 31 days each;
``startTime``/``endTime`` are whole seconds in KST and inclusive, so a window ends one second
before the next begins), reads every page of each (tenacity retries transient errors: a read
is safe to repeat) and keeps a row seen twice once (rows may shift between pages).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from worker.naverpay.client import NaverPayClient
from worker.naverpay.errors import TransientError
from worker.naverpay.kst import MAX_WINDOW
from worker.naverpay.results import PaymentDetail


def fetch_history(client: NaverPayClient, start: datetime, end: datetime, *, rows_per_page: int = 100,
                  progress: Callable[[str], None] = lambda _line: None, tries: int = 3,
                  sleep: Callable[[float], None], backoff_max: float = 8.0) -> list[PaymentDetail]:
    """Every history row with ``start <= admission time < end``."""
    retrying = Retrying(stop=stop_after_attempt(tries), reraise=True, sleep=sleep,
                        wait=wait_exponential(multiplier=0.5, max=backoff_max),
                        retry=retry_if_exception_type(TransientError))
    seen: dict[tuple[Any, ...], PaymentDetail] = {}
    for lo, hi in windows(start, end):
        for row in _pages(client, lo, hi, rows_per_page, progress, retrying):
            key = (row.payment_id, row.pay_hist_id, row.admission_type_code, row.admission_ymdt,
                   row.total_pay_amount)
            seen.setdefault(key, row)
    return list(seen.values())


def windows(start: datetime, end: datetime) -> Iterator[tuple[datetime, datetime]]:
    """``[start, end)`` as inclusive second windows NAVER accepts (each at most 31 days)."""
    lo = start
    while lo < end:
        hi = min(lo + MAX_WINDOW, end)
        yield lo, hi - timedelta(seconds=1)
        lo = hi


def _pages(client: NaverPayClient, lo: datetime, hi: datetime, rows_per_page: int,
           progress: Callable[[str], None], retrying: Retrying) -> Iterator[PaymentDetail]:
    page = 1
    while True:
        result = retrying(client.history_by_time, start=lo, end=hi, page=page, rows_per_page=rows_per_page)
        progress(f"history {lo.date().isoformat()}: page {page}/{max(result.total_page_count, 1)} "
                 f"({result.total_count} rows)")
        yield from result.rows
        if not result.rows or page >= result.total_page_count:
            return
        page += 1
