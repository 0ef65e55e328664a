"""A stored wave plan and its items (one per VM), and the pure rules that run it.

The planner (:mod:`vmferry.plan`) makes the schedule; :mod:`vmferry.service.plan` stores it
as a :class:`PlanRecord` and carries it out item by item. :func:`next_items` says which
items may start now (within the :class:`RunLimits`), :func:`restart_items` what a resumed
run does with the items an earlier run left behind.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


class PlanStatus(enum.StrEnum):
    PENDING = "pending"  # created, never run
    RUNNING = "running"  # a vmferry process carries it out (see owner_pid)
    PAUSED = "paused"  # stopped between migrations; `plan resume` goes on
    COMPLETED = "completed"
    FAILED = "failed"  # a migration failed; its source runs; `plan run` retries it
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (PlanStatus.COMPLETED, PlanStatus.CANCELLED)


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # the migration failed; the source VM is intact
    CANCELLED = "cancelled"  # cancelled (Ctrl-C, pause with a running job, plan cancel)


@dataclass(frozen=True)
class PlanItem:
    """One VM's move inside a plan: what was predicted, and what happened.

    ``order`` is the VM's position in the schedule (by predicted start, then name).
    Predicted times are seconds from the plan's start; ``started_at`` / ``finished_at`` are
    ISO 8601 UTC, and ``actual_start_s`` / ``actual_end_s`` the same as seconds from the
    plan's first run."""

    vm: str
    wave: int
    order: int
    source: str
    destination: str
    strategy: str  # live | postcopy
    strategy_reason: str
    predicted_start_s: int
    predicted_end_s: int
    predicted_s: int
    predicted_downtime_ms: int | None = None
    prediction: dict[str, Any] = field(default_factory=dict)  # inputs and basis, if measured
    status: ItemStatus = ItemStatus.PENDING
    job_id: str | None = None
    reason: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    actual_start_s: float | None = None
    actual_end_s: float | None = None
    actual_total_ms: int | None = None
    actual_downtime_ms: int | None = None
    attempts: int = 0


@dataclass(frozen=True)
class PlanRecord:
    """A stored plan: the plan file (``spec``, as parsed), the planner's schedule
    (``schedule``, :func:`vmferry.plan.schedule_to_dict`), and the items in order.

    ``requested`` is ``pause`` or ``cancel`` while another process asks the running owner
    to stop."""

    id: str
    name: str | None
    status: PlanStatus
    created_at: str
    updated_at: str
    spec: dict[str, Any]
    schedule: dict[str, Any]
    items: tuple[PlanItem, ...] = ()
    reason: str | None = None
    requested: str | None = None
    owner_pid: int | None = None
    owner_start_ticks: int | None = None
    owner_id: str | None = None  # its lease (vmferry.model.lease)
    started_at: str | None = None
    finished_at: str | None = None

    def item(self, vm: str) -> PlanItem:
        return next(i for i in self.items if i.vm == vm)


def current_wave(items: Sequence[PlanItem]) -> int | None:
    """The lowest wave that still has an item not completed (None: all are done)."""
    waves = [i.wave for i in items if i.status is not ItemStatus.COMPLETED]
    return min(waves) if waves else None


@dataclass(frozen=True)
class RunLimits:
    """What bounds a plan's run besides its waves: ``slots``, migrations at once per host
    (a host not named has 1); ``bandwidth_mbps``, what each VM's migration holds of the
    fleet budget (the planner's ``bandwidth_mbps``); ``budget_mbps``, the fleet budget, all
    running migrations together; ``groups``, each grouped VM's group (they start together).
    """

    slots: Mapping[str, int]
    bandwidth_mbps: Mapping[str, int] = field(default_factory=dict)
    budget_mbps: int | None = None
    groups: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_schedule(cls, slots: Mapping[str, int], schedule: Mapping[str, Any]) -> RunLimits:
        """The limits of a stored schedule (:func:`vmferry.plan.schedule_to_dict`)."""
        migrations = schedule.get("migrations") or []
        return cls(
            slots=dict(slots),
            bandwidth_mbps={m["vm"]: int(m.get("bandwidth_mbps") or 0) for m in migrations},
            budget_mbps=schedule.get("fleet_budget_mbps"),
            groups={m["vm"]: m["group"] for m in migrations if m.get("group")},
        )


