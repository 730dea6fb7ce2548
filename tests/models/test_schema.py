"""The database contract users insert into, on SQLite and PostgreSQL alike."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from models.migrate import head_revision, is_up_to_date

MINIMAL_INSERT = """
INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, amount, cron)
VALUES ('20261128RE1003007926ZStYYU', 'user-42', 'PLAN-M', '월간 구독', 9900, '0 9 1 * *')
"""


def test_documented_minimal_insert_is_complete(db):
    db.sql(MINIMAL_INSERT)
    row = db.sql("SELECT merchant_id, status, timezone, tax_free_amount, next_charge_at, "
                 "product_name FROM subscriptions")[0]
    assert tuple(row) == (1, "active", "Asia/Seoul", 0, None, "월간 구독")


def test_default_merchant_exists_with_default_policy(db):
    row = db.sql("SELECT id, name, retry_delays, max_attempts, final_action, missed_cycles, "
                 "client_id FROM merchants")
    assert [tuple(r) for r in row] == [(1, "default", "1h,1d,3d", 4, "expire", "latest", None)]
    # a second merchant inserted without an id gets a new one (the sequence moved on)
    db.sql("INSERT INTO merchants (name) VALUES ('shop-2')")
    assert db.sql("SELECT id FROM merchants WHERE name = 'shop-2'")[0][0] == 2


@pytest.mark.parametrize(
    ("column_sql", "constraint"),
    [
        ("amount = 0", "amount_positive"),
        ("amount = -100", "amount_positive|tax_free_range"),  # both reject it; order varies
        ("tax_free_amount = 99999", "tax_free_range"),
        ("tax_free_amount = -1", "tax_free_range"),
        ("status = 'sleeping'", "status_known"),
    ],
)
def test_money_constraints_reject_bad_rows(db, column_sql, constraint):
    db.sql(MINIMAL_INSERT)
    with pytest.raises(IntegrityError, match=constraint):
        db.sql(f"UPDATE subscriptions SET {column_sql}")


def test_recurrent_id_is_unique(db):
    db.sql(MINIMAL_INSERT)
    with pytest.raises(IntegrityError):
        db.sql(MINIMAL_INSERT)


def test_one_charge_per_subscription_and_cycle(db):
    db.sql(MINIMAL_INSERT)
    insert = ("INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount) "
              "VALUES (1, 'R', '2026-12-01 00:00:00', :mpid, 9900)")
    db.sql(insert, mpid="A")
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        db.sql(insert, mpid="B")
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        db.sql(insert.replace("2026-12-01", "2027-01-01"), mpid="A")


def test_migrations_are_at_head(db):
    assert is_up_to_date(db.engine)
    assert head_revision() == "0006_registration_flow"


def test_walk_queries_use_the_partial_indexes(db):
    if db.dialect != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL ignores indexes on tiny tables")
    # Bound parameters, as the walk sends them (a partial index would not be used here).
    plan = db.sql("EXPLAIN QUERY PLAN SELECT id FROM subscriptions "
                  "WHERE status = :s AND next_charge_at <= :t ORDER BY next_charge_at LIMIT 500",
                  s="active", t="2026-01-01")
    assert "ix_subscriptions_due" in " ".join(str(r) for r in plan)
    plan = db.sql("EXPLAIN QUERY PLAN SELECT id FROM subscriptions WHERE status = :s AND "
                  "next_charge_at IS NULL", s="active")
    assert "ix_subscriptions_due" in " ".join(str(r) for r in plan)
    plan = db.sql("EXPLAIN QUERY PLAN SELECT id FROM charges "
                  "WHERE status = :s AND next_attempt_at <= :t", s="retry_wait", t="2026-01-01")
    assert "ix_charges_retry_due" in " ".join(str(r) for r in plan)
    plan = db.sql("EXPLAIN QUERY PLAN SELECT id FROM charges WHERE status IN (:a, :b) "
                  "AND lease_until < :t", a="pending", b="unknown", t="2026-01-01")
    assert "ix_charges_lease" in " ".join(str(r) for r in plan)


def test_schema_is_the_same_on_both_databases(db):
    names = sa.inspect(db.engine).get_table_names()
    assert {"merchants", "subscriptions", "charges", "charge_attempts", "notifications"} <= set(names)
