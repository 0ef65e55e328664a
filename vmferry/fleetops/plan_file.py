"""Moves (a balancing recommendation's, a host evacuation's) as a plan file (pure), so
that `vmferry plan create` and `plan run` carry them out with the plan engine's limits,
pause, resume and record.

Each move is a VM with its source and destination, moved live. Each host involved offers the
plan its logical CPUs and the memory its VMs that stay do not take (the plan file's
``memory_mb`` is what the plan's VMs may use there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from vmferry.fleetops.model import HostLoad, Move, VmLoad

__all__ = ["plan_yaml"]

MIB = 2**20


def plan_yaml(
    moves: Sequence[Move],
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    *,
    link_bytes_s: float,
    name: str = "balance",
    strategies: Mapping[str, str] | None = None,
) -> str:
    """The plan file's text (``version: 1``) for ``moves`` (a recommendation's, or an
    evacuation's); each VM moves live unless ``strategies`` names another way for it."""
    moving = {m.vm for m in moves}
    by_vm = {v.name: v for v in vms}
    involved = {h for m in moves for h in (m.source, m.destination)}
    staying: dict[str, int] = {}
    for vm in vms:
        if vm.name not in moving:
            staying[vm.host] = staying.get(vm.host, 0) + vm.memory_bytes
    link_gbps = round(link_bytes_s * 8 / 1e9, 3)
    doc = {
        "version": 1,
        "name": name,
        "defaults": {"strategy": "live", "link_gbps": link_gbps},
        "hosts": [
            {"name": h.name, "cpus": h.cpus,
             "memory_mb": max(1, (h.memory_bytes - staying.get(h.name, 0)) // MIB),
             "cpu_model": h.cpu_key}
            for h in hosts if h.name in involved
        ],
        "vms": [
            {"name": m.vm, "source": m.source, "destination": m.destination,
             "memory_mb": max(1, by_vm[m.vm].memory_bytes // MIB), "vcpus": by_vm[m.vm].vcpus,
             "strategy": (strategies or {}).get(m.vm, "live")}
            for m in moves
        ],
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)
