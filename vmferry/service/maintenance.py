"""`vmferry host maintenance enter|exit|status`: empty a host for maintenance and keep VMs off
it until it is back (docs/operations.md).

`enter` marks the host ``entering`` (from then on the pre-flight blocks any move to it and
balancing leaves it out), plans where each of its running VMs goes (the pure
:func:`vmferry.fleetops.maintenance.evacuate`, from the hosts now and the VMs' stored
profiles), and runs those moves as a plan (`plan create` and `plan run`: the plan engine's
limits, pause and resume). Once the host runs no VM it is ``in-maintenance``. When a VM
cannot be placed, nothing moves and the host stays ``entering``, the reason noted, until the
admin decides. `exit` takes it back into service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import HostUnreachableError
from vmferry.fleetops.maintenance import Evacuation, evacuate, evacuation_strategy
from vmferry.model.maintenance import HostMaintenance, MaintenanceState
from vmferry.model.migration import MigrationOptions, Strategy
from vmferry.service.balance import gather_loads
from vmferry.service.check import check_migration
from vmferry.service.fleet_plan import run_moves
from vmferry.service.offline_move import check_offline
from vmferry.service.plan_run import EventFn
from vmferry.store import maintenance
from vmferry.store.db import Store, open_store

__all__ = ["MaintenanceOutcome", "enter", "exit_maintenance", "status"]


@dataclass(frozen=True)
class MaintenanceOutcome:
    host: str
    evacuation: Evacuation
    state: HostMaintenance | None  # after (None: a dry run of a host in service)
    dry_run: bool
    plan_id: str | None = None
    plan_status: str | None = None
    counted_at_size: tuple[str, ...] = ()  # running VMs without a stored profile
    strategies: dict[str, str] = field(default_factory=dict)  # VM -> live | warm | cold
    why: dict[str, str] = field(default_factory=dict)  # VM -> why that way (not live only)


def _quiet(_event: object) -> None:
    return None


def enter(
    host: str,
    *,
    dry_run: bool = False,
    metric: str = "both",
    headroom: float = 0.2,
    allow_cold: bool = False,
    on_event: EventFn = _quiet,
    store: Store | None = None,
    checks: ChecksFn | None = None,
) -> MaintenanceOutcome:
    """Empty ``host`` and mark it (see the module's text); with ``dry_run`` only the plan.
    Each VM moves live; one whose live move pre-flight blocks moves warm, or cold with
    ``allow_cold`` (:func:`vmferry.fleetops.maintenance.evacuation_strategy`); one that can
    move no way is stuck like a VM that cannot be placed. ``checks``: the pre-flight
    (default :func:`blockers`, through the hosts)."""
    store = store or open_store()
    store.get_host(host)  # NotFoundError for a host not registered
    hosts, vms, at_size, unreachable, link = gather_loads(store)
    if host in unreachable:
        raise HostUnreachableError(f"{host} does not answer, so its VMs cannot be moved off "
                                   f"it: {unreachable[host]}")  # fmt: skip
    evacuation = evacuate(hosts, vms, host, metric=metric, headroom=headroom,
                          link_bytes_s=link)  # fmt: skip
    strategies, reasons, blocked = _ways(evacuation, allow_cold, checks or blockers)
    if blocked:
        evacuation = replace(evacuation, stuck=(*evacuation.stuck, *blocked))
    sized = tuple(at_size)
    if dry_run:
        held = maintenance.maintenance_of(store, host)
        return MaintenanceOutcome(host, evacuation, held, True, counted_at_size=sized,
                                  strategies=strategies, why=reasons)  # fmt: skip
    if evacuation.stuck:
        maintenance.set_state(store, host, MaintenanceState.ENTERING,
                              "cannot move: " + "; ".join(evacuation.stuck))  # fmt: skip
        held = maintenance.maintenance_of(store, host)
        return MaintenanceOutcome(host, evacuation, held, False, counted_at_size=sized,
                                  strategies=strategies, why=reasons)  # fmt: skip
    maintenance.set_state(store, host, MaintenanceState.ENTERING)
    plan_id = plan_status = None
    if evacuation.moves:
        plan_id, plan_status = run_moves(evacuation.moves, hosts, vms, link_bytes_s=link,
                                         name=f"maintenance-{host}", on_event=on_event,
                                         store=store, strategies=strategies)  # fmt: skip
    left = _running(store, host)
    if left:
        why = f"still runs {', '.join(left)}"
        if plan_id is not None:
            why += f" (plan {plan_id} {plan_status})"
        maintenance.set_state(store, host, MaintenanceState.ENTERING, why)
    else:
        maintenance.set_state(store, host, MaintenanceState.IN_MAINTENANCE)
    return MaintenanceOutcome(host, evacuation, maintenance.maintenance_of(store, host), False,
                              plan_id, plan_status, sized, strategies, reasons)  # fmt: skip


ChecksFn = Callable[[str, str, Strategy], list[str]]


def blockers(vm: str, to: str, strategy: Strategy) -> list[str]:
    """The pre-flight blockers of moving ``vm`` to ``to`` that way (through the hosts)."""
    if strategy is Strategy.LIVE:
        return check_migration(vm, to).blocker_ids
    return check_offline(vm, to, MigrationOptions(strategy=strategy)).blocker_ids


def _ways(evacuation: Evacuation, allow_cold: bool,
          checks: ChecksFn) -> tuple[dict[str, str], dict[str, str], list[str]]:  # fmt: skip
    """Each move's way (live, warm, cold), why when not live, and the VMs no way may move."""
    strategies: dict[str, str] = {}
    why: dict[str, str] = {}
    blocked: list[str] = []
    for move in evacuation.moves:
        live = checks(move.vm, move.destination, Strategy.LIVE)
        warm = checks(move.vm, move.destination, Strategy.WARM) if live else None
        cold = (checks(move.vm, move.destination, Strategy.COLD)
                if live and warm and allow_cold else None)  # fmt: skip
        way, reason = evacuation_strategy(live, warm, cold, allow_cold=allow_cold)
        if way is None:
            blocked.append(f"{move.vm}: {reason}")
            continue
        strategies[move.vm] = way
        if way != "live":
            why[move.vm] = reason
    return strategies, why, blocked


def exit_maintenance(host: str, *, store: Store | None = None) -> bool:
    """Take ``host`` back into service; False when it was not in maintenance."""
    store = store or open_store()
    store.get_host(host)
    return maintenance.clear(store, host)


def status(*, store: Store | None = None) -> list[HostMaintenance]:
    """The hosts in maintenance."""
    return list(maintenance.states(store or open_store()).values())


def _running(store: Store, host: str) -> list[str]:
    registered = store.get_host(host)
    with LibvirtHost.connect(registered.name, registered.uri) as conn:
        return sorted(conn.running_vm_names())
