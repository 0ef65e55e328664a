"""Place for me: choose a destination for every VM that has none.

Rules (docs/planning.md):

- A host is compatible with a VM when the VM requires no CPU, or the host's ``cpu_model``
  or ``cpu_family`` equals ``cpu_model_required``. A VM never goes back to its source.
- Capacity is the end state: the VMs sent to a host must fit its ``memory_mb`` and
  ``cpus``. Explicit destinations are checked first and count against the capacity.
- Anti-affinity is symmetric: a VM listing ``x`` (a VM, or a group: all its members) never
  shares a destination with it.
- The members of a group that have no destination are placed together, on one host (they
  move together and usually talk to each other). Anti-affinity between two such members is
  therefore a conflict. A group placed together must also fit the host's concurrency, since
  its members start at the same time.
- Order: largest memory first (a group counts as the sum of its members); each unit goes to
  the compatible host with room whose migration link would be busy the shortest time
  (bits through it divided by its link rate), which balances the links the scheduler uses.

An impossible placement raises ``PlanInfeasibleError`` naming the constraint and the VMs.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

from vmferry.plan.model import PlanInfeasibleError
from vmferry.plan.schema import HostEntry, PlanSpec, SourceEntry, VmEntry, default_link_slots

MIB = 2**20


@dataclass(frozen=True)
class Placement:
    """Every VM's destination; ``placed`` names those the planner chose."""

    destinations: dict[str, str]
    placed: frozenset[str]


def host_link_gbps(host: HostEntry | SourceEntry, spec: PlanSpec) -> float:
    return host.link_gbps if host.link_gbps is not None else spec.defaults.link_gbps


def host_slots(host: HostEntry | SourceEntry, spec: PlanSpec) -> int:
    """How many migrations the host (or vSphere source) may take part in at once (as
    source or destination)."""
    if host.max_concurrent is not None:
        return host.max_concurrent
    return default_link_slots(host_link_gbps(host, spec))


def transfer_bytes(vm: VmEntry) -> int:
    return vm.bytes if vm.bytes is not None else vm.memory_mb * MIB


def compatible(host: HostEntry, cpu_required: str | None) -> bool:
    return cpu_required is None or cpu_required in (host.cpu_model, host.cpu_family)


def anti_affinity(spec: PlanSpec) -> dict[str, set[str]]:
    """Symmetric anti-affinity between VM names (group targets expanded to members)."""
    members: dict[str, list[str]] = defaultdict(list)
    for vm in spec.vms:
        if vm.group is not None:
            members[vm.group].append(vm.name)
    names = {vm.name for vm in spec.vms}
    avoid: dict[str, set[str]] = defaultdict(set)
    for vm in spec.vms:
        for target in vm.anti_affinity:
            others = [target] if target in names else members.get(target, [])
            for other in others:
                if other != vm.name:
                    avoid[vm.name].add(other)
                    avoid[other].add(vm.name)
    return avoid


def _cpu_words(req: str | None) -> str:
    return "any host" if req is None else f"hosts compatible with cpu {req!r}"


def _unitss(vms: list[VmEntry]) -> str:
    if len(vms) == 1:
        return f"vm {vms[0].name}"
    return f"group {vms[0].group!r} ({', '.join(v.name for v in vms)})"


