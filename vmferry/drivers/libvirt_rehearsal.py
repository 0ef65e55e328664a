"""What a rehearsal makes on the destination through its libvirt, and removes again: qcow2
overlays on the VM's backups, an isolated network, a transient copy of the VM."""

from __future__ import annotations

from xml.sax.saxutils import escape

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost

__all__ = [
    "create_overlay",
    "destroy_copy",
    "ensure_isolated_network",
    "remove_network",
    "start_copy",
]


def create_overlay(host: LibvirtHost, pool: str, name: str, backing: str, capacity: int) -> str:
    """A new qcow2 volume ``name`` in ``pool`` whose reads fall through to ``backing`` (a
    qcow2 file) and whose writes stay in it; its path."""
    xml = (f"<volume><name>{escape(name)}</name><capacity unit='bytes'>{capacity}</capacity>"
           "<target><format type='qcow2'/></target>"
           f"<backingStore><path>{escape(backing)}</path><format type='qcow2'/></backingStore>"
           "</volume>")  # fmt: skip
    try:
        found = host._c.storagePoolLookupByName(pool)
        found.refresh(0)
        return str(found.createXML(xml, 0).path())
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"creating overlay {name} in pool {pool}") from exc


def ensure_isolated_network(host: LibvirtHost, name: str) -> bool:
    """Network ``name`` active, made transient and isolated (no forward, no address, no
    DHCP: nothing leaves it) when absent; True when this call made it."""
    try:
        try:
            net = host._c.networkLookupByName(name)
        except libvirt.libvirtError:
            host._c.networkCreateXML(f"<network><name>{escape(name)}</name></network>")
            return True
        if not net.isActive():
            net.create()
        return False
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"setting up the isolated network {name!r}") from exc


def remove_network(host: LibvirtHost, name: str) -> None:
    """Stop (and so remove, being transient) network ``name``; absent is fine."""
    try:
        host._c.networkLookupByName(name).destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return
        raise host._error(exc, f"removing network {name!r}") from exc


def start_copy(host: LibvirtHost, xml: str) -> None:
    """Start a transient domain from ``xml`` (gone from libvirt once it stops)."""
    try:
        host._c.createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise host._error(exc, "starting the rehearsal copy") from exc


def destroy_copy(host: LibvirtHost, name: str) -> bool:
    """Stop the transient copy ``name`` (so it is gone); False when there was none."""
    try:
        host._c.lookupByName(name).destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise host._error(exc, f"stopping {name!r}") from exc
    return True
