"""jobs: at most one unfinished (pending or running) job per VM, as a partial unique index,
so two operators cannot both start a move of the same VM (the database refuses the second;
no check-then-act race). Unfinished jobs already there for one VM (left by an older vmferry)
are kept: all but the newest are marked failed first, with a reason.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNFINISHED = "status IN ('pending', 'running')"


def upgrade() -> None:
    op.execute(
        "UPDATE jobs SET status = 'failed', reason = 'superseded: another unfinished job of "
        "this VM is newer (migration 0013 allows one)' "
        f"WHERE {_UNFINISHED} AND EXISTS (SELECT 1 FROM jobs AS newer WHERE newer.vm = jobs.vm "
        "AND newer.status IN ('pending', 'running') "
        "AND (newer.created_at > jobs.created_at OR (newer.created_at = jobs.created_at "
        "AND newer.id > jobs.id)))"
    )
    op.create_index("uq_jobs_vm_unfinished", "jobs", ["vm"], unique=True,
                    sqlite_where=sa.text(_UNFINISHED),
                    postgresql_where=sa.text(_UNFINISHED))  # fmt: skip


def downgrade() -> None:
    op.drop_index("uq_jobs_vm_unfinished", table_name="jobs")
