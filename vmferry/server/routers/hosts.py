"""`GET /hosts`, `GET /hosts/{name}`: the registered hosts; `POST /hosts` registers one (as
`vmferry hosts add`: its libvirt must answer first), `DELETE /hosts/{name}` forgets one
(nothing on the host changes). A host's ``shell`` lets vmferry run commands there (nft, tc,
bridge reads; ``local`` is the server's own machine), so only an admin may give one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from vmferry.model.account import Role
from vmferry.model.jsonable import to_jsonable
from vmferry.server.actions import Services, services_of
from vmferry.server.auth import CurrentUser, names, require
from vmferry.server.context import Context
from vmferry.server.errors import Refused
from vmferry.server.roles import Action
from vmferry.server.schemas import HostOut, Problem, ValidationProblem
from vmferry.service import hosts as hosts_service

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


_URI = r"^[a-z][a-z0-9+.-]*:[!-~]*$"  # a URI in printable ASCII, no spaces


class HostIn(BaseModel):
    """What `vmferry hosts add NAME URI` takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    uri: str = Field(min_length=1, max_length=1024, pattern=_URI)
    migration_uri: str | None = Field(None, max_length=1024, pattern=_URI)
    shell: str | None = Field(None, max_length=1024, pattern=r"^[ -~]+$",
                              description="admins only")  # fmt: skip
    link_mbps: int | None = Field(None, ge=1, le=100_000_000)
    migration_tls: bool = False


@router.post(
    "", response_model=HostOut, status_code=201,
    responses={403: {"model": Problem}, 409: {"model": Problem},
               422: {"model": ValidationProblem}, 502: {"model": Problem}},
    dependencies=[Depends(names(Action.HOSTS_WRITE)), Depends(require(Action.HOSTS_WRITE))],
)  # fmt: skip
def add_host(
    body: HostIn, request: Request, response: Response, user: CurrentUser, context: Context,
    services: Annotated[Services, Depends(services_of)],
) -> HostOut:  # fmt: skip
    """Register a host once its libvirt answers (502 when it does not; nothing stored)."""
    request.state.target = body.name
    if body.shell is not None and user.role is not Role.ADMIN:
        raise Refused("hosts.shell", "only an admin may give a host a shell: vmferry runs "
                      "commands through it")  # fmt: skip
    host = hosts_service.add_host(body.name, body.uri, body.migration_uri, shell=body.shell,
                                  link_mbps=body.link_mbps, migration_tls=body.migration_tls,
                                  store=context.store, probe=services.probe_host)  # fmt: skip
    response.headers["Location"] = f"/api/v1/hosts/{host.name}"
    return HostOut(**to_jsonable(host))


@router.delete(
    "/{name}", status_code=204, responses={404: {"model": Problem}},
    dependencies=[Depends(names(Action.HOSTS_WRITE, "name")),
                  Depends(require(Action.HOSTS_WRITE, "name"))],
)  # fmt: skip
def remove_host(name: str, context: Context) -> Response:
    """Forget a host (nothing on the host changes)."""
    hosts_service.remove_host(name, context.store)
    return Response(status_code=204)
