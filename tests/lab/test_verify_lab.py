"""A move proved by the service probes a VM declares, run from the lab's client namespace
(where the VM's users are), against the lab guest's real echo service."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from support.cli import vmferry

from vmferry.drivers.guest_agent import AgentError, agent
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.lab import topology as topo
from vmferry.lab.state import GuestRecord, LabState
from vmferry.store.db import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]


def run(*args: str) -> tuple[int, Any, str]:
    """vmferry ARGS in this module's store (tests/conftest.py points VMFERRY_DB at it); a
    move waits for its witnesses (the agent's checks, the probes' settle time) afterwards."""
    db = Path(os.environ["VMFERRY_DB"].removeprefix("sqlite:///"))
    done = vmferry(*args, db=db, env={"COLUMNS": "200"}, timeout=300)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr


def test_a_declared_tcp_probe_proves_the_move_and_measures_the_blackout(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    guest = lab_guests("vp1", "kvm1", memory_mb=256, working_set_mb=64, dirty_mb_s=8)
    echo, closed = f"tcp:{guest.address}:7", f"tcp:{guest.address}:8"
    # the guest's own view of its service, run by its guest agent: guestd's echo port listens
    listening = "grep -q :0007 /proc/net/tcp"
    health = f"/bin/sh -c '{listening}'"
    code, declared, err = run("vm", "set", "vp1", "--probe", echo, "--probe", closed,
                              "--probe-from", f"netns:{topo.CLIENT_NS}",
                              "--health-command", health, "--json")  # fmt: skip
    assert code == 0, err
    assert declared == {"vm": "vp1", "probes": [echo, closed],
                        "probe_from": f"netns:{topo.CLIENT_NS}",
                        "health_command": ["/bin/sh", "-c", listening]}  # fmt: skip

    code, report, err = run("check", "vp1", "--to", "kvm2", "--json")
    assert code == 0, err
    findings = [f for f in report["findings"] if f["id"] == "probe.unreachable"]
    assert [f["severity"] for f in findings] == ["warning"]
    assert closed in findings[0]["message"] and echo not in findings[0]["message"]

    code, result, err = run("migrate", "vp1", "--to", "kvm2", "--require-verification", "--json")
    assert code == 0, err
    v = result["verification"]
    assert v["level"] == "agent"  # the guest runs qemu-ga: the strongest witness names the level
    assert v["agent"]["health_ok"] is True  # guest-exec ran the command before and after
    by_spec = {p["spec"]: p for p in v["probes"]}
    answered, silent = by_spec[echo], by_spec[closed]
    assert answered["ok"] and answered["baseline"] and answered["tries"] > 10
    # the echo service was away at least while the guest was paused
    assert isinstance(answered["max_gap_ms"], int) and answered["max_gap_ms"] > 0
    print(f"blackout {answered['max_gap_ms']} ms (libvirt downtime {result['downtime_ms']} ms, "
          f"echo witness {v['network_max_gap_ms']} ms)")  # fmt: skip
    assert not silent["baseline"] and silent["max_gap_ms"] is None
    assert v["warnings"] == [f"probe {closed} did not answer before the move; it is not counted"]


def test_a_vm_with_no_witness_is_liveness_only_and_fails_a_move_that_requires_more(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    # no guest agent channel, no lab witness, no probe: all vmferry has is its hosts' libvirt
    lab_guests("vbare", "kvm1", memory_mb=256, working_set_mb=32, agent=False, watched=False)
    code, result, err = run("migrate", "vbare", "--to", "kvm2", "--json")
    assert code == 0, err
    v = result["verification"]
    assert v["level"] == "liveness-only"
    assert v["agent"] is None and v["probes"] == [] and v["heartbeat_max_gap_ms"] is None
    assert v["running_on_destination"] and v["absent_on_source"]
    assert [w for w in v["warnings"] if w.startswith("verified by liveness only")], v["warnings"]
    # the pause is measured on any VM: libvirt's events, not a witness inside the guest
    assert isinstance(result["guest_pause_ms"], int) and result["guest_pause_ms"] > 0

    code, result, err = run("migrate", "vbare", "--to", "kvm1", "--require-verification", "--json")
    assert code == 4, err
    assert result["status"] == "failed"
    assert "nothing beyond liveness proves the move (--require-verification)" in result["reason"]


def copied(host: LibvirtHost) -> int:
    """Bytes of memory the running migration job of ``vga`` on ``host`` has sent (0: none)."""
    try:
        return int(host._lookup("vga").jobStats(0).get("memory_processed", 0))
    except libvirt.libvirtError:
        return 0


def test_a_guest_agent_that_stops_mid_move_does_not_stop_the_move_and_is_named(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """The real qemu-ga answers before the move, then is killed inside the guest while the
    memory is being copied: the move goes on to the end (one running copy, on kvm2), and the
    verification says which of the agent's checks could not run after it."""
    lab_guests("vga", "kvm1", memory_mb=512, working_set_mb=256, dirty_mb_s=12, watched=False)
    db = Path(os.environ["VMFERRY_DB"].removeprefix("sqlite:///"))
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}"}
    move = subprocess.Popen([sys.executable, "-m", "vmferry.cli.main", "migrate", "vga", "--to",
                             "kvm2", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with LibvirtHost.connect("kvm1", open_store(f"sqlite:///{db}").get_host("kvm1").uri) as src:
            deadline = time.monotonic() + 60
            while copied(src) == 0:
                assert move.poll() is None, move.communicate()
                assert time.monotonic() < deadline, "the migration did not start copying"
                time.sleep(0.1)
            # the agent ends itself; its answer to this may never come
            with contextlib.suppress(AgentError):
                agent(src, "vga", "guest-exec", timeout_s=5, arguments={
                    "path": "/bin/sh", "arg": ["-c", "kill -9 $(pidof qemu-ga)"]})  # fmt: skip
            killed_during = copied(src) > 0
        out, err = move.communicate(timeout=300)
    finally:
        if move.poll() is None:
            move.kill()
    assert killed_during, "the migration had ended before the agent was killed"
    result = json.loads(out)
    v = result["verification"]
    assert v["running_on_destination"] and v["absent_on_source"], (result, err)
    assert v["agent"] is not None and v["agent"]["ping"] is False, v
    named = " ".join([result["reason"] or "", *v["warnings"]])
    assert "could not run" in named or "did not answer" in named, (result, err)
    print(
        f"status {result['status']} (exit {move.returncode}): {result['reason']}; "
        f"warnings: {v['warnings']}"
    )
