"""A vSphere VM's placement and performance settings through the real read: the simulator's
VM reconfigured through pyvmomi, then `vmferry inventory --source --json` shows them after
the contract's keys, with the findings a file import gives for them."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim
from support.vcsim import Vcsim, running_vcsim

CONTRACT_KEYS = ["name", "uuid", "power_state", "vcpus", "memory_mb", "guest_os", "disks", "nics"]
TUNED, PLAIN = "DC0_H0_VM1", "DC0_H0_VM0"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim")) as started:
        yield started


def reconfigure(sim: Vcsim, name: str, spec: Any) -> None:
    trusted = ssl.create_default_context(cafile=str(sim.ca_file))
    instance = SmartConnect(host=sim.host, port=sim.port, user=sim.user, pwd=sim.password,
                            sslContext=trusted)  # fmt: skip
    try:
        content = instance.RetrieveContent()
        vm = content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}")
        assert vm is not None, name
        WaitForTask(vm.ReconfigVM_Task(spec))
    finally:
        Disconnect(instance)


def inventory(sim: Vcsim, tmp_path: Path) -> dict[str, dict[str, Any]]:
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{tmp_path / 'v.db'}",
           "VMFERRY_VSPHERE_PASSWORD": sim.password}  # fmt: skip
    for args in (("sources", "add", "vc", sim.vsphere_url(), "--ca", str(sim.ca_file)),
                 ("inventory", "--source", "vc", "--json")):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return {vm["name"]: vm for vm in json.loads(done.stdout)}


def test_placement_settings_are_read_and_give_findings(sim: Vcsim, tmp_path: Path) -> None:
    spec = vim.vm.ConfigSpec(
        cpuAffinity=vim.vm.AffinityInfo(affinitySet=[0, 1]),
        cpuAllocation=vim.ResourceAllocationInfo(
            reservation=500, limit=1000, shares=vim.SharesInfo(level="high", shares=2000)),
        memoryAllocation=vim.ResourceAllocationInfo(reservation=16),
        latencySensitivity=vim.LatencySensitivity(level="high"),
        cpuHotAddEnabled=True,
        memoryHotAddEnabled=True,
    )  # fmt: skip
    reconfigure(sim, TUNED, spec)
    vms = inventory(sim, tmp_path)
    tuned, plain = vms[TUNED], vms[PLAIN]
    assert list(tuned)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
    assert list(tuned)[-6:] == ["placement", "placement_findings", "guest_addresses",
                                "guest_gateway", "guest_dns", "committed_bytes"]  # fmt: skip
    settings = {field: f"{s['key']} = {s['value']}"
                for field, s in tuned["placement"].items() if s is not None}  # fmt: skip
    assert settings == {
        "cpu_affinity": "config.cpuAffinity.affinitySet = 0,1",
        "cpu_reservation": "config.cpuAllocation.reservation = 500",
        "cpu_limit": "config.cpuAllocation.limit = 1000",
        "cpu_shares": "config.cpuAllocation.shares = high",
        "memory_reservation": "config.memoryAllocation.reservation = 16",
        "latency_sensitivity": "config.latencySensitivity.level = high",
        "cpu_hot_add": "config.cpuHotAddEnabled = true",
        "memory_hot_add": "config.memoryHotAddEnabled = true",
    }
    found = {f["id"]: (f["severity"], f["message"]) for f in tuned["placement_findings"]}
    assert found["import.placement.cpu_affinity"] == (
        "warning", "config.cpuAffinity.affinitySet = 0,1 is not carried over: the ESXi host's "
        "CPU numbers mean nothing on the KVM host")  # fmt: skip
    assert len(found) == len(settings)
    assert all(s is None for s in plain["placement"].values())
    assert plain["placement_findings"] == []
