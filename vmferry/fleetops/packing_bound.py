"""The fewest hosts a fleet's VMs could possibly fit on: a lower bound for consolidation
(pure).

No packing, by anyone, keeps fewer hosts than :func:`hosts_needed`: the largest of

- per resource (CPU demand and memory in use within the usable share ``cap`` of each host,
  or what it holds now when that is more, since a host that only gives VMs away may stay
  above it; memory given within all of it), the fewest hosts whose room, taken largest
  first, adds up to the total;
- the same fewest count where the utilisation of the hosts kept (total demand over their
  total capacity, under the metric) is at or under the band's target (a consolidation frees
  no host past it), with the largest capacities of that many hosts;
- the sum over CPU keys of the fewest hosts of that key that hold the VMs pinned to it
  and on a host of it now (hosts of two keys are distinct; a VM pinned to another key than
  its host's cannot move and counts only in the totals);
- the most hosts one anti-affinity group is on (VMs of a group on two hosts never come
  together: a move never goes to a host of its group), and ``min_hosts``.

Hosts in maintenance and their VMs are outside it. It is at most the hosts outside
maintenance (when nothing fits, every host stays).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from itertools import accumulate

from vmferry.fleetops.imbalance import Metric, check_metric
from vmferry.fleetops.model import HostLoad, VmLoad

__all__ = ["hosts_needed", "utilisation"]


def hosts_needed(
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    *,
    metric: str,
    cap: float,
    target: float,
    min_hosts: int = 1,
) -> int:
    """A lower bound on the hosts that must stay powered (see the module's text); ``cap``
    is the usable share of a host, ``min(1 - headroom, band high)``."""
    checked = check_metric(metric)
    active = [h for h in hosts if not h.in_maintenance]
    names = {h.name for h in active}
    placed = [v for v in vms if v.host in names]
    floor = min(min_hosts, len(active))
    if not placed:
        return floor
    bound = max(_fewest(active, placed, placed, cap, checked, target), floor)
    groups = Counter(group for group, _ in {(v.anti_affinity, v.host) for v in placed
                                            if v.anti_affinity is not None})  # fmt: skip
    bound = max(bound, max(groups.values(), default=0))
    by_key: defaultdict[str, list[VmLoad]] = defaultdict(list)
    key_of = {h.name: h.cpu_key for h in active}
    for vm in placed:
        if vm.cpu_key is not None and vm.cpu_key == key_of[vm.host]:
            by_key[vm.cpu_key].append(vm)
    pinned = sum(_fewest([h for h in active if h.cpu_key == key], pinned_vms, placed, cap, None, 0)
                 for key, pinned_vms in by_key.items())  # fmt: skip
    return min(max(bound, pinned), len(active))


def _fewest(
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    everything: Sequence[VmLoad],
    cap: float,
    metric: Metric | None,
    target: float,
) -> int:
    """The fewest of ``hosts`` (largest room first, per resource; ``everything`` says what
    each holds now) that hold the totals of ``vms``, and keep them at ``target`` or under
    when a metric is given; ``len(hosts) + 1`` when all of them do not (an impossible
    fleet), so that the caller's bound is every host."""
    cpu = math.fsum(v.cpu_demand for v in vms)
    memory = sum(v.memory_demand_bytes for v in vms)
    given = sum(v.memory_bytes for v in vms)
    held = {h.name: [0.0, 0.0, 0.0] for h in hosts}  # what each host holds now
    for vm in everything:
        if vm.host in held:
            for i, figure in enumerate((vm.cpu_demand, vm.memory_demand_bytes, vm.memory_bytes)):
                held[vm.host][i] += figure
    rooms = [
        _largest([max(cap * h.cpus, held[h.name][0]) for h in hosts]),
        _largest([max(cap * h.memory_bytes, held[h.name][1]) for h in hosts]),
        _largest([max(h.memory_bytes, held[h.name][2]) for h in hosts]),
        _largest([h.cpus for h in hosts]),
        _largest([h.memory_bytes for h in hosts]),
    ]
    for k in range(1, len(hosts) + 1):
        c_room, m_room, g_room, c_k, m_k = (r[k - 1] for r in rooms)
        if cpu > c_room + 1e-9 or memory > m_room + 1e-9 or given > g_room + 1e-9:
            continue
        if metric is not None and utilisation(cpu / c_k, memory / m_k, metric) > target + 1e-12:
            continue
        return k
    return len(hosts) + 1


def _largest(values: Sequence[float]) -> list[float]:
    """The sums of the k largest values, k = 1, 2, ..."""
    return list(accumulate(sorted(values, reverse=True)))


def utilisation(cpu: float, memory: float, metric: Metric) -> float:
    """A utilisation under ``metric`` from the CPU and memory ones (as a host's load)."""
    if metric == "cpu":
        return cpu
    if metric == "memory":
        return memory
    return (cpu + memory) / 2
