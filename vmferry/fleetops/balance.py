"""The balancing recommender: the fewest, cheapest moves that bring the imbalance under a
threshold (pure).

Iterative best improvement. At each step, with the hosts' loads summed once (``S``, the sum
of loads, and ``Q``, the sum of their squares, over the ``n`` hosts not in maintenance; the
variance is ``Q/n - (S/n)^2``):

1. stop when the imbalance (:mod:`vmferry.fleetops.imbalance`) is at or under the
   threshold, or ``max_moves`` moves are chosen;
2. candidates: each VM not moved yet on the :data:`SOURCE_HOSTS` most loaded hosts above
   the mean, to each of the :data:`DESTINATIONS` least loaded hosts that may take it
   (:meth:`FleetState.refusal`: CPU key, headroom, anti-affinity, maintenance) and are less
   loaded than its host. A candidate's new variance follows from ``S`` and ``Q`` in O(1);
3. take the candidate with the largest variance reduction per unit of cost, where the cost
   is the predicted migration time (:func:`vmferry.predict.model.predict`, at the VM's
   memory, dirty rate and zero pages, over ``link_bytes_s``) plus ``move_overhead_s``, the
   fixed work of any move (checks, verification): cheap VMs win, but not by many tiny
   moves. Ties go to the first found (sources by load, their VMs by name, destinations by
   load; equal loads by host name), so the same fleet in any input order gives the same
   moves;
4. stop when no candidate lowers the variance.

Each VM moves at most once in a recommendation. Hosts in maintenance are neither sources
nor destinations (emptying them is maintenance's work).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from vmferry.errors import BadInputError
from vmferry.fleetops.imbalance import pstdev
from vmferry.fleetops.model import HostLoad, Move, Recommendation, VmLoad
from vmferry.fleetops.state import FleetState
from vmferry.predict.model import DEFAULT_CALIBRATION, Calibration, PredictInputs, predict

SOURCE_HOSTS = 4  # the most loaded hosts whose VMs a step considers
DESTINATIONS = 4  # per VM, how many allowed destinations (least loaded first) a step scores
MIN_GAIN = 1e-12  # a variance reduction below this is float noise, not an improvement
NO_GAIN = "no move of it to the least loaded hosts that may take it lowers the imbalance"


def recommend(
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    *,
    metric: str = "both",
    threshold: float = 0.1,
    max_moves: int | None = None,
    headroom: float = 0.2,
    link_bytes_s: float = 1.25e9,
    move_overhead_s: float = 30.0,
    downtime_limit_ms: int = 300,
    calibration: Calibration = DEFAULT_CALIBRATION,
    fixed: Collection[str] = (),
) -> Recommendation:
    """Moves that bring the fleet's imbalance to ``threshold`` or under (see the module's
    text). ``BadInputError`` (one line) for a threshold outside (0, 1], an unknown metric,
    a headroom outside [0, 1), a negative ``max_moves`` or overhead, a link rate <= 0, a VM
    on a host that does not exist, duplicate names, or negative figures. VMs named in
    ``fixed`` count in the loads but are not moved (the continuous mode's cool-down)."""
    if not 0 < threshold <= 1:
        raise BadInputError(f"threshold must be in (0, 1] (got {threshold})")
    if max_moves is not None and max_moves < 0:
        raise BadInputError(f"max_moves must be >= 0 (got {max_moves})")
    if link_bytes_s <= 0:
        raise BadInputError(f"link rate must be > 0 bytes/s (got {link_bytes_s})")
    if move_overhead_s < 0:
        raise BadInputError(f"move overhead must be >= 0 s (got {move_overhead_s})")
    state = FleetState(hosts, vms, metric, headroom)
    predicted: dict[int, tuple[int, float]] = {}

    def cost(v: int) -> float:
        if v not in predicted:
            predicted[v] = predicted_cost(
                state.vms[v], link_bytes_s, downtime_limit_ms, calibration
            )
        return predicted[v][1] + move_overhead_s

    before = pstdev(state.loads())
    moves: list[Move] = []
    moved: set[int] = {v for v, vm in enumerate(state.vms) if vm.name in fixed}
    while True:
        if pstdev(state.loads()) <= threshold:
            stop = "under the threshold"
            break
        if max_moves is not None and len(moves) >= max_moves:
            stop = f"max_moves ({max_moves}) reached"
            break
        best = _best_move(state, moved, cost)
        if best is None:
            stop = "no allowed move lowers the imbalance"
            break
        v, destination = best
        vm, (sent, seconds) = state.vms[v], predicted[v]
        moves.append(Move(vm.name, vm.host, state.hosts[destination].name, sent, seconds))
        moved.add(v)
        state.move(v, destination)
    after = pstdev(state.loads())
    unmoved = () if after <= threshold else _reasons(state, moved, stop)
    return Recommendation(
        moves=tuple(moves),
        imbalance_before=before,
        imbalance_after=after,
        threshold=threshold,
        metric=state.metric,
        stop=stop,
        unmoved=unmoved,
    )


def predicted_cost(
    vm: VmLoad,
    link_bytes_s: float,
    downtime_limit_ms: int = 300,
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> tuple[int, float]:
    """The VM's live move by the pre-copy model: (bytes sent, seconds). Memory not in use
    counts as zero pages, as the profile's summary estimates them
    (:func:`vmferry.predict.profile.summarise`)."""
    zero = 1 - vm.memory_demand_bytes / vm.memory_bytes if vm.memory_bytes else 0.0
    inputs = PredictInputs(
        memory_bytes=vm.memory_bytes,
        dirty_rate_bytes_s=vm.dirty_rate_bytes_s,
        link_bytes_s=link_bytes_s,
        zero_fraction=max(0.0, zero),
        downtime_limit_ms=downtime_limit_ms,
    )
    prediction = predict(inputs, calibration)
    return prediction.transferred_bytes, prediction.total_time_ms / 1000


def _best_move(
    state: FleetState, moved: set[int], cost: Callable[[int], float]
) -> tuple[int, int] | None:
    """The (VM, destination) with the largest variance reduction per cost; None if none
    lowers the variance."""
    scores = {h: state.score(h) for h in state.active}
    n = len(scores)
    total = math.fsum(scores.values())
    squares = math.fsum(s * s for s in scores.values())
    variance = squares / n - (total / n) ** 2
    by_load = sorted(state.active, key=lambda h: (scores[h], state.hosts[h].name))
    sources = [h for h in reversed(by_load) if scores[h] > total / n][:SOURCE_HOSTS]
    best: tuple[int, int] | None = None
    best_ratio = 0.0
    for a in sources:
        s_a = scores[a]
        for v in sorted(state.on_host[a] - moved, key=lambda v: state.vms[v].name):
            d_a = state.share(v, a)
            if d_a <= 0:
                continue
            scored = 0
            for b in by_load:
                s_b = scores[b]
                if s_b >= s_a or scored == DESTINATIONS:
                    break
                if state.refusal(v, b) is not None:
                    continue
                scored += 1
                d_b = state.share(v, b)
                new_total = total - d_a + d_b
                new_squares = (squares - s_a * s_a + (s_a - d_a) ** 2
                               - s_b * s_b + (s_b + d_b) ** 2)  # fmt: skip
                gain = variance - (new_squares / n - (new_total / n) ** 2)
                if gain > MIN_GAIN and gain / cost(v) > best_ratio:
                    best, best_ratio = (v, b), gain / cost(v)
    return best


def _reasons(state: FleetState, moved: set[int], stop: str) -> tuple[str, ...]:
    """Why each VM of the most loaded host stayed: the furthest rule any host passed."""
    if not state.active:
        return ()
    top = max(state.active, key=lambda h: (state.score(h), state.hosts[h].name))
    lines = []
    for v in sorted(state.on_host[top] - moved, key=lambda v: state.vms[v].name):
        why = state.why_not(v)
        if why is None:
            why = stop if stop.startswith("max_moves") else NO_GAIN
        lines.append(f"{state.vms[v].name}: {why}")
    return tuple(lines)
