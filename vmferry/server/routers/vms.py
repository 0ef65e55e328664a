"""`GET /vms` (the inventory, filtered and paged), `GET /vms/{id}`, `PUT /vms/{id}/tags`.

A VM is named by its name or its UUID. The inventory is read from the hosts at each
request; a host that does not answer is named in ``unreachable``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from vmferry.errors import NotFoundError
from vmferry.model import VmRecord, VmState
from vmferry.model.jsonable import to_jsonable
from vmferry.server.auth import require
from vmferry.server.context import Context
from vmferry.server.inventory import VmQuery, find_vm, select_vms
from vmferry.server.roles import Action
from vmferry.server.schemas import Problem, TagsIn, TagsOut, ValidationProblem, VmOut, VmPage
from vmferry.service.fleet import Fleet
from vmferry.store import accounts

router = APIRouter(prefix="/vms", tags=["vms"])
_GUEST_OS = Query(
    min_length=1,
    max_length=255,
    description="a part of the libosinfo id, any case: debian, microsoft.com/win",
)


def _out(record: VmRecord, tags: tuple[str, ...]) -> VmOut:
    spec = record.spec
    return VmOut(name=spec.name, uuid=spec.uuid, host=record.host, state=record.state.value,
                 persistent=record.persistent, vcpus=spec.vcpus, memory_bytes=spec.memory_bytes,
                 cpu_model=spec.cpu_model, arch=spec.arch, machine=spec.machine,
                 guest_os=spec.guest_os, tags=list(tags), spec=to_jsonable(spec),
                 devices_read=record.devices_read)  # fmt: skip


@router.get(
    "", response_model=VmPage, responses={404: {"model": Problem, "description": "no such host"}},
    dependencies=[Depends(require(Action.VMS_READ))],
)  # fmt: skip
def list_vms(
    context: Context,
    host: Annotated[str | None, Query(description="only this host's VMs")] = None,
    state: Annotated[VmState | None, Query()] = None,
    name: Annotated[str | None, Query(description="a glob: web*, *-db-?")] = None,
    tag: Annotated[list[str] | None, Query(description="VMs with every one of these tags")] = None,
    cpu_model: Annotated[str | None, Query()] = None,
    guest_os: Annotated[str | None, _GUEST_OS] = None,
    memory_min_mib: Annotated[int | None, Query(ge=0)] = None,
    memory_max_mib: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> VmPage:
    """The VMs of every registered host (or one), filtered, sorted by name, paged."""
    fleet = context.inventory(context.store, host)
    tags = accounts.vm_tags(context.store)
    query = VmQuery(host=host, state=state, name=name, tags=tuple(tag or ()), cpu_model=cpu_model,
                    guest_os=guest_os, memory_min_mib=memory_min_mib,
                    memory_max_mib=memory_max_mib, limit=limit, offset=offset)  # fmt: skip
    page, total = select_vms(fleet.records, tags, query)
    following = offset + limit
    return VmPage(items=[_out(r, tags.get(r.spec.name, ())) for r in page], total=total,
                  limit=limit, offset=offset, next_offset=following if following < total
                  else None, unreachable=fleet.unreachable)  # fmt: skip


def _require_vm(fleet: Fleet, vm_id: str) -> VmRecord:
    record = find_vm(fleet.records, vm_id)
    if record is None:
        hosts = ", ".join(sorted(fleet.unreachable))
        unsure = f" (hosts that did not answer: {hosts})" if hosts else ""
        raise NotFoundError(f"no VM named {vm_id!r} (or with that UUID) on the registered "
                            f"hosts{unsure}")  # fmt: skip
    return record


@router.get(
    "/{vm_id}", response_model=VmOut, responses={404: {"model": Problem}},
    dependencies=[Depends(require(Action.VMS_READ))],
)  # fmt: skip
def get_vm(vm_id: str, context: Context) -> VmOut:
    """One VM (where it is defined on several hosts: the host where it runs)."""
    record = _require_vm(context.inventory(context.store, None), vm_id)
    return _out(record, accounts.tags_of(context.store, record.spec.name))


@router.put(
    "/{vm_id}/tags", response_model=TagsOut,
    responses={404: {"model": Problem}, 413: {"model": Problem},
               422: {"model": ValidationProblem}},
    dependencies=[Depends(require(Action.VMS_TAG, "vm_id"))],
)  # fmt: skip
def put_tags(vm_id: str, body: TagsIn, request: Request, context: Context) -> TagsOut:
    """Replace the VM's tags (``project:P`` puts it in project P)."""
    record = _require_vm(context.inventory(context.store, None), vm_id)
    request.state.target = record.spec.name
    tags = accounts.set_vm_tags(context.store, record.spec.name, list(body.tags))
    return TagsOut(vm=record.spec.name, tags=list(tags))
