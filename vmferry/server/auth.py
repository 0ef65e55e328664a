"""Who is asking (``Authorization: Bearer TOKEN``) and whether their role lets them.

The user, the action and its target are kept in the request's state, where the audit
trail (:mod:`vmferry.server.audit`) finds them.

A token's expiry is judged at the clock ``app.state.vmferry_clock`` (a function returning
an aware datetime) when the application has one, which tests set; else at the system clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from vmferry.model.account import User
from vmferry.server.context import Context
from vmferry.server.errors import Refused
from vmferry.server.roles import Action, decide
from vmferry.service import users as users_service

__all__ = ["CurrentUser", "authorize", "current_user", "names", "require"]

_bearer = HTTPBearer(auto_error=False, description="a token from `vmferry users add`")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    context: Context,
) -> User:
    """The user whose token the request carries; 401 for none, a wrong, replaced, expired or
    removed token (an expired one says so, and nothing more)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("this request needs Authorization: Bearer TOKEN")
    checked = await run_in_threadpool(users_service.check_token, context.store,
                                      credentials.credentials, _now(request))  # fmt: skip
    if checked.expired:
        raise _unauthorized("the token expired")
    if checked.user is None:
        raise _unauthorized("the token is not valid (wrong, replaced or its user removed)")
    request.state.user = checked.user.name
    return checked.user


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] | None = getattr(request.app.state, "vmferry_clock", None)
    return clock() if clock is not None else datetime.now(UTC)


CurrentUser = Annotated[User, Depends(current_user)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def authorize(
    request: Request, user: User, action: Action, target: str | None = None,
    vm_tags: tuple[str, ...] | None = None, audit_as: str | None = None,
) -> None:  # fmt: skip
    """Raise :class:`Refused` (403, naming the rule) unless ``user`` may do ``action`` on
    ``target`` (a VM with ``vm_tags``). The audit trail records the request as ``audit_as``
    (what was asked, e.g. ``plans.pause``) or else as ``action`` (the permission)."""
    request.state.action = audit_as or action.value
    if target is not None:
        request.state.target = target
    decision = decide(user.role, user.project, action, vm_tags)
    request.state.rule = decision.rule
    if not decision.allowed:
        raise Refused(decision.rule, decision.reason)


def require(
    action: Action, target_param: str | None = None, audit_as: str | None = None
) -> Callable[..., User]:
    """A dependency: the current user, refused unless its role allows ``action`` (for
    actions that do not depend on a VM's tags); ``target_param`` names the path parameter
    the audit trail records as the target, ``audit_as`` the action it records when it is
    not the permission's name. Route dependencies run before the body is checked, so a
    refused request is 403 whatever its body."""

    def check(request: Request, user: CurrentUser) -> User:
        target = None if target_param is None else request.path_params.get(target_param)
        authorize(request, user, action, target=target, audit_as=audit_as)
        return user

    return check


def names(action: Action, target_param: str | None = None) -> Callable[[Request], None]:
    """A dependency that names the request's action (and its target, from the path
    parameter ``target_param``) for the audit trail, before the body is checked: a
    malformed request's row says what it tried."""

    def name(request: Request) -> None:
        request.state.action = action.value
        if target_param is not None:
            request.state.target = request.path_params.get(target_param)

    return name