def next_items(items: Sequence[PlanItem], limits: RunLimits | Mapping[str, int]) -> list[PlanItem]:
    """The pending items that may start now (pure).

    Waves run one after the other: an item starts only when every item of the earlier
    waves has completed. Inside its wave it starts, in schedule order, when both its source
    and its destination have a free slot and its bandwidth fits in what the running
    migrations leave of the fleet budget (``limits``; a bare mapping is the slots alone).
    The pending members of a group start together or not at all. A wave with a failed or
    cancelled item starts nothing more (the runner stops).
    """
    if not isinstance(limits, RunLimits):
        limits = RunLimits(slots=limits)
    wave = current_wave(items)
    if wave is None:
        return []
    in_wave = [i for i in items if i.wave == wave]
    if any(i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED) for i in in_wave):
        return []
    busy: dict[str, int] = {}
    used_mbps = 0
    for i in items:
        if i.status is ItemStatus.RUNNING:
            used_mbps += limits.bandwidth_mbps.get(i.vm, 0)
            for host in (i.source, i.destination):
                busy[host] = busy.get(host, 0) + 1
    chosen: list[PlanItem] = []
    for unit in _units(in_wave, limits.groups):
        need: dict[str, int] = {}
        for i in unit:
            for host in (i.source, i.destination):
                need[host] = need.get(host, 0) + 1
        need_mbps = sum(limits.bandwidth_mbps.get(i.vm, 0) for i in unit)
        if any(busy.get(h, 0) + n > limits.slots.get(h, 1) for h, n in need.items()):
            continue
        if limits.budget_mbps is not None and used_mbps + need_mbps > limits.budget_mbps:
            continue
        chosen.extend(unit)
        used_mbps += need_mbps
        for h, n in need.items():
            busy[h] = busy.get(h, 0) + n
    return chosen


def _units(in_wave: Sequence[PlanItem], groups: Mapping[str, str]) -> list[list[PlanItem]]:
    """The wave's pending items as start units in schedule order: a VM alone, or the pending
    members of its group together (placed at the first member's turn)."""
    units: list[list[PlanItem]] = []
    by_group: dict[str, list[PlanItem]] = {}
    for i in sorted(in_wave, key=lambda x: x.order):
        if i.status is not ItemStatus.PENDING:
            continue
        group = groups.get(i.vm)
        if group is None:
            units.append([i])
        elif group in by_group:
            by_group[group].append(i)
        else:
            by_group[group] = [i]
            units.append(by_group[group])
    return units


def restart_items(items: Sequence[PlanItem]) -> list[PlanItem]:
    """What a new run does with the items an earlier run left (pure): completed items are
    kept and skipped; failed and cancelled ones go back to pending (their source VMs run, so
    they are tried again). Running items are returned as they are: only the hosts can tell
    how they ended (the service reconciles their jobs first)."""
    out: list[PlanItem] = []
    for i in items:
        if i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED):
            out.append(replace(i, status=ItemStatus.PENDING, job_id=None))
        else:
            out.append(i)
    return out


def plan_outcome(items: Sequence[PlanItem]) -> PlanStatus | None:
    """The plan's status once nothing runs (pure): completed when every item completed,
    failed when one failed or was cancelled, None while items are still pending."""
    if any(i.status is ItemStatus.RUNNING for i in items):
        return None
    if all(i.status is ItemStatus.COMPLETED for i in items):
        return PlanStatus.COMPLETED
    if any(i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED) for i in items):
        return PlanStatus.FAILED
    return None
