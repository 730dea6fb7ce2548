"""Registration flow (issue 10): registration_attempts, one row per return from NAVER Pay's
registration window that asked for approval (unique reserveId, unique state token nonce).

Revision ID: 0006_registration_flow
Revises: 0002
Create Date: 2026-11-29 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_registration_flow"
down_revision = "0005_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registration_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reserve_id", sa.String(length=200), nullable=False),
        sa.Column("temp_receipt_id", sa.String(length=100), nullable=False),
        sa.Column("state_nonce", sa.String(length=64), nullable=True),
        sa.Column("action_type", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="approving", nullable=False),
        sa.Column("merchant_id", sa.Integer(), server_default="1", nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("target_recurrent_id", sa.String(length=64), nullable=True),
        sa.Column("recurrent_id", sa.String(length=64), nullable=True),
        sa.Column("merchant_user_id", sa.String(length=100), nullable=True),
        sa.Column("customer_email", sa.String(length=200), nullable=True),
        sa.Column("customer_name", sa.String(length=100), nullable=True),
        sa.Column("product_code", sa.String(length=100), nullable=True),
        sa.Column("product_name", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.Integer(), nullable=True),
        sa.Column("tax_free_amount", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="Asia/Seoul", nullable=False),
        sa.Column("last_code", sa.String(length=64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("status IN ('approving', 'completed', 'failed')",
                           name=op.f("ck_registration_attempts_status_known")),
        sa.CheckConstraint("action_type IN ('NEW', 'CHANGE')",
                           name=op.f("ck_registration_attempts_action_type_known")),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"],
                                name=op.f("fk_registration_attempts_merchant_id_merchants")),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"],
                                name=op.f("fk_registration_attempts_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration_attempts")),
        sa.UniqueConstraint("reserve_id", name=op.f("uq_registration_attempts_reserve_id")),
        sa.UniqueConstraint("state_nonce", name=op.f("uq_registration_attempts_state_nonce")),
    )


def downgrade() -> None:
    op.drop_table("registration_attempts")
