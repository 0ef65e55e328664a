"""Balancing benchmark: vmferry's recommender beside two baselines, on seeded synthetic fleets.

Each fleet (default 100 hosts / 2,000 VMs and 500 hosts / 10,000 VMs) starts unbalanced on
purpose: the first 30 % of the hosts draw VMs three times as often as the others. Three
tools decide on the same fleet in one run, under the same rules (CPU key, headroom,
anti-affinity, maintenance: :class:`vmferry.fleetops.state.FleetState`) and the same stop
(imbalance at or under the threshold):

- ``vmferry``: :func:`vmferry.fleetops.balance.recommend`;
- ``greedy``: repeatedly the largest VM of the most loaded host to the least loaded host
  that may take it (and ends less loaded than the source was), each VM once, until under
  the threshold or the most loaded host has no such VM;
- ``watcher-workload-balance``: OpenStack Watcher's workload_balance strategy, from its
  documentation (docs.openstack.org/watcher, strategies/workload_balance and the
  WorkloadBalance class's API page): a host whose utilisation exceeds the threshold is a
  source; one VM per audit, the one whose load is closest to (without exceeding) the
  difference between its host's load and the fleet average, moves to the least loaded host
  that can take it and stays under the threshold; audits repeat (Watcher advises
  continuous audits) until the imbalance is under our threshold or an audit finds no
  action. Watcher's threshold is a utilisation; here it is the fleet's starting mean load
  plus our threshold (its 25 % default means nothing on these fleets).

Bytes moved are the same pre-copy prediction for every tool. ``seconds`` is the time to
decide (building the fleet excluded).

Consolidation rows, on the same fleets (issue 16: "hosts freed against the bin-packing lower
bound"), under the same rules, headroom and DPM band (target 63 %: no tool frees a host
that lifts the hosts that stay above it):

- ``vmferry``: :func:`vmferry.fleetops.consolidate.consolidate`;
- ``greedy``: the least loaded host first, its VMs in name order each to the first host (in
  name order) that may take it; a host that cannot be emptied whole is restored and kept; a
  host that took VMs may be emptied later (its VMs move again);
- ``bound``: the hosts outside maintenance minus
  :func:`vmferry.fleetops.packing_bound.hosts_needed`, which no packing beats.

    .venv/bin/python bench/balance.py            # tables
    .venv/bin/python bench/balance.py --json     # {"rows": [...], "consolidation": [...]}

Target (issue 16): 10,000 VMs decided in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vmferry.fleetops.balance import predicted_cost, recommend
from vmferry.fleetops.consolidate import consolidate
from vmferry.fleetops.imbalance import pstdev
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.packing_bound import hosts_needed, utilisation
from vmferry.fleetops.power import DPM_BAND
from vmferry.fleetops.state import FleetState

GIB = 2**30
LINK_BYTES_S = 1.25e9  # 10 Gbit/s
HOT_SHARE = 0.3  # share of the hosts that draw VMs HOT_WEIGHT times as often
HOT_WEIGHT = 3
Moves = list[tuple[int, int]]  # (VM index, destination host index)


def synthetic_fleet(hosts: int, vms: int, seed: int) -> tuple[list[HostLoad], list[VmLoad]]:
    """Hosts of 32-64 cpus and 256-512 GiB on two CPU keys; VMs of 1-8 vCPUs and 2-16 GiB
    using 5-60 % of their CPUs and 40-90 % of their memory; one VM in ten in an
    anti-affinity group of three, one in five pinned to its host's CPU key. Placement
    respects memory and anti-affinity and favours the hot hosts."""
    rng = random.Random(seed)
    fleet = [
        HostLoad(
            name=f"h{i:04d}",
            cpus=rng.choice((32, 48, 64)),
            memory_bytes=rng.choice((256, 384, 512)) * GIB,
            cpu_key="icelake" if rng.random() < 0.7 else "sapphire",
        )
        for i in range(hosts)
    ]
    hot = int(hosts * HOT_SHARE)
    weights = [HOT_WEIGHT if i < hot else 1 for i in range(hosts)]
    given = [0] * hosts
    groups: set[tuple[str, int]] = set()
    out: list[VmLoad] = []
    for i in range(vms):
        vcpus = rng.choice((1, 2, 4, 8))
        memory = rng.choice((2, 4, 8, 16)) * GIB
        group = f"g{i // 30:04d}" if i % 10 == 0 else None  # every 10th VM, three per group
        while True:
            h = rng.choices(range(hosts), weights)[0]
            if given[h] + memory <= fleet[h].memory_bytes and (group, h) not in groups:
                break
        given[h] += memory
        if group is not None:
            groups.add((group, h))
        out.append(
            VmLoad(
                name=f"vm{i:05d}",
                host=fleet[h].name,
                vcpus=vcpus,
                memory_bytes=memory,
                cpu_demand=vcpus * rng.uniform(0.05, 0.6),
                memory_demand_bytes=round(memory * rng.uniform(0.4, 0.9)),
                dirty_rate_bytes_s=rng.uniform(0, 50e6),
                anti_affinity=group,
                cpu_key=fleet[h].cpu_key if rng.random() < 0.2 else None,
            )
        )
    return fleet, out


def greedy(state: FleetState, threshold: float) -> Moves:
    """The largest VM of the most loaded host to the least loaded host that may take it."""
    moves: Moves = []
    moved: set[int] = set()
    while pstdev(state.loads()) > threshold:
        scores = {h: state.score(h) for h in state.active}
        by_load = sorted(state.active, key=lambda h: (scores[h], state.hosts[h].name))
        source = by_load[-1]
        found = _first_fit(state, by_load, scores, source, _largest_first(state, source, moved))
        if found is None:
            break
        moves.append(found)
        moved.add(found[0])
        state.move(*found)
    return moves


def _largest_first(state: FleetState, source: int, moved: set[int]) -> list[int]:
    return sorted(
        state.on_host[source] - moved,
        key=lambda v: (-state.share(v, source), state.vms[v].name),
    )


def _first_fit(
    state: FleetState, by_load: Sequence[int], scores: dict[int, float], source: int,
    candidates: Sequence[int],
) -> tuple[int, int] | None:  # fmt: skip
    for v in candidates:
        for b in by_load:
            if state.refusal(v, b) is None and scores[b] + state.share(v, b) < scores[source]:
                return v, b
    return None


def watcher_workload_balance(state: FleetState, threshold: float) -> Moves:
    """Watcher's workload_balance, one migration per audit (see the module's text)."""
    start = state.loads()
    watcher_threshold = sum(start) / len(start) + threshold
    moves: Moves = []
    while pstdev(state.loads()) > threshold and len(moves) < len(state.vms):
        found = _watcher_audit(state, watcher_threshold)
        if found is None:
            break
        moves.append(found)
        state.move(*found)
    return moves


def _watcher_audit(state: FleetState, watcher_threshold: float) -> tuple[int, int] | None:
    scores = {h: state.score(h) for h in state.active}
    average = sum(scores.values()) / len(scores)
    sources = sorted(
        (h for h in state.active if scores[h] >= watcher_threshold),
        key=lambda h: (-scores[h], state.hosts[h].name),
    )
    targets = sorted(
        (h for h in state.active if scores[h] < watcher_threshold),
        key=lambda h: (scores[h], state.hosts[h].name),
    )
    for source in sources:  # choose_instance_to_migrate: the first source with a fitting VM
        delta = scores[source] - average
        fitting = [v for v in state.on_host[source] if state.share(v, source) <= delta]
        if not fitting:
            continue
        v = min(fitting, key=lambda v: (delta - state.share(v, source), state.vms[v].name))
        for b in targets:  # filter_destination_hosts, least loaded first
            if state.refusal(v, b) is None and scores[b] + state.share(v, b) < watcher_threshold:
                return v, b
        return None  # the audit's chosen VM has no destination: no action
    return None


def run_tool(
    tool: str, hosts: list[HostLoad], vms: list[VmLoad], args: argparse.Namespace
) -> dict[str, Any]:
    """One tool on one fleet: its row."""
    t0 = time.perf_counter()
    if tool == "vmferry":
        rec = recommend(hosts, vms, metric=args.metric, threshold=args.threshold,
                        headroom=args.headroom, link_bytes_s=LINK_BYTES_S)  # fmt: skip
        seconds = time.perf_counter() - t0
        before, after = rec.imbalance_before, rec.imbalance_after
        by_name = {v.name: v for v in vms}
        moved = [by_name[m.vm] for m in rec.moves]
    else:
        state = FleetState(hosts, vms, args.metric, args.headroom)
        before = pstdev(state.loads())
        baseline: Callable[[FleetState, float], Moves] = (
            greedy if tool == "greedy" else watcher_workload_balance
        )
        pairs = baseline(state, args.threshold)
        seconds = time.perf_counter() - t0
        after = pstdev(state.loads())
        moved = [vms[v] for v, _ in pairs]
    return {
        "hosts": len(hosts),
        "vms": len(vms),
        "tool": tool,
        "moves": len(moved),
        "imbalance_before": round(before, 4),
        "imbalance_after": round(after, 4),
        "threshold": args.threshold,
        "seconds": round(seconds, 3),
        "bytes_moved": sum(predicted_cost(vm, LINK_BYTES_S)[0] for vm in moved),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| fleet | tool | moves | imbalance before | after | threshold | GiB moved | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['hosts']} hosts / {r['vms']} VMs | {r['tool']} | {r['moves']} | "
                     f"{r['imbalance_before']:.4f} | {r['imbalance_after']:.4f} | "
                     f"{r['threshold']} | {r['bytes_moved'] / GIB:,.0f} | "
                     f"{r['seconds']:.2f} |")  # fmt: skip
    return "\n".join(lines)


TOOLS = ("vmferry", "greedy", "watcher-workload-balance")


def greedy_consolidate(state: FleetState, target: float) -> tuple[list[int], Moves]:
    """The least loaded host first, first fit in name order (see the module's text)."""
    freed: list[int] = []
    moves: Moves = []
    cpu = sum(state.cpu[h] for h in state.active)
    memory = sum(state.memory[h] for h in state.active)
    for h in sorted(state.active, key=lambda h: (state.score(h), state.hosts[h].name)):
        left = [k for k in state.active if k != h and k not in freed]
        if not left:
            break
        cpus = sum(state.hosts[k].cpus for k in left)
        mem = sum(state.hosts[k].memory_bytes for k in left)
        if utilisation(cpu / cpus, memory / mem, state.metric) > target:
            continue
        done: Moves = []
        for v in sorted(state.on_host[h], key=lambda v: state.vms[v].name):
            found = next((d for d in left if state.refusal(v, d) is None), None)
            if found is None:
                break
            state.move(v, found)
            done.append((v, found))
        if state.on_host[h]:
            for v, _ in reversed(done):
                state.move(v, h)
            continue
        freed.append(h)
        moves.extend(done)
    return freed, moves


def run_consolidation(
    tool: str, hosts: list[HostLoad], vms: list[VmLoad], args: argparse.Namespace
) -> dict[str, Any]:
    """One consolidation on one fleet: its row (the bound's row decides nothing)."""
    cap = min(1 - args.headroom, DPM_BAND.high)
    t0 = time.perf_counter()
    if tool == "vmferry":
        found = consolidate(hosts, vms, metric=args.metric, headroom=args.headroom,
                            link_bytes_s=LINK_BYTES_S)  # fmt: skip
        freed = len(found.hosts_freed)
        by_name = {v.name: v for v in vms}
        moved = [by_name[m.vm] for m in found.moves]
    elif tool == "greedy":
        state = FleetState(hosts, vms, args.metric, 1 - cap)
        freed_hosts, pairs = greedy_consolidate(state, DPM_BAND.target)
        freed, moved = len(freed_hosts), [vms[v] for v, _ in pairs]
    else:
        needed = hosts_needed(hosts, vms, metric=args.metric, cap=cap, target=DPM_BAND.target)
        freed, moved = sum(not h.in_maintenance for h in hosts) - needed, []
    seconds = time.perf_counter() - t0
    return {
        "hosts": len(hosts),
        "vms": len(vms),
        "tool": tool,
        "hosts_freed": freed,
        "moves": len(moved),
        "bytes_moved": sum(predicted_cost(vm, LINK_BYTES_S)[0] for vm in moved),
        "seconds": round(seconds, 3),
    }


def consolidation_table(rows: list[dict[str, Any]]) -> str:
    bound = {(r["hosts"], r["vms"]): r["hosts_freed"] for r in rows if r["tool"] == "bound"}
    lines = ["| fleet | tool | hosts freed | of the bound | moves | GiB moved | seconds |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        best = bound[(r["hosts"], r["vms"])]
        share = f"{r['hosts_freed'] / best:.0%}" if best else "-"
        lines.append(f"| {r['hosts']} hosts / {r['vms']} VMs | {r['tool']} | {r['hosts_freed']} "
                     f"| {share} | {r['moves']} | {r['bytes_moved'] / GIB:,.0f} | "
                     f"{r['seconds']:.2f} |")  # fmt: skip
    return "\n".join(lines)


CONSOLIDATION_TOOLS = ("vmferry", "greedy", "bound")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON rows only")
    parser.add_argument("--fleets", default="100x2000,500x10000", help="HOSTSxVMS,...")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--metric", default="both", choices=("cpu", "memory", "both"))
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--headroom", type=float, default=0.2)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    packed: list[dict[str, Any]] = []
    for fleet in args.fleets.split(","):
        n_hosts, n_vms = (int(x) for x in fleet.split("x"))
        hosts, vms = synthetic_fleet(n_hosts, n_vms, args.seed)
        rows.extend(run_tool(tool, hosts, vms, args) for tool in TOOLS)
        packed.extend(run_consolidation(tool, hosts, vms, args) for tool in CONSOLIDATION_TOOLS)
    if args.json:
        print(json.dumps({"rows": rows, "consolidation": packed}))
    else:
        print(table(rows))
        print()
        print(consolidation_table(packed))
    large = [r for r in rows + packed if r["tool"] == "vmferry" and r["vms"] >= 10_000]
    return 0 if all(r["seconds"] < 10 for r in large) else 1


if __name__ == "__main__":
    sys.exit(main())
