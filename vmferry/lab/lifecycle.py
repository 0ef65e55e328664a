"""`vmferry lab up|down|status`: build the lab, take it apart, say what is there."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.process import run_tool
from vmferry.errors import (
    AlreadyExistsError,
    BadInputError,
    LabError,
    NotFoundError,
    VmferryError,
)
from vmferry.lab import cgroups, daemons, network, pki, ssh
from vmferry.lab import topology as topo
from vmferry.lab.processes import is_same_process, start_ticks, stop
from vmferry.lab.state import LabState, lab_dir, load_state, remove_state, save_state
from vmferry.model import Host
from vmferry.store.db import open_store

Progress = Callable[[str], None]
REQUIRED_TOOLS = (
    "ip",
    "tc",
    "unshare",
    "tini",
    "libvirtd",
    "virtlogd",
    "virtlockd",
    "qemu-system-x86_64",
    "qemu-img",
)


def _quiet(_message: str) -> None:
    return None


def topology_of(state: LabState, base: Path | None = None) -> topo.LabTopology:
    return topo.make_topology(state.hosts, state.link_mbps, tuple(state.segments) or None,
                              transport=state.transport,
                              client_pki=str(pki.client_dir(base or lab_dir())))  # fmt: skip


def host_uri(name: str) -> str:
    """The libvirt URI of lab host ``name`` in the lab that is up (LabError if none is)."""
    state = load_state()
    host = topology_of(state).host(name) if state is not None else None
    if host is None:
        raise LabError(f"no lab host {name!r}: is the lab up? (`vmferry lab status`)")
    return host.uri


def is_running(state: LabState) -> bool:
    """True when any daemon the lab started is still alive."""
    return any(is_same_process(p.pid, p.start_ticks) for p in state.processes)


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise BadInputError("the lab needs root (network namespaces, libvirtd); run it as root")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise BadInputError(f"missing {', '.join(missing)}; run `make install` first")


def _remove_leftovers(progress: Progress) -> None:
    """Namespaces and links a crashed lab left behind without a state file."""
    leftovers = [n for n in network.existing_namespaces() if _is_lab_namespace(n)]
    for ns in leftovers:
        progress(f"removing leftover namespace {ns}")
        run_tool(["ip", "netns", "del", ns], check=False)
    if network.link_exists(topo.STATION_IFACE):
        run_tool(["ip", "link", "del", topo.STATION_IFACE], check=False)


def _is_lab_namespace(name: str) -> bool:
    names = {topo.FABRIC_NS, topo.CLIENT_NS}
    names.update(f"{topo.NS_PREFIX}{topo.host_name(i)}" for i in range(1, topo.MAX_HOSTS + 1))
    return name in names


def up(
    hosts: int = 2,
    link_mbps: int = 400,
    progress: Progress = _quiet,
    segments: tuple[int, ...] | None = None,
    *,
    transport: str = "tls",
) -> LabState:
    """Bring up a lab of ``hosts`` libvirt hosts (host i's VM network on segment
    ``segments[i-1]``), reached over ``transport`` (``tls``, or ``tcp`` with no
    authentication); on any failure take down what was made."""
    base = lab_dir()
    try:
        topology = topo.make_topology(hosts, link_mbps, segments, transport=transport,
                                      client_pki=str(pki.client_dir(base)))  # fmt: skip
    except ValueError as exc:
        raise BadInputError(str(exc)) from exc
    _check_prerequisites()
    previous = load_state(base)
    if previous is not None:
        if is_running(previous):
            raise AlreadyExistsError(
                f"a lab of {previous.hosts} hosts is already up; "
                "run `vmferry lab down` first, or use it as it is"
            )
        progress("cleaning up after a lab that did not stop cleanly")
        down(progress)
    _remove_leftovers(progress)

    state = LabState(hosts=hosts, link_mbps=link_mbps, segments=list(segments or ()),
                     transport=transport)  # fmt: skip
    save_state(state, base)
    try:
        if transport == "tls":
            progress("making the lab's CA and the hosts' and client's certificates")
            pki.make_lab_pki(base, topology.hosts)
        progress(f"building {hosts} hosts, migration links at {link_mbps} Mbit/s")
        network.build(topology, state, lambda s: save_state(s, base))
        progress("making the lab's SSH keys (vmferry runs nft and tc on the hosts over SSH)")
        ssh.make_lab_ssh(base, topology.hosts)
        shared = base / "shared"
        for sub in ("pool", "consoles"):
            (shared / sub).mkdir(parents=True, exist_ok=True)
        for host in topology.hosts:
            progress(f"starting libvirtd on {host.name} ({host.uri})")
            daemons.prepare_host_dir(base, host, pki.host_libvirt_dir(base, host.name),
                                     pki.host_qemu_dir(base, host.name))  # fmt: skip
            state.processes.extend(daemons.start_host_daemons(base, host))
            save_state(state, base)
            state.processes.append(ssh.start_sshd(base, host))
            save_state(state, base)
            seeded = daemons.capabilities_seed_dir().is_dir()
            if not seeded:
                progress("probing QEMU's capabilities once for this machine (about 30 s)")
            _configure_host(host, shared / "pool")
            if not seeded:
                daemons.save_capabilities_seed(base, host)
        _register_hosts(base, topology, state)
        save_state(state, base)
        state.status = "up"
        save_state(state, base)
    except BaseException:
        progress("lab up failed: removing what it made")
        down(progress)
        raise
    return state


def _configure_host(host: topo.LabHost, shared_pool: Path) -> None:
    vm_network = (
        f"<network><name>{topo.VM_NETWORK_NAME}</name><forward mode='bridge'/>"
        f"<bridge name='{topo.VM_BRIDGE}'/>"
        "<portgroup name='default' default='yes'/></network>"
    )
    with LibvirtHost.connect(host.name, host.uri) as conn:
        conn.ensure_network(topo.VM_NETWORK_NAME, vm_network)
        conn.ensure_dir_pool(topo.SHARED_POOL, str(shared_pool))
        conn.ensure_dir_pool(topo.LOCAL_POOL, "/var/lib/libvirt/images")
        conn.warm_capabilities()


def _register_hosts(base: Path, topology: topo.LabTopology, state: LabState) -> None:
    store = open_store()
    for host in topology.hosts:
        shell = ssh.shell_for(base, host)  # vmferry runs nft and tc there over SSH
        store.replace_host(Host(host.name, host.uri, host.migration_uri, shell=shell,
                                link_mbps=state.link_mbps,
                                migration_tls=host.transport == "tls"))  # fmt: skip
        state.registered_hosts.append(host.name)


def down(progress: Progress = _quiet) -> bool:
    """Stop everything the lab started and remove everything it made. False if no lab."""
    base = lab_dir()
    state = load_state(base)
    if state is None:
        _remove_leftovers(progress)
        return False
    problems: list[str] = []
    topology = topology_of(state)
    running = {p.host for p in state.processes if p.role == "libvirtd"
               and is_same_process(p.pid, p.start_ticks)}  # fmt: skip
    for host in topology.hosts:
        if host.name in running:
            progress(f"stopping the VMs on {host.name}")
            try:
                with LibvirtHost.connect(host.name, host.uri, timeout_s=5) as conn:
                    conn.destroy_all()
            except VmferryError as exc:
                problems.append(exc.message)
    # QEMU processes that outlived their libvirtd (it crashed, or was killed in a test).
    for host in topology.hosts:
        for pid in daemons.qemu_pids(base, host.name):
            ticks = start_ticks(pid)
            if ticks is not None and _is_qemu(pid):
                stop(pid, ticks)
    progress("stopping libvirtd, virtlogd, virtlockd and sshd")
    for proc in sorted(state.processes, key=lambda p: p.role != "libvirtd"):
        if not stop(proc.pid, proc.start_ticks):
            problems.append(f"{proc.role} of {proc.host} (pid {proc.pid}) would not stop")
    progress("removing namespaces, links and cgroups")
    problems.extend(network.remove(state))
    for host in topology.hosts:
        problems.extend(cgroups.remove_host_groups(host.name))
    if state.registered_hosts:
        try:
            store = open_store()
            for name in state.registered_hosts:
                with contextlib.suppress(NotFoundError):
                    store.remove_host(name)
        except VmferryError as exc:
            problems.append(f"store: {exc.message}")
    if problems:
        raise LabError("lab down left something behind: " + "; ".join(problems))
    for sub in ("hosts", "shared", "pki", "ssh"):
        shutil.rmtree(base / sub, ignore_errors=True)
    remove_state(base)
    return True


def _is_qemu(pid: int) -> bool:
    try:
        return b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class HostStatus:
    name: str
    uri: str
    migration_uri: str
    mgmt_addr: str
    migration_addr: str
    libvirtd_running: bool
    vms: tuple[str, ...]


@dataclass(frozen=True)
class LinkStatus:
    name: str
    network: str
    rate_mbps: int | None


@dataclass(frozen=True)
class LabStatus:
    up: bool
    hosts: tuple[HostStatus, ...] = ()
    links: tuple[LinkStatus, ...] = ()
    client_addr: str | None = None
    guests: tuple[str, ...] = field(default_factory=tuple)


def status() -> LabStatus:
    state = load_state()
    if state is None:
        return LabStatus(up=False)
    topology = topology_of(state)
    hosts: list[HostStatus] = []
    links: list[LinkStatus] = []
    for host in topology.hosts:
        alive = any(p.host == host.name and p.role == "libvirtd"
                    and is_same_process(p.pid, p.start_ticks) for p in state.processes)  # fmt: skip
        hosts.append(HostStatus(host.name, host.uri, host.migration_uri, host.mgmt_addr,
                                host.migration_addr, alive,
                                _running_vms(host) if alive else ()))  # fmt: skip
        links.append(LinkStatus(f"{host.name}:mig0", topo.MIGRATION_NET,
                                _tbf_rate_mbps(host.netns, "mig0")))  # fmt: skip
    return LabStatus(
        up=state.status == "up" and is_running(state),
        hosts=tuple(hosts),
        links=tuple(links),
        client_addr=topo.CLIENT_ADDR,
        guests=tuple(sorted(state.guests)),
    )


def _running_vms(host: topo.LabHost) -> tuple[str, ...]:
    try:
        with LibvirtHost.connect(host.name, host.uri, timeout_s=5) as conn:
            return tuple(conn.running_vm_names())
    except VmferryError:
        return ()


def _tbf_rate_mbps(netns: str, iface: str) -> int | None:
    out = run_tool(["tc", "-n", netns, "qdisc", "show", "dev", iface], check=False).stdout
    return network.parse_tbf_rate_mbps(out)
