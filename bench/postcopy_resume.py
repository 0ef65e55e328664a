"""Post-copy after a cut link, then `--postcopy-resume`: does this stack's libvirt recover it?

Issue 12 item 5 asks for a post-copy move whose link is cut, then recovered with libvirt's
post-copy resume, the guest's memory intact. This probe runs that sequence with plain
libvirt calls (no vmferry engine: the question is the stack's, not vmferry's policy) on the
lab, and reports each step:

1. a lab guest on kvm1 (512 MiB, 256 MiB working set dirtied at 36 MiB/s, its memory
   checked by its own workload on the serial console), moved to kvm2 live with post-copy
   allowed (`migrateToURI3`, p2p, the lab's shared storage, 5 MiB/s so that post-copy has
   most of the memory still to send), switched to post-copy after 4 s;
2. kvm1's migration link cut (the lab's nftables drop rule), then post-copy paused on the
   source (`abortJobFlags(VIR_DOMAIN_ABORT_JOB_POSTCOPY)`, `virsh domjobabort --postcopy`);
3. the link restored; the destination's QEMU sees the broken stream and pauses too;
4. the move resumed (`migrateToURI3` with `VIR_MIGRATE_POSTCOPY_RESUME`, `virsh migrate
   --postcopy --postcopy-resume`); then the guest's state and a clean memory check on kvm2.

Every fault is bounded: the drop rule is removed in a `finally`, the lab is taken down at
the end (its guest with it). Needs root; it brings up its own lab (`vmferry lab down`
first).

    sudo .venv/bin/python bench/postcopy_resume.py          # steps on stderr, JSON on stdout
    sudo .venv/bin/python bench/postcopy_resume.py --tls    # the migration stream over TLS
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import threading
import time
from typing import Any

import libvirt

from vmferry.errors import LabError
from vmferry.lab import faults, guests, lifecycle
from vmferry.lab.console import wait_for_memcheck
from vmferry.lab.lifecycle import topology_of
from vmferry.lab.lock import lab_turn
from vmferry.lab.processes import is_same_process
from vmferry.lab.state import load_state

GUEST = "pcresume"
STATES = {
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY): "running (post-copy)",
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED): "running "
    "(post-copy failed)",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY): "paused (post-copy)",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED): "paused "
    "(post-copy failed)",
}


class Probe:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: list[dict[str, Any]] = []

    def step(self, what: str, **found: Any) -> None:
        at = round(time.monotonic() - self.started, 2)
        self.steps.append({"at_s": at, "step": what, **found})
        print(f"[{at:7.2f}] {what} {json.dumps(found) if found else ''}", file=sys.stderr)


def state_of(dom: libvirt.virDomain) -> str:
    try:
        state, reason = dom.state()
    except libvirt.libvirtError as exc:
        return f"unknown ({exc.get_error_message()})"
    return STATES.get((state, reason), f"state {state} reason {reason}")


def libvirtd_alive(host: str) -> bool:
    state = load_state()
    assert state is not None
    return any(p.host == host and p.role == "libvirtd" and is_same_process(p.pid, p.start_ticks)
               for p in state.processes)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", action="store_true", help="the migration stream over TLS")
    args = parser.parse_args()
    with lab_turn():
        lifecycle.up(2, 400)
        try:
            probe = Probe()
            report = run(probe, args.tls)
        finally:
            lifecycle.down()
    print(json.dumps({"steps": probe.steps, **report}, indent=2))
    return 0


def kernel_log() -> list[tuple[float, str]]:
    """The kernel's log lines with their stamps (seconds since boot)."""
    done = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    lines = []
    for line in done.stdout.splitlines():
        stamp, _, text = line.partition("]")
        with contextlib.suppress(ValueError):
            lines.append((float(stamp.lstrip("[ ")), text.strip()))
    return lines


def run(probe: Probe, tls: bool) -> dict[str, Any]:
    logged = max((stamp for stamp, _ in kernel_log()), default=0.0)
    state = load_state()
    assert state is not None
    topology = topology_of(state)
    source, destination = topology.host("kvm1"), topology.host("kvm2")
    assert source is not None and destination is not None
    guest = guests.create_guest(GUEST, "kvm1", memory_mb=512, working_set_mb=256,
                                dirty_mb_s=36, watched=False)  # fmt: skip
    wait_for_memcheck(guest.console, timeout_s=120)
    probe.step("guest running, its memory checked once", guest=GUEST)
    conn_src, conn_dst = libvirt.open(source.uri), libvirt.open(destination.uri)
    dom = conn_src.lookupByName(GUEST)
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
             | libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_UNSAFE
             | (libvirt.VIR_MIGRATE_TLS if tls else 0))  # fmt: skip
    params = {libvirt.VIR_MIGRATE_PARAM_URI: destination.migration_uri,
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 5,
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: 5}  # fmt: skip
    outcome: dict[str, str] = {}

    def migrate(key: str, extra: int) -> None:
        try:
            dom.migrateToURI3(destination.uri, params, flags | extra)
            outcome[key] = "returned"
        except libvirt.libvirtError as exc:
            outcome[key] = exc.get_error_message()

    first = threading.Thread(target=migrate, args=("move", 0), daemon=True)
    first.start()
    time.sleep(4)
    dom.migrateStartPostCopy()
    deadline = time.monotonic() + 10
    dst: libvirt.virDomain | None = None
    while time.monotonic() < deadline:
        try:
            dst = conn_dst.lookupByName(GUEST)
            if dst.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                break
        except libvirt.libvirtError:
            pass
        time.sleep(0.1)
    if dst is None:
        raise LabError("the guest never ran on kvm2 in post-copy")
    probe.step("post-copy running", source=state_of(dom), destination=state_of(dst))
    time.sleep(1)
    with faults.migration_link_cut("kvm1"):
        probe.step("migration link cut on kvm1")
        time.sleep(3)
        try:
            dom.abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
            probe.step("post-copy paused on the source", source=state_of(dom))
        except libvirt.libvirtError as exc:
            probe.step("pausing the source failed", error=exc.get_error_message())
        first.join(timeout=10)
        probe.step("link still cut", move_call_returned=not first.is_alive(),
                   source=state_of(dom), destination=state_of(dst))  # fmt: skip
    probe.step("link restored")
    first.join(timeout=120)
    probe.step("the move's call", returned=not first.is_alive(), said=outcome.get("move"),
               source=state_of(dom), destination=state_of(dst))  # fmt: skip
    again = ("resume", libvirt.VIR_MIGRATE_POSTCOPY_RESUME)
    resume = threading.Thread(target=migrate, args=again, daemon=True)
    resume.start()
    resume.join(timeout=300)
    alive = libvirtd_alive("kvm2")
    probe.step("resume", returned=not resume.is_alive(), said=outcome.get("resume"),
               destination_libvirtd_running=alive)  # fmt: skip
    recovered = False
    if alive and outcome.get("resume") == "returned":
        dst = libvirt.open(destination.uri).lookupByName(GUEST)
        memory_ok = True
        try:
            wait_for_memcheck(guest.console, timeout_s=120)
        except LabError:
            memory_ok = False
        recovered = memory_ok and dst.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        probe.step("after the resume", destination=state_of(dst), memory_checked=memory_ok)
    crash = [text for stamp, text in kernel_log()
             if stamp > logged and "libvirtd" in text and "segfault" in text]  # fmt: skip
    return {"recovered": recovered, "tls": tls, "libvirtd_segfaults": crash}


if __name__ == "__main__":
    sys.exit(main())
