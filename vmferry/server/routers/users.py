"""`GET /users`: the active users (an admin's read; never a token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vmferry.model.jsonable import to_jsonable
from vmferry.server.auth import require
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import UserOut
from vmferry.service import users as users_service

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=list[UserOut], dependencies=[Depends(require(Action.USERS_READ))])
def list_users(context: Context) -> list[UserOut]:
    """Every active user: name, role, project."""
    return [UserOut(**to_jsonable(u)) for u in users_service.list_users(context.store)]
