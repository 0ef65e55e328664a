"""Find which registered host a VM lives on."""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError, HostUnreachableError, NotFoundError
from vmferry.model import Host, VmRecord, VmState
from vmferry.store.db import open_store

__all__ = ["VmLocation", "locate", "locate_vm"]

_ACTIVE = frozenset({VmState.RUNNING, VmState.PAUSED, VmState.BLOCKED, VmState.SHUTTING_DOWN})


@dataclass(frozen=True)
class VmLocation:
    """Where VM ``record.spec.name`` was found: on ``host``.

    ``also_defined_on`` names other hosts where a VM of that name is defined but not
    running; ``unreachable`` the registered hosts that did not answer (the VM could be
    there too).
    """

    host: Host
    record: VmRecord
    also_defined_on: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()


def locate_vm(name: str, hosts: list[Host] | None = None) -> tuple[Host, VmRecord]:
    """The host that has VM ``name`` and the VM as that host reports it; see :func:`locate`."""
    found = locate(name, hosts)
    return found.host, found.record


def locate(name: str, hosts: list[Host] | None = None) -> VmLocation:
    """Look for VM ``name`` on ``hosts`` (default: every registered host).

    When several hosts define it, the one where it runs wins (a stale copy left behind by
    an earlier move is common); the others are named in the result.
    Raises :class:`NotFoundError` when no host has it, and :class:`BadInputError` when it
    runs on more than one host, or is defined on several and runs on none.
    """
    if hosts is None:
        hosts = open_store().list_hosts()
    if not hosts:
        raise NotFoundError(
            "no hosts are registered, so there is nowhere to look for VM "
            f"{name!r}; register them with `vmferry hosts add NAME URI`"
        )
    found: list[tuple[Host, VmRecord]] = []
    unreachable: list[str] = []
    for host in hosts:
        try:
            with LibvirtHost.connect(host.name, host.uri) as conn:
                found.append((host, conn.get_vm(name)))
        except NotFoundError:
            continue
        except HostUnreachableError:
            unreachable.append(host.name)
    if not found:
        searched = ", ".join(h.name for h in hosts if h.name not in unreachable) or "none"
        skipped = f"; not searched (no answer): {', '.join(unreachable)}" if unreachable else ""
        raise NotFoundError(
            f"no registered host has a VM named {name!r} (searched: {searched}{skipped}); "
            "check the name with `vmferry inventory`"
        )
    running = [(h, r) for h, r in found if r.state in _ACTIVE]
    if len(running) > 1:
        raise BadInputError(
            f"VM {name!r} is running on more than one host "
            f"({', '.join(h.name for h, _ in running)}); two VMs with one name must not "
            "run at once: stop or rename one, then check again"
        )
    if not running and len(found) > 1:
        raise BadInputError(
            f"VM {name!r} is defined on {', '.join(h.name for h, _ in found)} and runs on "
            "none of them; remove the stale definitions, or start the one you mean"
        )
    host, record = running[0] if running else found[0]
    others = tuple(h.name for h, _ in found if h.name != host.name)
    return VmLocation(host, record, others, tuple(unreachable))
