"""The projects' self-service policies (`vmferry projects set|show|list|remove`). Policies
are checked by the callers (:func:`vmferry.model.project_policy.make_policy`); a stored
one is read back through the same parser."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmferry.errors import NotFoundError
from vmferry.model.project_policy import ProjectPolicy, make_policy
from vmferry.store.db import Store
from vmferry.store.tables import ProjectPolicyRow

__all__ = ["get_policy", "list_policies", "remove_policy", "set_policy"]


def set_policy(store: Store, policy: ProjectPolicy) -> ProjectPolicy:
    """Set (or replace) ``policy.project``'s policy."""
    with Session(store.engine) as session, session.begin():
        row = session.get(ProjectPolicyRow, policy.project, with_for_update=True)
        if row is None:
            row = ProjectPolicyRow(project=policy.project)
            session.add(row)
        row.strategies, row.windows = list(policy.strategies), list(policy.window_texts)
        row.tz, row.updated_at = policy.tz, datetime.now(UTC)
    return policy


def get_policy(store: Store, project: str) -> ProjectPolicy | None:
    """``project``'s policy, or None when it has none."""
    with Session(store.engine) as session:
        row = session.get(ProjectPolicyRow, project)
        return None if row is None else _policy(row)


def list_policies(store: Store) -> list[ProjectPolicy]:
    """Every project's policy, by project."""
    with Session(store.engine) as session:
        rows = session.scalars(select(ProjectPolicyRow).order_by(ProjectPolicyRow.project))
        return [_policy(row) for row in rows]


def remove_policy(store: Store, project: str) -> None:
    """Forget ``project``'s policy (its self-service users then move nothing)."""
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(ProjectPolicyRow).where(ProjectPolicyRow.project == project))
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError(f"project {project!r} has no policy; `vmferry projects list` "
                                "lists the policies")  # fmt: skip


def _policy(row: ProjectPolicyRow) -> ProjectPolicy:
    return make_policy(row.project, row.strategies, row.windows, row.tz)
