"""Reconciliation (정산 대사): reconciliation_runs and reconciliation_items.

Revision ID: 0005_reconciliation
Revises: 0002
Create Date: 2026-11-29 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_reconciliation"
down_revision = "0004_registration_sync_confirm"
branch_labels = None
depends_on = None

NOW = sa.text("(CURRENT_TIMESTAMP)")


def upgrade() -> None:
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="running", nullable=False),
        sa.Column("naver_rows", sa.Integer(), server_default="0", nullable=False),
        sa.Column("local_charges", sa.Integer(), server_default="0", nullable=False),
        sa.Column("repaired", sa.Integer(), server_default="0", nullable=False),
        sa.Column("remaining", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"],
                                name=op.f("fk_reconciliation_runs_merchant_id_merchants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
    )
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.create_index("ix_reconciliation_runs_day", ["day", "merchant_id"], unique=False)
    op.create_table(
        "reconciliation_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("resolution", sa.String(length=20), nullable=False),
        sa.Column("charge_id", sa.Integer(), nullable=True),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("merchant_pay_id", sa.String(length=128), nullable=True),
        sa.Column("naver_amount", sa.Integer(), nullable=True),
        sa.Column("local_amount", sa.Integer(), nullable=True),
        sa.Column("local_status", sa.String(length=20), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["reconciliation_runs.id"],
                                name=op.f("fk_reconciliation_items_run_id_reconciliation_runs")),
        sa.ForeignKeyConstraint(["charge_id"], ["charges.id"],
                                name=op.f("fk_reconciliation_items_charge_id_charges")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_items")),
    )
    with op.batch_alter_table("reconciliation_items") as batch:
        batch.create_index(batch.f("ix_reconciliation_items_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_items") as batch:
        batch.drop_index(batch.f("ix_reconciliation_items_run_id"))
    op.drop_table("reconciliation_items")
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.drop_index("ix_reconciliation_runs_day")
    op.drop_table("reconciliation_runs")
