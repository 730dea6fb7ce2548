"""The walk's one INSERT per batch (scheduler.billing._insert), on SQLite and PostgreSQL.

On PostgreSQL the batch goes in as ``INSERT ... SELECT FROM unnest(arrays)``, with one value
for a column every row shares; on SQLite as a multi-row VALUES. Either way: every row is
stored exactly as built, a duplicate is skipped and counted, and a value too long for its
column is refused by the database (the batch is then redone row by row), never cut.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from models import Charge, ChargeStatus
from scheduler import billing
from scheduler.billing import BatchResult

NOW = datetime(2026, 11, 1, 0, 1, tzinfo=UTC)
CYCLE = datetime(2026, 10, 31, 15, 0, tzinfo=UTC)


def _subscriptions(db: Any, n: int) -> list[int]:
    for i in range(n):
        db.sql("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, "
               "amount, cron) VALUES (:r, 'u', 'P', 'n', 9900, '0 0 1 * *')", r=f"RE-{i}")
    return [i for (i,) in db.sql("SELECT id FROM subscriptions ORDER BY id")]


def _row(sub_id: int, **changes: Any) -> dict[str, Any]:
    row = {"subscription_id": sub_id, "recurrent_id": f"RE-{sub_id}", "cycle_at": CYCLE,
           "merchant_pay_id": f"NPB-{sub_id}-20261031150000", "amount": 9900, "tax_free_amount": 0,
           "agreed_amount": 9900, "status": ChargeStatus.PENDING, "reason": None,
           "lease_until": NOW + timedelta(minutes=6), "surfaced_at": None, "next_attempt_at": None,
           "last_code": None, "created_at": NOW, "updated_at": NOW}
    row.update(changes)
    assert set(row) == set(billing._CHARGE_COLUMNS)
    return row


def _stored(db: Any) -> list[dict[str, Any]]:
    with db.sessions() as s:
        found = s.execute(sa.select(*[getattr(Charge, c) for c in billing._CHARGE_COLUMNS])
                          .order_by(Charge.subscription_id, Charge.cycle_at)).all()
    return [dict(zip(billing._CHARGE_COLUMNS, r, strict=True)) for r in found]


def _insert(db: Any, rows: list[dict[str, Any]]) -> BatchResult:
    result = BatchResult()
    with db.sessions.begin() as session:
        billing._insert(session, rows, result)
    return result


def test_a_spike_batch_is_stored_as_built(db):
    subs = _subscriptions(db, 300)
    rows = [_row(s) for s in subs]  # alike but for the subscription (a month-start spike)
    result = _insert(db, rows)
    assert len(result.new_charge_ids) == 300 and result.conflicts == 0
    assert _stored(db) == rows


def test_a_mixed_batch_is_stored_as_built(db):
    subs = _subscriptions(db, 4)
    held = {"status": ChargeStatus.CONSENT_HELD, "reason": "amount 12,000원 is above", "lease_until": None,
            "surfaced_at": NOW, "next_attempt_at": NOW, "last_code": "ConsentRequired", "amount": 12000}
    rows = [_row(subs[0]),
            _row(subs[0], cycle_at=CYCLE - timedelta(days=30), merchant_pay_id="NPB-x-1",
                 status=ChargeStatus.SKIPPED, reason="missed cycle", lease_until=None, agreed_amount=None),
            _row(subs[1], **held),
            _row(subs[2], amount=100, tax_free_amount=100, recurrent_id="R" * 64),
            _row(subs[3], created_at=NOW - timedelta(seconds=1))]
    result = _insert(db, rows)
    assert (len(result.new_charge_ids), result.skipped, result.consent_held) == (3, 1, 1)
    assert _stored(db) == sorted(rows, key=lambda r: (r["subscription_id"], r["cycle_at"]))


def test_a_charge_that_exists_is_skipped_and_counted(db):
    subs = _subscriptions(db, 3)
    _insert(db, [_row(subs[1])])
    result = _insert(db, [_row(s) for s in subs])
    assert len(result.new_charge_ids) == 2 and result.conflicts == 1
    assert [r["subscription_id"] for r in _stored(db)] == subs


def test_a_value_too_long_is_refused_not_cut(db):
    if db.dialect != "postgresql":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    subs = _subscriptions(db, 3)
    rows = [_row(s, recurrent_id="R" * 65) for s in subs]  # the same too-long value in every row
    with pytest.raises(DBAPIError, match="too long"):
        _insert(db, rows)
    rows = [_row(subs[0]), _row(subs[1], last_code="C" * 65)]  # in one row only
    with pytest.raises(DBAPIError, match="too long"):
        _insert(db, rows)
    assert _stored(db) == []


def test_instants_in_any_zone_are_stored_as_their_utc_instant(db):
    # The SQLite path converts each distinct UTC instant once; others one by one. 01:30 came
    # twice in New York on 1 Nov 2026: equal as wall times, an hour apart as instants.
    ny = ZoneInfo("America/New_York")
    first, second = datetime(2026, 11, 1, 1, 30, tzinfo=ny), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny)
    subs = _subscriptions(db, 4)
    rows = [_row(subs[0], created_at=first), _row(subs[1], created_at=second),
            _row(subs[2], created_at=first.astimezone(UTC)), _row(subs[3], created_at=second.astimezone(UTC))]
    _insert(db, rows)
    stored = [r["created_at"] for r in _stored(db)]
    # (compared in UTC: PEP 495 makes a repeated wall time unequal to every other zone's instant)
    expected = [first.astimezone(UTC), second.astimezone(UTC)] * 2
    assert stored == expected and expected[1] - expected[0] == timedelta(hours=1)


def test_two_instants_with_the_same_wall_time_in_one_batch_stay_apart(db):
    ny = ZoneInfo("America/New_York")
    first, second = datetime(2026, 11, 1, 1, 30, tzinfo=ny), datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=ny)
    assert first == second  # same zone: compared by wall time
    subs = _subscriptions(db, 2)
    _insert(db, [_row(subs[0], created_at=first), _row(subs[1], created_at=second)])
    assert [r["created_at"] for r in _stored(db)] == [first.astimezone(UTC), second.astimezone(UTC)]
