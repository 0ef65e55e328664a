"""libvirt domain and network XML <-> ports and profiles (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from vmferry.errors import VmferryError
from vmferry.model.netprofile import Bandwidth, Segment, VmPort


@dataclass(frozen=True)
class PortgroupView:
    name: str
    inbound: Bandwidth | None = None
    outbound: Bandwidth | None = None
    default: bool = False


@dataclass(frozen=True)
class NetworkView:
    """A libvirt network as the profile code needs it."""

    name: str
    bridge: str | None
    forward_mode: str | None
    portgroups: dict[str, PortgroupView] = field(default_factory=dict)


def _parse(xml: str, what: str) -> Element:
    try:
        root: Element = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException) as exc:
        raise VmferryError(f"unreadable {what} XML: {exc}", cause=exc) from exc
    return root


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _bandwidth(parent: Element | None, direction: str) -> Bandwidth | None:
    if parent is None:
        return None
    el = parent.find(f"bandwidth/{direction}")
    if el is None:
        return None
    average = _int(el.get("average"))
    if average is None:
        return None
    return Bandwidth(average, _int(el.get("peak")), _int(el.get("burst")))


def ports_from_domain(domain_xml: str) -> tuple[VmPort, ...]:
    """Every network or bridge NIC of the domain, with its interface-level bandwidth."""
    root = _parse(domain_xml, "domain")
    vm = root.findtext("name", "")
    ports = []
    for iface in root.findall("devices/interface"):
        kind = iface.get("type", "")
        mac_el = iface.find("mac")
        source = iface.find("source")
        if mac_el is None or source is None or kind not in ("network", "bridge"):
            continue
        target = iface.find("target")
        network = source.get("network")  # a live XML may say type=bridge and name both
        bridge = source.get("bridge")
        ports.append(
            VmPort(
                vm=vm,
                mac=mac_el.get("address", "").lower(),
                segment=Segment(network, bridge),
                profile=source.get("portgroup"),
                target_dev=target.get("dev") if target is not None else None,
                interface_inbound=_bandwidth(iface, "inbound"),
                interface_outbound=_bandwidth(iface, "outbound"),
            )
        )
    return tuple(ports)


def network_view(network_xml: str) -> NetworkView:
    root = _parse(network_xml, "network")
    bridge = root.find("bridge")
    forward = root.find("forward")
    groups = {}
    for pg in root.findall("portgroup"):
        name = pg.get("name", "")
        groups[name] = PortgroupView(
            name, _bandwidth(pg, "inbound"), _bandwidth(pg, "outbound"), pg.get("default") == "yes"
        )
    return NetworkView(
        name=root.findtext("name", ""),
        bridge=bridge.get("name") if bridge is not None else None,
        forward_mode=forward.get("mode") if forward is not None else None,
        portgroups=groups,
    )


def _bandwidth_xml(direction: str, bw: Bandwidth | None) -> str:
    if bw is None:
        return ""
    attrs = f" average='{bw.average_kib_s}'"
    if bw.peak_kib_s is not None:
        attrs += f" peak='{bw.peak_kib_s}'"
    if bw.burst_kib is not None:
        attrs += f" burst='{bw.burst_kib}'"
    return f"<{direction}{attrs}/>"


def portgroup_xml(name: str, inbound: Bandwidth | None, outbound: Bandwidth | None) -> str:
    """The ``<portgroup>`` element for ``virNetworkUpdate`` (add or modify)."""
    inner = _bandwidth_xml("inbound", inbound) + _bandwidth_xml("outbound", outbound)
    body = f"<bandwidth>{inner}</bandwidth>" if inner else ""
    return f"<portgroup name={quoteattr(name)}>{body}</portgroup>"
