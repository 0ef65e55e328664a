"""Emptying a host for maintenance: the pure evacuation (fleetops/maintenance.py), the
pre-flight blocker for a destination in maintenance (assess/maintenance.py), the store's
record of it, and `vmferry host maintenance` over libvirt's test driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import vmferry

from vmferry.assess.maintenance import maintenance_finding
from vmferry.errors import NotFoundError
from vmferry.fleetops.maintenance import evacuate, evacuation_strategy
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.model import Host
from vmferry.model.finding import Severity
from vmferry.model.maintenance import HostMaintenance, MaintenanceState
from vmferry.model.migration import Strategy
from vmferry.service import maintenance as service
from vmferry.store import maintenance
from vmferry.store.db import open_store

GIB = 2**30
HOSTS = [HostLoad("kvm1", 8, 32 * GIB, "Skylake"), HostLoad("kvm2", 8, 32 * GIB, "Skylake"),
         HostLoad("kvm3", 8, 32 * GIB, "Skylake")]  # fmt: skip


def vm(name: str, host: str, gib: int = 4, cpu: float = 1.0, **extra: object) -> VmLoad:
    return VmLoad(name, host, 2, gib * GIB, cpu, gib * GIB // 2, **extra)  # type: ignore[arg-type]


def test_each_vm_goes_to_the_least_loaded_host_that_may_take_it() -> None:
    vms = [vm("big", "kvm1", 8), vm("small", "kvm1", 2), vm("other", "kvm2", 2, cpu=1.5)]
    evac = evacuate(HOSTS, vms, "kvm1")
    assert [(m.vm, m.source, m.destination) for m in evac.moves] == [
        ("big", "kvm1", "kvm3"), ("small", "kvm1", "kvm2")]  # fmt: skip
    assert evac.stuck == () and all(m.predicted_seconds > 0 for m in evac.moves)


def test_the_rules_hold_and_a_vm_no_host_takes_is_stuck() -> None:
    vms = [
        vm("db1", "kvm1", anti_affinity="db"),
        vm("db2", "kvm2", anti_affinity="db"),
        vm("db3", "kvm3", anti_affinity="db"),
        vm("web", "kvm1", cpu_key="Icelake"),
    ]
    evac = evacuate(HOSTS, vms, "kvm1")
    assert evac.moves == ()
    assert evac.stuck == ("db1: each host with its CPU and room holds one of db",
                          "web: no host outside maintenance has its CPU (Icelake)")  # fmt: skip
    full = evacuate(HOSTS[:2], [vm("huge", "kvm1", 40)], "kvm1")
    assert full.stuck == ("huge: no host with its CPU has room within 20% headroom",)
    alone = evacuate(HOSTS[:1], [vm("v", "kvm1")], "kvm1")
    assert alone.stuck == ("v: no other host outside maintenance",)
    with pytest.raises(NotFoundError):
        evacuate(HOSTS, vms, "kvm9")


def test_a_host_in_maintenance_is_no_destination() -> None:
    hosts = [HOSTS[0], HOSTS[1], HostLoad("kvm3", 8, 32 * GIB, "Skylake", in_maintenance=True)]
    evac = evacuate(hosts, [vm("a", "kvm1"), vm("b", "kvm1")], "kvm1")
    assert [m.destination for m in evac.moves] == ["kvm2", "kvm2"]


def test_a_destination_in_maintenance_blocks_a_move() -> None:
    assert maintenance_finding(None) is None
    found = maintenance_finding(HostMaintenance("kvm2", MaintenanceState.ENTERING,
                                                "2026-12-04T20:00:00Z"))  # fmt: skip
    assert found is not None and (found.id, found.severity) == ("host.maintenance",
                                                                Severity.BLOCKER)  # fmt: skip
    assert found.message == ("kvm2 is being emptied for maintenance since "
                             "2026-12-04T20:00:00Z: nothing is placed on it")  # fmt: skip
    assert "vmferry host maintenance exit kvm2" in found.remediation


def test_the_store_keeps_when_maintenance_began(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'x.db'}") as store:
        maintenance.set_state(store, "kvm1", MaintenanceState.ENTERING, "still runs web1")
        began = maintenance.states(store)["kvm1"].since
        maintenance.set_state(store, "kvm1", MaintenanceState.IN_MAINTENANCE)
        assert maintenance.maintenance_of(store, "kvm1") == HostMaintenance(
            "kvm1", MaintenanceState.IN_MAINTENANCE, began, None)  # fmt: skip
        assert maintenance.clear(store, "kvm1") is True
        assert maintenance.clear(store, "kvm1") is False
        assert maintenance.states(store) == {}


def test_the_command_over_a_real_libvirt(tmp_path: Path) -> None:
    """libvirt's test driver: one host running "test"; no other host can take it."""
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    dry = vmferry("host", "maintenance", "enter", "t1", "--dry-run", "--json", db=db)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["stuck"] == ["test: no other host outside maintenance"]
    assert json.loads(vmferry("host", "maintenance", "status", "--json", db=db).stdout) == []
    refused = vmferry("host", "maintenance", "enter", "t1", "--json", db=db)
    assert refused.returncode == 3
    assert refused.stderr.strip().splitlines() == [
        "counted at their size (no stored profile; `vmferry profile --host t1`): test",
        "vmferry: t1 stays entering maintenance, nothing moved: test: no other host outside "
        "maintenance"]  # fmt: skip
    held = json.loads(vmferry("host", "maintenance", "status", "--json", db=db).stdout)
    assert [(h["host"], h["state"]) for h in held] == [("t1", "entering")]
    back = vmferry("host", "maintenance", "exit", "t1", db=db)
    assert (back.returncode, back.stdout.strip()) == (0, "t1 is back in service")
    unknown = vmferry("host", "maintenance", "enter", "t9", db=db)
    assert unknown.returncode == 2 and "no host named 't9'" in unknown.stderr


