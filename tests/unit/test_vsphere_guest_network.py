"""The static addresses VMware Tools report (guest.net, guest.ipStack), read through the
simulator (its harness's -guest-net), judged against the guest agent's view after the first
boot on KVM (pure), and the warning for a Windows guest whose addresses no one sets again."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import vmferry
from support.vcsim import Vcsim, running_vcsim
from support.vcsim_disks import admin, find_vm, wait

from vmferry.drivers.vsphere import vsphere_session
from vmferry.imports.guest_network import AddressCheck, addresses_kept, all_back, v2v_static_ips
from vmferry.model.agent import AgentView
from vmferry.model.source_vm import GuestNetwork
from vmferry.model.vsphere import VsphereSource
from vmferry.sources.vsphere_inventory import vm_from_raw
from vmferry.sources.vsphere_vm import source_vm_from_vsphere

VM = "DC0_H0_VM0"
TOLD = f"{VM}=10.1.2.3/24,10.1.2.1,10.1.2.53"


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path, tools_running=(VM,), guest_net=(TOLD,)) as started:
        yield started


def test_the_addresses_tools_report_become_the_source_vms_guest_network(sim: Vcsim) -> None:
    source = VsphereSource("vc1", sim.host, sim.port, sim.user, ca_file=str(sim.ca_file))
    with vsphere_session(source, sim.password) as session:
        handle = session.find_vm(VM)
        inventory = vm_from_raw(handle.raw, handle.networks)
        assert inventory is not None
        vm = source_vm_from_vsphere(handle.raw, inventory)
        other = session.find_vm("DC0_H0_VM1")  # Tools report nothing there
        other_inventory = vm_from_raw(other.raw, other.networks)
        assert other_inventory is not None
        bare = source_vm_from_vsphere(other.raw, other_inventory)
    mac = vm.nics[0].mac
    assert mac is not None
    assert vm.guest_network == GuestNetwork(((mac.lower(), ("10.1.2.3/24",)),), "10.1.2.1",
                                            ("10.1.2.53",))  # fmt: skip
    assert bare.guest_network == GuestNetwork()


def test_addresses_are_kept_when_each_is_up_again() -> None:
    told = GuestNetwork((("00:0c:29:00:00:01", ("10.1.2.3/24",)),
                         ("00:0c:29:00:00:02", ("10.9.0.1/16", "10.9.0.2/16"))))  # fmt: skip
    seen = AgentView({"00:0c:29:00:00:01": frozenset({"10.1.2.3/24", "fe80::1/64"}),
                      "00:0c:29:00:00:02": frozenset({"10.9.0.1/16"})}, None)  # fmt: skip
    checks = addresses_kept(told, seen)
    assert [c.kept for c in checks] == [True, False] and not all_back(checks)
    assert checks[1].found == ("10.9.0.1/16",)
    assert addresses_kept(told, None)[0] == AddressCheck("00:0c:29:00:00:01", ("10.1.2.3/24",),
                                                          None, None)  # fmt: skip
    assert all_back(addresses_kept(told, AgentView({
        "00:0c:29:00:00:01": frozenset({"10.1.2.3/24"}),
        "00:0c:29:00:00:02": frozenset({"10.9.0.1/16", "10.9.0.2/16"})}, None)))  # fmt: skip


def test_a_windows_guests_addresses_are_set_by_virt_v2v_or_a_warning(
    sim: Vcsim, tmp_path: Path
) -> None:
    with admin(sim) as instance:
        from pyVmomi import vim

        vm = find_vm(instance, VM)
        wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(guestId="windows9Server64Guest")))
    db = tmp_path / "v.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # a kernel for virt-v2v's appliance named (a dry run never starts it): this machine has
        # none in /boot, which would make the conversion a blocker of its own
        env = {"VMFERRY_VSPHERE_PASSWORD": sim.password, "SUPERMIN_KERNEL": "/nonexistent"}
        return vmferry(*args, db=db, env=env, timeout=120)

    assert run("sources", "add", "vc1", sim.vsphere_url(), "--ca", str(sim.ca_file)).returncode == 0
    assert run("hosts", "add", "t1", "test:///default").returncode == 0
    done = run("import", f"vsphere://vc1/{VM}", "--to", "t1", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    found = {f["id"]: f for f in report["findings"]}
    converted = found["import.vsphere.static_ip_windows"]  # a Windows guest: virt-v2v runs
    assert converted["severity"] == "info" and "10.1.2.3/24" in converted["message"]
    assert "virt-v2v sets the IPv4 ones again" in converted["message"]
    assert "import.convert.virt_v2v" in found  # no blocker: vSphere guests are converted
    blockers = {f["id"] for f in report["findings"] if f["severity"] == "blocker"}
    assert not {b for b in blockers if b.startswith(("import.convert", "import.vsphere"))}
    kept = run("import", f"vsphere://vc1/{VM}", "--to", "t1", "--dry-run", "--json",
               "--convert-guest", "never")  # fmt: skip
    warning = {f["id"]: f for f in json.loads(kept.stdout)["findings"]}[
        "import.vsphere.static_ip_windows"
    ]
    assert warning["severity"] == "warning" and "10.1.2.3/24" in warning["message"]


def test_virt_v2v_gets_each_ipv4_address_per_mac() -> None:
    told = GuestNetwork((("00:0C:29:00:00:01", ("10.1.2.3/24", "fe80::1/64")),
                         ("00:0c:29:00:00:02", ("10.9.0.1/16",))),
                        "10.1.2.1", ("10.1.2.53", "10.1.2.54"))  # fmt: skip
    assert v2v_static_ips(told) == [
        "--mac", "00:0c:29:00:00:01:ip:10.1.2.3,10.1.2.1,24,10.1.2.53,10.1.2.54",
        "--mac", "00:0c:29:00:00:02:ip:10.9.0.1,10.1.2.1,16,10.1.2.53,10.1.2.54",
    ]  # fmt: skip
    # virt-v2v refuses an empty gateway: without one, the address alone
    assert v2v_static_ips(GuestNetwork((("00:0c:29:00:00:01", ("10.1.2.3/24",)),))) == [
        "--mac", "00:0c:29:00:00:01:ip:10.1.2.3"]  # fmt: skip


def test_the_inventory_shows_what_tools_report(sim: Vcsim, tmp_path: Path) -> None:
    db = tmp_path / "v.db"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return vmferry(*args, db=db, env={"VMFERRY_VSPHERE_PASSWORD": sim.password}, timeout=120)

    assert run("sources", "add", "vc1", sim.vsphere_url(), "--ca", str(sim.ca_file)).returncode == 0
    done = run("inventory", "--source", "vc1", "--json")
    assert done.returncode == 0, done.stderr
    by_name = {vm["name"]: vm for vm in json.loads(done.stdout)}
    told = by_name[VM]
    assert told["guest_addresses"] == [
        {"mac": told["nics"][0]["mac"], "addresses": ["10.1.2.3/24"]}
    ]
    assert (told["guest_gateway"], told["guest_dns"]) == ("10.1.2.1", ["10.1.2.53"])
    silent = by_name["DC0_H0_VM1"]
    assert (silent["guest_addresses"], silent["guest_gateway"], silent["guest_dns"]) == (
        [],
        None,
        [],
    )
