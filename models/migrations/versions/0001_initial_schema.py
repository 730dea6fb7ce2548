"""Initial schema: merchants (with the default merchant), subscriptions, charges,
charge_attempts, notifications.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 12:45:45.667104
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("api_base", sa.String(length=200), nullable=True),
        sa.Column("partner_id", sa.String(length=100), nullable=True),
        sa.Column("client_id", sa.String(length=100), nullable=True),
        sa.Column("client_secret_env", sa.String(length=100), nullable=True),
        sa.Column("chain_id", sa.String(length=100), nullable=True),
        sa.Column("retry_delays", sa.String(length=200), server_default="1h,1d,3d", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="4", nullable=False),
        sa.Column(
            "retryable_codes",
            sa.String(length=500),
            server_default="NotEnoughAccountBalance,BankMaintenance,FaultCheckOngoing,BankCheckTime,TimeExpired,Fail",
            nullable=False,
        ),
        sa.Column("final_action", sa.String(length=20), server_default="expire", nullable=False),
        sa.Column("missed_cycles", sa.String(length=20), server_default="latest", nullable=False),
        sa.Column("webhook_url", sa.String(length=500), nullable=True),
        sa.Column("webhook_secret", sa.String(length=200), nullable=True),
        sa.Column("notify_email", sa.Integer(), server_default="0", nullable=False),
        sa.Column("notify_on", sa.String(length=200), server_default="final_failure", nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint(
            "final_action IN ('expire', 'pause', 'none')", name=op.f("ck_merchants_final_action_known")
        ),
        sa.CheckConstraint(
            "missed_cycles IN ('latest', 'all', 'skip')", name=op.f("ck_merchants_missed_cycles_known")
        ),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_merchants_max_attempts_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
        sa.UniqueConstraint("name", name=op.f("uq_merchants_name")),
    )
    # The default merchant: its credentials come from the NAVERPAY_* environment (NULL columns).
    op.execute("INSERT INTO merchants (id, name) VALUES (1, 'default')")
    if op.get_bind().dialect.name == "postgresql":
        # The explicit id did not advance the serial; the next merchant must get id 2.
        op.execute("SELECT setval(pg_get_serial_sequence('merchants', 'id'), 1)")
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("recurrent_id", sa.String(length=64), nullable=False),
        sa.Column("merchant_user_id", sa.String(length=100), nullable=False),
        sa.Column("customer_email", sa.String(length=200), nullable=True),
        sa.Column("customer_name", sa.String(length=100), nullable=True),
        sa.Column("product_code", sa.String(length=100), nullable=False),
        sa.Column("product_name", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("tax_free_amount", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="Asia/Seoul", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("next_charge_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lock_owner", sa.String(length=64), nullable=True),
        sa.Column("lock_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'canceled', 'revoking', 'revoked', 'invalid')",
            name=op.f("ck_subscriptions_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_subscriptions_amount_positive")),
        sa.CheckConstraint(
            "tax_free_amount >= 0 AND tax_free_amount <= amount", name=op.f("ck_subscriptions_tax_free_range")
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_subscriptions_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint("recurrent_id", name=op.f("uq_subscriptions_recurrent_id")),
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_subscriptions_due", ["status", "next_charge_at"], unique=False)

    op.create_table(
        "charges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("recurrent_id", sa.String(length=64), nullable=False),
        sa.Column("cycle_at", sa.DateTime(), nullable=False),
        sa.Column("merchant_pay_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("tax_free_amount", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_code", sa.String(length=64), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("approved_amount", sa.Integer(), nullable=True),
        sa.Column("approved_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'reserving', 'reserved', 'approving', 'unknown', 'retry_wait', 'succeeded', 'failed', 'amount_mismatch', 'skipped', 'canceled')",
            name=op.f("ck_charges_status_known"),
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_charges_amount_positive")),
        sa.ForeignKeyConstraint(
            ["subscription_id"], ["subscriptions.id"], name=op.f("fk_charges_subscription_id_subscriptions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charges")),
        sa.UniqueConstraint("merchant_pay_id", name=op.f("uq_charges_merchant_pay_id")),
        sa.UniqueConstraint("subscription_id", "cycle_at", name="uq_charges_subscription_cycle"),
    )
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.create_index("ix_charges_lease", ["status", "lease_until"], unique=False)
        batch_op.create_index("ix_charges_retry_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_charges_subscription_id"), ["subscription_id"], unique=False)

    op.create_table(
        "charge_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("charge_id", sa.Integer(), nullable=True),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("attempt_no", sa.Integer(), server_default="0", nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("result_code", sa.String(length=64), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("raw_body", sa.Text(), nullable=True),
        sa.Column("elapsed_ms", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_charge_attempts_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_charge_attempts_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charge_attempts")),
    )
    with op.batch_alter_table("charge_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_charge_attempts_charge_id"), ["charge_id"], unique=False)

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("charge_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'no_channel')",
            name=op.f("ck_notifications_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["charges.id"], name=op.f("fk_notifications_charge_id_charges")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_notifications_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("dedupe_key", "channel", name="uq_notifications_dedupe_channel"),
        sa.UniqueConstraint("event_id", name=op.f("uq_notifications_event_id")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_pending", ["status", "lease_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_pending")

    op.drop_table("notifications")
    with op.batch_alter_table("charge_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_charge_attempts_charge_id"))

    op.drop_table("charge_attempts")
    with op.batch_alter_table("charges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_charges_subscription_id"))
        batch_op.drop_index("ix_charges_retry_due")
        batch_op.drop_index("ix_charges_lease")

    op.drop_table("charges")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_subscriptions_due")

    op.drop_table("subscriptions")
    op.drop_table("merchants")
