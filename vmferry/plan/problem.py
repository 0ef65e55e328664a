"""The scheduling problem in integers: what each migration needs and what each host has.

Built from a checked ``PlanSpec`` and a ``Placement`` (docs/planning.md, "The model"):

- every host has one migration link of ``link_gbps`` and ``slots`` migrations at once (its
  ``max_concurrent``, else 4 below 10 Gbit/s and 8 from 10 Gbit/s, as vMotion);
- a migration holds one slot on its source and one on its destination, and a bandwidth of
  ``bw`` Mbit/s on both links and on the fleet budget, for ``dur`` seconds;
- by default ``bw`` is the smaller of the two links' per-slot shares (link / slots), capped
  by the budget, and ``dur`` = bytes * 8 / ``bw``; a predictor (given that ``bw``) sets
  ``dur`` and ``bw`` stays (the runner caps the migration at it under a budget); a
  ``predicted_s`` in the plan file sets ``dur``, and ``bw`` is then the bytes over that
  time, capped by both links and the budget;
- the members of a group start at the same time (a "unit");
- with maintenance windows, a migration starts and ends inside one window.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from vmferry.plan.model import PlanInfeasibleError, TransferEstimate
from vmferry.plan.placement import Placement, host_link_gbps, host_slots, transfer_bytes
from vmferry.plan.schema import PlanSpec, vm_max_downtime_ms

Predictor = Callable[[TransferEstimate], float]


@dataclass
class Problem:
    """Indexes: hosts 0..H-1, migrations 0..M-1, units 0..U-1 (lists of migrations)."""

    host_names: list[str]
    slots: list[int]
    cap_mbps: list[int]
    budget_mbps: int | None
    names: list[str]
    src: list[int]
    dst: list[int]
    dur: list[int]
    bw: list[int]
    nbytes: list[int]
    units: list[list[int]]
    windows: list[tuple[int, int]]

    def unit_needs(self, unit: list[int]) -> dict[int, tuple[int, int]]:
        """Per host: (slots, Mbit/s) the unit holds there while all its members run."""
        need: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        for i in unit:
            for h in (self.src[i], self.dst[i]):
                need[h][0] += 1
                need[h][1] += self.bw[i]
        return {h: (s, b) for h, (s, b) in need.items()}

    def host_load_s(self) -> list[float]:
        """Per host, the least time its slots and its link need for what crosses it."""
        slot_s = [0.0] * len(self.host_names)
        link_s = [0.0] * len(self.host_names)
        for i in range(len(self.names)):
            for h in (self.src[i], self.dst[i]):
                slot_s[h] += self.dur[i] / self.slots[h]
                link_s[h] += self.bw[i] * self.dur[i] / self.cap_mbps[h]
        return [max(a, b) for a, b in zip(slot_s, link_s, strict=True)]


def build_problem(
    spec: PlanSpec, placement: Placement, predict: Predictor | None = None
) -> Problem:
    """The integer problem; raises ``PlanInfeasibleError`` for a unit that can never start."""
    endpoints = spec.endpoints()  # the hosts, then the vSphere sources VMs are imported from
    host_index = {h.name: k for k, h in enumerate(endpoints)}
    slots = [host_slots(h, spec) for h in endpoints]
    cap = [max(1, round(host_link_gbps(h, spec) * 1000)) for h in endpoints]
    share = [max(1, c // s) for c, s in zip(cap, slots, strict=True)]
    budget = spec.fleet.bandwidth_budget_gbps
    budget_mbps = None if budget is None else max(1, round(budget * 1000))
    names: list[str] = []
    src: list[int] = []
    dst: list[int] = []
    dur: list[int] = []
    bw: list[int] = []
    nbytes: list[int] = []
    groups: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for i, vm in enumerate(spec.vms):
        s, d = host_index[vm.source], host_index[placement.destinations[vm.name]]
        size = transfer_bytes(vm)
        bits = size * 8
        rate = min(share[s], share[d], budget_mbps or share[s])
        seconds = vm.predicted_s
        if seconds is None and predict is not None:
            seconds = predict(
                TransferEstimate(
                    vm=vm.name,
                    memory_bytes=vm.memory_mb * 2**20,
                    transfer_bytes=size,
                    rate_bps=rate * 1e6,
                    max_downtime_ms=vm_max_downtime_ms(vm, spec.defaults),
                    strategy=vm.strategy or spec.defaults.strategy,
                )
            )
        if seconds is None:
            duration = max(1, math.ceil(bits / (rate * 1e6)))
        elif vm.predicted_s is None:  # the predictor's time assumes the migration gets `rate`
            duration = max(1, math.ceil(seconds))
        else:  # the plan file's time: the bytes over it
            duration = max(1, math.ceil(seconds))
            ceiling = min(cap[s], cap[d], budget_mbps or cap[s])
            rate = max(1, min(ceiling, math.ceil(bits / duration / 1e6)))
        names.append(vm.name)
        src.append(s)
        dst.append(d)
        dur.append(duration)
        bw.append(rate)
        nbytes.append(size)
        if vm.group is None:
            units.append([i])
        elif vm.group in groups:
            groups[vm.group].append(i)
        else:
            groups[vm.group] = [i]
            units.append(groups[vm.group])
    windows = [(math.ceil(a), math.floor(b)) for a, b in spec.window_offsets()]
    windows = [(a, b) for a, b in windows if b > a]
    if spec.windows and not windows:
        raise PlanInfeasibleError("maintenance windows: no window is a whole second long")
    problem = Problem(
        host_names=[h.name for h in endpoints],
        slots=slots,
        cap_mbps=cap,
        budget_mbps=budget_mbps,
        names=names,
        src=src,
        dst=dst,
        dur=dur,
        bw=bw,
        nbytes=nbytes,
        units=units,
        windows=windows,
    )
    _check_units(problem, spec)
    return problem


def _check_units(p: Problem, spec: PlanSpec) -> None:
    longest_window = max((b - a for a, b in p.windows), default=None)
    for unit in p.units:
        group = spec.vms[unit[0]].group
        who = f"group {group!r}" if group is not None else f"vm {p.names[unit[0]]}"
        for h, (s, b) in p.unit_needs(unit).items():
            if s > p.slots[h]:
                raise PlanInfeasibleError(
                    f"concurrency: {who} starts together and needs {s} migrations at once on "
                    f"host {p.host_names[h]}, which allows {p.slots[h]}"
                )
            if b > p.cap_mbps[h]:
                raise PlanInfeasibleError(
                    f"link bandwidth: {who} starts together and needs {b} Mbit/s on the link "
                    f"of host {p.host_names[h]}, which has {p.cap_mbps[h]} Mbit/s"
                )
        total = sum(p.bw[i] for i in unit)
        if p.budget_mbps is not None and total > p.budget_mbps:
            raise PlanInfeasibleError(
                f"fleet bandwidth budget: {who} starts together and needs {total} Mbit/s, "
                f"the budget is {p.budget_mbps} Mbit/s"
            )
        longest = max(p.dur[i] for i in unit)
        if longest_window is not None and longest > longest_window:
            slowest = max(unit, key=lambda i: p.dur[i])
            raise PlanInfeasibleError(
                f"maintenance windows: vm {p.names[slowest]} takes {longest} s but the longest "
                f"window is {longest_window} s"
            )


def lower_bound_parts(p: Problem) -> dict[str, int]:
    """Bounds on the makespan, each valid alone (seconds of window time, see
    ``to_calendar``): the longest migration; all bits over the fleet budget; all bits over
    the links (every migration crosses two links, so together they carry at most half their
    summed rate); and, per host, its migrations over its slots and its bits over its link."""
    parts: dict[str, int] = {"longest_migration": max(p.dur)}
    work = [b * d for b, d in zip(p.bw, p.dur, strict=True)]  # Mbit
    if p.budget_mbps is not None:
        parts["fleet_budget"] = math.ceil(sum(work) / p.budget_mbps)
    parts["links_total"] = math.ceil(2 * sum(work) / sum(p.cap_mbps))
    parts["busiest_host"] = math.ceil(max(p.host_load_s()) - 1e-9)
    return parts


def to_calendar(work_s: int, windows: list[tuple[int, int]]) -> int:
    """The earliest time by which ``work_s`` seconds of window time have passed."""
    if not windows:
        return work_s
    left = work_s
    for a, b in windows:
        if left <= b - a:
            return a + left
        left -= b - a
    return windows[-1][1] + left  # beyond the last window: cannot happen for a feasible plan


@dataclass(frozen=True)
class Solution:
    """Start second of every migration (by problem index), and which solver made it."""

    starts: list[int]
    makespan: int
    method: str
    rule: str = ""  # the heuristic's priority rule that made ``starts``
    status: str = ""  # CP-SAT's status, when it ran
    bound: int | None = None  # CP-SAT's proven bound, when it ran
