"""A fleet while moves are tried: per-host sums kept up to date in O(1) per move (pure).

The rules a move must keep (the recommender's and the benchmark's baselines' alike):

- the destination is another host, not in maintenance, whose ``cpu_key`` the VM accepts;
- headroom: after the move the destination's CPU demand is at most ``(1 - headroom)`` of
  its cpus and its memory demand at most ``(1 - headroom)`` of its memory, and the memory
  its VMs were given fits its memory (no memory overcommit, as the wave planner's rule);
- anti-affinity: the destination holds no other VM of the VM's group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from vmferry.errors import BadInputError
from vmferry.fleetops.imbalance import Metric, check_metric, load
from vmferry.fleetops.model import HostLoad, VmLoad, check_fleet

EPSILON = 1e-9  # slack for float sums at a capacity limit
RULES = ("its own host", "maintenance", "cpu", "headroom", "anti-affinity")  # refusal order


class FleetState:
    """Hosts and VMs by index (input order), each VM's host, and each host's sums."""

    def __init__(
        self, hosts: Sequence[HostLoad], vms: Sequence[VmLoad], metric: str, headroom: float
    ) -> None:
        check_fleet(hosts, vms)
        if not 0 <= headroom < 1:
            raise BadInputError(f"headroom must be in [0, 1) (got {headroom})")
        self.metric: Metric = check_metric(metric)
        self.headroom = headroom
        self.hosts = tuple(hosts)
        self.vms = tuple(vms)
        index = {h.name: i for i, h in enumerate(self.hosts)}
        self.active = tuple(i for i, h in enumerate(self.hosts) if not h.in_maintenance)
        self.where = [index[v.host] for v in self.vms]
        self.cpu = [0.0] * len(self.hosts)
        self.memory = [0.0] * len(self.hosts)
        self.given = [0] * len(self.hosts)
        self.on_host: list[set[int]] = [set() for _ in self.hosts]
        self.groups: defaultdict[tuple[str, int], int] = defaultdict(int)
        for v in sorted(range(len(self.vms)), key=lambda v: self.vms[v].name):
            self._add(v, self.where[v])  # in name order: the same sums for any input order

    def _add(self, v: int, h: int) -> None:
        vm = self.vms[v]
        self.cpu[h] += vm.cpu_demand
        self.memory[h] += vm.memory_demand_bytes
        self.given[h] += vm.memory_bytes
        self.on_host[h].add(v)
        if vm.anti_affinity is not None:
            self.groups[(vm.anti_affinity, h)] += 1

    def _remove(self, v: int, h: int) -> None:
        vm = self.vms[v]
        self.cpu[h] -= vm.cpu_demand
        self.memory[h] -= vm.memory_demand_bytes
        self.given[h] -= vm.memory_bytes
        self.on_host[h].discard(v)
        if vm.anti_affinity is not None:
            self.groups[(vm.anti_affinity, h)] -= 1

    def score(self, h: int) -> float:
        """Host ``h``'s load under the metric."""
        return load(self.hosts[h], self.cpu[h], self.memory[h], self.metric)

    def share(self, v: int, h: int) -> float:
        """How much VM ``v`` adds to host ``h``'s load (loads are linear in demand)."""
        vm = self.vms[v]
        return load(self.hosts[h], vm.cpu_demand, vm.memory_demand_bytes, self.metric)

    def refusal(self, v: int, h: int) -> str | None:
        """Why VM ``v`` may not move to host ``h`` (None: it may). The words are the rule's."""
        host, vm = self.hosts[h], self.vms[v]
        if h == self.where[v]:
            return "its own host"
        if host.in_maintenance:
            return "maintenance"
        if vm.cpu_key is not None and vm.cpu_key != host.cpu_key:
            return "cpu"
        keep = 1 - self.headroom
        if (
            self.cpu[h] + vm.cpu_demand > keep * host.cpus + EPSILON
            or self.memory[h] + vm.memory_demand_bytes > keep * host.memory_bytes + EPSILON
            or self.given[h] + vm.memory_bytes > host.memory_bytes
        ):
            return "headroom"
        if vm.anti_affinity is not None and self.groups[(vm.anti_affinity, h)] > 0:
            return "anti-affinity"
        return None

    def why_not(self, v: int, among: Iterable[int] | None = None) -> str | None:
        """Why VM ``v`` may go to no host (of ``among``; None: any host) in words, the
        furthest rule any host passed; None when one of them may take it."""
        candidates = range(len(self.hosts)) if among is None else among
        refusals = [self.refusal(v, h) for h in candidates] or ["its own host"]
        if None in refusals:
            return None
        vm = self.vms[v]
        furthest = max(RULES.index(r) for r in refusals if r is not None)
        return {
            "its own host": "no other host outside maintenance",
            "maintenance": "no other host outside maintenance",
            "cpu": f"no host outside maintenance has its CPU ({vm.cpu_key})",
            "headroom": f"no host with its CPU has room within {self.headroom:.0%} headroom",
            "anti-affinity": f"each host with its CPU and room holds one of {vm.anti_affinity}",
        }[RULES[furthest]]

    def move(self, v: int, h: int) -> None:
        """Move VM ``v`` to host ``h`` (the caller checked :meth:`refusal`)."""
        self._remove(v, self.where[v])
        self.where[v] = h
        self._add(v, h)

    def loads(self) -> list[float]:
        """The loads of the hosts not in maintenance, in input order."""
        return [self.score(h) for h in self.active]