@pytest.mark.parametrize(
    ("live", "warm", "cold", "allow_cold", "way", "words"),
    [([], None, None, False, "live", "live"),
     (["migration.tcg-lost-writes"], [], None, False, "warm",
      "live blocked (migration.tcg-lost-writes): warm"),
     (["storage.not-shared"], ["storage.not-shared"], None, False, None,
      "warm blocked (storage.not-shared), cold not allowed (--allow-cold)"),
     (["storage.not-shared"], ["storage.not-shared"], [], True, "cold", ": cold"),
     (["cpu.x"], ["cpu.x"], ["cpu.x"], True, None, "cold blocked (cpu.x)")],
)  # fmt: skip
def test_a_vm_leaves_live_else_warm_else_cold_when_allowed(
    live: list[str], warm: list[str] | None, cold: list[str] | None, allow_cold: bool,
    way: str | None, words: str,
) -> None:  # fmt: skip
    got, why = evacuation_strategy(live, warm, cold, allow_cold=allow_cold)
    assert got == way and words in why, why


def test_enter_moves_each_vm_the_way_pre_flight_allows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """web moves live, db (live blocked) warm, batch (live and warm blocked) cold only with
    --allow-cold: without it nothing moves and the host stays entering."""
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    for h in HOSTS:
        store.add_host(Host(h.name, "test:///default"))
    fleet = [vm("web", "kvm1"), vm("db", "kvm1"), vm("batch", "kvm1")]
    monkeypatch.setattr(service, "gather_loads",
                        lambda _store: (list(HOSTS), fleet, [], {}, 1.25e9))  # fmt: skip
    ran: list[dict[str, str]] = []

    def run_moves(moves: object, *_a: object, strategies: dict[str, str], **_k: object) -> tuple[
            str, str]:  # fmt: skip
        ran.append(dict(strategies))
        return "plan1", "completed"

    monkeypatch.setattr(service, "run_moves", run_moves)
    monkeypatch.setattr(service, "_running", lambda _store, _host: [])
    blocked = {("db", "live"), ("batch", "live"), ("batch", "warm")}

    def checks(name: str, _to: str, strategy: Strategy) -> list[str]:
        return ["migration.x"] if (name, str(strategy)) in blocked else []

    refused = service.enter("kvm1", store=store, checks=checks)
    assert ran == [] and refused.state is not None
    assert refused.state.state is MaintenanceState.ENTERING
    assert refused.evacuation.stuck[-1].startswith("batch: live blocked (migration.x), warm ")
    done = service.enter("kvm1", store=store, checks=checks, allow_cold=True)
    assert ran == [{"web": "live", "db": "warm", "batch": "cold"}]
    assert done.why == {
        "db": "live blocked (migration.x): warm",
        "batch": "live blocked (migration.x), warm blocked (migration.x): cold",
    }
    assert done.state is not None and done.state.state is MaintenanceState.IN_MAINTENANCE
