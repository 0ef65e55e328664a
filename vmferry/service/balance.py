"""`vmferry balance`: the moves that would even out the fleet's load, from what the hosts
say now and the VMs' stored profiles (docs/operations.md).

The data flow: every registered host's capacity and running VMs (libvirt; a host that does
not answer is left out and named), each VM's stored profile summary and tags (the store)
─► the pure loads (:mod:`vmferry.fleetops.loads`) ─► the pure recommender
(:func:`vmferry.fleetops.balance.recommend`). Nothing moves: the recommendation is printed;
with ``--apply`` (:func:`apply`) its moves run as a plan (:mod:`vmferry.service.fleet_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import BadInputError, HostUnreachableError
from vmferry.fleetops.balance import recommend
from vmferry.fleetops.loads import host_load, vm_load
from vmferry.fleetops.model import HostLoad, Recommendation, VmLoad
from vmferry.model import VmState
from vmferry.service.fleet_plan import run_moves
from vmferry.service.plan_run import EventFn, PlanEvent
from vmferry.service.profile import stored_summary
from vmferry.store import accounts, maintenance
from vmferry.store.db import Store, open_store

__all__ = ["BalanceReport", "Loads", "apply", "balance", "gather_loads", "report_for"]

DEFAULT_LINK_BYTES_S = 1.25e9  # 10 Gbit/s where no host records its link rate
MAX_THRESHOLD = 1.0


@dataclass(frozen=True)
class BalanceReport:
    recommendation: Recommendation
    hosts: tuple[HostLoad, ...]
    vms: tuple[VmLoad, ...]
    counted_at_size: tuple[str, ...]  # running VMs without a stored profile
    unreachable: dict[str, str] = field(default_factory=dict)
    link_bytes_s: float = DEFAULT_LINK_BYTES_S


# hosts, their running VMs' loads, the VMs counted at their size, the hosts that did not
# answer, the slowest recorded link (bytes/s)
Loads = tuple[list[HostLoad], list[VmLoad], list[str], dict[str, str], float]


def gather_loads(store: Store, *, timeout_s: float = 10, since: str | None = None) -> Loads:
    """The hosts' capacities, their running VMs' loads (from their profile samples taken at
    or after ``since``, ISO 8601; None: all), the VMs counted at their size, the hosts that
    did not answer and the slowest recorded link (bytes/s)."""
    hosts: list[HostLoad] = []
    vms: list[VmLoad] = []
    at_size: list[str] = []
    unreachable: dict[str, str] = {}
    links = []
    held = maintenance.states(store)
    for registered in store.list_hosts():
        try:
            with LibvirtHost.connect(registered.name, registered.uri, timeout_s=timeout_s) as conn:
                info, records = conn.info(), conn.list_vms()
        except HostUnreachableError as exc:
            unreachable[registered.name] = exc.message
            continue
        hosts.append(host_load(info, in_maintenance=registered.name in held))
        if registered.link_mbps:
            links.append(registered.link_mbps * 1e6 / 8)
        for record in records:
            if record.state is not VmState.RUNNING:
                continue
            summary = stored_summary(record.spec.name, since=since, store=store)
            if summary is None:
                at_size.append(record.spec.name)
            vms.append(vm_load(record, summary, hosts[-1].cpu_key,
                               accounts.tags_of(store, record.spec.name)))  # fmt: skip
    link = min(links) if links else DEFAULT_LINK_BYTES_S
    return hosts, vms, sorted(at_size), unreachable, link


def balance(
    *,
    metric: str = "both",
    threshold: float = 0.1,
    max_moves: int | None = None,
    headroom: float = 0.2,
    store: Store | None = None,
) -> BalanceReport:
    """The recommendation for the registered hosts now (nothing moves)."""
    if not 0 < threshold <= MAX_THRESHOLD:
        raise BadInputError(f"--threshold must be in (0, 1] (got {threshold:g})")
    return report_for(gather_loads(store or open_store()), metric=metric, threshold=threshold,
                      max_moves=max_moves, headroom=headroom)  # fmt: skip


def report_for(
    loads: Loads,
    *,
    metric: str,
    threshold: float,
    max_moves: int | None,
    headroom: float,
    fixed: frozenset[str] = frozenset(),
) -> BalanceReport:
    """The recommendation for ``loads`` as :func:`gather_loads` read them; VMs in ``fixed``
    stay put."""
    hosts, vms, at_size, unreachable, link = loads
    if not hosts:
        raise BadInputError("no registered host answered; `vmferry hosts list` shows them")
    found = recommend(hosts, vms, metric=metric, threshold=threshold, max_moves=max_moves,
                      headroom=headroom, link_bytes_s=link, fixed=fixed)  # fmt: skip
    return BalanceReport(found, tuple(hosts), tuple(vms), tuple(at_size), unreachable, link)


def _quiet(_event: PlanEvent) -> None:
    return None


def apply(report: BalanceReport, *, on_event: EventFn = _quiet,
          store: Store | None = None) -> tuple[str, str]:  # fmt: skip
    """Carry the recommendation's moves out as the plan ``balance``, to its end: (plan id,
    its status). :class:`BadInputError` when there is nothing to move."""
    rec = report.recommendation
    if not rec.moves:
        raise BadInputError(f"nothing to apply: the fleet is {rec.stop}")
    return run_moves(rec.moves, report.hosts, report.vms, link_bytes_s=report.link_bytes_s,
                     name="balance", on_event=on_event, store=store or open_store())  # fmt: skip
