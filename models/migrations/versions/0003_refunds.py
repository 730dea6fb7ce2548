"""Refunds (issue 9): the ``refunds`` table, each charge's refund total, cancel calls' refund id.

Revision ID: 0003_refunds
Revises: 0002
Create Date: 2026-11-29 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_refunds"
down_revision = "0002"
branch_labels = None
depends_on = None

REFUND_STATUSES = ("requested", "cancelling", "unknown", "completing", "held", "succeeded", "failed")
REFUND_TOTAL_RULE = ("refund_total >= 0 AND (refund_total = 0 OR "
                     "(approved_amount IS NOT NULL AND refund_total <= approved_amount))")


def upgrade() -> None:
    op.create_table(
        "refunds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("charge_id", sa.Integer(), sa.ForeignKey("charges.id", name="fk_refunds_charge_id_charges"),
                  nullable=False),
        sa.Column("subscription_id", sa.Integer(),
                  sa.ForeignKey("subscriptions.id", name="fk_refunds_subscription_id_subscriptions"),
                  nullable=False),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("tax_free_amount", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("status", sa.String(20), server_default="requested", nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("key_round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expected_rest", sa.Integer(), nullable=True),
        sa.Column("send_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_sent_at", sa.DateTime(), nullable=True),
        sa.Column("uncertain_since", sa.DateTime(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("held_from", sa.String(20), nullable=True),
        sa.Column("backoff_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_code", sa.String(64), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("pay_hist_id", sa.String(64), nullable=True),
        sa.Column("naver_rest_amount", sa.Integer(), nullable=True),
        sa.Column("refunded_at", sa.DateTime(), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.Column("surfaced_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        sa.CheckConstraint("tax_free_amount >= 0 AND tax_free_amount <= amount",
                           name="ck_refunds_tax_free_range"),
        sa.CheckConstraint(f"status IN ({', '.join(repr(s) for s in REFUND_STATUSES)})",
                           name="ck_refunds_status_known"),
        sa.PrimaryKeyConstraint("id", name="pk_refunds"),
        sa.UniqueConstraint("idempotency_key", name="uq_refunds_idempotency_key"),
    )
    op.create_index("ix_refunds_charge_id", "refunds", ["charge_id"])
    op.create_index("ix_refunds_due", "refunds", ["status", "next_attempt_at"])
    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("refund_total", sa.Integer(), server_default="0", nullable=False))
        batch.create_check_constraint("refund_total_range", REFUND_TOTAL_RULE)
    with op.batch_alter_table("charge_attempts") as batch:
        batch.add_column(sa.Column("refund_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_charge_attempts_refund_id_refunds", "refunds", ["refund_id"], ["id"])
        batch.create_index("ix_charge_attempts_refund_id", ["refund_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("charge_attempts") as batch:
        batch.drop_index("ix_charge_attempts_refund_id")
        batch.drop_constraint("fk_charge_attempts_refund_id_refunds", type_="foreignkey")
        batch.drop_column("refund_id")
    with op.batch_alter_table("charges") as batch:
        batch.drop_constraint(op.f("ck_charges_refund_total_range"), type_="check")
        batch.drop_column("refund_total")
    op.drop_index("ix_refunds_due", table_name="refunds")
    op.drop_index("ix_refunds_charge_id", table_name="refunds")
    op.drop_table("refunds")
