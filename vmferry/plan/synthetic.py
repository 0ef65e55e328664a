"""Seeded synthetic fleets for the planner's benchmark and tests (docs/planning.md).

A fleet of ``hosts`` hosts (a share on 1 Gbit/s links, the rest on 10 Gbit/s; three CPU
models in two families) and ``vms`` VMs with memory from 2 to 64 GiB, each leaving a random
host. Most go to a random compatible host; ``place_share`` of them are left to the planner.
Some require their CPU family, some move in groups of 2 to 4, some avoid another VM. The
fleet budget is ``budget_gbps`` (default: 0.4 Gbit/s per host).
"""

from __future__ import annotations

import random
from typing import Any

from vmferry.plan.schema import PlanSpec

CPUS = (("EPYC-Rome", "EPYC"), ("EPYC-Milan", "EPYC"), ("Cascadelake-Server", "Xeon"))
MEMORY_GIB = (2, 4, 8, 16, 32, 64)
MEMORY_WEIGHTS = (25, 25, 20, 15, 10, 5)


def synthetic_plan(
    vms: int,
    hosts: int,
    seed: int = 1,
    *,
    slow_link_share: float = 0.3,
    place_share: float = 0.2,
    group_share: float = 0.1,
    anti_affinity_share: float = 0.03,
    cpu_required_share: float = 0.3,
    budget_gbps: float | None = None,
    windows: list[tuple[float, float]] | None = None,
) -> PlanSpec:
    """A checked ``PlanSpec`` (built as plan.yaml would be, through pydantic)."""
    rng = random.Random(seed)
    per_host = max(1, vms // hosts)
    host_rows: list[dict[str, Any]] = []
    for k in range(hosts):
        model, family = rng.choice(CPUS)
        host_rows.append(
            {
                "name": f"h{k:04d}",
                "cpus": rng.choice((128, 192, 256)) * max(1, per_host // 20),
                "memory_mb": rng.choice((768, 1024, 1536)) * 1024 * max(1, per_host // 20),
                "cpu_model": model,
                "cpu_family": family,
                "link_gbps": 1 if rng.random() < slow_link_share else 10,
            }
        )
    by_family: dict[str, list[int]] = {}
    for k, h in enumerate(host_rows):
        by_family.setdefault(h["cpu_family"], []).append(k)
    vm_rows: list[dict[str, Any]] = []
    for i in range(vms):
        src = rng.randrange(hosts)
        row: dict[str, Any] = {
            "name": f"vm{i:05d}",
            "source": host_rows[src]["name"],
            "memory_mb": rng.choices(MEMORY_GIB, MEMORY_WEIGHTS)[0] * 1024,
            "vcpus": rng.choice((1, 2, 4, 8)),
        }
        family = host_rows[src]["cpu_family"]
        pool = list(range(hosts))
        if rng.random() < cpu_required_share and len(by_family[family]) >= 3:
            row["cpu_model_required"] = family
            pool = by_family[family]
        if rng.random() >= place_share:
            choices = [k for k in pool if k != src] or [k for k in range(hosts) if k != src]
            dest = rng.choice(choices)
            if "cpu_model_required" in row and host_rows[dest]["cpu_family"] != family:
                del row["cpu_model_required"]
            row["destination"] = host_rows[dest]["name"]
        vm_rows.append(row)
    # Groups of 2-4 consecutive VMs.
    i, g = 0, 0
    while i < vms:
        if rng.random() < group_share / 3:
            size = rng.randint(2, 4)
            members = vm_rows[i : i + size]
            required = {r.get("cpu_model_required") for r in members} - {None}
            for row in members:
                row["group"] = f"app{g:04d}"
                if len(required) > 1:  # one host must take the unplaced members together
                    row.pop("cpu_model_required", None)
            g += 1
            i += size
        else:
            i += 1
    # Anti-affinity to a VM of another group whose destination differs (or is open).
    for row in vm_rows:
        if rng.random() >= anti_affinity_share:
            continue
        other = vm_rows[rng.randrange(vms)]
        if other is row or (row.get("group") and row.get("group") == other.get("group")):
            continue
        if "destination" in row and row.get("destination") == other.get("destination"):
            continue
        row["anti_affinity"] = [other["name"]]
    data: dict[str, Any] = {
        "version": 1,
        "name": f"synthetic-{vms}x{hosts}-seed{seed}",
        "fleet": {"bandwidth_budget_gbps": budget_gbps if budget_gbps else 0.4 * hosts},
        "hosts": host_rows,
        "vms": vm_rows,
    }
    if windows:
        data["windows"] = [{"start": a, "end": b} for a, b in windows]
    return PlanSpec.model_validate(data)
