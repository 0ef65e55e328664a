"""`vmferry inventory --source NAME` against VMware's vSphere simulator over HTTPS: the
JSON contract (docs/vsphere.md), checked against what the simulator's own API says of each
VM, read here VM by VM through pyvmomi, a path independent of the PropertyCollector read
the product makes."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim
from support.vcsim import Vcsim, running_vcsim

CONTRACT_KEYS = ["name", "uuid", "power_state", "vcpus", "memory_mb", "guest_os", "disks", "nics"]
SIMULATOR_VMS = {"DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim"), trace=True) as started:
        yield started


@pytest.fixture(scope="module")
def db(sim: Vcsim, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the simulator as source ``vc`` (its CA trusted) and as ``vc-dc0``
    (datacenter DC0, --insecure)."""
    path = tmp_path_factory.mktemp("store") / "v.db"
    for args in (("vc", "--ca", str(sim.ca_file)), ("vc-dc0", "--insecure", "--datacenter", "DC0")):
        done = vmferry(path, "sources", "add", args[0], sim.vsphere_url(), *args[1:],
                       password=sim.password)  # fmt: skip
        assert done.returncode == 0, done.stderr
    return path


def vmferry(
    db: Path, *args: str, password: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``vmferry ARGS`` with the store ``db``, ``password`` in the environment, no terminal
    and a wide one for Rich, ``env`` on top (so no name in a table is cut short)."""
    full = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}", "VMFERRY_VSPHERE_PASSWORD": password,
            "COLUMNS": "300", **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=full,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def inventory_json(db: Path, source: str, password: str) -> list[dict[str, Any]]:
    done = vmferry(db, "inventory", "--source", source, "--json", password=password)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def simulator_truth(sim: Vcsim) -> dict[str, dict[str, Any]]:
    """Each VM as the simulator's API describes it, one VM at a time, by name."""
    trusted = ssl.create_default_context(cafile=str(sim.ca_file))
    instance = SmartConnect(host=sim.host, port=sim.port, user=sim.user, pwd=sim.password,
                            sslContext=trusted)  # fmt: skip
    try:
        content = instance.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder,
                                                       [vim.VirtualMachine], True)  # fmt: skip
        truth: dict[str, dict[str, Any]] = {}
        for vm in view.view:
            devices = vm.config.hardware.device
            truth[vm.name] = {
                "uuid": vm.config.uuid,
                "power_state": str(vm.runtime.powerState),
                "vcpus": vm.config.hardware.numCPU,
                "memory_mb": vm.config.hardware.memoryMB,
                "disks": [(d.backing.fileName, d.capacityInKB * 1024) for d in devices
                          if isinstance(d, vim.vm.device.VirtualDisk)],
                "macs": [d.macAddress for d in devices
                         if isinstance(d, vim.vm.device.VirtualEthernetCard)],
                "networks": sorted(n.name for n in vm.network),
            }  # fmt: skip
        view.Destroy()
        return truth
    finally:
        Disconnect(instance)


def test_inventory_json_is_the_contract_and_matches_the_simulator(db: Path, sim: Vcsim) -> None:
    vms = inventory_json(db, "vc", sim.password)
    truth = simulator_truth(sim)
    assert {vm["name"] for vm in vms} == set(truth) == SIMULATOR_VMS
    assert [vm["name"] for vm in vms] == sorted(truth)
    for vm in vms:
        assert list(vm)[: len(CONTRACT_KEYS)] == CONTRACT_KEYS
        known = truth[vm["name"]]
        assert vm["uuid"] == known["uuid"]
        assert (vm["power_state"], vm["vcpus"], vm["memory_mb"]) == (
            known["power_state"], known["vcpus"], known["memory_mb"])  # fmt: skip
        assert [(d["path"], d["capacity_bytes"]) for d in vm["disks"]] == known["disks"]
        assert all(d["capacity_bytes"] > 0 for d in vm["disks"])
        assert [n["mac"] for n in vm["nics"]] == known["macs"]
        assert sorted(n["network"] for n in vm["nics"]) == known["networks"]
        assert vm["guest_os"] and vm["firmware"] == "bios" and vm["cbt_enabled"] is False


def test_inventory_reads_every_vm_in_one_property_collector_call(db: Path, sim: Vcsim) -> None:
    """Not one call per VM: the whole inventory is one RetrievePropertiesEx (the simulator
    has four VMs), and no property is fetched on its own (RetrieveProperties)."""
    offset = sim.log_file.stat().st_size
    inventory_json(db, "vc", sim.password)
    calls = sim.requests_since(offset)
    assert calls.count("RetrievePropertiesEx") == 1, calls
    assert "RetrieveProperties" not in calls and "ContinueRetrievePropertiesEx" not in calls
    assert calls[-1] == "Logout", calls


def test_inventory_of_a_datacenter_source_over_insecure(db: Path, sim: Vcsim) -> None:
    assert inventory_json(db, "vc-dc0", sim.password) == inventory_json(db, "vc", sim.password)


def test_inventory_table(db: Path, sim: Vcsim) -> None:
    done = vmferry(db, "inventory", "--source", "vc", password=sim.password)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if "[LocalDS_0]" in line]
    assert {name for name in SIMULATOR_VMS for row in rows if f" {name} " in row} == SIMULATOR_VMS
    assert all("disk1.vmdk 1.0MiB" in row and "DC0_DVPG0" in row for row in rows), done.stdout


def test_inventory_refusals(db: Path, sim: Vcsim) -> None:
    wrong = vmferry(db, "inventory", "--source", "vc", "--json", password="nope")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert f"refused the user {sim.user}" in wrong.stderr
    unknown = vmferry(db, "inventory", "--source", "nope", password=sim.password)
    assert unknown.returncode == 2 and "no source named 'nope'" in unknown.stderr
    both = vmferry(db, "inventory", "--source", "vc", "--host", "kvm1", password=sim.password)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    remote = vmferry(db, "inventory", "--source", "vc", password=sim.password,
                     env={"VMFERRY_URL": "http://127.0.0.1:9", "VMFERRY_TOKEN": "t"})  # fmt: skip
    assert remote.returncode == 2 and "has no remote form yet" in remote.stderr


def test_a_long_session_is_kept_alive_until_it_logs_out(sim: Vcsim) -> None:
    """An import's session asks vSphere the time at its keepalive interval (here 0.2 s) so
    vCenter's idle timeout never ends it, and stops asking once it logged out."""
    from vmferry.drivers.vsphere import vsphere_session
    from vmferry.model.vsphere import VsphereSource

    source = VsphereSource("vc", sim.host, sim.port, sim.user, ca_file=str(sim.ca_file))
    offset = sim.log_file.stat().st_size
    with vsphere_session(source, sim.password, keepalive_s=0.2):
        time.sleep(1.1)
    calls = sim.requests_since(offset)
    assert calls.count("CurrentTime") >= 3 and calls[-1] == "Logout", calls
    after = sim.log_file.stat().st_size
    time.sleep(0.6)
    assert "CurrentTime" not in sim.requests_since(after)
