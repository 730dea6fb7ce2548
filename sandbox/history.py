"""Payment history (``v2.2/list/history``, ``v2.3/list/history``): rows in time order.

Only approval attempts and cancels make rows; a reserved payment that no approval reached has
none, which is why history answers ``InvalidPaymentId`` for it (naverpay-api.md §3.8, S4 #319).
Rows become visible at ``visible_at`` so a cancel can lag its Success answer, as NAVER's do.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable
from datetime import datetime

from sandbox.records import HistoryRow

APPROVAL_TYPES = ("ALL", "APPROVAL", "CANCEL", "CANCEL_FAIL")


def _row_time(row: HistoryRow) -> str:
    return row.ymdt


_FILTERS: dict[str, Callable[[HistoryRow], bool]] = {
    "ALL": lambda row: True,
    "APPROVAL": lambda row: row.type_code == "01",
    "CANCEL": lambda row: row.type_code != "01" and row.success,
    "CANCEL_FAIL": lambda row: row.type_code != "01" and not row.success,
}


class HistoryLog:
    """Every history row, sorted by time, plus an index by paymentId."""

    def __init__(self) -> None:
        self._rows: list[HistoryRow] = []
        self._by_payment: dict[str, list[HistoryRow]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: HistoryRow) -> None:
        """Record a row (a deferred cancel may complete with an earlier time: keep the order)."""
        if self._rows and self._rows[-1].ymdt > row.ymdt:
            insort(self._rows, row, key=_row_time)
        else:
            self._rows.append(row)
        self._by_payment.setdefault(row.payment.payment_id, []).append(row)

    def of_payment(self, payment_id: str, now: datetime) -> list[HistoryRow]:
        """The visible rows of one payment, oldest first (empty if it has none)."""
        return [row for row in self._by_payment.get(payment_id, ()) if row.visible_at <= now]

    def in_window(
        self, start: str, end: str, approval_type: str, now: datetime
    ) -> list[HistoryRow]:
        """Visible rows with ``start <= admission time <= end`` of the given approvalType."""
        keep = _FILTERS[approval_type]
        low = bisect_left(self._rows, start, key=_row_time)
        high = bisect_right(self._rows, end, key=_row_time)
        return [row for row in self._rows[low:high] if row.visible_at <= now and keep(row)]

    def drop(self, payment_id: str) -> int:
        """Forget every row of ``payment_id`` (control API: a payment history does not show);
        how many rows were removed."""
        gone = self._by_payment.pop(payment_id, [])
        if gone:
            self._rows = [row for row in self._rows if row.payment.payment_id != payment_id]
        return len(gone)
