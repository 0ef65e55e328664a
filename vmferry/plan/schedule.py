"""The wave planner: placement, then a schedule, then waves.

``plan(spec)`` places the VMs without a destination (``placement.place``), builds the
integer problem (``problem.build_problem``), runs the list-scheduling heuristic with a few
priority rules and keeps the best, and for small plans (or ``method="cpsat"``) lets
OR-Tools CP-SAT improve it, hinted with the heuristic's schedule. Everything here is pure.

The heuristic is a parallel schedule-generation scheme: time moves from event to event (a
migration ends, a window opens); at each event the waiting units (a VM, or a group that
starts together) are tried in priority order, and every unit whose source and destination
have a free slot and link bandwidth, whose bandwidth fits what is left of the fleet budget,
and which ends before the current window closes, starts now. A unit only needs to be tried
again when one of its hosts frees capacity, or, if only the budget stopped it, when the
budget does; that keeps 10,000 VMs well under a second per rule.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from vmferry.plan.model import PlanInfeasibleError, Schedule, ScheduledMigration, Wave
from vmferry.plan.placement import Placement, place
from vmferry.plan.problem import (
    Predictor,
    Problem,
    Solution,
    build_problem,
    lower_bound_parts,
    to_calendar,
)
from vmferry.plan.schema import PlanSpec, validate_spec, vm_max_downtime_ms

Method = Literal["auto", "heuristic", "cpsat"]
CPSAT_AUTO_MAX_VMS = 300  # "auto" runs CP-SAT after the heuristic up to this many VMs


# -- priority rules ------------------------------------------------------------------------

PriorityRule = Callable[[Problem], list[int]]


def _longest_first(p: Problem) -> list[int]:
    """LPT: the unit with the longest migration first."""
    return sorted(
        range(len(p.units)),
        key=lambda u: (-max(p.dur[i] for i in p.units[u]), p.names[p.units[u][0]]),
    )


def _busiest_host_first(p: Problem) -> list[int]:
    """Units on the most loaded host first (its slots or link), longest first among them."""
    load = p.host_load_s()
    return sorted(
        range(len(p.units)),
        key=lambda u: (
            -max(max(load[p.src[i]], load[p.dst[i]]) for i in p.units[u]),
            -max(p.dur[i] for i in p.units[u]),
            p.names[p.units[u][0]],
        ),
    )


def _critical_first(p: Problem) -> list[int]:
    """Load of the busiest host the unit crosses plus the unit's own length."""
    load = p.host_load_s()
    return sorted(
        range(len(p.units)),
        key=lambda u: (
            -max(max(load[p.src[i]], load[p.dst[i]]) + p.dur[i] for i in p.units[u]),
            p.names[p.units[u][0]],
        ),
    )


RULES: dict[str, PriorityRule] = {
    "longest-first": _longest_first,
    "busiest-host-first": _busiest_host_first,
    "critical-first": _critical_first,
}


# -- the heuristic -------------------------------------------------------------------------


