"""Named port profiles, as `vmferry netprofile ...`:

- ``GET /netprofiles``, ``GET /netprofiles/{name}``: the named profiles (``list``, ``show``);
- ``PUT /netprofiles/{name}``: define or replace one (``define``; nothing changes on any
  host until it is applied); ``DELETE /netprofiles/{name}``: forget it (``remove NAME``);
- ``PUT /hosts/{host}/netprofiles/{name}``: put it on a host, the portgroup with its rates
  and its rules for the VMs there that use it (``apply NAME --host H``);
  ``DELETE /hosts/{host}/netprofiles/{name}``: take it off (``remove NAME --host H``; 409
  while a VM there uses it);
- ``POST /vms/{vm_id}/netprofiles/capture``: read the profiles of a VM's NICs from its host
  and keep them by name (``capture VM``).

Each is a fleet-wide change of the network (``netprofiles.write``): an operator's or an
admin's, never a project-bound user's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response
from fastapi.exceptions import RequestValidationError

from vmferry.errors import BadInputError
from vmferry.model.jsonable import to_jsonable
from vmferry.netprofile.spec import make_profile, profile_to_json
from vmferry.server.actions import Services, services_of
from vmferry.server.auth import require
from vmferry.server.roles import Action
from vmferry.server.schemas import (
    CaptureOut,
    NetProfileApplied,
    NetProfileIn,
    NetProfileOut,
    Problem,
    RemovedOut,
    ValidationProblem,
)
from vmferry.service import netprofile as service

router = APIRouter(tags=["netprofiles"])
Svc = Annotated[Services, Depends(services_of)]
ON_HOSTS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem},
    422: {"model": ValidationProblem},
    502: {"model": Problem},
}

Name = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,23}$",
                           description="1-24 lowercase letters, digits or '-'")]  # fmt: skip


@router.get("/netprofiles", response_model=list[NetProfileOut],
            dependencies=[Depends(require(Action.NETPROFILES_READ))])  # fmt: skip
def list_profiles() -> list[NetProfileOut]:
    """The named profiles (as `vmferry netprofile list --json`)."""
    return [NetProfileOut(**profile_to_json(p)) for p in service.list_profiles()]


@router.get("/netprofiles/{name}", response_model=NetProfileOut,
            responses={404: {"model": Problem}},
            dependencies=[Depends(require(Action.NETPROFILES_READ))])  # fmt: skip
def show_profile(name: Name) -> NetProfileOut:
    """One named profile (as `vmferry netprofile show NAME --json`)."""
    return NetProfileOut(**profile_to_json(service.get_profile(name)))


@router.put(
    "/netprofiles/{name}", response_model=NetProfileOut,
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


@router.delete("/netprofiles/{name}", response_model=RemovedOut,
               responses={404: {"model": Problem}},
               dependencies=[Depends(require(Action.NETPROFILES_WRITE, "name"))])  # fmt: skip
def delete_profile(name: Name) -> RemovedOut:
    """Forget the named profile (as `vmferry netprofile remove NAME`); what it put on hosts
    stays until removed there."""
    service.delete_profile(name)
    return RemovedOut(removed=[f"named profile {name}"])


@router.put(
    "/hosts/{host}/netprofiles/{name}", response_model=NetProfileApplied, responses=ON_HOSTS,
    dependencies=[Depends(require(Action.NETPROFILES_WRITE, "name"))],
)  # fmt: skip
def apply_profile(host: str, name: Name, services: Svc) -> NetProfileApplied:
    """Put the named profile on ``host`` (as `vmferry netprofile apply NAME --host H`): its
    portgroup with the rate limits and, where vmferry runs commands on the host, its ACL
    rules bound to the VMs there that use it. Applying it again changes nothing."""
    return NetProfileApplied(**to_jsonable(services.netprofile_apply(name, host)))


@router.delete(
    "/hosts/{host}/netprofiles/{name}", response_model=RemovedOut,
    responses={**ON_HOSTS, 409: {"model": Problem}},
    dependencies=[Depends(require(Action.NETPROFILES_WRITE, "name"))],
)  # fmt: skip
def remove_profile_from_host(host: str, name: Name, services: Svc) -> RemovedOut:
    """Take the named profile off ``host`` (as `vmferry netprofile remove NAME --host H`):
    its rules and portgroup; 409 while a VM defined there uses it. The named profile
    stays."""
    return RemovedOut(removed=services.netprofile_remove(name, host))


@router.post(
    "/vms/{vm_id}/netprofiles/capture", response_model=CaptureOut, responses=ON_HOSTS,
    dependencies=[Depends(require(Action.NETPROFILES_WRITE, "vm_id"))],
)  # fmt: skip
def capture_profiles(vm_id: str, services: Svc) -> CaptureOut:
    """Read the profiles of the VM's NICs from the host it runs on (portgroup bandwidth,
    vmferry's rules) and keep them by name (as `vmferry netprofile capture VM --json`)."""
    return CaptureOut(**service.capture_json(services.netprofile_capture(vm_id)))
