"""The inventory's filters and paging (`GET /vms`): pure functions of the VMs the hosts
reported and the tags vmferry keeps."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from vmferry.model import VmRecord, VmState

__all__ = ["VmQuery", "find_vm", "select_vms"]

MIB = 2**20


@dataclass(frozen=True)
class VmQuery:
    """What `GET /vms` asks for; None or empty: no filter."""

    host: str | None = None
    state: VmState | None = None
    name: str | None = None  # a glob: web*, *-db-?
    tags: tuple[str, ...] = ()  # every one of them
    cpu_model: str | None = None
    guest_os: str | None = None  # a part of the libosinfo id, any case: debian, win/2k19
    memory_min_mib: int | None = None
    memory_max_mib: int | None = None
    limit: int = 100
    offset: int = 0


def _matches(record: VmRecord, tags: tuple[str, ...], query: VmQuery) -> bool:
    spec = record.spec
    memory_mib = spec.memory_bytes / MIB
    return (
        (query.host is None or record.host == query.host)
        and (query.state is None or record.state is query.state)
        and (query.name is None or fnmatchcase(spec.name, query.name))
        and all(tag in tags for tag in query.tags)
        and (query.cpu_model is None or spec.cpu_model == query.cpu_model)
        and (query.guest_os is None or _guest_os_matches(spec.guest_os, query.guest_os))
        and (query.memory_min_mib is None or memory_mib >= query.memory_min_mib)
        and (query.memory_max_mib is None or memory_mib <= query.memory_max_mib)
    )


def _guest_os_matches(guest_os: str | None, wanted: str) -> bool:
    """Whether ``wanted`` is a part of ``guest_os``, whatever their case; a VM whose guest OS
    is unknown matches no filter."""
    return guest_os is not None and wanted.casefold() in guest_os.casefold()


def select_vms(
    records: list[VmRecord], tags_by_vm: dict[str, tuple[str, ...]], query: VmQuery
) -> tuple[list[VmRecord], int]:
    """The page ``query`` asks for, sorted by VM name then host, and how many match."""
    matching = sorted(
        (r for r in records if _matches(r, tags_by_vm.get(r.spec.name, ()), query)),
        key=lambda r: (r.spec.name, r.host),
    )
    return matching[query.offset : query.offset + query.limit], len(matching)


def find_vm(records: list[VmRecord], vm_id: str) -> VmRecord | None:
    """The VM named ``vm_id`` or with that UUID; where it is defined on several hosts, the
    host where it runs."""
    found = [r for r in records if vm_id in (r.spec.name, r.spec.uuid)]
    found.sort(key=lambda r: (r.state is not VmState.RUNNING, r.host))
    return found[0] if found else None
