"""vm_probes: the service probes a VM declares (vmferry vm set VM --probe SPEC)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vm_probes",
        sa.Column("vm", sa.String(length=255), nullable=False),
        sa.Column("probes", sa.JSON(), nullable=False),
        sa.Column("netns", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("vm"),
    )


def downgrade() -> None:
    op.drop_table("vm_probes")
