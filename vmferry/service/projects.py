"""`vmferry projects set|show|list|remove`: the self-service policy of each project (which
strategies its users may move its VMs by, and in which weekly windows)."""

from __future__ import annotations

from collections.abc import Sequence

from vmferry.errors import BadInputError, NotFoundError
from vmferry.model.account import check_project
from vmferry.model.project_policy import PolicyError, ProjectPolicy, make_policy
from vmferry.store import project_policies
from vmferry.store.db import Store

__all__ = ["list_policies", "remove_policy", "set_policy", "show_policy"]


def set_policy(
    store: Store, project: str, strategies: str, windows: Sequence[str], tz: str = "UTC"
) -> ProjectPolicy:
    """Set ``project``'s policy (replacing the one it had); checked before anything is
    written."""
    problem = check_project(project)
    if problem is not None:
        raise BadInputError(problem)
    try:
        policy = make_policy(project, strategies, windows, tz)
    except PolicyError as exc:
        raise BadInputError(str(exc)) from exc
    return project_policies.set_policy(store, policy)


def show_policy(store: Store, project: str) -> ProjectPolicy:
    policy = project_policies.get_policy(store, project)
    if policy is None:
        raise NotFoundError(f"project {project!r} has no policy: its self-service users move "
                            f"nothing; `vmferry projects set {project} --strategies ... "
                            "--window ...` sets one")  # fmt: skip
    return policy


def list_policies(store: Store) -> list[ProjectPolicy]:
    return project_policies.list_policies(store)


def remove_policy(store: Store, project: str) -> None:
    project_policies.remove_policy(store, project)
