"""Named port profiles, as `vmferry netprofile list|show|define|remove` (without
``--host``): `GET /netprofiles`, `GET /netprofiles/{name}`, `PUT /netprofiles/{name}`
(define or replace; nothing changes on any host until it is applied), `DELETE
/netprofiles/{name}` (forget the named profile). Putting a profile on a host or taking it
off (`netprofile apply|remove --host`) and reading a VM's (`capture`) are not offered
here yet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response
from fastapi.exceptions import RequestValidationError

from vmferry.errors import BadInputError
from vmferry.netprofile.spec import make_profile, profile_to_json
from vmferry.server.auth import require
from vmferry.server.roles import Action
from vmferry.server.schemas import (
    NetProfileIn,
    NetProfileOut,
    Problem,
    RemovedOut,
    ValidationProblem,
)
from vmferry.service import netprofile as service

router = APIRouter(prefix="/netprofiles", tags=["netprofiles"])

Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,23}$",
                           description="1-24 lowercase letters, digits or '-'")]  # fmt: skip


@router.get("", response_model=list[NetProfileOut],
            dependencies=[Depends(require(Action.NETPROFILES_READ))])  # fmt: skip
def list_profiles() -> list[NetProfileOut]:
    """The named profiles (as `vmferry netprofile list --json`)."""
    return [NetProfileOut(**profile_to_json(p)) for p in service.list_profiles()]


@router.get("/{name}", response_model=NetProfileOut, responses={404: {"model": Problem}},
            dependencies=[Depends(require(Action.NETPROFILES_READ))])  # fmt: skip
def show_profile(name: Name) -> NetProfileOut:
    """One named profile (as `vmferry netprofile show NAME --json`)."""
    return NetProfileOut(**profile_to_json(service.get_profile(name)))


@router.put(
    "/{name}", response_model=NetProfileOut,
    responses={201: {"model": NetProfileOut, "description": "a new profile"},
               413: {"model": Problem}, 422: {"model": ValidationProblem}},
    dependencies=[Depends(require(Action.NETPROFILES_WRITE, "name"))],
)  # fmt: skip
def define_profile(name: Name, body: NetProfileIn, response: Response) -> NetProfileOut:
    """Define (201) or replace (200) a named profile (as `vmferry netprofile define`);
    nothing changes on any host until it is applied."""
    try:
        profile = make_profile(name, body.network, inbound_kib_s=body.in_kib_s,
                               outbound_kib_s=body.out_kib_s, burst_kib=body.burst_kib,
                               acl=body.allow, security_level=body.level,
                               vni=body.vni)  # fmt: skip
    except BadInputError as exc:  # what pydantic cannot see: an ACL rule's syntax
        raise RequestValidationError([{"loc": ("body", "allow"), "msg": exc.message,
                                       "type": "acl_invalid"}]) from None  # fmt: skip
    existed = any(p.name == name for p in service.list_profiles())
    service.save_profile(profile)
    response.status_code = 200 if existed else 201
    return NetProfileOut(**profile_to_json(profile))


@router.delete("/{name}", response_model=RemovedOut, responses={404: {"model": Problem}},
               dependencies=[Depends(require(Action.NETPROFILES_WRITE, "name"))])  # fmt: skip
def delete_profile(name: Name) -> RemovedOut:
    """Forget the named profile (as `vmferry netprofile remove NAME`); what it put on hosts
    stays until removed there."""
    service.delete_profile(name)
    return RemovedOut(removed=[f"named profile {name}"])
