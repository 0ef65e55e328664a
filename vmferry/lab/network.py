"""Build and remove the lab's namespaces, bridges and links with iproute2 and tc."""

from __future__ import annotations

from collections.abc import Callable

from vmferry.drivers.process import run_tool
from vmferry.lab import topology as topo
from vmferry.lab.state import LabState

Record = Callable[[LabState], None]


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    run_tool(argv, timeout_s=30)


def existing_namespaces() -> set[str]:
    out = run_tool(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_exists(name: str) -> bool:
    return run_tool(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _add_netns(name: str, state: LabState, record: Record) -> None:
    _ip("netns", "add", name)
    state.namespaces.append(name)
    record(state)
    _ip("link", "set", "lo", "up", netns=name)


def _veth(a: str, a_ns: str | None, b: str, b_ns: str) -> None:
    """A veth pair with end ``a`` in ``a_ns`` (None: the root namespace) and ``b`` in ``b_ns``."""
    side_a = [a, *(["netns", a_ns] if a_ns else [])]
    _ip("link", "add", *side_a, "type", "veth", "peer", "name", b, "netns", b_ns)


def _bridge(name: str, netns: str) -> None:
    _ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=netns)
    _ip("link", "set", name, "up", netns=netns)


def _enslave(port: str, bridge: str, netns: str) -> None:
    _ip("link", "set", port, "master", bridge, netns=netns)
    _ip("link", "set", port, "up", netns=netns)


def _address(iface: str, cidr: str, netns: str | None) -> None:
    _ip("addr", "add", cidr, "dev", iface, netns=netns)
    _ip("link", "set", iface, "up", netns=netns)


def shape(iface: str, netns: str, link_mbps: int) -> None:
    """Limit ``iface``'s egress to ``link_mbps`` with a token bucket (replaces any earlier one)."""
    run_tool(
        [
            "tc", "-n", netns, "qdisc", "replace", "dev", iface, "root", "tbf",
            "rate", f"{link_mbps}mbit",
            "burst", str(topo.tbf_burst_bytes(link_mbps)),
            "latency", "50ms",
        ],
        timeout_s=30,
    )  # fmt: skip


def build(topology: topo.LabTopology, state: LabState, record: Record) -> None:
    """Create every namespace and link of ``topology``, recording each as it is made."""
    _add_netns(topo.FABRIC_NS, state, record)
    vm_bridges = sorted({h.vm_fabric_bridge for h in topology.hosts} | {"br-vm"})
    for bridge in ("br-mgmt", "br-mig", *vm_bridges):
        _bridge(bridge, topo.FABRIC_NS)

    # The management station: vmferry itself, in the root namespace.
    _veth(topo.STATION_IFACE, None, "station", topo.FABRIC_NS)
    state.links.append(topo.STATION_IFACE)
    record(state)
    _enslave("station", "br-mgmt", topo.FABRIC_NS)
    _address(topo.STATION_IFACE, f"{topo.STATION_ADDR}/24", None)

    for host in topology.hosts:
        ns = host.netns
        _add_netns(ns, state, record)
        _veth("mgmt0", ns, f"{host.name}-m", topo.FABRIC_NS)
        _enslave(f"{host.name}-m", "br-mgmt", topo.FABRIC_NS)
        _address("mgmt0", f"{host.mgmt_addr}/24", ns)

        _veth("mig0", ns, f"{host.name}-g", topo.FABRIC_NS)
        _enslave(f"{host.name}-g", "br-mig", topo.FABRIC_NS)
        _address("mig0", f"{host.migration_addr}/24", ns)
        shape("mig0", ns, topology.link_mbps)
        shape(f"{host.name}-g", topo.FABRIC_NS, topology.link_mbps)

        _bridge(topo.VM_BRIDGE, ns)
        _veth("vmup0", ns, f"{host.name}-v", topo.FABRIC_NS)
        _enslave("vmup0", topo.VM_BRIDGE, ns)
        _enslave(f"{host.name}-v", host.vm_fabric_bridge, topo.FABRIC_NS)

    _add_netns(topo.CLIENT_NS, state, record)
    _veth("eth0", topo.CLIENT_NS, "client", topo.FABRIC_NS)
    _enslave("client", "br-vm", topo.FABRIC_NS)
    _address("eth0", f"{topo.CLIENT_ADDR}/24", topo.CLIENT_NS)


def remove(state: LabState) -> list[str]:
    """Delete what ``state`` says the lab made; return what could not be removed."""
    problems: list[str] = []
    present = existing_namespaces()
    for ns in reversed(state.namespaces):
        if ns in present:
            done = run_tool(["ip", "netns", "del", ns], check=False)
            if done.returncode != 0:
                problems.append(f"namespace {ns}: {done.stderr.strip()}")
    for link in state.links:
        if link_exists(link):
            done = run_tool(["ip", "link", "del", link], check=False)
            # a veth whose peer was in a namespace just deleted goes away by itself, a
            # moment later: gone between the look and the delete is what was wanted
            if done.returncode != 0 and link_exists(link):
                problems.append(f"link {link}: {done.stderr.strip()}")
    return problems


def parse_tbf_rate_mbps(tc_output: str) -> int | None:
    """The rate in ``tc qdisc show`` output (``... tbf ... rate 400Mbit ...``), in Mbit/s."""
    words = tc_output.split()
    if "tbf" not in words or "rate" not in words[:-1]:
        return None
    value = words[words.index("rate") + 1].lower()
    for suffix, scale in (("gbit", 1000.0), ("mbit", 1.0), ("kbit", 0.001), ("bit", 1e-6)):
        if value.endswith(suffix):
            try:
                return round(float(value[: -len(suffix)]) * scale)
            except ValueError:
                return None
    return None
