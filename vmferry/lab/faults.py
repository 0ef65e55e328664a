"""Faults for the lab's fault tests: each one bounded and undone by the same test.

- kill a host's libvirtd (and start it again, in the host's own namespaces);
- cut a host's migration link with an nftables drop rule in its namespace (and restore it);
- shorten how long a host waits for a TCP connect to a silent address (and restore it);
- give a host a storage pool too small for what a test copies into it (and remove it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.process import run_tool
from vmferry.errors import NotFoundError
from vmferry.lab import daemons
from vmferry.lab.lifecycle import topology_of
from vmferry.lab.processes import is_same_process
from vmferry.lab.state import LabState, lab_dir, load_state, save_state

FAULT_TABLE = "vmferry_fault"


def _state_and_host(host: str) -> tuple[LabState, str]:
    state = load_state()
    if state is None or topology_of(state).host(host) is None:
        raise NotFoundError(f"no lab host {host!r}")
    return state, host


def kill_libvirtd(host: str) -> int:
    """SIGKILL ``host``'s libvirtd (its QEMU processes keep running); return its pid."""
    state, _ = _state_and_host(host)
    proc = next(p for p in state.processes if p.host == host and p.role == "libvirtd")
    if is_same_process(proc.pid, proc.start_ticks):
        os.kill(proc.pid, signal.SIGKILL)
    return proc.pid


def start_libvirtd(host: str) -> None:
    """Start ``host``'s libvirtd again and record the new pid for `lab down`."""
    state, _ = _state_and_host(host)
    lab_host = topology_of(state).host(host)
    assert lab_host is not None
    holder = next(p for p in state.processes if p.host == host and p.role == "holder")
    record = daemons.restart_libvirtd(lab_dir(), lab_host, holder.pid)
    state.processes = [p for p in state.processes
                       if not (p.host == host and p.role == "libvirtd")] + [record]  # fmt: skip
    save_state(state)


def cut_migration_link(host: str) -> None:
    """Drop every packet on ``host``'s migration interface, both ways (nftables)."""
    state, _ = _state_and_host(host)
    lab_host = topology_of(state).host(host)
    assert lab_host is not None
    ruleset = (
        f"table inet {FAULT_TABLE} {{\n"
        "  chain in { type filter hook input priority -10; policy accept;\n"
        '    iifname "mig0" drop\n'
        "  }\n"
        "  chain out { type filter hook output priority -10; policy accept;\n"
        '    oifname "mig0" drop\n'
        "  }\n"
        "}\n"
    )
    run_tool(["ip", "netns", "exec", lab_host.netns, "nft", "-f", "-"], input_text=ruleset)


def restore_migration_link(host: str) -> None:
    state, _ = _state_and_host(host)
    lab_host = topology_of(state).host(host)
    assert lab_host is not None
    run_tool(["ip", "netns", "exec", lab_host.netns, "nft", "delete", "table", "inet",
              FAULT_TABLE], check=False)  # fmt: skip


@contextlib.contextmanager
def migration_link_cut(host: str) -> Iterator[None]:
    cut_migration_link(host)
    try:
        yield
    finally:
        restore_migration_link(host)


@contextlib.contextmanager
def syn_retries(host: str, retries: int) -> Iterator[None]:
    """Let ``host`` give up a TCP connect to a silent address sooner, then restore it.

    libvirt connects a migration's socket itself, in a blocking call that holds the
    domain's job lock (no statistics, no abort meanwhile), and waits for the kernel's
    SYN retries: about 130 s with Linux's default of 6, 15 s with 3
    (``net.ipv4.tcp_syn_retries`` is per network namespace).
    """
    state, _ = _state_and_host(host)
    lab_host = topology_of(state).host(host)
    assert lab_host is not None
    key = "net.ipv4.tcp_syn_retries"
    sysctl = ["ip", "netns", "exec", lab_host.netns, "sysctl"]
    before = run_tool([*sysctl, "-n", key]).stdout.strip()
    run_tool([*sysctl, "-w", f"{key}={retries}"])
    try:
        yield
    finally:
        run_tool([*sysctl, "-w", f"{key}={before}"])


@contextlib.contextmanager
def small_pool(host: str, pool: str, size_mib: int) -> Iterator[str]:
    """A directory pool ``pool`` on ``host`` whose file system holds ``size_mib`` MiB (a
    tmpfs mounted in the host's own mount namespace, as a small disk would be); yields its
    path inside the host. Afterwards the pool is removed from libvirt and the tmpfs, with
    whatever was written into it, unmounted."""
    state, _ = _state_and_host(host)
    lab_host = topology_of(state).host(host)
    assert lab_host is not None
    holder = next(p for p in state.processes if p.host == host and p.role == "holder")
    inside = ["nsenter", "-t", str(holder.pid), "-m"]
    path = f"/var/lib/libvirt/{pool}"
    run_tool([*inside, "mkdir", "-p", path])
    run_tool([*inside, "mount", "-t", "tmpfs", "-o", f"size={size_mib}m", f"lab-{pool}", path])
    try:
        with LibvirtHost.connect(lab_host.name, lab_host.uri) as conn:
            conn.ensure_dir_pool(pool, path)
        try:
            yield path
        finally:
            _remove_pool(lab_host.uri, pool)
    finally:
        run_tool([*inside, "umount", path], check=False)
        run_tool([*inside, "rmdir", path], check=False)


def _remove_pool(uri: str, pool: str) -> None:
    conn = libvirt.open(uri)
    try:
        found = conn.storagePoolLookupByName(pool)
        if found.isActive():
            found.destroy()
        found.undefine()
    finally:
        conn.close()
