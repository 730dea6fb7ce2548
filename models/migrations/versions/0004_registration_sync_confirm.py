"""Issue 9: registration sync state, the merchant's settlement/point basis, and the
purchase-confirm / point-accrual outbox (charge_followups).

Revision ID: 0004_registration_sync_confirm
Revises: 0002
Create Date: 2026-11-29 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_registration_sync_confirm"
down_revision = "0003_refunds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("settlement_basis", sa.String(20), server_default="payment_date",
                                   nullable=False))
        batch.add_column(sa.Column("point_basis", sa.String(20), server_default="auto", nullable=False))
        batch.add_column(sa.Column("followup_delay", sa.String(20), server_default="0s", nullable=False))
        batch.create_check_constraint(
            "settlement_basis_known", "settlement_basis IN ('payment_date', 'trade_confirm')")
        batch.create_check_constraint(
            "point_basis_known", "point_basis IN ('auto', 'trade_confirm', 'manual')")

    op.create_table(
        "charge_followups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("charge_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("key_round", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_code", sa.String(64), nullable=True),
        sa.Column("last_message", sa.Text(), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("naver_time", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("(CURRENT_TIMESTAMP)"), nullable=False),
        sa.CheckConstraint("kind IN ('confirm', 'accrual')", name=op.f("ck_charge_followups_kind_known")),
        sa.CheckConstraint("status IN ('pending', 'held', 'done', 'failed')",
                           name=op.f("ck_charge_followups_status_known")),
        sa.ForeignKeyConstraint(["charge_id"], ["charges.id"],
                                name=op.f("fk_charge_followups_charge_id_charges")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charge_followups")),
        sa.UniqueConstraint("charge_id", "kind", name="uq_charge_followups_charge_kind"),
    )
    op.create_index("ix_charge_followups_due", "charge_followups", ["status", "next_at"], unique=False)

    op.create_table(
        "registration_sync",
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("window_start", sa.DateTime(), nullable=False),
        sa.Column("page", sa.Integer(), server_default="1", nullable=False),
        sa.Column("sweep_started_at", sa.DateTime(), nullable=True),
        sa.Column("last_sweep_at", sa.DateTime(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("ended_found", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"],
                                name=op.f("fk_registration_sync_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_registration_sync")),
    )


def downgrade() -> None:
    op.drop_table("registration_sync")
    op.drop_index("ix_charge_followups_due", table_name="charge_followups")
    op.drop_table("charge_followups")
    with op.batch_alter_table("merchants") as batch:
        batch.drop_constraint(op.f("ck_merchants_point_basis_known"), type_="check")
        batch.drop_constraint(op.f("ck_merchants_settlement_basis_known"), type_="check")
        for name in ("followup_delay", "point_basis", "settlement_basis"):
            batch.drop_column(name)
