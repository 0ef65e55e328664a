"""What the planner returns: the schedule, its waves, and the error for impossible plans."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmferry.errors import BadInputError


class PlanInfeasibleError(BadInputError):
    """The plan cannot be carried out; the message names the constraint and the VMs."""


@dataclass(frozen=True)
class TransferEstimate:
    """What a duration predictor is given for one VM: bytes to send at ``rate_bps``
    (bits/s, this migration's share of its links), and the VM's downtime tolerance."""

    vm: str
    memory_bytes: int
    transfer_bytes: int
    rate_bps: float
    max_downtime_ms: int
    strategy: str


@dataclass(frozen=True)
class ScheduledMigration:
    """One VM's move. Times are seconds from the plan's start. ``bandwidth_mbps`` is what
    it holds of its links and of the fleet budget while it runs. ``placed``: the planner
    chose the destination."""

    vm: str
    source: str
    destination: str
    wave: int
    start_s: int
    end_s: int
    predicted_s: int
    transfer_bytes: int
    bandwidth_mbps: int
    max_downtime_ms: int
    strategy: str
    group: str | None = None
    placed: bool = False


@dataclass(frozen=True)
class Wave:
    """VMs whose migrations start in the same wave slice (see docs/planning.md)."""

    number: int
    start_s: int
    end_s: int
    vms: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    """The plan's answer. ``migrations`` are ordered by start, then name.

    ``lower_bound_s`` is the largest of ``lower_bound_parts`` (each a bound on the
    makespan on its own, mapped through the maintenance windows). ``method`` is the solver
    whose schedule this is (``heuristic`` or ``cpsat``); ``solver_status`` is CP-SAT's
    status when it ran (``optimal``, ``feasible``, ``no-better``, ``unknown``), else
    ``""``; ``solver_bound_s`` is CP-SAT's proven bound when it ran, else ``None``.
    ``heuristic_makespan_s`` is kept for comparison."""

    migrations: tuple[ScheduledMigration, ...]
    waves: tuple[Wave, ...]
    makespan_s: int
    lower_bound_s: int
    lower_bound_parts: dict[str, int]
    method: str
    heuristic_makespan_s: int
    solver_status: str = ""
    solver_bound_s: int | None = None
    wave_slice_s: int = 600
    windows: tuple[tuple[int, int], ...] = ()
    fleet_budget_mbps: int | None = None
    name: str | None = None
    start_at: str | None = None  # ISO datetime of offset 0, when the plan gives one
    notes: tuple[str, ...] = field(default=())

    def migration(self, vm: str) -> ScheduledMigration:
        return next(m for m in self.migrations if m.vm == vm)


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """The JSON form (the ``plan show --json`` schema): plain dicts, lists and numbers."""
    from vmferry.model.jsonable import to_jsonable

    out: dict[str, Any] = to_jsonable(schedule)
    return out


def schedule_from_dict(data: dict[str, Any]) -> Schedule:
    """Rebuild a ``Schedule`` from ``schedule_to_dict``'s output (for the store)."""
    return Schedule(
        migrations=tuple(ScheduledMigration(**m) for m in data["migrations"]),
        waves=tuple(
            Wave(number=w["number"], start_s=w["start_s"], end_s=w["end_s"], vms=tuple(w["vms"]))
            for w in data["waves"]
        ),
        makespan_s=data["makespan_s"],
        lower_bound_s=data["lower_bound_s"],
        lower_bound_parts=dict(data["lower_bound_parts"]),
        method=data["method"],
        heuristic_makespan_s=data["heuristic_makespan_s"],
        solver_status=data.get("solver_status", ""),
        solver_bound_s=data.get("solver_bound_s"),
        wave_slice_s=data.get("wave_slice_s", 600),
        windows=tuple((int(a), int(b)) for a, b in data.get("windows", [])),
        fleet_budget_mbps=data.get("fleet_budget_mbps"),
        name=data.get("name"),
        start_at=data.get("start_at"),
        notes=tuple(data.get("notes", [])),
    )
