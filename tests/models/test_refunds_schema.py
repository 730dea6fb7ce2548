"""The refunds part of the schema (issue 9), on SQLite and PostgreSQL: constraints that protect
money, and migration 0003_refunds going down and up again."""

import pytest
from alembic import command
from sqlalchemy.exc import IntegrityError

from models.migrate import alembic_config, upgrade

SUB = ("INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, amount, cron) "
       "VALUES ('RE-1', 'u', 'P', 'p', 9900, '0 9 1 * *')")
CHARGE = ("INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount, status, "
          "payment_id, approved_amount) VALUES (1, 'RE-1', '2026-12-01 00:00:00', 'M-1', 9900, 'succeeded', "
          "'P-1', 9900)")
REFUND = ("INSERT INTO refunds (charge_id, subscription_id, payment_id, amount, reason, idempotency_key) "
          "VALUES (1, 1, 'P-1', :amount, 'r', :key)")


def test_a_minimal_refund_row_gets_its_defaults(db):
    db.sql(SUB)
    db.sql(CHARGE)
    db.sql(REFUND, amount=100, key="rf1")
    row = db.sql("SELECT status, tax_free_amount, key_round, send_count FROM refunds")[0]
    assert tuple(row) == ("requested", 0, 0, 0)
    assert db.sql("SELECT refund_total FROM charges")[0][0] == 0


@pytest.mark.parametrize(("statement", "constraint"), [
    ("UPDATE refunds SET amount = 0", "amount_positive"),
    ("UPDATE refunds SET tax_free_amount = 200", "tax_free_range"),
    ("UPDATE refunds SET status = 'refunded'", "status_known"),
    ("UPDATE charges SET refund_total = 9901", "refund_total_range"),
    ("UPDATE charges SET refund_total = -1", "refund_total_range"),
    ("UPDATE charges SET refund_total = 100, approved_amount = NULL", "refund_total_range"),
])
def test_money_constraints_of_refunds(db, statement, constraint):
    db.sql(SUB)
    db.sql(CHARGE)
    db.sql(REFUND, amount=100, key="rf1")
    with pytest.raises(IntegrityError, match=constraint):
        db.sql(statement)


def test_idempotency_keys_are_unique(db):
    db.sql(SUB)
    db.sql(CHARGE)
    db.sql(REFUND, amount=100, key="rf1")
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        db.sql(REFUND, amount=100, key="rf1")


def test_migration_goes_down_and_up_again(db):
    db.sql(SUB)
    db.sql(CHARGE)
    db.engine.dispose()
    command.downgrade(alembic_config(db.url), "0002")
    assert db.sql("SELECT count(*) FROM charges")[0][0] == 1
    upgrade(db.url)
    assert db.sql("SELECT refund_total FROM charges")[0][0] == 0
