"""A move proved by the service probes a VM declares, run from the lab's client namespace
(where the VM's users are), against the lab guest's real echo service."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import vmferry

from vmferry.lab import topology as topo
from vmferry.lab.state import GuestRecord, LabState

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
