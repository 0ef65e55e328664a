"""host_power: the automation level (automatic, manual, disabled) saying who may power the
host on or off through its driver

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("host_power", sa.Column("automation", sa.String(length=16), nullable=False,
                                          server_default="automatic"))  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("host_power") as batch:
        batch.drop_column("automation")
