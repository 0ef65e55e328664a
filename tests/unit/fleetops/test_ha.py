"""HA restart: the pure verdicts and fencing rule (fleetops/ha.py), the placement by
priority (fleetops/maintenance.evacuate's ``first``), the command power driver with real
commands, and one monitor round (service/ha.watch_round) over libvirt's test driver: a host
whose libvirt is gone is fenced through its power commands before its HA VM is started on
the host that answers, exactly once; not fenced, nothing is restarted."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from support.ipmi_bmc import ENV as IPMI_ENV
from support.ipmi_bmc import PASSWORD as IPMI_PASSWORD
from support.ipmi_bmc import ipmi_bmc
from support.redfish_bmc import ENV, PASSWORD, USER, Bmc

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.power_command import power_off, power_status
from vmferry.errors import BlockedError, ToolError, VmferryError
from vmferry.fleetops.ha import FenceOutcome, HostVerdict, fence_outcome, host_verdict
from vmferry.fleetops.maintenance import evacuate
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.model import Host
from vmferry.model.ha import HaPriority, HaVm, HostPower, PowerAutomation, power_refusal
from vmferry.model.migration import JobStatus, MigrationOptions
from vmferry.service import audit, hooks
from vmferry.service import ha as service
from vmferry.store import Store
from vmferry.store import ha as ha_store

GIB = 2**30
DOWN_URI = "qemu+tcp://127.0.0.1:9/system"  # nothing listens: refused at once


def test_a_host_is_suspect_only_when_neither_libvirt_nor_its_heartbeat_answers() -> None:
    assert host_verdict(True, False) is HostVerdict.UP
    assert host_verdict(False, True) is HostVerdict.LIBVIRT_DOWN
    assert host_verdict(False, False) is HostVerdict.SUSPECT
    assert host_verdict(False, None) is HostVerdict.SUSPECT  # no heartbeat to ask: fence


def test_only_a_power_off_confirmed_off_counts_as_fenced() -> None:
    assert fence_outcome(True, True, "off") is FenceOutcome.FENCED
    assert fence_outcome(False, False, None) is FenceOutcome.NO_DRIVER
    assert fence_outcome(True, False, None) is FenceOutcome.FAILED
    assert fence_outcome(True, True, "on") is FenceOutcome.UNCONFIRMED
    assert fence_outcome(True, True, None) is FenceOutcome.UNCONFIRMED


def test_a_host_whose_automation_refuses_counts_as_fenced_only_when_already_off() -> None:
    assert fence_outcome(True, False, "off", refused=True) is FenceOutcome.FENCED
    assert fence_outcome(True, False, "on", refused=True) is FenceOutcome.REFUSED
    assert fence_outcome(True, False, None, refused=True) is FenceOutcome.REFUSED
    assert fence_outcome(False, False, None, refused=True) is FenceOutcome.NO_DRIVER


@pytest.mark.parametrize(
    ("level", "action", "automatic", "refused"),
    [("automatic", "off", True, None), ("automatic", "on", False, None),
     ("manual", "off", False, None), ("manual", "on", True, "is manual"),
     ("manual", "off", True, "is manual"), ("disabled", "on", False, "is disabled"),
     ("disabled", "off", True, "is disabled"), ("disabled", "status", True, None),
     ("manual", "status", True, None)],
)  # fmt: skip
def test_the_automation_level_says_who_may_power_a_host(
    level: str, action: str, automatic: bool, refused: str | None
) -> None:
    why = power_refusal("kvm1", PowerAutomation(level), action, automatic=automatic)
    if refused is None:
        assert why is None
    else:
        assert why is not None and f"kvm1's power automation {refused}" in why


def test_restarts_are_placed_by_priority_before_size() -> None:
    hosts = [HostLoad("dead", 1, 1, ""), HostLoad("kvm2", 4, 10 * GIB, "x")]
    vms = [VmLoad("big-low", "dead", 2, 6 * GIB, 2.0, 6 * GIB),
           VmLoad("small-high", "dead", 1, 4 * GIB, 1.0, 4 * GIB)]  # fmt: skip
    rank = {"big-low": HaPriority.LOW.rank, "small-high": HaPriority.HIGH.rank}
    placed = evacuate(hosts, vms, "dead", headroom=0.0, first=lambda vm: rank[vm.name])
    assert [m.vm for m in placed.moves] == ["small-high", "big-low"]
    tight = [HostLoad("dead", 1, 1, ""), HostLoad("kvm2", 4, 7 * GIB, "x")]
    placed = evacuate(tight, vms, "dead", headroom=0.0, first=lambda vm: rank[vm.name])
    assert [m.vm for m in placed.moves] == ["small-high"]  # the high one got the room
    assert [s.split(":")[0] for s in placed.stuck] == ["big-low"]


def _bmc(tmp_path: Path, state: str = "on", off_works: bool = True) -> HostPower:
    """Power commands over a state file: a BMC as far as vmferry can tell."""
    power = tmp_path / "power"
    power.write_text(state)
    script = tmp_path / "bmc"
    script.write_text("#!/bin/sh\n"
                      f"case $1 in\n  status) echo \"Chassis Power is $(cat {power})\";;\n"
                      f"  off) {'echo off >' + str(power) if off_works else 'exit 1'};;\n"
                      f"  on) echo on > {power};;\nesac\n")  # fmt: skip
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return HostPower("t2", f"{script} on", f"{script} off", f"{script} status", 5)


def test_the_command_driver_runs_the_commands_and_reads_on_or_off(tmp_path: Path) -> None:
    bmc = _bmc(tmp_path)
    assert power_status(bmc) == "on"
    power_off(bmc)
    assert power_status(bmc) == "off"
    with pytest.raises(ToolError, match="printed neither 'on' nor 'off'"):
        power_status(HostPower("t2", "true", "true", "echo unknown", 5))
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(ToolError):
        power_off(_bmc(broken, off_works=False))


TEST_VM = ("<domain type='test'><name>web</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
           "<os><type>hvm</type></os></domain>")  # fmt: skip


@pytest.fixture
def fleet(store: Store) -> Iterator[Store]:
    """t1 answers (libvirt's test driver, its 8 GiB "test" VM stopped for the test: it
    claims more than the 3 GiB host has), t2 does not; "web" is HA-protected on t2."""
    store.add_host(Host("t1", "test:///default"))
    store.add_host(Host("t2", DOWN_URI))
    ha_store.put_ha_vm(store, HaVm("web", HaPriority.HIGH, "t2", TEST_VM, 1, 256 * 2**20))
    with LibvirtHost.connect("t1", "test:///default", own=True) as t1:
        t1.destroy("test")
        try:
            yield store
        finally:  # the test driver's state lasts as long as this process: leave it as found
            if "web" in [r.spec.name for r in t1.list_vms()]:
                with suppress(VmferryError):
                    t1.destroy("web")
                t1.undefine("web")
            t1.start("test")


def test_a_dead_host_is_fenced_then_its_vm_restarts_once_elsewhere(
    fleet: Store, tmp_path: Path
) -> None:
    ha_store.set_power(fleet, _bmc(tmp_path))
    first = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert first[0] == "t2: fenced (powered off and confirmed off)", first
    assert first[1].startswith("web: restarted on t1 (job "), first
    assert (tmp_path / "power").read_text().strip() == "off"
    (status,) = service.status(store=fleet)
    assert (status.vm, status.host, status.state) == ("web", "t1", "restarted")
    jobs = [j for j in fleet.list_jobs() if j.kind == "ha-restart"]
    assert [(j.vm, j.source, j.destination, str(j.status)) for j in jobs] == [
        ("web", "t2", "t1", "completed")]  # fmt: skip
    again = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert not [line for line in again if "restarted" in line], again  # runs on t1: once
    assert len([j for j in fleet.list_jobs() if j.kind == "ha-restart"]) == 1


@pytest.mark.parametrize("exit_code", [0, 1])
def test_a_restart_runs_the_vms_hooks_as_a_move_does(
    fleet: Store, tmp_path: Path, exit_code: int
) -> None:
    """The VM's own hooks on its ha-restart job: post-migrate with the job's JSON before the
    verdict (a required one failing fails the job, the VM runs on all the same), then
    on-failure when the job failed."""
    seen = tmp_path / "seen"
    for phase, code in (("post-migrate", exit_code), ("on-failure", 0)):
        script = tmp_path / phase
        body = f'grep -q \'"kind":"ha-restart"\' || exit 9\nexit {code}\n'  # the job's JSON
        script.write_text(f'#!/bin/sh\necho "$VMFERRY_HOOK_PHASE $VMFERRY_VM" >> {seen}\n{body}')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        hooks.add_hook(fleet, "web", phase, phase, exec_path=str(script),
                       required=phase == "post-migrate")  # fmt: skip
    ha_store.set_power(fleet, _bmc(tmp_path))
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines[0] == "t2: fenced (powered off and confirmed off)", lines
    (job,) = [j for j in fleet.list_jobs() if j.kind == "ha-restart"]
    ran = [(e.data["hook"], e.data["result"]) for e in fleet.get_job(job.id).events
           if e.kind == "hook"]  # fmt: skip
    (status,) = service.status(store=fleet)
    assert (status.host, status.state) == ("t1", "restarted")  # started: HA does not undo it
    if exit_code == 0:
        assert lines[1].startswith("web: restarted on t1 (job "), lines
        assert job.status is JobStatus.COMPLETED
        assert seen.read_text().splitlines() == ["post-migrate web"]
        assert ran == [("post-migrate", "ok")]
    else:
        assert job.status is JobStatus.FAILED
        assert lines[1].startswith("web: restarted on t1 (job "), lines
        assert lines[1].endswith("; job failed: post-migrate hook post-migrate failed: exit 1 "
                                 "(required)"), lines  # fmt: skip
        assert "post-migrate hook post-migrate failed" in (fleet.get_job(job.id).reason or "")
        assert seen.read_text().splitlines() == ["post-migrate web", "on-failure web"]
        assert ran == [("post-migrate", "failed"), ("on-failure", "ok")]


def test_without_a_confirmed_power_off_nothing_is_restarted(fleet: Store, tmp_path: Path) -> None:
    ha_store.set_power(fleet, _bmc(tmp_path, off_works=False))
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines == ["t2: not fenced (power-off-failed); nothing restarted"]
    (status,) = service.status(store=fleet)
    assert (status.host, status.state) == ("t2", "protected")
    assert "could not be fenced (power-off-failed)" in (status.note or "")
    assert [j for j in fleet.list_jobs() if j.kind == "ha-restart"] == []


def test_a_host_whose_automation_is_manual_is_not_fenced_by_the_monitor(
    fleet: Store, tmp_path: Path
) -> None:
    """``manual``: the monitor does not power t2 off, so nothing is restarted and the refusal
    is in the audit trail; once a person has powered it off (recorded too) the next round
    finds it off, counts it fenced without powering anything, and restarts web once."""
    ha_store.set_power(fleet, _bmc(tmp_path))
    service.set_automation("t2", "manual", store=fleet)
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines == ["t2: not fenced (refused-by-policy); nothing restarted"]
    assert (tmp_path / "power").read_text().strip() == "on"
    (status,) = service.status(store=fleet)
    assert status.state == "protected" and "refused-by-policy" in (status.note or "")
    assert service.power("t2", "off", store=fleet) == "off"  # a person may
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines[0] == "t2: fenced (powered off and confirmed off)", lines
    assert lines[1].startswith("web: restarted on t1 (job "), lines
    trail = [(e.action, e.target, e.result, e.detail["by"], e.detail["automatic"])
             for e in audit.entries(fleet) if e.action.startswith("host.power")]  # fmt: skip
    assert trail == [("host.power.off", "t2", "refused", "ha fencing", True),
                     ("host.power.off", "t2", "ok", "host power", False)]  # fmt: skip


def test_power_actions_are_recorded_and_disabled_refuses_everyone(
    fleet: Store, tmp_path: Path
) -> None:
    ha_store.set_power(fleet, _bmc(tmp_path))
    assert service.power("t2", "off", store=fleet) == "off"
    assert service.power("t2", "on", store=fleet, automatic=True, by="test") == "on"
    assert service.set_automation("t2", "disabled", store=fleet).automation == "disabled"
    with pytest.raises(BlockedError, match="t2's power automation is disabled") as refused:
        service.power("t2", "off", store=fleet)
    assert refused.value.exit_code == 3
    assert service.power("t2", "status", store=fleet) == "on"  # asking is always allowed
    service.set_power(_bmc(tmp_path), store=fleet)  # recorded again: the level is kept
    kept = ha_store.get_power(fleet, "t2")
    assert kept is not None and kept.automation is PowerAutomation.DISABLED
    with pytest.raises(VmferryError, match="must be automatic, manual or disabled"):
        service.set_automation("t2", "sometimes", store=fleet)
    trail = [
        (e.action, e.result, e.detail.get("state_after"))
        for e in audit.entries(fleet)
        if e.action.startswith("host.power")
    ]
    assert trail == [("host.power.off", "ok", "off"), ("host.power.on", "ok", "on"),
                     ("host.power.off", "refused", None)]  # fmt: skip


def test_a_failed_power_action_is_recorded_as_an_error(fleet: Store, tmp_path: Path) -> None:
    ha_store.set_power(fleet, _bmc(tmp_path, off_works=False))
    with pytest.raises(ToolError):
        service.power("t2", "off", store=fleet)
    (entry,) = [e for e in audit.entries(fleet) if e.action.startswith("host.power")]
    assert (entry.action, entry.result) == ("host.power.off", "error")
    assert entry.detail["why"]


def test_no_power_driver_means_no_restart(fleet: Store) -> None:
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines == ["t2: not fenced (no-power-driver); nothing restarted"]


def test_a_host_whose_heartbeat_answers_is_only_an_alert(fleet: Store, tmp_path: Path) -> None:
    fleet.remove_host("t2")
    fleet.add_host(Host("t2", DOWN_URI, shell="local"))  # its shell answers: it runs
    ha_store.set_power(fleet, _bmc(tmp_path))
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert len(lines) == 1 and lines[0].startswith("t2: libvirt down ("), lines
    assert lines[0].endswith("the host answers: alert only")
    assert (tmp_path / "power").read_text().strip() == "on"  # never powered off


def test_a_monitor_that_stopped_before_starting_the_vm_is_settled_and_the_vm_restarted_once(
    fleet: Store, tmp_path: Path
) -> None:
    """A monitor died after recording its restart job, before the VM started: the next
    monitor ends that job failed (its owner is gone) and restarts the VM itself, once."""
    ha_store.set_power(fleet, _bmc(tmp_path))
    stale = fleet.create_job("ha-restart", "web", "t2", "t1", MigrationOptions())
    fleet.set_status(stale.id, JobStatus.RUNNING)  # no owner holds it: its monitor is gone
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert lines[0] == (f"web: restart job {stale.id} of a stopped monitor ended failed "
                        "(no vmferry process owns it)"), lines  # fmt: skip
    assert lines[1] == "t2: fenced (powered off and confirmed off)"
    assert lines[2].startswith("web: restarted on t1 (job "), lines
    jobs = {j.id: j for j in fleet.list_jobs() if j.kind == "ha-restart"}
    assert str(jobs.pop(stale.id).status) == "failed"
    assert [str(j.status) for j in jobs.values()] == ["completed"]
    assert fleet.get_job(next(iter(jobs))).owner_id is not None  # this monitor owned it
    again = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert not [line for line in again if "restarted" in line or "job" in line], again


def test_a_monitor_that_stopped_after_starting_the_vm_is_settled_completed(
    fleet: Store, tmp_path: Path
) -> None:
    """A monitor died after the VM started on t1: the next sees it running there, ends the
    job completed and starts nothing; `job resume` of such a job says the same."""
    ha_store.set_power(fleet, _bmc(tmp_path))
    stale = fleet.create_job("ha-restart", "web", "t2", "t1", MigrationOptions())
    fleet.set_status(stale.id, JobStatus.RUNNING)
    with LibvirtHost.connect("t1", "test:///default") as t1:
        t1.define_xml(TEST_VM)
        t1.start("web")
    resumed = service.reconcile_restart(fleet, fleet.get_job(stale.id))
    assert str(resumed.status) == "completed" and "runs on t1" in (resumed.reason or "")
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=2)
    assert not [line for line in lines if "restarted" in line or "fenced" in line], lines
    assert len([j for j in fleet.list_jobs() if j.kind == "ha-restart"]) == 1


def test_a_redfish_bmc_fences_the_dead_host_before_the_restart(
    fleet: Store, bmc: Bmc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """t2's BMC speaks Redfish and applies its ForceOff seconds later, as real ones do: the
    monitor waits for it to say Off, then restarts web on t1."""
    monkeypatch.setenv(ENV, PASSWORD)
    ha_store.set_power(fleet, HostPower("t2", timeout_s=10, driver="redfish", url=bmc.url,
                                        user=USER, password_env=ENV, ca=str(bmc.ca)))  # fmt: skip
    lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=30)
    assert lines[0] == "t2: fenced (powered off and confirmed off)", lines
    assert lines[1].startswith("web: restarted on t1 (job "), lines
    assert service.power("t2", "status", store=fleet) == "off"


def test_an_ipmi_bmc_through_ipmitool_fences_the_dead_host_before_the_restart(
    fleet: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """t2's BMC speaks IPMI 2.0 (pyghmi's BMC server on loopback), reached by the command
    driver with ipmitool as docs/operations.md shows it: status, then a fencing round that
    powers it off (ipmitool's "Chassis Power is off") before web restarts on t1; a wrong
    password fences nothing; under ``manual`` a loop's power-off is refused, a person's
    goes through."""
    with ipmi_bmc(tmp_path) as bmc:
        power = HostPower("t2", bmc.command("on"), bmc.command("off"), bmc.command("status"),
                          10)  # fmt: skip
        ha_store.set_power(fleet, power)
        monkeypatch.setenv(IPMI_ENV, "not-the-password")
        assert service.watch_round(store=fleet, timeout_s=2, confirm_s=2) == [
            "t2: not fenced (power-off-failed); nothing restarted"]  # fmt: skip
        assert bmc.state.read_text().strip() == "on"
        monkeypatch.setenv(IPMI_ENV, IPMI_PASSWORD)
        assert service.power("t2", "status", store=fleet) == "on"
        lines = service.watch_round(store=fleet, timeout_s=2, confirm_s=10)
        assert lines[0] == "t2: fenced (powered off and confirmed off)", lines
        assert lines[1].startswith("web: restarted on t1 (job "), lines
        assert bmc.state.read_text().strip() == "off"
        assert service.power("t2", "status", store=fleet) == "off"
        assert service.power("t2", "on", store=fleet) == "on"
        assert bmc.state.read_text().strip() == "on"
        service.set_automation("t2", "manual", store=fleet)  # the loops may not, a person may
        with pytest.raises(BlockedError, match="power automation is manual"):
            service.power("t2", "off", store=fleet, automatic=True, by="watch --power")
        assert bmc.state.read_text().strip() == "on"
        assert service.power("t2", "off", store=fleet) == "off"
        assert bmc.state.read_text().strip() == "off"
