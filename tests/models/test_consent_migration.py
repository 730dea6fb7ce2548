"""Migration 0007_consent on a database that has data (SQLite and PostgreSQL): existing
customers agreed to what they are billed, nothing is lost, and it goes back down cleanly.
SQLite recreates tables in batch mode, which used to fail on any populated database (foreign
keys pointing at the table being recreated)."""

import sqlalchemy as sa
from alembic import command

from models import make_engine
from models.migrate import alembic_config, head_revision, upgrade

ROWS = [
    "INSERT INTO subscriptions (recurrent_id, merchant_user_id, product_code, product_name, amount, cron) "
    "VALUES ('RE-1', 'u', 'P', '월간 구독', 9900, '0 9 1 * *')",
    "INSERT INTO charges (subscription_id, recurrent_id, cycle_at, merchant_pay_id, amount, status) "
    "VALUES (1, 'RE-1', '2026-12-01 00:00:00', 'NPB-1-20261201000000', 9900, 'held')",
    "INSERT INTO charge_attempts (charge_id, subscription_id, kind, outcome) "
    "VALUES (1, 1, 'reserve', 'ok')",
    "INSERT INTO notifications (event_id, dedupe_key, event, channel, subscription_id, charge_id, payload) "
    "VALUES ('e1', 'k1', 'charge.held', 'webhook', 1, 1, '{}')",
]


def test_a_populated_database_migrates_up_and_down(database_url):
    upgrade(database_url, "0002")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for statement in ROWS:
                conn.execute(sa.text(statement))
        upgrade(database_url)
        with engine.begin() as conn:
            subs = conn.execute(sa.text("SELECT amount, agreed_amount FROM subscriptions"))
            assert list(subs) == [(9900, 9900)]  # they agreed to what they are billed
            charges = conn.execute(sa.text("SELECT status, agreed_amount FROM charges"))
            assert list(charges) == [("held", None)]  # made before the gate: trusted
            merchant = conn.execute(sa.text("SELECT consent_missing, upcoming_notice_days FROM merchants"))
            assert merchant.first() == ("keep_old", None)
            assert conn.execute(sa.text("SELECT count(*) FROM price_changes")).scalar() == 0
            assert conn.execute(sa.text("SELECT count(*) FROM charge_attempts")).scalar() == 1
        command.downgrade(alembic_config(database_url), "0002")
        upgrade(database_url)
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM notifications")).scalar() == 1
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == head_revision()
    finally:
        engine.dispose()
