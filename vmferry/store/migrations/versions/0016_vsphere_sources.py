"""vsphere_sources: vCenters and ESXi hosts registered as sources (where, who, which
certificate to trust; never a password)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vsphere_sources",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("datacenter", sa.Text(), nullable=True),
        sa.Column("ca_file", sa.Text(), nullable=True),
        sa.Column("insecure", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_vsphere_sources"),
    )


def downgrade() -> None:
    op.drop_table("vsphere_sources")
