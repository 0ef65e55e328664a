"""Consolidation: which hosts to empty, and the moves, so the fleet runs on fewer hosts
(pure). A power driver then puts the emptied hosts in standby; :mod:`.power` says when to
wake them.

The rules of :class:`~vmferry.fleetops.state.FleetState` hold for every move (CPU key, no
memory overcommit, anti-affinity, never onto a host in maintenance), with its headroom
made at least ``1 - band.high``: a host that stays keeps its CPU demand and its memory in
use each at or under ``min(1 - headroom, target + tolerance)`` of its capacity.

How it chooses (first-fit decreasing over candidate hosts ordered by their cost to empty):

1. candidates: the hosts outside maintenance, cheapest to empty first (the bytes their VMs'
   live moves send, by the pre-copy model, as ``balance``), then least loaded, then by name;
2. for each, in that order, it is kept when: it already took VMs from a host freed before
   (each VM moves at most once); freeing it leaves fewer than ``min_hosts``; the hosts
   left would run above the band's ``target`` (total demand over their total capacity,
   under the metric: the hysteresis of :mod:`.power`); or its moves would pass
   ``max_moves``;
3. otherwise its VMs, largest share of the host first, each go to the first host that may
   take it among the hosts not freed, most loaded first (so the hosts that will stay fill
   up and the lightly loaded ones stay candidates). When one VM has no place, the moves
   of this host are undone and it is kept, with the rule that stopped that VM: no host is
   ever half emptied.

A host is freed whole or not at all, and the moves are exactly the VMs of the freed hosts,
each once, so no other plan frees the same hosts with fewer moves. The same fleet in any
input order gives the same result. :func:`~.packing_bound.hosts_needed` is a lower bound on
the hosts that stay, reported beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vmferry.errors import BadInputError
from vmferry.fleetops.balance import predicted_cost
from vmferry.fleetops.model import HostLoad, Move, VmLoad
from vmferry.fleetops.packing_bound import hosts_needed, utilisation
from vmferry.fleetops.power import DPM_BAND, DpmBand
from vmferry.fleetops.state import FleetState

__all__ = ["Consolidation", "consolidate"]

MAINTENANCE = "in maintenance: `vmferry host maintenance` empties it"


@dataclass(frozen=True)
class Consolidation:
    """The hosts to free, the moves that empty them, every host's utilisation after (under
    the metric, hosts outside maintenance and not freed), why each other host stays, and
    the lower bound on the hosts that stay."""

    hosts_freed: tuple[str, ...]
    moves: tuple[Move, ...]
    utilisation_after: dict[str, float]
    kept: tuple[tuple[str, str], ...]  # (host, why), by host name
    at_least_kept: int
    metric: str
    cap: float  # the share of a host's CPU and memory the hosts that stay may use


def consolidate(
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    *,
    metric: str = "both",
    headroom: float = 0.2,
    band: DpmBand = DPM_BAND,
    max_moves: int | None = None,
    min_hosts: int = 1,
    link_bytes_s: float = 1.25e9,
    keep: Mapping[str, str] | None = None,
) -> Consolidation:
    """The hosts to empty and the moves (see the module's text); the hosts named in ``keep``
    stay, for the reason given there (for example a power automation that does not let
    them be powered off). ``BadInputError`` (one
    line) for a headroom outside [0, 1), an unknown metric, a negative ``max_moves``,
    ``min_hosts`` below 1, a link rate <= 0, duplicate names or a VM on an unknown host."""
    if max_moves is not None and max_moves < 0:
        raise BadInputError(f"max_moves must be >= 0 (got {max_moves})")
    if min_hosts < 1:
        raise BadInputError(f"min_hosts must be >= 1 (got {min_hosts})")
    if link_bytes_s <= 0:
        raise BadInputError(f"link rate must be > 0 bytes/s (got {link_bytes_s})")
    if not 0 <= headroom < 1:
        raise BadInputError(f"headroom must be in [0, 1) (got {headroom})")
    cap = min(1 - headroom, band.high)
    state = FleetState(hosts, vms, metric, 1 - cap)
    cost = {v: predicted_cost(state.vms[v], link_bytes_s) for h in state.active
            for v in state.on_host[h]}  # fmt: skip
    plan = _Plan(state, band.target, max_moves, min_hosts, dict(keep or {}))
    order = sorted(state.active, key=lambda h: (sum(cost[v][0] for v in state.on_host[h]),
                                                state.score(h), state.hosts[h].name))  # fmt: skip
    for h in order:
        plan.try_to_free(h)
    moves = tuple(Move(state.vms[v].name, state.hosts[src].name, state.hosts[dst].name,
                       *cost[v]) for v, src, dst in plan.moves)  # fmt: skip
    kept = dict(plan.kept)
    kept.update((h.name, MAINTENANCE) for h in state.hosts if h.in_maintenance)
    return Consolidation(
        hosts_freed=tuple(state.hosts[h].name for h in plan.freed),
        moves=moves,
        utilisation_after={state.hosts[h].name: state.score(h) for h in plan.staying()},
        kept=tuple(sorted(kept.items())),
        at_least_kept=hosts_needed(
            hosts, vms, metric=state.metric, cap=cap, target=band.target, min_hosts=min_hosts
        ),
        metric=state.metric,
        cap=cap,
    )


class _Plan:
    """The hosts freed so far, the moves, who took VMs from whom, and why hosts stayed."""

    def __init__(
        self,
        state: FleetState,
        target: float,
        max_moves: int | None,
        min_hosts: int,
        keep: dict[str, str],
    ) -> None:
        self.state = state
        self.keep = keep
        self.target = target
        self.max_moves = max_moves
        self.min_hosts = min_hosts
        self.freed: list[int] = []
        self.moves: list[tuple[int, int, int]] = []  # (VM, source, destination)
        self.took_from: dict[int, list[str]] = {}
        self.kept: dict[str, str] = {}
        self.cpu = math.fsum(state.cpu[h] for h in state.active)
        self.memory = math.fsum(state.memory[h] for h in state.active)

    def staying(self) -> list[int]:
        gone = set(self.freed)
        return [h for h in self.state.active if h not in gone]

    def utilisation_without(self, h: int) -> float:
        """The utilisation of the hosts that stay if ``h`` is freed too."""
        left = [k for k in self.staying() if k != h]
        cpus = sum(self.state.hosts[k].cpus for k in left)
        memory = sum(self.state.hosts[k].memory_bytes for k in left)
        return utilisation(self.cpu / cpus, self.memory / memory, self.state.metric)

    def try_to_free(self, h: int) -> None:
        """Free ``h`` with its moves, or note why it stays."""
        why = self._why_kept(h)
        if why is None:
            why = self._empty(h)
        if why is None:
            self.freed.append(h)
        else:
            self.kept[self.state.hosts[h].name] = why

    def _why_kept(self, h: int) -> str | None:
        state = self.state
        if state.hosts[h].name in self.keep:
            return self.keep[state.hosts[h].name]
        if h in self.took_from:
            return f"takes VMs from {', '.join(self.took_from[h])}"
        if len(self.staying()) - 1 < self.min_hosts:
            return f"at least {self.min_hosts} host(s) stay powered"
        after = self.utilisation_without(h)
        if after > self.target:
            return (f"freeing it lifts the hosts that stay to {after:.0%}, above the "
                    f"{self.target:.0%} target")  # fmt: skip
        count = len(state.on_host[h])
        if self.max_moves is not None and len(self.moves) + count > self.max_moves:
            return (f"emptying it takes {count} moves, over --max-moves {self.max_moves} "
                    f"({len(self.moves)} chosen)")  # fmt: skip
        return None

    def _empty(self, h: int) -> str | None:
        """Move every VM of ``h`` away (None), or undo them and say which VM stayed, why."""
        state = self.state
        gone = set(self.freed)
        destinations = sorted((d for d in state.active if d != h and d not in gone),
                              key=lambda d: (-state.score(d), state.hosts[d].name))  # fmt: skip
        leaving = sorted(state.on_host[h], key=lambda v: (-state.share(v, h), state.vms[v].name))
        done: list[tuple[int, int]] = []
        for v in leaving:
            found = next((d for d in destinations if state.refusal(v, d) is None), None)
            if found is None:
                for moved, _ in reversed(done):
                    state.move(moved, h)
                why = state.why_not(v, destinations) or "no host may take it"
                return f"{state.vms[v].name}: {why}"
            state.move(v, found)
            done.append((v, found))
        for v, d in done:
            self.moves.append((v, h, d))
            self.took_from.setdefault(d, [])
            if state.hosts[h].name not in self.took_from[d]:
                self.took_from[d].append(state.hosts[h].name)
        return None
