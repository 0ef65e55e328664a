"""A stored wave plan and its items (one per VM), and the pure rules that run it.

The planner (:mod:`vmferry.plan`) makes the schedule; :mod:`vmferry.service.plan` stores it
as a :class:`PlanRecord` and carries it out item by item. :func:`next_items` says which
items may start now, :func:`restart_items` what a resumed run does with the items an
earlier run left behind.
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
    started_at: str | None = None
    finished_at: str | None = None

    def item(self, vm: str) -> PlanItem:
        return next(i for i in self.items if i.vm == vm)


def current_wave(items: Sequence[PlanItem]) -> int | None:
    """The lowest wave that still has an item not completed (None: all are done)."""
    waves = [i.wave for i in items if i.status is not ItemStatus.COMPLETED]
    return min(waves) if waves else None


def next_items(items: Sequence[PlanItem], slots: Mapping[str, int]) -> list[PlanItem]:
    """The pending items that may start now (pure).

    Waves run one after the other: an item starts only when every item of the earlier
    waves has completed. Inside its wave it starts, in schedule order, when both its source
    and its destination have a free slot (``slots``: migrations at once per host, from
    the plan file; a host not named there has 1), counting the items running now. A wave
    with a failed or cancelled item starts nothing more (the runner stops).
    """
    wave = current_wave(items)
    if wave is None:
        return []
    in_wave = [i for i in items if i.wave == wave]
    if any(i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED) for i in in_wave):
        return []
    busy: dict[str, int] = {}
    for i in items:
        if i.status is ItemStatus.RUNNING:
            for host in (i.source, i.destination):
                busy[host] = busy.get(host, 0) + 1
    chosen: list[PlanItem] = []
    for i in sorted(in_wave, key=lambda x: x.order):
        if i.status is not ItemStatus.PENDING:
            continue
        if all(busy.get(h, 0) < slots.get(h, 1) for h in (i.source, i.destination)):
            chosen.append(i)
            for host in (i.source, i.destination):
                busy[host] = busy.get(host, 0) + 1
    return chosen


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
