"""The command line's remote mode against the real lab: a guest moves kvm1 -> kvm2 with a
local `vmferry migrate --json`, then back kvm2 -> kvm1 with the same command through a real
`vmferry server` process (VMFERRY_URL, VMFERRY_TOKEN), which runs the move with the real
service in its own threads (the module's store is SQLite). The two results must have the
same keys and the same shape, and agree on everything but the job, the direction and the
measured times."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from vmferry.lab.state import GuestRecord, LabState

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

MIGRATE_KEYS = {"job_id", "vm", "source", "destination", "strategy", "status", "reason",
                "total_time_ms", "downtime_ms", "transferred_bytes", "iterations", "escalations",
                "verification", "encrypted", "guest_pause_ms", "strategy_reason"}  # fmt: skip
MEASURED = {"job_id", "source", "destination", "total_time_ms", "downtime_ms",
            "transferred_bytes", "iterations", "escalations", "guest_pause_ms"}  # fmt: skip
VERIFICATION_MEASURED = {"heartbeat_max_gap_ms", "network_max_gap_ms", "agent"}


def vmferry(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


def _local_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("VMFERRY_URL", "VMFERRY_TOKEN")}


@pytest.fixture
def server(lab: LabState) -> Iterator[str]:
    """A real `vmferry server` on the module's store, on a free loopback port: its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "server", "--listen", "127.0.0.1:0"],
        env=_local_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        with selectors.DefaultSelector() as selector:
            selector.register(process.stderr, selectors.EVENT_READ)
            address = None
            while address is None and time.monotonic() < deadline:
                if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = process.stderr.readline()
                if not line:
                    pytest.fail(f"vmferry server ended before listening: {''.join(seen)}")
                seen.append(line)
                address = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
        if address is None:
            pytest.fail(f"vmferry server did not listen within 60 s: {''.join(seen)}")
        yield address.group(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _same_except_measured(local: dict[str, Any], remote: dict[str, Any]) -> None:
    assert set(remote) == set(local) == MIGRATE_KEYS
    assert {k: v for k, v in remote.items() if k not in MEASURED} == {
        k: v for k, v in local.items() if k not in MEASURED
    }
    for key in ("total_time_ms", "downtime_ms", "transferred_bytes", "iterations"):
        assert isinstance(remote[key], int) and isinstance(local[key], int), key
        assert remote[key] >= 0 and local[key] >= 0, key
    assert isinstance(remote["escalations"], list) and isinstance(local["escalations"], list)
    v_local, v_remote = local["verification"], remote["verification"]
    assert set(v_remote) == set(v_local)
    assert {k: v for k, v in v_remote.items() if k not in VERIFICATION_MEASURED} == {
        k: v for k, v in v_local.items() if k not in VERIFICATION_MEASURED
    }
    for key in VERIFICATION_MEASURED - {"agent"}:
        assert type(v_remote[key]) is type(v_local[key]), key
    assert (v_remote["agent"] is None) == (v_local["agent"] is None)
    if v_local["agent"] is not None:
        assert set(v_remote["agent"]) == set(v_local["agent"])
        for key in ("ping", "mac_ok", "addresses_ok"):
            assert v_remote["agent"][key] == v_local["agent"][key], key


def test_a_move_there_here_and_back_through_the_server_reads_the_same(
    lab: LabState, lab_guests: Callable[..., GuestRecord], server: str
) -> None:
    name = "rc1"
    lab_guests(name, "kvm1", memory_mb=512, working_set_mb=64, dirty_mb_s=4)
    there = vmferry("migrate", name, "--to", "kvm2", "--json", env=_local_env())
    assert there.returncode == 0, there.stderr
    local = json.loads(there.stdout)
    assert (local["status"], local["source"], local["destination"]) == ("completed", "kvm1",
                                                                        "kvm2")  # fmt: skip

    added = vmferry("users", "add", "ops", "--role", "operator", "--json", env=_local_env())
    assert added.returncode == 0, added.stderr
    remote_env = {**_local_env(), "VMFERRY_URL": server,
                  "VMFERRY_TOKEN": json.loads(added.stdout)["token"]}  # fmt: skip
    back = vmferry("migrate", name, "--to", "kvm1", "--json", env=remote_env)
    assert back.returncode == 0, back.stderr
    remote = json.loads(back.stdout)
    assert (remote["status"], remote["source"], remote["destination"]) == ("completed", "kvm2",
                                                                           "kvm1")  # fmt: skip
    assert remote["job_id"] != local["job_id"]
    assert f"job {remote['job_id']} in the vmferry server at {server}" in back.stderr
    _same_except_measured(local, remote)

    # the job the server ran is the store's, read the same here and through the server
    shown_here = vmferry("job", "show", remote["job_id"], "--json", env=_local_env())
    shown_there = vmferry("job", "show", remote["job_id"], "--json", env=remote_env)
    assert shown_here.returncode == shown_there.returncode == 0, shown_there.stderr
    assert json.loads(shown_there.stdout) == json.loads(shown_here.stdout)
    assert json.loads(shown_here.stdout)["result"]["status"] == "completed"
    listed_here = vmferry("jobs", "--json", env=_local_env())
    listed_there = vmferry("jobs", "--json", env=remote_env)
    assert json.loads(listed_there.stdout) == json.loads(listed_here.stdout)
    assert [j["id"] for j in json.loads(listed_here.stdout)][:2] == [remote["job_id"],
                                                                     local["job_id"]]  # fmt: skip
