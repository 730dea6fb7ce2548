"""History log, search windows and paging as plain functions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sandbox import queries
from sandbox.clock import parse_ymdt
from sandbox.codes import ApiError
from sandbox.history import HistoryLog
from sandbox.params import Params
from sandbox.records import Cancel, HistoryRow, Order, Payment
from tests.sandbox.conftest import START


def _payment(payment_id: str) -> Payment:
    return Payment(payment_id, None, Order(100, 100, 0, "p", payment_id, "u"), START, START)


def _row(payment: Payment, ymdt: str, type_code: str = "01", success: bool = True,
         visible_delay: float = 0) -> HistoryRow:
    cancel = None
    if type_code != "01":
        cancel = Cancel(10, 10, 0, 0, type_code, "r", "2", "", ymdt, START)
    visible = parse_ymdt(ymdt) + timedelta(seconds=visible_delay)
    return HistoryRow(payment, ymdt, type_code, success, visible, cancel)


def test_rows_stay_in_time_order_when_added_late():
    log, a, b = HistoryLog(), _payment("A"), _payment("B")
    log.add(_row(a, "20261128090000"))
    log.add(_row(b, "20261128100000"))
    log.add(_row(a, "20261128093000", "04"))  # a deferred cancel completing "in the past"
    found = log.in_window("20261128000000", "20261128235959", "ALL", parse_ymdt("20261129000000"))
    assert [r.ymdt for r in found] == ["20261128090000", "20261128093000", "20261128100000"]
    assert len(log) == 3


def test_window_bounds_are_inclusive_and_types_filter():
    log, a = HistoryLog(), _payment("A")
    log.add(_row(a, "20261128090000"))
    log.add(_row(a, "20261128090500", "04"))
    log.add(_row(a, "20261128091000", "04", success=False))
    now = parse_ymdt("20261129000000")
    assert len(log.in_window("20261128090000", "20261128091000", "ALL", now)) == 3
    assert len(log.in_window("20261128090001", "20261128091000", "ALL", now)) == 2
    assert [r.type_code for r in log.in_window("20261128", "20261129", "APPROVAL", now)] == ["01"]
    assert [r.success for r in log.in_window("20261128", "20261129", "CANCEL", now)] == [True]
    assert [r.success for r in log.in_window("20261128", "20261129", "CANCEL_FAIL", now)] == [
        False]


def test_rows_are_invisible_until_reflected():
    log, a = HistoryLog(), _payment("A")
    log.add(_row(a, "20261128090000", visible_delay=10))
    assert log.of_payment("A", parse_ymdt("20261128090009")) == []
    assert len(log.of_payment("A", parse_ymdt("20261128090010"))) == 1
    assert log.of_payment("unknown", parse_ymdt("20261128090010")) == []


@pytest.mark.parametrize(("start", "end", "code"), [
    ("20261101000000", "20261202000000", None),               # exactly 31 days
    ("20261101000000", "20261202000001", "TimeConditionError"),
    ("20261102000000", "20261101000000", "InvalidParameter"),  # end before start
    ("2026-11-01", "20261101000000", "InvalidParameter"),
    ("", "20261101000000", "RequireCondition"),
])
def test_search_window(start, end, code):
    params = Params({"startTime": start, "endTime": end})
    if code is None:
        assert queries.window(params, "RequireCondition") == (start, end)
        return
    with pytest.raises(ApiError) as caught:
        queries.window(params, "RequireCondition")
    assert caught.value.answer.code == code


def test_paging_fields():
    page, paging = queries.paginate(list(range(45)), Params({"pageNumber": "3",
                                                            "rowsPerPage": 20}))
    assert list(page) == [40, 41, 42, 43, 44]
    assert paging == {"totalCount": 45, "responseCount": 5, "totalPageCount": 3,
                      "currentPageNumber": 3}
    everything, whole = queries.paginate([1, 2], None)
    assert list(everything) == [1, 2] and whole["totalPageCount"] == 1


@pytest.mark.parametrize("fields", [{"rowsPerPage": 0}, {"rowsPerPage": 101},
                                    {"pageNumber": 0}, {"pageNumber": "x"}])
def test_paging_limits(fields):
    with pytest.raises(ApiError) as caught:
        queries.paginate([1], Params(fields))
    assert caught.value.answer.code == "InvalidParameter"
