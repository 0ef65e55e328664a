"""The fleet imbalance metric, and when a continuous mode should act on it (pure).

A host's load is its VMs' demand over its capacity:

- ``cpu``: sum of the VMs' p95 CPU demand (cores) / the host's cpus;
- ``memory``: sum of the VMs' memory in use (bytes) / the host's memory;
- ``both``: the mean of the two, ``(cpu + memory) / 2``.

The imbalance is the population standard deviation of the loads of the hosts not in
maintenance: ``sqrt(sum((load_h - mean)^2) / n)``. It is the measure VMware DRS and
OpenStack Watcher's workload balancing use (standard deviation of host utilisation). A
host in maintenance is being emptied: it counts neither in the metric nor as a destination.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, cast, get_args

from vmferry.errors import BadInputError
from vmferry.fleetops.model import HostLoad, VmLoad, check_fleet

Metric = Literal["cpu", "memory", "both"]
METRICS: tuple[str, ...] = get_args(Metric)


def check_metric(metric: str) -> Metric:
    """The metric, or ``BadInputError`` naming the ones that exist."""
    if metric in METRICS:
        return cast(Metric, metric)
    raise BadInputError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")


def load(host: HostLoad, cpu_demand: float, memory_demand: float, metric: Metric) -> float:
    """A host's load under ``metric`` for the given total demand (see the module's text)."""
    cpu = cpu_demand / host.cpus
    memory = memory_demand / host.memory_bytes
    if metric == "cpu":
        return cpu
    if metric == "memory":
        return memory
    return (cpu + memory) / 2


def host_loads(hosts: Sequence[HostLoad], vms: Sequence[VmLoad], metric: str) -> dict[str, float]:
    """Every host's load but those in maintenance, by host name."""
    checked = check_metric(metric)
    check_fleet(hosts, vms)
    cpu = dict.fromkeys((h.name for h in hosts), 0.0)
    memory = dict.fromkeys((h.name for h in hosts), 0.0)
    for vm in sorted(vms, key=lambda v: v.name):  # one order of the float sums: any input order
        cpu[vm.host] += vm.cpu_demand
        memory[vm.host] += vm.memory_demand_bytes
    return {
        h.name: load(h, cpu[h.name], memory[h.name], checked) for h in hosts if not h.in_maintenance
    }


def pstdev(values: Sequence[float]) -> float:
    """Population standard deviation (0 for no values); exact sums, so the order of the
    values does not change the last digit."""
    if not values:
        return 0.0
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def imbalance(hosts: Sequence[HostLoad], vms: Sequence[VmLoad], metric: str) -> float:
    """The fleet's imbalance: :func:`pstdev` of :func:`host_loads`."""
    return pstdev(list(host_loads(hosts, vms, metric).values()))


def should_act(imbalance: float, threshold: float, *, hysteresis: float = 0.2) -> bool:
    """Should a continuous mode recommend moves now? Only above ``threshold x (1 +
    hysteresis)``; a recommendation then aims at ``threshold`` itself, so the fleet it leaves
    is below the point that triggers the next one and small drifts do not make it move
    VMs back and forth."""
    if hysteresis < 0:
        raise BadInputError(f"hysteresis must be >= 0 (got {hysteresis})")
    return imbalance > threshold * (1 + hysteresis)
