"""A whole lab host failing, for HA tests (issue 16's contract), bounded and undone by
`restore`:

- ``kill``: SIGKILL every process in the host's network namespace (its holder, virtlogd,
  libvirtd, sshd and its guests' QEMU): the host is dead, as after a power loss;
- ``partition``: its management and migration links (``mgmt0``, ``mig0``) down, its daemons
  and guests left running: vmferry cannot reach it, while its VMs still serve on their
  segment.

``restore`` undoes either: the links up, or the host's daemons started again (its guests stay
off: libvirt keeps their definitions, nothing starts them). The fault is recorded in the lab
state (``failed``), so `lab status` shows it and `lab down` still stops what runs.
"""

from __future__ import annotations

import os
import signal
import time

from vmferry.drivers.process import run_tool
from vmferry.errors import BadInputError, LabError, NotFoundError
from vmferry.lab import daemons, ssh
from vmferry.lab import topology as topo
from vmferry.lab.lifecycle import is_running, topology_of
from vmferry.lab.state import LabState, lab_dir, load_state, save_state

__all__ = ["MODES", "POWER_ACTIONS", "fail_host", "power_host", "restore_host"]

MODES = ("kill", "partition")
POWER_ACTIONS = ("on", "off", "status")
LINKS = ("mgmt0", "mig0")


def _lab_host(host: str) -> tuple[LabState, topo.LabHost]:
    state = load_state()
    if state is None or not is_running(state):
        raise BadInputError("no lab is up; run `vmferry lab up` first")
    found = topology_of(state).host(host)
    if found is None:
        names = ", ".join(h.name for h in topology_of(state).hosts)
        raise NotFoundError(f"no lab host {host!r}; the lab has {names}")
    return state, found


def fail_host(host: str, mode: str) -> list[int]:
    """Make ``host`` fail as ``mode`` says; the pids killed (``kill``), else none."""
    if mode not in MODES:
        raise BadInputError(f"--mode must be one of {', '.join(MODES)} (got {mode!r})")
    state, lab_host = _lab_host(host)
    if host in state.failed:
        raise BadInputError(f"lab host {host} has failed already ({state.failed[host]}); "
                            f"`vmferry lab host restore {host}` first")  # fmt: skip
    killed: list[int] = []
    if mode == "partition":
        for link in LINKS:
            run_tool(["ip", "-n", lab_host.netns, "link", "set", link, "down"])
    else:
        killed = _kill_namespace(lab_host.netns)
        state.processes = [p for p in state.processes if p.host != host]
    state.failed[host] = mode
    save_state(state)
    return killed


def restore_host(host: str) -> None:
    """Undo ``host``'s failure (see the module's text)."""
    state, lab_host = _lab_host(host)
    mode = state.failed.get(host)
    if mode is None:
        raise BadInputError(f"lab host {host} has not failed")
    if mode == "partition":
        for link in LINKS:
            run_tool(["ip", "-n", lab_host.netns, "link", "set", link, "up"])
    else:
        base = lab_dir()
        state.processes.extend(daemons.start_host_daemons(base, lab_host))
        save_state(state)
        state.processes.append(ssh.start_sshd(base, lab_host))
    del state.failed[host]
    save_state(state)


def power_host(host: str, action: str) -> str:
    """The lab's power driver (a BMC reached from outside the host's links): ``off`` kills
    every process of the host as a power cut would (its links, if cut off, are put back up
    for the next power on), ``on`` starts its daemons again, ``status`` says which; the
    state after, ``on`` or ``off``."""
    if action not in POWER_ACTIONS:
        raise BadInputError(f"power action must be one of {', '.join(POWER_ACTIONS)} "
                            f"(got {action!r})")  # fmt: skip
    state, lab_host = _lab_host(host)
    mode = state.failed.get(host)
    if action == "status":
        return "off" if mode == "kill" else "on"
    if action == "on":
        if mode == "kill":
            restore_host(host)
        return "on"
    if mode == "kill":
        return "off"
    if mode == "partition":
        for link in LINKS:
            run_tool(["ip", "-n", lab_host.netns, "link", "set", link, "up"])
    _kill_namespace(lab_host.netns)
    state.processes = [p for p in state.processes if p.host != host]
    state.failed[host] = "kill"
    save_state(state)
    return "off"


def _kill_namespace(netns: str, timeout_s: float = 10) -> list[int]:
    """SIGKILL every process in network namespace ``netns``; wait until none is left."""
    deadline = time.monotonic() + timeout_s
    killed: list[int] = []
    while True:
        pids = [int(p) for p in run_tool(["ip", "netns", "pids", netns]).stdout.split()]
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} of {netns} still run {timeout_s:g} s after "
                           "SIGKILL")  # fmt: skip
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                continue
        time.sleep(0.1)
