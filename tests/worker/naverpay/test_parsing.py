"""Pure parsing rules: NAVER's time format, amounts, envelopes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.naverpay import parsing
from worker.naverpay.kst import KST, format_ymdt, parse_ymdt


@pytest.mark.parametrize("text,expected", [
    ("20261128091500", datetime(2026, 11, 28, 9, 15, tzinfo=KST)),
    ("20261128", datetime(2026, 11, 28, tzinfo=KST)),
    ("20261399000000", None),
    ("2026-11-28 09:15", None),
    ("", None),
])
def test_naver_times_are_korean_and_aware(text: str, expected: datetime | None) -> None:
    assert parse_ymdt(text) == expected


def test_times_sent_to_naver_are_converted_to_korean_time() -> None:
    assert format_ymdt(datetime(2026, 11, 30, 15, 30, tzinfo=UTC)) == "20261201003000"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ymdt(datetime(2026, 11, 30))  # noqa: DTZ001 - naive on purpose


def test_envelope_keeps_everything_and_defaults_body() -> None:
    env = parsing.decode_envelope(b'{"code":"Fail","extra":[1]}', http_status=409)

    assert (env.code, env.message, env.body, env.replayed) == ("Fail", "", {}, True)
    assert env.raw == {"code": "Fail", "extra": [1]}


@pytest.mark.parametrize("value,expected", [(9900, 9900), (9900.0, 9900), ("9900", 9900),
                                            ("-5", -5), (None, None)])
def test_amounts_accept_whole_numbers_only(value: object, expected: int | None) -> None:
    page = parsing.history_page(
        parsing.Envelope(code="Success", message="", raw={}, http_status=200,
                         body={"list": [{"paymentId": "P", "totalPayAmount": 1,
                                         "taxScopeAmount": value}]}), 1)

    assert page.rows[0].tax_scope_amount == expected


@pytest.mark.parametrize("value", [True, "1,000", 1.5, [1]])
def test_amounts_that_are_not_whole_numbers_are_refused(value: object) -> None:
    env = parsing.Envelope(code="Success", message="", raw={}, http_status=200,
                           body={"totalCashAmount": value})

    with pytest.raises(parsing.ParseError, match="whole number"):
        parsing.cash_amount(env)


def test_missing_paging_is_derived_from_the_rows() -> None:
    env = parsing.Envelope(code="Success", message="", raw={}, http_status=200,
                           body={"list": [{"recurrentId": "R1"}]})

    page = parsing.registration_page(env, 3)

    assert (page.total_count, page.total_page_count, page.current_page_number) == (1, 1, 3)
