"""`GET /hosts`, `GET /hosts/{name}`: the registered hosts."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from vmferry.model.jsonable import to_jsonable
from vmferry.server.auth import require
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import HostOut, Problem

router = APIRouter(prefix="/hosts", tags=["hosts"])


@router.get("", response_model=list[HostOut], dependencies=[Depends(require(Action.HOSTS_READ))])
def list_hosts(context: Context) -> list[HostOut]:
    """Every registered host, by name."""
    return [HostOut(**to_jsonable(h)) for h in context.store.list_hosts()]


@router.get(
    "/{name}", response_model=HostOut, responses={404: {"model": Problem}},
    dependencies=[Depends(require(Action.HOSTS_READ))],
)  # fmt: skip
def get_host(name: str, context: Context) -> HostOut:
    """One registered host."""
    return HostOut(**to_jsonable(context.store.get_host(name)))
