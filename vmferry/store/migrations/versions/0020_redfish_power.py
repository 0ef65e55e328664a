"""host_power: the redfish driver (a BMC's ComputerSystem URL, user, the environment variable
holding the password, and how its certificate is checked) beside the command driver

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("host_power", sa.Column("driver", sa.String(length=16), nullable=False,
                                          server_default="command"))  # fmt: skip
    op.add_column("host_power", sa.Column("url", sa.Text(), nullable=True))
    op.add_column("host_power", sa.Column("user", sa.String(length=255), nullable=True))
    op.add_column("host_power", sa.Column("password_env", sa.String(length=255), nullable=True))
    op.add_column("host_power", sa.Column("ca", sa.Text(), nullable=True))
    op.add_column("host_power", sa.Column("insecure", sa.Boolean(), nullable=False,
                                          server_default=sa.false()))  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("host_power") as batch:
        for column in ("insecure", "ca", "password_env", "user", "url", "driver"):
            batch.drop_column(column)
