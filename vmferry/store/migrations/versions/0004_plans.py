"""plans: wave plans and their items (one per VM), with predicted and actual figures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested", sa.String(length=16), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.JSON(), nullable=False),
        sa.Column("owner_pid", sa.Integer(), nullable=True),
        sa.Column("owner_start_ticks", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    op.create_index("ix_plans_created_at", "plans", ["created_at"])

    op.create_table(
        "plan_items",
        sa.Column("plan_id", sa.String(length=32), nullable=False),
        sa.Column("vm", sa.String(length=255), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("destination", sa.String(length=255), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("strategy_reason", sa.Text(), nullable=False),
        sa.Column("predicted_start_s", sa.Integer(), nullable=False),
        sa.Column("predicted_end_s", sa.Integer(), nullable=False),
        sa.Column("predicted_s", sa.Integer(), nullable=False),
        sa.Column("predicted_downtime_ms", sa.Integer(), nullable=True),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actual_total_ms", sa.Integer(), nullable=True),
        sa.Column("actual_downtime_ms", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_plan_items_plan_id_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plan_id", "vm", name=op.f("pk_plan_items")),
    )


def downgrade() -> None:
    op.drop_table("plan_items")
    op.drop_index("ix_plans_created_at", table_name="plans")
    op.drop_table("plans")
