from __future__ import annotations

import os
from pathlib import Path

from vmferry.lab.processes import is_same_process, start_ticks
from vmferry.lab.state import GuestRecord, LabState, ProcessRecord, load_state, save_state


def test_state_round_trips(tmp_path: Path) -> None:
    state = LabState(hosts=2, link_mbps=300, status="up")
    state.processes.append(ProcessRecord(pid=42, role="libvirtd", host="kvm1", start_ticks=7))
    state.namespaces += ["vmf-fabric", "vmf-kvm1"]
    state.links.append("vmf-mgmt")
    state.registered_hosts.append("kvm1")
    state.guests["g"] = GuestRecord("g", "kvm1", 100, "198.18.2.100", "52:54:00:12:02:64",
                                    "/c.log", "/d.qcow2", "ab" * 32)  # fmt: skip
    save_state(state, tmp_path)
    assert load_state(tmp_path) == state
    assert not (tmp_path / "state.json.tmp").exists()


def test_no_state_file_means_no_lab(tmp_path: Path) -> None:
    assert load_state(tmp_path) is None


def test_process_identity_uses_start_time() -> None:
    me = os.getpid()
    ticks = start_ticks(me)
    assert ticks is not None
    assert is_same_process(me, ticks)
    assert not is_same_process(me, ticks + 1)  # same pid, another start time: not ours
    assert start_ticks(2**22 + 12345) is None
