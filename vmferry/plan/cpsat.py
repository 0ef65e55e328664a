"""The exact model, solved by OR-Tools CP-SAT within a time limit.

One start variable per unit (a group's members share it), one fixed-size interval per
migration, and cumulative constraints: per host its slots (each migration holds one on its
source and one on its destination), per host its link bandwidth where the slots do not
already imply it, and the fleet budget. With maintenance windows a unit's start is limited
to the union of [window start, window end - its longest member]. The makespan is bounded
below by the analytic lower bound and above by the heuristic's makespan, whose schedule is
the hint.
"""

from __future__ import annotations

import math
import os

from ortools.sat.python import cp_model

from vmferry.plan.problem import Problem, Solution

_STATUS = {
    cp_model.OPTIMAL: "optimal",
    cp_model.FEASIBLE: "feasible",
    cp_model.INFEASIBLE: "infeasible",
    cp_model.MODEL_INVALID: "invalid",
    cp_model.UNKNOWN: "unknown",
}


def solve_cpsat(
    p: Problem,
    hint: Solution,
    time_limit_s: float,
    lower_bound: int = 0,
    workers: int | None = None,
) -> Solution:
    """CP-SAT's best schedule within ``time_limit_s`` (its ``makespan`` is the hint's when
    it found nothing: ``status`` then says why)."""
    horizon = hint.makespan
    if lower_bound >= horizon:
        return Solution(hint.starts, hint.makespan, "heuristic", hint.rule, "optimal", horizon)
    model = cp_model.CpModel()
    n = len(p.names)
    start_of: dict[int, cp_model.IntVar] = {}
    intervals: dict[int, cp_model.IntervalVar] = {}
    for u, unit in enumerate(p.units):
        longest = max(p.dur[i] for i in unit)
        if p.windows:
            spans = [[a, min(b, horizon) - longest] for a, b in p.windows]
            spans = [s for s in spans if s[1] >= s[0]]
        else:
            spans = [[0, horizon - longest]]
        var = model.new_int_var_from_domain(cp_model.Domain.from_intervals(spans), f"s{u}")
        for i in unit:
            start_of[i] = var
            intervals[i] = model.new_fixed_size_interval_var(var, p.dur[i], f"m{i}")
        model.add_hint(var, hint.starts[unit[0]])
    touching: list[list[int]] = [[] for _ in p.host_names]
    for i in range(n):
        touching[p.src[i]].append(i)
        touching[p.dst[i]].append(i)
    for h, idx in enumerate(touching):
        if len(idx) > p.slots[h]:
            model.add_cumulative([intervals[i] for i in idx], [1] * len(idx), p.slots[h])
        implied = all(p.bw[i] * p.slots[h] <= p.cap_mbps[h] for i in idx)
        if not implied and sum(p.bw[i] for i in idx) > p.cap_mbps[h]:
            model.add_cumulative([intervals[i] for i in idx], [p.bw[i] for i in idx], p.cap_mbps[h])
    if p.budget_mbps is not None and sum(p.bw) > p.budget_mbps:
        model.add_cumulative([intervals[i] for i in range(n)], list(p.bw), p.budget_mbps)
    makespan = model.new_int_var(lower_bound, horizon, "makespan")
    for i in range(n):
        model.add(makespan >= start_of[i] + p.dur[i])
    model.minimize(makespan)

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.1, time_limit_s)
    solver.parameters.num_workers = workers or max(1, min(8, os.cpu_count() or 1))
    solver.parameters.random_seed = 1
    code = solver.solve(model)
    status = _STATUS.get(code, "unknown")
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Solution(hint.starts, hint.makespan, "heuristic", hint.rule, status, None)
    bound = math.ceil(solver.best_objective_bound - 1e-6)
    starts = [int(solver.value(start_of[i])) for i in range(n)]
    found = max(s + d for s, d in zip(starts, p.dur, strict=True))
    return Solution(starts, found, "cpsat", "", status, bound)
