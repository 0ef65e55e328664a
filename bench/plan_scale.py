"""Wave planner benchmark: plan a large synthetic fleet, and compare the heuristic with CP-SAT.

The large set (default 10,000 VMs on 500 hosts, seeded, see vmferry/plan/synthetic.py) is
planned with ``plan(spec, method="auto")``, which runs the heuristic only at that size; the
time covers placement, the problem build, the heuristic's rules and the waves (not building
the synthetic spec). The small set (default 200 VMs on 20 hosts) is planned twice: by the
heuristic alone and by CP-SAT hinted with it, within ``--time-limit`` seconds.

    .venv/bin/python bench/plan_scale.py            # tables on stderr, JSON on stdout
    .venv/bin/python bench/plan_scale.py --json     # JSON only on stdout (tables on stderr)

Targets (the issue): the large set within 10 s on this machine, makespan <= 1.15 x the
lower bound.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from vmferry.plan.schedule import Method, plan
from vmferry.plan.synthetic import synthetic_plan


def run(
    vms: int, hosts: int, seed: int, method: Method, time_limit_s: float, budget: float | None
) -> dict[str, Any]:
    spec = synthetic_plan(vms, hosts, seed=seed, budget_gbps=budget)
    t0 = time.perf_counter()
    schedule = plan(spec, method=method, time_limit_s=time_limit_s)
    seconds = time.perf_counter() - t0
    return {
        "vms": vms,
        "hosts": hosts,
        "plan_seconds": round(seconds, 3),
        "makespan_s": schedule.makespan_s,
        "lower_bound_s": schedule.lower_bound_s,
        "ratio": round(schedule.makespan_s / schedule.lower_bound_s, 4),
        "method": schedule.method,
        "requested": method,
        "heuristic_makespan_s": schedule.heuristic_makespan_s,
        "solver_status": schedule.solver_status,
        "solver_bound_s": schedule.solver_bound_s,
        "waves": len(schedule.waves),
        "placed_by_planner": sum(m.placed for m in schedule.migrations),
        "lower_bound_parts": schedule.lower_bound_parts,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| set | asked | solver | seconds | makespan | lower bound | ratio | "
             "CP-SAT bound | waves |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        bound = "-" if r["solver_bound_s"] is None else f"{r['solver_bound_s']} s"
        lines.append(f"| {r['vms']} VMs / {r['hosts']} hosts | {r['requested']} | "
                     f"{r['method']} {r['solver_status']} | {r['plan_seconds']:.2f} | "
                     f"{r['makespan_s']} s | {r['lower_bound_s']} s | {r['ratio']:.3f} | "
                     f"{bound} | {r['waves']} |")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON on stdout")
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget-gbps", type=float, default=None,
                        help="fleet budget (default 0.4 Gbit/s per host)")  # fmt: skip
    parser.add_argument("--small-vms", type=int, default=200)
    parser.add_argument("--small-hosts", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=10.0, help="CP-SAT seconds")
    parser.add_argument("--no-small", action="store_true", help="skip the CP-SAT comparison")
    args = parser.parse_args()

    large = run(args.vms, args.hosts, args.seed, "auto", args.time_limit, args.budget_gbps)
    rows = [large]
    small: list[dict[str, Any]] = []
    if not args.no_small:
        for method in ("heuristic", "cpsat"):
            small.append(
                run(args.small_vms, args.small_hosts, args.seed, method, args.time_limit, None)
            )
        rows.extend(small)
    sys.stderr.write(table(rows) + "\n")
    keys = ["vms", "hosts", "plan_seconds", "makespan_s", "lower_bound_s", "ratio", "method"]
    out: dict[str, Any] = {k: large[k] for k in keys}
    out["lower_bound_parts"] = large["lower_bound_parts"]
    out["small"] = [
        {k: r[k] for k in [*keys, "requested", "solver_status", "solver_bound_s"]} for r in small
    ]
    print(json.dumps(out, indent=None if args.json else 2))
    ok = large["plan_seconds"] <= 10 and large["ratio"] <= 1.15
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
