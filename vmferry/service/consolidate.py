"""`vmferry consolidate`: which hosts the fleet could run without, and the moves that empty
them, from what the hosts say now and the VMs' stored profiles (docs/operations.md).

The data flow is balance's: :func:`vmferry.service.balance.gather_loads` (every registered
host's capacity and running VMs, each VM's stored profile and tags; hosts in maintenance
marked; a host that does not answer left out and named) ─► the pure planner
(:func:`vmferry.fleetops.consolidate.consolidate`). Nothing moves and no host is powered
off unless :func:`apply` is asked to: the moves then run as a plan, the emptied hosts go to
``standby`` and, with ``power_off``, are powered off through their power driver;
:func:`wake` powers one on and takes it back into service.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError, HostUnreachableError, VmferryError
from vmferry.fleetops.consolidate import Consolidation, consolidate
from vmferry.fleetops.imbalance import check_metric
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.power import DPM_BAND, DpmBand
from vmferry.model.ha import power_refusal
from vmferry.model.maintenance import MaintenanceState
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service import ha
from vmferry.service.balance import DEFAULT_LINK_BYTES_S, gather_loads
from vmferry.service.fleet_plan import run_moves
from vmferry.service.plan_run import EventFn, PlanEvent
from vmferry.store import ha as ha_store
from vmferry.store import maintenance
from vmferry.store.db import Store, open_store

__all__ = [
    "MAX_HEADROOM",
    "Applied",
    "ConsolidationReport",
    "Standby",
    "apply",
    "consolidate_fleet",
    "wake",
]

MAX_HEADROOM = 0.9


@dataclass(frozen=True)
class ConsolidationReport:
    consolidation: Consolidation
    hosts: tuple[HostLoad, ...]
    vms: tuple[VmLoad, ...]
    counted_at_size: tuple[str, ...]  # running VMs without a stored profile
    unreachable: dict[str, str] = field(default_factory=dict)
    link_bytes_s: float = DEFAULT_LINK_BYTES_S


def consolidate_fleet(
    *,
    metric: str = "both",
    headroom: float = 0.2,
    max_moves: int | None = None,
    band: DpmBand = DPM_BAND,
    power_off: bool = False,
    automatic: bool = False,
    store: Store | None = None,
) -> ConsolidationReport:
    """The hosts to free and the moves, for the registered hosts now (nothing moves). With
    ``power_off`` a host whose power automation would refuse the power-off (``automatic``:
    asked by vmferry's own loop, :func:`vmferry.model.ha.power_refusal`) is not freed.
    ``BadInputError`` for a headroom outside [0, 0.9], an unknown metric, a negative
    ``max_moves``, or no host answering."""
    if not 0 <= headroom <= MAX_HEADROOM:
        raise BadInputError(f"--headroom must be in 0-90 % (got {headroom * 100:g})")
    check_metric(metric)
    if max_moves is not None and max_moves < 0:
        raise BadInputError(f"--max-moves must be >= 0 (got {max_moves})")
    store = store or open_store()
    hosts, vms, at_size, unreachable, link = gather_loads(store)
    if not hosts:
        raise BadInputError("no registered host answered; `vmferry hosts list` shows them")
    keep = _power_kept(store, hosts, automatic) if power_off else {}
    found = consolidate(hosts, vms, metric=metric, headroom=headroom, band=band,
                        max_moves=max_moves, link_bytes_s=link, keep=keep)  # fmt: skip
    return ConsolidationReport(found, tuple(hosts), tuple(vms), tuple(at_size), unreachable,
                               link)  # fmt: skip


def _power_kept(store: Store, hosts: list[HostLoad], automatic: bool) -> dict[str, str]:
    """The hosts whose power-off their automation level refuses, with that reason."""
    kept = {}
    for host in hosts:
        driver = ha_store.get_power(store, host.name)
        if driver is not None:
            why = power_refusal(host.name, driver.automation, "off", automatic=automatic)
            if why is not None:
                kept[host.name] = why
    return kept


@dataclass(frozen=True)
class Standby:
    """A freed host after `--apply`: in standby (nothing placed on it), powered off or not."""

    host: str
    powered_off: bool
    why: str  # what happened to it, one line


@dataclass(frozen=True)
class Applied:
    plan_id: str | None
    plan_status: str | None
    standby: tuple[Standby, ...]


def _quiet(_event: PlanEvent) -> None:
    return None


def apply(report: ConsolidationReport, *, power_off: bool = False, on_event: EventFn = _quiet,
          automatic: bool = False, store: Store | None = None) -> Applied:  # fmt: skip
    """Carry a consolidation out: the freed hosts marked so nothing is placed on them, the
    moves run as the plan ``consolidate``, then each host found empty put in ``standby``
    and, with ``power_off``, powered off through its power driver and confirmed off (unless
    its power automation refuses; ``automatic``: vmferry's own loop asks). A host that
    still runs a VM stays ``entering`` with the reason."""
    found = report.consolidation
    if not found.hosts_freed:
        raise BadInputError("nothing to apply: no host can be freed")
    store = store or open_store()
    for host in found.hosts_freed:
        maintenance.set_state(store, host, MaintenanceState.ENTERING, "being consolidated")
    plan_id = plan_status = None
    if found.moves:
        plan_id, plan_status = run_moves(found.moves, report.hosts, report.vms,
                                         link_bytes_s=report.link_bytes_s, name="consolidate",
                                         on_event=on_event, store=store)  # fmt: skip
    return Applied(plan_id, plan_status,
                   tuple(_to_standby(store, h, power_off, automatic)
                         for h in found.hosts_freed))  # fmt: skip


def _host_job(store: Store, kind: str, host: str, what: str) -> str:
    """A job recording a decision about host ``host`` (``host-standby``, ``host-wake``):
    `vmferry jobs` and the server list it beside the moves; its subject is the host."""
    job = store.create_job(kind, host, host, host, MigrationOptions())
    store.set_status(job.id, JobStatus.RUNNING)
    store.add_event(job.id, "decision", what, {"host": host})
    return job.id


def _end_host_job(store: Store, job_id: str, host: str, ok: bool, why: str,
                  started: float) -> None:  # fmt: skip
    store.add_event(job_id, "power", why, {"host": host})
    store.finish(job_id, MigrationResult(job_id, host, host, host, Strategy.COLD,
                                         JobStatus.COMPLETED if ok else JobStatus.FAILED,
                                         None if ok else why,
                                         round((time.monotonic() - started) * 1000), None, None,
                                         None))  # fmt: skip


def _to_standby(store: Store, name: str, power_off: bool, automatic: bool) -> Standby:
    host = store.get_host(name)
    with LibvirtHost.connect(host.name, host.uri) as conn:
        left = conn.running_vm_names()
    if left:
        why = f"still runs {', '.join(left)}"
        maintenance.set_state(store, name, MaintenanceState.ENTERING, why)
        return Standby(name, False, why)
    started = time.monotonic()
    job_id = _host_job(store, "host-standby", name, f"{name} is empty: into standby"
                       + (", powered off" if power_off else ""))  # fmt: skip
    if not power_off:
        maintenance.set_state(store, name, MaintenanceState.STANDBY, "empty, left powered on")
        _end_host_job(store, job_id, name, True, "left powered on", started)
        return Standby(name, False, "empty, in standby, left powered on")
    try:
        state = ha.power(name, "off", store=store, automatic=automatic,
                         by="watch --power" if automatic else "consolidate")  # fmt: skip
    except VmferryError as exc:
        why = f"empty, in standby; not powered off: {exc.message}"
        maintenance.set_state(store, name, MaintenanceState.STANDBY, why)
        _end_host_job(store, job_id, name, False, why, started)
        return Standby(name, False, why)
    off = state == "off"
    why = "empty, powered off" if off else f"empty, in standby; its driver says {state}"
    maintenance.set_state(store, name, MaintenanceState.STANDBY, why)
    _end_host_job(store, job_id, name, off, why, started)
    return Standby(name, off, why)


def wake(name: str, *, store: Store | None = None, timeout_s: float = 300.0,
         automatic: bool = False) -> str:  # fmt: skip
    """Bring a host in standby back: powered on through its driver when it has one (unless
    its power automation refuses; ``automatic``: vmferry's own loop asks), then (once its
    libvirt answers) taken out of standby; what happened, one line."""
    store = store or open_store()
    held = maintenance.maintenance_of(store, name)
    if held is None or held.state is not MaintenanceState.STANDBY:
        raise BadInputError(f"{name} is not in standby; `vmferry host maintenance status`")
    host = store.get_host(name)
    started = time.monotonic()
    job_id = _host_job(store, "host-wake", name, f"{name} leaves standby")
    try:
        if ha_store.get_power(store, name) is not None:
            ha.power(name, "on", store=store, automatic=automatic,
                     by="watch --power" if automatic else "host wake")  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with LibvirtHost.connect(host.name, host.uri, timeout_s=5) as conn:
                    conn.info()
                break
            except HostUnreachableError as exc:
                if time.monotonic() > deadline:
                    late = f"{name} did not answer within {timeout_s:g} s of its power-on"
                    raise HostUnreachableError(f"{late}: {exc.message}") from exc
                time.sleep(2.0)
    except VmferryError as exc:
        _end_host_job(store, job_id, name, False, exc.message, started)
        raise
    maintenance.clear(store, name)
    _end_host_job(store, job_id, name, True, "powered on, its libvirt answers: in service",
                  started)  # fmt: skip
    return f"{name} is awake and back in service"
