"""ha_vms and host_power: the VMs vmferry restarts when their host dies, and how hosts are
powered off (fenced) first

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ha_vms",
        sa.Column("vm", sa.String(length=255), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("definition_xml", sa.Text(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vm", name="pk_ha_vms"),
    )
    op.create_table(
        "host_power",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("on_command", sa.Text(), nullable=False),
        sa.Column("off_command", sa.Text(), nullable=False),
        sa.Column("status_command", sa.Text(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_host_power"),
    )


def downgrade() -> None:
    op.drop_table("host_power")
    op.drop_table("ha_vms")
