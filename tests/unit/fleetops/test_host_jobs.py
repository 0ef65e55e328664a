"""Host decisions are jobs (issue 16, item 5): putting an emptied host in standby (powered
off or not) and waking it are `host-standby` and `host-wake` jobs with their events, as
`vmferry jobs` shows them; a power-off that fails ends its job failed. Over libvirt's test
driver with a power driver of shell commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BlockedError
from vmferry.model import Host
from vmferry.model.ha import HostPower
from vmferry.service import audit, consolidate
from vmferry.service import ha as ha_service
from vmferry.store import Store, maintenance
from vmferry.store import ha as ha_store


@pytest.fixture
def empty_host(store: Store) -> Iterator[Store]:
    """t1 (libvirt's test driver) with its one VM stopped: an empty host."""
    store.add_host(Host("t1", "test:///default"))
    with LibvirtHost.connect("t1", "test:///default", own=True) as t1:
        t1.destroy("test")
        try:
            yield store
        finally:
            t1.start("test")


def _driver(tmp_path: Path, *, off_works: bool = True) -> HostPower:
    state = tmp_path / "power"
    state.write_text("on\n")
    off = f"sh -c 'echo off > {state}'" if off_works else "false"
    return HostPower("t1", f"sh -c 'echo on > {state}'", off, f"cat {state}", 5)


def test_standby_and_wake_are_jobs_with_their_events(empty_host: Store, tmp_path: Path) -> None:
    store = empty_host
    ha_store.set_power(store, _driver(tmp_path))
    maintenance.set_state(store, "t1", consolidate.MaintenanceState.ENTERING, "being consolidated")
    standby = consolidate._to_standby(store, "t1", power_off=True, automatic=False)
    assert (standby.powered_off, standby.why) == (True, "empty, powered off")
    assert consolidate.wake("t1", store=store, timeout_s=5) == "t1 is awake and back in service"
    jobs = sorted(store.list_jobs(), key=lambda j: j.created_at)
    assert [(j.kind, j.vm, str(j.status)) for j in jobs] == [
        ("host-standby", "t1", "completed"), ("host-wake", "t1", "completed")]  # fmt: skip
    events = [(e.kind, e.message) for e in store.get_job(jobs[0].id).events]
    assert ("decision", "t1 is empty: into standby, powered off") in events
    assert ("power", "empty, powered off") in events
    assert store.get_job(jobs[1].id).events[-2].message == (
        "powered on, its libvirt answers: in service")  # fmt: skip


def test_a_failed_power_off_ends_the_standby_job_failed(empty_host: Store, tmp_path: Path) -> None:
    store = empty_host
    ha_store.set_power(store, _driver(tmp_path, off_works=False))
    standby = consolidate._to_standby(store, "t1", power_off=True, automatic=False)
    assert not standby.powered_off and "not powered off" in standby.why
    (job,) = store.list_jobs()
    assert (job.kind, str(job.status)) == ("host-standby", "failed")
    assert job.reason is not None and "not powered off" in job.reason


def test_the_watch_neither_powers_off_nor_wakes_a_host_whose_automation_is_manual(
    empty_host: Store, tmp_path: Path
) -> None:
    """Under ``manual`` vmferry's loop is refused (the host stays on, in standby, the job
    failed with the reason) while a person's wake goes ahead; each is in the audit trail."""
    store = empty_host
    ha_store.set_power(store, _driver(tmp_path))
    ha_service.set_automation("t1", "manual", store=store)
    maintenance.set_state(store, "t1", consolidate.MaintenanceState.ENTERING, "being consolidated")
    standby = consolidate._to_standby(store, "t1", power_off=True, automatic=True)
    assert not standby.powered_off and "power automation is manual" in standby.why
    assert (tmp_path / "power").read_text().strip() == "on"
    with pytest.raises(BlockedError, match="power automation is manual"):
        consolidate.wake("t1", store=store, timeout_s=5, automatic=True)
    assert consolidate.wake("t1", store=store, timeout_s=5) == "t1 is awake and back in service"
    trail = [
        (e.action, e.result, e.detail["by"])
        for e in audit.entries(store)
        if e.action.startswith("host.power")
    ]
    assert trail == [("host.power.off", "refused", "watch --power"),
                     ("host.power.on", "refused", "watch --power"),
                     ("host.power.on", "ok", "host wake")]  # fmt: skip


def test_the_watch_does_not_plan_to_free_a_host_it_may_not_power_off(
    empty_host: Store, tmp_path: Path
) -> None:
    """consolidate_fleet with power_off: a host whose automation refuses the power-off is
    kept with that reason (a person's --power-off is refused only by ``disabled``)."""
    store = empty_host
    store.add_host(Host("t1b", "test:///default"))
    ha_store.set_power(store, _driver(tmp_path))
    ha_service.set_automation("t1", "manual", store=store)
    loop = consolidate.consolidate_fleet(power_off=True, automatic=True, store=store)
    assert "t1" not in loop.consolidation.hosts_freed
    assert "power automation is manual" in dict(loop.consolidation.kept)["t1"]
    person = consolidate.consolidate_fleet(power_off=True, store=store)
    assert "t1" not in dict(person.consolidation.kept)
    ha_service.set_automation("t1", "disabled", store=store)
    person = consolidate.consolidate_fleet(power_off=True, store=store)
    assert "power automation is disabled" in dict(person.consolidation.kept)["t1"]
