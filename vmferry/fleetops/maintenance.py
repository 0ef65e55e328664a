"""Where the VMs of a host going into maintenance go (pure).

The host is taken out of the fleet (``in_maintenance``: no VM is placed on it), then its VMs,
largest memory first, each go to the host that may take it (the rules of
:class:`~vmferry.fleetops.state.FleetState`: CPU key, headroom, no memory overcommit,
anti-affinity, not in maintenance) and is least loaded once it has it. A VM no host may take
is listed with the rule that stopped it; the caller moves nothing then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from vmferry.errors import NotFoundError
from vmferry.fleetops.balance import predicted_cost
from vmferry.fleetops.model import HostLoad, Move, VmLoad
from vmferry.fleetops.state import FleetState

__all__ = ["Evacuation", "evacuate", "evacuation_strategy"]


@dataclass(frozen=True)
class Evacuation:
    """The moves that empty ``host``, and the VMs that cannot move (one line each: why)."""

    host: str
    moves: tuple[Move, ...]
    stuck: tuple[str, ...] = ()


def evacuate(
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    host: str,
    *,
    metric: str = "both",
    headroom: float = 0.2,
    link_bytes_s: float = 1.25e9,
    first: Callable[[VmLoad], int] | None = None,
) -> Evacuation:
    """The moves that empty ``host`` (see the module's text); ``first``: placed in the order
    of this rank (lowest first), then largest memory first (HA restarts: by priority)."""
    if not any(h.name == host for h in hosts):
        raise NotFoundError(f"no host {host!r} among {', '.join(h.name for h in hosts)}")
    marked = [replace(h, in_maintenance=True) if h.name == host else h for h in hosts]
    state = FleetState(marked, vms, metric, headroom)
    rank = first or (lambda _vm: 0)
    leaving = sorted((v for v, vm in enumerate(state.vms) if vm.host == host),
                     key=lambda v: (rank(state.vms[v]), -state.vms[v].memory_bytes,
                                    state.vms[v].name))  # fmt: skip
    moves: list[Move] = []
    stuck: list[str] = []
    for v in leaving:
        allowed = [h for h in state.active if state.refusal(v, h) is None]
        vm = state.vms[v]
        if not allowed:
            stuck.append(f"{vm.name}: {state.why_not(v) or 'no host may take it'}")
            continue
        best = min(allowed, key=lambda h: (state.score(h) + state.share(v, h),
                                           state.hosts[h].name))  # fmt: skip
        sent, seconds = predicted_cost(vm, link_bytes_s)
        moves.append(Move(vm.name, host, state.hosts[best].name, sent, seconds))
        state.move(v, best)
    return Evacuation(host, tuple(moves), tuple(stuck))


def evacuation_strategy(
    live: Sequence[str], warm: Sequence[str] | None, cold: Sequence[str] | None,
    *, allow_cold: bool,
) -> tuple[str | None, str]:  # fmt: skip
    """How a VM leaves a host in maintenance (pure), from the pre-flight blockers of each
    kind of move (None: that check was not run): live when nothing blocks it, else warm
    (the guest's memory kept, a stop of seconds), else cold when the admin allows it
    (``--allow-cold``: the guest is shut down); None with the reason when none may."""
    if not live:
        return "live", "live"
    why = f"live blocked ({', '.join(live)})"
    if warm is not None and not warm:
        return "warm", f"{why}: warm"
    why += f", warm blocked ({', '.join(warm or ['not checked'])})"
    if not allow_cold:
        return None, f"{why}, cold not allowed (--allow-cold)"
    if cold is not None and not cold:
        return "cold", f"{why}: cold"
    return None, f"{why}, cold blocked ({', '.join(cold or ['not checked'])})"
