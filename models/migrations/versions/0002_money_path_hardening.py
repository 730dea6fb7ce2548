"""Money-path hardening: held charges, run ownership, surfacing, SQL-edit detection,
expire bookkeeping, notification claim owners, merchant cycle and cancel settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OLD_CHARGE_STATUSES = ("pending", "reserving", "reserved", "approving", "unknown", "retry_wait",
                       "succeeded", "failed", "amount_mismatch", "skipped", "canceled")
OLD_SUB_STATUSES = ("active", "paused", "canceled", "revoking", "revoked", "invalid")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    with op.batch_alter_table("merchants") as batch:
        batch.add_column(sa.Column("min_cycle_interval", sa.String(20), server_default="1d", nullable=False))
        batch.add_column(sa.Column("expire_on_cancel", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("subscriptions") as batch:
        batch.add_column(sa.Column("seen_status", sa.String(20), server_default="active", nullable=False))
        batch.add_column(sa.Column("scheduled_cron", sa.String(100), nullable=True))
        batch.add_column(sa.Column("scheduled_timezone", sa.String(64), nullable=True))
        batch.add_column(sa.Column("revoke_reason", sa.String(30), nullable=True))
        batch.add_column(sa.Column("expire_attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("expire_next_at", sa.DateTime(), nullable=True))
        batch.drop_constraint(op.f("ck_subscriptions_status_known"), type_="check")
        batch.create_check_constraint(
            "status_known", _in("status", (*OLD_SUB_STATUSES, "expire_failed")))
        batch.create_index("ix_subscriptions_seen", ["seen_status", "status"], unique=False)
    # Existing rows: the walk has acted on their current status and schedule.
    op.execute("UPDATE subscriptions SET seen_status = status, scheduled_cron = cron, "
               "scheduled_timezone = timezone WHERE next_charge_at IS NOT NULL")
    op.execute("UPDATE subscriptions SET seen_status = status WHERE next_charge_at IS NULL")
    op.execute("UPDATE subscriptions SET revoke_reason = 'final_failure' "
               "WHERE status IN ('revoking', 'revoked')")

    with op.batch_alter_table("charges") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("prev_status", sa.String(20), nullable=True))
        batch.add_column(sa.Column("held_from", sa.String(20), nullable=True))
        batch.add_column(sa.Column("backoff_count", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("key_round", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("stuck_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("surfaced_at", sa.DateTime(), nullable=True))
        batch.drop_constraint(op.f("ck_charges_status_known"), type_="check")
        batch.create_check_constraint("status_known", _in("status", (*OLD_CHARGE_STATUSES, "held")))
        batch.create_index("ix_charges_stuck_since", ["stuck_since"], unique=False)
    op.execute("UPDATE charges SET stuck_since = updated_at "
               "WHERE status IN ('reserving', 'approving', 'unknown')")

    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("claim_owner", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claim_owner")
    op.execute("UPDATE charges SET status = 'unknown' WHERE status = 'held'")
    with op.batch_alter_table("charges") as batch:
        batch.drop_index("ix_charges_stuck_since")
        batch.drop_constraint(op.f("ck_charges_status_known"), type_="check")
        batch.create_check_constraint("status_known", _in("status", OLD_CHARGE_STATUSES))
        for name in ("surfaced_at", "stuck_since", "key_round", "backoff_count", "held_from", "prev_status", "lease_owner"):
            batch.drop_column(name)
    op.execute("UPDATE subscriptions SET status = 'revoking' WHERE status = 'expire_failed'")
    with op.batch_alter_table("subscriptions") as batch:
        batch.drop_index("ix_subscriptions_seen")
        batch.drop_constraint(op.f("ck_subscriptions_status_known"), type_="check")
        batch.create_check_constraint("status_known", _in("status", OLD_SUB_STATUSES))
        for name in ("expire_next_at", "expire_attempts", "revoke_reason", "scheduled_timezone",
                     "scheduled_cron", "seen_status"):
            batch.drop_column(name)
    with op.batch_alter_table("merchants") as batch:
        batch.drop_column("expire_on_cancel")
        batch.drop_column("min_cycle_interval")
