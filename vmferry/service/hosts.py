"""Register, list and read hosts."""

from __future__ import annotations

from collections.abc import Callable

from vmferry.drivers.host_exec import parse_shell
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError
from vmferry.model import Host, VmRecord
from vmferry.store import maintenance
from vmferry.store.db import Store, open_store


def add_host(
    name: str,
    uri: str,
    migration_uri: str | None = None,
    *,
    shell: str | None = None,
    link_mbps: int | None = None,
    migration_tls: bool = False,
    store: Store | None = None,
    probe: Callable[[str, str], None] | None = None,
) -> Host:
    """Register a host after checking that its libvirt answers (``probe``, default
    :func:`probe_host`); nothing is stored otherwise."""
    if not name or any(c.isspace() for c in name):
        raise BadInputError(f"host name {name!r} must be non-empty with no spaces")
    if migration_uri is not None and "://" not in migration_uri:
        raise BadInputError(f"--migration-uri {migration_uri!r} must look like tcp://ADDRESS")
    if shell is not None:
        parse_shell(shell)  # one line naming the forms it takes
    if link_mbps is not None and link_mbps <= 0:
        raise BadInputError(f"--link-mbps {link_mbps} must be a positive rate in Mbit/s")
    store = store or open_store()
    host = Host(name, uri, migration_uri, shell=shell, link_mbps=link_mbps,
                migration_tls=migration_tls)  # fmt: skip
    (probe or probe_host)(name, uri)
    store.add_host(host)
    return host


def probe_host(name: str, uri: str) -> None:
    """:class:`HostUnreachableError` unless the libvirt at ``uri`` answers."""
    with LibvirtHost.connect(name, uri):
        pass


def list_hosts() -> list[Host]:
    return open_store().list_hosts()


def remove_host(name: str, store: Store | None = None) -> None:
    """Forget host ``name`` (and its maintenance state: a host added again is in service)."""
    store = store or open_store()
    store.remove_host(name)
    maintenance.clear(store, name)


def inventory(host_name: str | None = None) -> list[VmRecord]:
    """Every VM of one host, or of every registered host, as libvirt reports it now."""
    store = open_store()
    hosts = [store.get_host(host_name)] if host_name else store.list_hosts()
    records: list[VmRecord] = []
    for host in hosts:
        with LibvirtHost.connect(host.name, host.uri) as conn:
            records.extend(conn.list_vms())
    return records
