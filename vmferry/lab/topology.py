"""Pure description of a lab: names, addresses and links for N hosts.

Every address is in 198.18.0.0/15 (RFC 2544 benchmarking range) and no namespace has a
default route, so nothing in the lab can reach beyond it.

    root ns (vmferry)  --vmf-mgmt 198.18.0.254--+
                                                 |  fabric ns: br-mgmt, br-mig, br-vm
    host kvmN ns: mgmt0 198.18.0.(10+N) ---------+  (the "switches")
                  mig0  198.18.1.(10+N) --- tbf at --link-mbps --- br-mig
                  vmbr0 (bridge) <- vmup0 ------------------------ br-vm (segment 1) or br-vm2 (2)
    client ns:    eth0  198.18.2.250 ------------------------------ br-vm
    guests:       198.18.2.(100+k) on each host's vmbr0
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

MAX_HOSTS = 8
NS_PREFIX = "vmf-"
FABRIC_NS = "vmf-fabric"
CLIENT_NS = "vmf-client"
STATION_IFACE = "vmf-mgmt"
STATION_ADDR = "198.18.0.254"
CLIENT_ADDR = "198.18.2.250"
MGMT_NET = "198.18.0.0/24"
MIGRATION_NET = "198.18.1.0/24"
VM_NET = "198.18.2.0/24"
VM_BRIDGE = "vmbr0"
VM_NETWORK_NAME = "vmnet"
SHARED_POOL = "lab-shared"
LOCAL_POOL = "default"
FIRST_GUEST_OCTET = 100
LAST_GUEST_OCTET = 249
LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT = 16509, 16514
TRANSPORTS = ("tls", "tcp")
_UUID_NS = uuid.UUID("6f0d6a57-3c1e-4a52-9b0e-0a7f3e5d9c11")


@dataclass(frozen=True)
class LabHost:
    """One lab host: a network namespace with its own libvirtd."""

    index: int
    name: str
    netns: str
    mgmt_addr: str
    migration_addr: str
    segment: int = 1  # which VM segment (fabric bridge) its vmbr0 is on
    transport: str = "tls"  # tls | tcp (no authentication: only with `lab up --insecure-tcp`)
    client_pki: str = ""  # the client's certificate directory (a URI's pkipath)

    @property
    def vm_fabric_bridge(self) -> str:
        return vm_fabric_bridge(self.segment)

    @property
    def uri(self) -> str:
        """How vmferry (and a peer's libvirtd) reaches this host's libvirtd."""
        if self.transport == "tcp":
            return f"qemu+tcp://{self.mgmt_addr}/system"
        return f"qemu+tls://{self.mgmt_addr}/system?pkipath={self.client_pki}"

    @property
    def libvirt_port(self) -> int:
        return LIBVIRT_TCP_PORT if self.transport == "tcp" else LIBVIRT_TLS_PORT

    @property
    def migration_uri(self) -> str:
        return f"tcp://{self.migration_addr}"

    @property
    def host_uuid(self) -> str:
        return str(uuid.uuid5(_UUID_NS, self.name))


@dataclass(frozen=True)
class LabTopology:
    hosts: tuple[LabHost, ...]
    link_mbps: int

    def host(self, name: str) -> LabHost | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (FABRIC_NS, CLIENT_NS, *(h.netns for h in self.hosts))


MAX_SEGMENTS = 2
CLIENT_SEGMENT = 1


def vm_fabric_bridge(segment: int) -> str:
    """The fabric's bridge for VM segment ``segment``: br-vm (1, the client's), br-vm2 (2)."""
    return "br-vm" if segment == 1 else f"br-vm{segment}"


def parse_segments(text: str, hosts: int) -> tuple[int, ...]:
    """``--segments 1,1,2``: the VM segment of each host, in order (ValueError otherwise)."""
    try:
        segments = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"--segments {text!r}: one segment number per host, e.g. 1,1,2") from None
    if len(segments) != hosts or not all(1 <= s <= MAX_SEGMENTS for s in segments):
        raise ValueError(f"--segments {text!r}: {hosts} numbers, each 1 to {MAX_SEGMENTS}")
    return segments


def host_name(index: int) -> str:
    return f"kvm{index}"


def make_topology(
    hosts: int,
    link_mbps: int,
    segments: tuple[int, ...] | None = None,
    *,
    transport: str = "tls",
    client_pki: str = "/var/lib/vmferry-lab/pki/client",
) -> LabTopology:
    """Describe a lab of ``hosts`` hosts whose migration links run at ``link_mbps``; host i's
    vmbr0 is on VM segment ``segments[i-1]`` (default: all on segment 1, the client's);
    vmferry reaches their libvirtd over ``transport`` with the client files in
    ``client_pki``."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport {transport!r}: one of {', '.join(TRANSPORTS)}")
    if segments and (len(segments) != hosts or not all(1 <= s <= MAX_SEGMENTS for s in segments)):
        raise ValueError(f"segments: {hosts} numbers, each 1 to {MAX_SEGMENTS}, not {segments}")
    if not 1 <= hosts <= MAX_HOSTS:
        raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {hosts}")
    if not 1 <= link_mbps <= 100_000:
        raise ValueError(f"--link-mbps must be between 1 and 100000, not {link_mbps}")
    return LabTopology(
        hosts=tuple(
            LabHost(
                index=i,
                name=host_name(i),
                netns=f"{NS_PREFIX}{host_name(i)}",
                mgmt_addr=f"198.18.0.{10 + i}",
                migration_addr=f"198.18.1.{10 + i}",
                segment=segments[i - 1] if segments else 1,
                transport=transport,
                client_pki=client_pki,
            )
            for i in range(1, hosts + 1)
        ),
        link_mbps=link_mbps,
    )


def tbf_burst_bytes(link_mbps: int) -> int:
    """A token-bucket burst big enough for the rate at a 4 ms timer tick, at least 32 KiB."""
    return max(32 * 1024, link_mbps * 1_000_000 // 8 // 250)


def guest_addr(octet: int) -> str:
    return f"198.18.2.{octet}"


def guest_mac(octet: int) -> str:
    """A stable locally administered MAC for the guest at 198.18.2.<octet>."""
    return f"52:54:00:12:02:{octet:02x}"


def free_guest_octet(used: set[int]) -> int:
    for octet in range(FIRST_GUEST_OCTET, LAST_GUEST_OCTET + 1):
        if octet not in used:
            return octet
    raise ValueError("the lab VM network is full (150 guests)")
