"""libvirt networks and their portgroups, for port profiles (uses LibvirtHost's connection)."""

from __future__ import annotations

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost

_LIVE_AND_CONFIG = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def network_xml(host: LibvirtHost, name: str) -> str | None:
    """The network's XML, or None when the host has no such network."""
    try:
        net = host._c.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise host._error(exc, f"looking up network {name!r}") from exc
    try:
        return str(net.XMLDesc(0))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading network {name!r}") from exc


def _update(host: LibvirtHost, network: str, command: int, xml: str, doing: str) -> None:
    try:
        net = host._c.networkLookupByName(network)
        flags = _LIVE_AND_CONFIG if net.isActive() else libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        net.update(command, libvirt.VIR_NETWORK_SECTION_PORTGROUP, -1, xml, flags)
    except libvirt.libvirtError as exc:
        raise host._error(exc, doing) from exc


def add_portgroup(host: LibvirtHost, network: str, xml: str) -> None:
    _update(
        host,
        network,
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
        xml,
        f"adding a portgroup to network {network!r}",
    )


def modify_portgroup(host: LibvirtHost, network: str, xml: str) -> None:
    _update(
        host,
        network,
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
        xml,
        f"changing a portgroup of network {network!r}",
    )


def delete_portgroup(host: LibvirtHost, network: str, name: str) -> None:
    _update(
        host,
        network,
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
        f"<portgroup name='{name}'/>",
        f"removing portgroup {name!r} of {network!r}",
    )


def domain_xmls(host: LibvirtHost) -> dict[str, str]:
    """Every defined domain's XML (inactive definitions included), by name."""
    try:
        doms = host._c.listAllDomains(0)
        return {str(d.name()): str(d.XMLDesc(0)) for d in doms}
    except libvirt.libvirtError as exc:
        raise host._error(exc, "listing domains") from exc
