"""vSphere sources (docs/vsphere.md): `vmferry sources add|list|remove` and
`vmferry inventory --source`.

A source is stored only after one login proved its URL, user, password, certificate and
datacenter; the password itself is the caller's (environment or prompt) and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from vmferry.drivers.vsphere import vsphere_session
from vmferry.errors import BadInputError
from vmferry.imports.placement_settings import placement_findings
from vmferry.model.vsphere import VsphereSource, VsphereVm
from vmferry.sources.vsphere_inventory import vms_from_raw
from vmferry.sources.vsphere_url import parse_vsphere_url
from vmferry.store import vsphere_sources as sources_store
from vmferry.store.db import Store, open_store

__all__ = [
    "add_source",
    "get_source",
    "inventory",
    "list_sources",
    "probe_source",
    "remove_source",
]


def add_source(
    name: str,
    url: str,
    password: Callable[[VsphereSource], str],
    *,
    datacenter: str | None = None,
    ca_file: str | None = None,
    insecure: bool = False,
    store: Store | None = None,
    probe: Callable[[VsphereSource, str], None] | None = None,
) -> VsphereSource:
    """Register the vCenter or ESXi at ``url`` (``vsphere://USER@HOST[:PORT]``) as
    ``name`` once ``probe`` (default :func:`probe_source`) logged in with the password
    ``password`` gives (asked for after every other check); nothing is stored when any
    check or the login fails."""
    if not name or any(c.isspace() for c in name) or "/" in name:
        raise BadInputError(f"source name {name!r} must be non-empty, with no spaces or /")
    if ca_file is not None and insecure:
        raise BadInputError("--ca and --insecure exclude each other: trust one CA, or none")
    if ca_file is not None:
        ca_path = Path(ca_file)
        if not ca_path.is_file():
            raise BadInputError(f"--ca {ca_file}: no such file")
        ca_file = str(ca_path.resolve())
    address = parse_vsphere_url(url)
    store = store or open_store()
    source = VsphereSource(name, address.host, address.port, address.user,
                           datacenter=datacenter, ca_file=ca_file, insecure=insecure)  # fmt: skip
    sources_store.check_name_free(store, name)  # before connecting: a quick, clear refusal
    (probe or probe_source)(source, password(source))
    sources_store.add_source(store, source)
    return source


def probe_source(source: VsphereSource, password: str) -> None:
    """Log in to ``source`` and find its datacenter, if it names one; log out."""
    with vsphere_session(source, password) as session:
        if source.datacenter is not None:
            session.datacenter(source.datacenter)


def list_sources(store: Store | None = None) -> list[VsphereSource]:
    return sources_store.list_sources(store or open_store())


def remove_source(name: str, store: Store | None = None) -> None:
    """Forget the source ``name`` (nothing in vSphere changes)."""
    sources_store.remove_source(store or open_store(), name)


def get_source(name: str, store: Store | None = None) -> VsphereSource:
    """The source ``name``; :class:`NotFoundError` when there is none."""
    return sources_store.get_source(store or open_store(), name)


def inventory(source: VsphereSource, password: str) -> list[VsphereVm]:
    """The source's VMs as vSphere reports them now, by name, each with the findings its
    placement settings give (the same as a file import's)."""
    with vsphere_session(source, password) as session:
        raws, networks = session.read_inventory()
    return [replace(vm, placement_findings=tuple(placement_findings(vm.placement)))
            for vm in vms_from_raw(raws, networks)]  # fmt: skip
