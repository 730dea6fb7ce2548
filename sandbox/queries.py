"""Search windows and paging shared by the registration list and payment history.

Both take ``startTime``/``endTime`` (``YYYYMMDDHHMMSS`` KST, at most 31 days apart) and page with
``pageNumber`` (from 1) and ``rowsPerPage`` (1-100, default 20), answering ``totalCount``,
``responseCount``, ``totalPageCount`` and ``currentPageNumber`` (naverpay-api.md §3.4, §3.8).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypeVar

from sandbox.clock import parse_ymdt
from sandbox.codes import ApiError, Code
from sandbox.params import Params

MAX_WINDOW = timedelta(days=31)
DEFAULT_ROWS = 20
MAX_ROWS = 100

T = TypeVar("T")


def window(params: Params, missing: str) -> tuple[str, str]:
    """``(startTime, endTime)`` checked; ``missing`` is the code when either is absent."""
    start, end = params.optional("startTime"), params.optional("endTime")
    if not start or not end:
        raise ApiError(missing, "startTime과 endTime이 필요합니다.")
    try:
        start_at, end_at = parse_ymdt(start), parse_ymdt(end)
    except ValueError as exc:
        raise ApiError(Code.INVALID_PARAMETER, "시간은 YYYYMMDDHHMMSS 형식이어야 합니다.") from exc
    if end_at < start_at:
        raise ApiError(Code.INVALID_PARAMETER, "endTime이 startTime보다 앞섭니다.")
    if end_at - start_at > MAX_WINDOW:
        raise ApiError(Code.TIME_CONDITION_ERROR)
    return start, end


def paginate(items: Sequence[T], params: Params | None) -> tuple[Sequence[T], dict[str, Any]]:
    """One page of ``items`` and the paging fields (no params: everything on page 1)."""
    if params is None:
        page, rows = 1, max(len(items), 1)
    else:
        page = params.integer("pageNumber", 1, 1)
        rows = params.integer("rowsPerPage", DEFAULT_ROWS, 1, MAX_ROWS)
    chunk = items[(page - 1) * rows : page * rows]
    return chunk, {
        "totalCount": len(items),
        "responseCount": len(chunk),
        "totalPageCount": (len(items) + rows - 1) // rows,
        "currentPageNumber": page,
    }