def list_schedule(p: Problem, order: list[int]) -> list[int]:
    """Start times of every migration, units tried in ``order`` (see the module docstring)."""
    n = len(order)
    members = [p.units[u] for u in order]  # by rank
    needs = [list(p.unit_needs(m).items()) for m in members]
    ubw = [sum(p.bw[i] for i in m) for m in members]
    udur = [max(p.dur[i] for i in m) for m in members]
    host_pending: list[list[int]] = [[] for _ in p.host_names]
    for r, need in enumerate(needs):
        for h, _ in need:
            host_pending[h].append(r)
    slots, cap = p.slots, p.cap_mbps
    budget = p.budget_mbps if p.budget_mbps is not None else math.inf
    slot_used = [0] * len(slots)
    bw_used = [0] * len(slots)
    budget_used = 0
    started = bytearray(n)
    in_bucket = bytearray(n)
    buckets: dict[int, list[int]] = {}
    events: list[tuple[int, int]] = []
    start = [-1] * len(p.names)
    windows = p.windows
    wi = 0
    t = windows[0][0] if windows else 0
    window_end = windows[0][1] if windows else math.inf
    left = n
    cands: list[int] = list(range(n))

    while True:
        # Start what fits at time t, in priority order (dirty candidates merged with the
        # units that only waited for the budget).
        ci = 0
        while True:
            rem = budget - budget_used
            best = -1
            best_key = 0
            for key, heap in buckets.items():
                if heap and key <= rem and (best < 0 or heap[0] < best):
                    best, best_key = heap[0], key
            while ci < len(cands) and (started[cands[ci]] or in_bucket[cands[ci]]):
                ci += 1
            c = cands[ci] if ci < len(cands) else -1
            if c < 0 and best < 0:
                break
            from_bucket = c < 0 or (best >= 0 and best < c)
            if from_bucket:
                r = heapq.heappop(buckets[best_key])
                in_bucket[r] = 0
            else:
                r = c
                ci += 1
            if t + udur[r] > window_end:
                continue
            fits = True
            for h, (s, b) in needs[r]:
                if slot_used[h] + s > slots[h] or bw_used[h] + b > cap[h]:
                    fits = False
                    break
            if not fits:
                continue  # it waits in its hosts' lists
            if ubw[r] > rem:
                in_bucket[r] = 1
                heapq.heappush(buckets.setdefault(ubw[r], []), r)
                continue
            started[r] = 1
            left -= 1
            for h, (s, b) in needs[r]:
                slot_used[h] += s
                bw_used[h] += b
            budget_used += ubw[r]
            for i in members[r]:
                start[i] = t
                heapq.heappush(events, (t + p.dur[i], i))
        if left == 0:
            break
        # Advance to the next event.
        if events:
            t = events[0][0]
            dirty: set[int] = set()
            while events and events[0][0] == t:
                _, i = heapq.heappop(events)
                for h in (p.src[i], p.dst[i]):
                    slot_used[h] -= 1
                    bw_used[h] -= p.bw[i]
                    dirty.add(h)
                budget_used -= p.bw[i]
            if t < window_end:
                pending: set[int] = set()
                for h in dirty:
                    waiting = [r for r in host_pending[h] if not started[r]]
                    host_pending[h] = waiting
                    pending.update(waiting)
                cands = sorted(pending)
                continue
        # Nothing runs any more in this window (or nothing can start in it): next window.
        if events or wi + 1 >= len(windows):
            stuck = next(r for r in range(n) if not started[r])
            raise PlanInfeasibleError(
                f"no schedule found: vm {p.names[members[stuck][0]]} never fits "
                f"(its hosts' slots, links, the fleet budget or the windows)"
            )
        wi += 1
        t, window_end = windows[wi]
        cands = [r for r in range(n) if not started[r]]
    return start


def heuristic(p: Problem) -> Solution:
    """The best of the priority rules' list schedules (smallest makespan, then rule order)."""
    best: Solution | None = None
    for name, rule in RULES.items():
        starts = list_schedule(p, rule(p))
        makespan = max(s + d for s, d in zip(starts, p.dur, strict=True))
        if best is None or makespan < best.makespan:
            best = Solution(starts, makespan, "heuristic", rule=name)
    assert best is not None
    return best


# -- waves and the result --------------------------------------------------------------------


