"""What a rehearsal makes on the destination through its libvirt, and removes again: an
isolated network and a transient copy of the VM (its overlays are
:func:`vmferry.drivers.libvirt_blockcopy.create_volume` with a backing file)."""

from __future__ import annotations

from xml.sax.saxutils import escape

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost

__all__ = [
    "destroy_copy",
    "ensure_isolated_network",
    "remove_network",
    "start_copy",
]


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
