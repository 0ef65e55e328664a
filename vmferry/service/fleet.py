"""Every registered host's VMs now, as libvirt reports them, with the hosts that did not
answer (the server's inventory and `vmferry inventory`'s)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import HostUnreachableError
from vmferry.model import VmRecord
from vmferry.store.db import Store

__all__ = ["Fleet", "fleet_inventory"]


@dataclass(frozen=True)
class Fleet:
    records: list[VmRecord]
    unreachable: dict[str, str] = field(default_factory=dict)  # host name: why


def fleet_inventory(store: Store, host: str | None = None, *, timeout_s: float = 10) -> Fleet:
    """The VMs of every registered host (or of ``host`` only; :class:`NotFoundError` if it
    is not registered)."""
    hosts = [store.get_host(host)] if host is not None else store.list_hosts()
    records: list[VmRecord] = []
    unreachable: dict[str, str] = {}
    for registered in hosts:
        try:
            with LibvirtHost.connect(registered.name, registered.uri, timeout_s=timeout_s) as conn:
                records.extend(conn.list_vms())
        except HostUnreachableError as exc:
            unreachable[registered.name] = exc.message
    return Fleet(records, unreachable)