def make_waves(starts: list[int], ends: list[int], names: list[str], slice_s: int) -> list[Wave]:
    """Wave k holds the migrations that start in the k-th non-empty slice of ``slice_s``
    seconds (slice j covers [j*slice_s, (j+1)*slice_s)), numbered from 1 in time order."""
    by_slice: dict[int, list[int]] = {}
    for i, s in enumerate(starts):
        by_slice.setdefault(s // slice_s, []).append(i)
    waves = []
    for number, j in enumerate(sorted(by_slice), start=1):
        idx = sorted(by_slice[j], key=lambda i: (starts[i], names[i]))
        waves.append(
            Wave(
                number=number,
                start_s=min(starts[i] for i in idx),
                end_s=max(ends[i] for i in idx),
                vms=tuple(names[i] for i in idx),
            )
        )
    return waves


def _result(
    spec: PlanSpec, placement: Placement, p: Problem, sol: Solution, heuristic_makespan: int
) -> Schedule:
    ends = [s + d for s, d in zip(sol.starts, p.dur, strict=True)]
    waves = make_waves(sol.starts, ends, p.names, spec.defaults.wave_slice_s)
    wave_of = {vm: w.number for w in waves for vm in w.vms}
    migrations = []
    for i, vm in enumerate(spec.vms):
        migrations.append(
            ScheduledMigration(
                vm=vm.name,
                source=vm.source,
                destination=placement.destinations[vm.name],
                wave=wave_of[vm.name],
                start_s=sol.starts[i],
                end_s=ends[i],
                predicted_s=p.dur[i],
                transfer_bytes=p.nbytes[i],
                bandwidth_mbps=p.bw[i],
                max_downtime_ms=vm_max_downtime_ms(vm, spec.defaults),
                strategy=vm.strategy or spec.defaults.strategy,
                group=vm.group,
                placed=vm.name in placement.placed,
            )
        )
    migrations.sort(key=lambda m: (m.start_s, m.vm))
    parts = {k: to_calendar(v, p.windows) for k, v in lower_bound_parts(p).items()}
    return Schedule(
        migrations=tuple(migrations),
        waves=tuple(waves),
        makespan_s=max(ends),
        lower_bound_s=max(parts.values()),
        lower_bound_parts=parts,
        method=sol.method,
        heuristic_makespan_s=heuristic_makespan,
        solver_status=sol.status,
        solver_bound_s=sol.bound,
        wave_slice_s=spec.defaults.wave_slice_s,
        windows=tuple(p.windows),
        fleet_budget_mbps=p.budget_mbps,
        name=spec.name,
        start_at=spec.start_at.isoformat() if spec.start_at is not None else None,
        notes=(f"heuristic rule: {sol.rule}",) if sol.rule else (),
    )


def plan(
    spec: PlanSpec,
    method: Method = "auto",
    time_limit_s: float = 10.0,
    predict: Predictor | None = None,
    workers: int | None = None,
) -> Schedule:
    """Place, schedule and cut into waves.

    ``method``: ``heuristic`` (list scheduling only), ``cpsat`` (the heuristic, then CP-SAT
    for up to ``time_limit_s`` seconds, hinted with it, whatever the size), or ``auto``
    (CP-SAT only for plans of at most ``CPSAT_AUTO_MAX_VMS`` VMs). The better makespan wins;
    CP-SAT's bound is reported either way. ``predict`` gives a duration for a VM without
    ``predicted_s``; without it, bytes over bandwidth. Raises ``PlanInfeasibleError``
    (exit 2) naming the failing constraint, ``BadInputError`` for a spec whose references
    do not hold."""
    validate_spec(spec)
    placement = place(spec)
    p = build_problem(spec, placement, predict)
    best = heuristic(p)
    heuristic_makespan = best.makespan
    if method == "cpsat" or (method == "auto" and len(p.names) <= CPSAT_AUTO_MAX_VMS):
        from vmferry.plan.cpsat import solve_cpsat

        lb = max(to_calendar(v, p.windows) for v in lower_bound_parts(p).values())
        improved = solve_cpsat(p, best, time_limit_s, lower_bound=lb, workers=workers)
        if improved.makespan < best.makespan:
            best = improved
        else:
            best = Solution(
                best.starts, best.makespan, "heuristic", best.rule, improved.status, improved.bound
            )
    return _result(spec, placement, p, best, heuristic_makespan)


def wall_clock(schedule: Schedule, offset_s: int) -> str | None:
    """The ISO datetime of an offset, when the plan has a ``start_at``."""
    if schedule.start_at is None:
        return None
    from datetime import datetime

    return (datetime.fromisoformat(schedule.start_at) + timedelta(seconds=offset_s)).isoformat()
