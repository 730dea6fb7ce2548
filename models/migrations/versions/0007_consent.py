"""The consent rule (전자상거래법): price_changes, agreed amounts, free trials, the
consent_held charge status, merchant consent and upcoming-notice settings.

Revision ID: 0007_consent
Revises: 0002
Create Date: 2026-11-29 06:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_consent"
down_revision = "0006_registration_flow"
branch_labels = None
depends_on = None

OLD_CHARGE_STATUSES = ("pending", "reserving", "reserved", "approving", "unknown", "retry_wait",
                       "succeeded", "failed", "amount_mismatch", "skipped", "canceled", "held")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("consent_missing", sa.String(20), server_default="keep_old",
                                   nullable=False))
        batch.add_column(sa.Column("upcoming_notice_days", sa.Integer(), nullable=True))
        batch.create_check_constraint("consent_missing_known",
                                      _in("consent_missing", ("keep_old", "pause")))
        batch.create_check_constraint("upcoming_notice_days_positive",
                                      "upcoming_notice_days IS NULL OR upcoming_notice_days >= 1")

    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("agreed_amount", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("trial_ends_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("upcoming_notice_at", sa.DateTime(), nullable=True))
        batch.create_check_constraint("agreed_amount_range", "agreed_amount IS NULL OR agreed_amount >= 0")
        batch.create_index("ix_subscriptions_upcoming", ["upcoming_notice_at"], unique=False)
    # Existing rows: their customers agreed to the amount they are billed today.
    op.execute("UPDATE subscriptions SET agreed_amount = amount")

    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("agreed_amount", sa.Integer(), nullable=True))
        batch.drop_constraint(op.f("ck_charges_status_known"), type_="check")
        batch.create_check_constraint("status_known", _in("status", (*OLD_CHARGE_STATUSES, "consent_held")))

    op.create_table(
        "price_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("new_amount", sa.Integer(), nullable=False),
        sa.Column("effective_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(20), server_default="change", nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("old_amount", sa.Integer(), nullable=True),
        sa.Column("notice_sent_at", sa.DateTime(), nullable=True),
        sa.Column("consented_at", sa.DateTime(), nullable=True),
        sa.Column("consent_via", sa.String(100), nullable=True),
        sa.Column("paused_at", sa.DateTime(), nullable=True),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.CheckConstraint("new_amount > 0", name=op.f("ck_price_changes_new_amount_positive")),
        sa.CheckConstraint(_in("status", ("pending", "consented", "applied", "canceled")),
                           name=op.f("ck_price_changes_status_known")),
        sa.CheckConstraint(_in("kind", ("change", "trial")), name=op.f("ck_price_changes_kind_known")),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"],
                                name=op.f("fk_price_changes_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_changes")),
    )
    op.create_index("ix_price_changes_open", "price_changes", ["subscription_id", "status"], unique=False)
    op.create_index("ix_price_changes_notice", "price_changes", ["status", "notice_sent_at", "effective_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_price_changes_notice", table_name="price_changes")
    op.drop_index("ix_price_changes_open", table_name="price_changes")
    op.drop_table("price_changes")
    op.execute("UPDATE charges SET status = 'skipped', reason = 'held for consent; downgraded' "
               "WHERE status = 'consent_held'")
    with op.batch_alter_table("charges") as batch:
        batch.drop_constraint(op.f("ck_charges_status_known"), type_="check")
        batch.create_check_constraint("status_known", _in("status", OLD_CHARGE_STATUSES))
        batch.drop_column("agreed_amount")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_index("ix_subscriptions_upcoming")
        batch.drop_constraint(op.f("ck_subscriptions_agreed_amount_range"), type_="check")
        for name in ("upcoming_notice_at", "trial_ends_at", "agreed_amount"):
            batch.drop_column(name)
    with op.batch_alter_table("merchants") as batch:
        batch.drop_constraint(op.f("ck_merchants_upcoming_notice_days_positive"), type_="check")
        batch.drop_constraint(op.f("ck_merchants_consent_missing_known"), type_="check")
        batch.drop_column("upcoming_notice_days")
        batch.drop_column("consent_missing")
