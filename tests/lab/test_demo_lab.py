"""`vmferry demo` as a new user runs it: the lab's hosts reached over TLS, the guest moved
with its stream encrypted, proved by its guest agent, its pause measured."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.cli import vmferry
from support.stack import live_tcg_moves_work

from vmferry.lab import lifecycle
from vmferry.lab.lock import lab_turn
from vmferry.lab.state import load_state

pytestmark = pytest.mark.lab


def test_the_demo_moves_its_guest_over_tls_proved_by_its_agent_with_the_pause_measured() -> None:
    db = Path(os.environ["VMFERRY_DB"].removeprefix("sqlite:///"))
    with lab_turn():  # the turn tests/conftest.py's labs take
        state = load_state()
        if state is not None and lifecycle.is_running(state):
            pytest.fail("a lab is up (left by hand?): the demo would reuse it; run `vmferry "
                        "lab down` first")  # fmt: skip
        try:
            done = vmferry("demo", "--json", db=db, timeout=600)
        finally:
            lifecycle.down()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    uris = [h["uri"] for h in report["lab"]["hosts"]]
    assert len(uris) == 2 and all(u.startswith("qemu+tls://") for u in uris), uris
    moved = report["migration"]
    if not live_tcg_moves_work():  # refused live (migration.tcg-lost-writes), moved warm
        blockers = [f["id"] for f in report["check"]["findings"] if f["severity"] == "blocker"]
        assert blockers == [], blockers  # the warm move's own check
        assert (moved["status"], moved["strategy"]) == ("completed", "warm"), moved
        assert moved["verification"]["memory_integrity"] == "ok"
        print("demo: refused live on this QEMU, moved warm")
        return
    assert moved["status"] == "completed" and moved["encrypted"] is True
    v = moved["verification"]
    assert v["level"] == "agent" and v["memory_integrity"] == "ok"
    assert (v["agent"]["ping"], v["agent"]["mac_ok"], v["agent"]["addresses_ok"]) == (
        True, True, True)  # fmt: skip
    assert isinstance(moved["guest_pause_ms"], int) and moved["guest_pause_ms"] > 0
    print(
        f"demo: guest paused {moved['guest_pause_ms']} ms, libvirt downtime "
        f"{moved['downtime_ms']} ms, clock drift {v['agent']['clock_drift_ms']} ms"
    )