def place(spec: PlanSpec) -> Placement:
    """Destinations for all VMs: the explicit ones checked, the missing ones chosen."""
    hosts = {h.name: h for h in spec.hosts}
    avoid = anti_affinity(spec)
    free_mem = {h.name: h.memory_mb for h in spec.hosts}
    free_cpu = {h.name: h.cpus for h in spec.hosts}
    residents: dict[str, set[str]] = defaultdict(set)
    link_bps = {h.name: host_link_gbps(h, spec) * 1e9 for h in spec.endpoints()}
    busy_s = {h.name: 0.0 for h in spec.endpoints()}  # bits through the link / link rate
    destinations: dict[str, str] = {}

    # Explicit destinations: compatibility, anti-affinity, then capacity.
    sent: dict[str, list[VmEntry]] = defaultdict(list)
    for vm in spec.vms:
        bits = transfer_bytes(vm) * 8
        busy_s[vm.source] += bits / link_bps[vm.source]
        if vm.destination is None:
            continue
        dest = hosts[vm.destination]
        if not compatible(dest, vm.cpu_model_required):
            has = dest.cpu_model or dest.cpu_family or "unknown"
            raise PlanInfeasibleError(
                f"cpu compatibility: vm {vm.name} needs cpu {vm.cpu_model_required!r} but its "
                f"destination {dest.name} has cpu {has!r}"
            )
        clash = avoid[vm.name] & residents[dest.name]
        if clash:
            raise PlanInfeasibleError(
                f"anti-affinity between {vm.name} and {sorted(clash)[0]} fails: "
                f"both are sent to {dest.name}"
            )
        residents[dest.name].add(vm.name)
        sent[dest.name].append(vm)
        destinations[vm.name] = dest.name
        free_mem[dest.name] -= vm.memory_mb
        free_cpu[dest.name] -= vm.vcpus
        busy_s[dest.name] += bits / link_bps[dest.name]
    for name, vms in sent.items():
        for what, free, per, need in (
            ("memory", free_mem[name], "MB", sum(v.memory_mb for v in vms)),
            ("cpus", free_cpu[name], "vCPUs", sum(v.vcpus for v in vms)),
        ):
            if free < 0:
                listed = ", ".join(v.name for v in vms[:8]) + (" ..." if len(vms) > 8 else "")
                raise PlanInfeasibleError(
                    f"not enough {what} on {name} for the vms sent to it (needs {need} {per}, "
                    f"has {need + free} {per}): {listed}"
                )

    # Units to place: the unplaced members of a group together, or one VM.
    groups: dict[str, list[VmEntry]] = defaultdict(list)
    units: list[list[VmEntry]] = []
    for vm in spec.vms:
        if vm.destination is not None:
            continue
        if vm.group is None:
            units.append([vm])
        else:
            groups[vm.group].append(vm)
    for group, members in groups.items():
        names = {m.name for m in members}
        for m in members:
            inside = sorted(avoid[m.name] & names)
            if inside:
                raise PlanInfeasibleError(
                    f"group {group!r} conflicts with anti-affinity between {m.name} and "
                    f"{inside[0]} (a group's unplaced vms are placed on one host)"
                )
        units.append(members)
    units.sort(key=lambda u: (-sum(v.memory_mb for v in u), -sum(v.vcpus for v in u), u[0].name))

    # One lazy min-heap of (busy_s, host) per distinct set of CPU requirements.
    heaps: dict[tuple[str, ...], list[tuple[float, str]]] = {}
    placed: set[str] = set()
    for unit in units:
        reqs = tuple(sorted({v.cpu_model_required for v in unit if v.cpu_model_required}))
        heap = heaps.get(reqs)
        if heap is None:
            heap = [
                (busy_s[h.name], h.name) for h in spec.hosts if all(compatible(h, r) for r in reqs)
            ]
            heapq.heapify(heap)
            heaps[reqs] = heap
        mem = sum(v.memory_mb for v in unit)
        cpus = sum(v.vcpus for v in unit)
        sources = {v.source for v in unit}
        shunned: set[str] = set().union(*(avoid[v.name] for v in unit))
        bits = sum(transfer_bytes(v) * 8 for v in unit)
        skipped: list[tuple[float, str]] = []
        chosen: str | None = None
        while heap:
            score, name = heapq.heappop(heap)
            if score != busy_s[name]:
                heapq.heappush(heap, (busy_s[name], name))
                continue
            skipped.append((score, name))
            if (
                name not in sources
                and free_mem[name] >= mem
                and free_cpu[name] >= cpus
                and len(unit) <= host_slots(hosts[name], spec)
                and not (shunned & residents[name])
            ):
                chosen = name
                break
        for entry in skipped:
            if entry[1] != chosen:  # the chosen host goes back below with its new load
                heapq.heappush(heap, entry)
        if chosen is None:
            raise _why_not(spec, unit, reqs, sources, shunned, free_mem, free_cpu, residents)
        for v in unit:
            destinations[v.name] = chosen
            placed.add(v.name)
            residents[chosen].add(v.name)
        free_mem[chosen] -= mem
        free_cpu[chosen] -= cpus
        busy_s[chosen] += bits / link_bps[chosen]
        heapq.heappush(heap, (busy_s[chosen], chosen))  # refresh its entry in this heap
    return Placement(destinations=destinations, placed=frozenset(placed))


def _why_not(
    spec: PlanSpec,
    unit: list[VmEntry],
    reqs: tuple[str, ...],
    sources: set[str],
    shunned: set[str],
    free_mem: dict[str, int],
    free_cpu: dict[str, int],
    residents: dict[str, set[str]],
) -> PlanInfeasibleError:
    """The first constraint, in a fixed order, that leaves the unit without a host."""
    who = _unitss(unit)
    req = " and ".join(repr(r) for r in reqs) if reqs else None
    where = _cpu_words(reqs[0] if len(reqs) == 1 else req)
    candidates = [
        h for h in spec.hosts if all(compatible(h, r) for r in reqs) and h.name not in sources
    ]
    if not candidates:
        return PlanInfeasibleError(
            f"cpu compatibility: no host other than its source has cpu {req} for {who}"
        )
    mem = sum(v.memory_mb for v in unit)
    best_mem = max(free_mem[h.name] for h in candidates)
    if best_mem < mem:
        return PlanInfeasibleError(
            f"not enough memory on {where} for {who} (needs {mem} MB, largest free "
            f"{max(best_mem, 0)} MB)"
        )
    cpus = sum(v.vcpus for v in unit)
    roomy = [h for h in candidates if free_mem[h.name] >= mem]
    best_cpu = max(free_cpu[h.name] for h in roomy)
    if best_cpu < cpus:
        return PlanInfeasibleError(
            f"not enough cpus on {where} with {mem} MB free for {who} (needs {cpus} vCPUs, "
            f"largest free {max(best_cpu, 0)})"
        )
    roomy = [h for h in roomy if free_cpu[h.name] >= cpus]
    fitting = [h for h in roomy if len(unit) <= host_slots(h, spec)]
    if not fitting:
        return PlanInfeasibleError(
            f"concurrency: {who} starts together but no host with room allows "
            f"{len(unit)} migrations at once"
        )
    blocking = sorted(shunned & set().union(*(residents[h.name] for h in fitting)))
    return PlanInfeasibleError(
        f"anti-affinity: every host with room for {who} already gets a vm it must avoid "
        f"({', '.join(blocking[:8])})"
    )
