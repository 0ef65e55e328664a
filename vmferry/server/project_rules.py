"""Self-service moves within the project's policy: a user bound to a project moves its
VMs only by the strategies and within the weekly windows an admin allowed for the project
(`vmferry projects set`); a project without a policy moves nothing (rule
``self-service.no-policy``). Users not bound to a project are not concerned.

The decision is :func:`vmferry.model.project_policy.allowed_move`; a refusal is a 403
naming the rule, as :func:`vmferry.server.auth.authorize` answers.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import Request

from vmferry.model.account import User
from vmferry.model.project_policy import MoveDecision, allowed_move
from vmferry.server.errors import Refused
from vmferry.store import project_policies
from vmferry.store.db import Store

__all__ = ["check_self_service_move"]


def check_self_service_move(
    store: Store, user: User, strategy: str, now: datetime, *, request: Request | None = None
) -> MoveDecision | None:
    """Raise :class:`Refused` (403 with the rule) unless ``user``'s project policy lets it
    move by ``strategy`` at ``now`` (aware); the decision (None for a user bound to no
    project). ``request``: the audit trail's row then names the rule that decided."""
    if user.project is None:
        return None
    decision = allowed_move(project_policies.get_policy(store, user.project), strategy, now)
    if request is not None:
        request.state.rule = decision.rule
    if not decision.allowed:
        raise Refused(decision.rule, decision.reason)
    return decision
