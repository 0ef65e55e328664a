"""Port profiles: what the network promises a VM's NIC, wherever the VM runs.

A :class:`PortProfile` is named and host-independent: the libvirt network (and portgroup of
the same name) it lives in, the rate limits, the ACL for traffic to the VM and a security
label. A :class:`VmPort` is one NIC of one VM as a host sees it: its MAC, its L2 segment, the
addresses seen on it, and the profile it uses. Pure data; no I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AclProto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ANY = "any"


@dataclass(frozen=True)
class AclRule:
    """Allow traffic to the VM: ``proto`` to ``ports`` (empty: any port; only tcp/udp have
    ports) from ``peer`` (an IPv4 network in CIDR form; None: from anywhere)."""

    proto: AclProto
    ports: tuple[int, ...] = ()
    peer: str | None = None


@dataclass(frozen=True)
class Bandwidth:
    """One direction's limit, in libvirt's units: average and peak in KiB/s, burst in KiB."""

    average_kib_s: int
    peak_kib_s: int | None = None
    burst_kib: int | None = None


@dataclass(frozen=True)
class PortProfile:
    """A named port profile. ``name`` is also the portgroup's name in ``network``.

    ``inbound`` limits traffic to the VM, ``outbound`` traffic from it (libvirt's sense).
    ``acl`` None means no filtering; an empty tuple allows nothing but ARP and the replies
    of the VM's own TCP connections. ``vni`` is the VXLAN VNI of the segment, where used.
    """

    name: str
    network: str
    inbound: Bandwidth | None = None
    outbound: Bandwidth | None = None
    acl: tuple[AclRule, ...] | None = None
    security_level: str = "default"
    vni: int | None = None


@dataclass(frozen=True)
class Segment:
    """The L2 segment a NIC is on, as its host names it."""

    network: str | None
    bridge: str | None
    vni: int | None = None


@dataclass(frozen=True)
class VmPort:
    """One NIC of a VM: ``profile`` is the portgroup it uses (None: none)."""

    vm: str
    mac: str
    segment: Segment
    profile: str | None = None
    target_dev: str | None = None
    addresses: tuple[str, ...] = ()
    interface_inbound: Bandwidth | None = None
    interface_outbound: Bandwidth | None = None


@dataclass(frozen=True)
class FdbEntry:
    """One forwarding entry of a bridge: ``port`` is the bridge port the MAC was learned on."""

    mac: str
    port: str
    local: bool = False  # the bridge's own (permanent) address


class L2Reach(enum.StrEnum):
    REACHED = "reached"  # an ARP probe from the destination's bridge got the VM's answer
    UNREACHED = "unreached"  # no answer: the destination is on another L2 segment
    UNVERIFIED = "unverified"  # vmferry could not probe (not a lab host, no address known)


@dataclass(frozen=True)
class NetworkPlan:
    """What vmferry will do to the destination's network before a move, per NIC profile."""

    vm: str
    ports: tuple[VmPort, ...]
    profiles: tuple[PortProfile, ...] = ()
    create_portgroups: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
