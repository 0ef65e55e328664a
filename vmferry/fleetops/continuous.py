"""When the continuous balancer acts (pure): hysteresis, persistence and cool-downs.

`vmferry watch --balance` measures the fleet every round and asks :func:`balance_turn`
whether to move VMs now. It acts only when all of these hold:

1. the imbalance is above the trigger, ``threshold x (1 + hysteresis)``
   (:func:`vmferry.fleetops.imbalance.should_act`), and has been in ``persist`` consecutive
   rounds (one busy minute does not move VMs; DRS also judges over a period);
2. no balancing ran in the last ``cooldown_s`` (the moves' own load and the profiles that
   follow them settle first).

When it acts, the recommender aims at ``threshold`` itself, below the trigger by the
hysteresis, and a VM moved by the balancer is not moved again for ``vm_cooldown_s``
(:func:`pinned`): so a fleet it balanced does not trigger it again from small drifts, and no
VM goes back and forth between two hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vmferry.errors import BadInputError
from vmferry.fleetops.imbalance import should_act

__all__ = ["BalanceMemory", "BalancePolicy", "BalanceTurn", "balance_turn", "note_moves", "pinned"]


@dataclass(frozen=True)
class BalancePolicy:
    threshold: float = 0.1
    hysteresis: float = 0.2
    persist: int = 3  # consecutive rounds above the trigger before acting
    cooldown_s: float = 600.0  # after a balancing run, none for this long
    vm_cooldown_s: float = 3600.0  # a VM the balancer moved stays put this long

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise BadInputError(f"--threshold must be in (0, 1] (got {self.threshold:g})")
        if self.hysteresis < 0:
            raise BadInputError(f"--hysteresis must be >= 0 (got {self.hysteresis:g})")
        if self.persist < 1:
            raise BadInputError(f"--persist must be >= 1 round (got {self.persist})")
        if self.cooldown_s < 0 or self.vm_cooldown_s < 0:
            raise BadInputError("cool-downs must be >= 0 s")

    @property
    def trigger(self) -> float:
        return self.threshold * (1 + self.hysteresis)


@dataclass(frozen=True)
class BalanceMemory:
    """What the balancer remembers between rounds (``at``: seconds on one clock)."""

    rounds_over: int = 0
    last_run_at: float | None = None
    moved_at: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BalanceTurn:
    act: bool
    why: str
    memory: BalanceMemory


def balance_turn(
    policy: BalancePolicy, memory: BalanceMemory, imbalance: float, now: float
) -> BalanceTurn:
    """Whether to balance now, why in words, and the memory for the next round."""
    if not should_act(imbalance, policy.threshold, hysteresis=policy.hysteresis):
        why = f"imbalance {imbalance:.3f} is at or under the trigger {policy.trigger:.3f}"
        return BalanceTurn(False, why, BalanceMemory(0, memory.last_run_at, memory.moved_at))
    over = memory.rounds_over + 1
    kept = BalanceMemory(over, memory.last_run_at, memory.moved_at)
    above = f"imbalance {imbalance:.3f} above the trigger {policy.trigger:.3f}"
    if over < policy.persist:
        return BalanceTurn(False, f"{above} ({over} of {policy.persist} rounds)", kept)
    if memory.last_run_at is not None and now - memory.last_run_at < policy.cooldown_s:
        left = policy.cooldown_s - (now - memory.last_run_at)
        return BalanceTurn(False, f"{above}; cooling down ({left:.0f} s left)", kept)
    return BalanceTurn(True, f"{above} for {over} rounds: balancing", kept)


def note_moves(memory: BalanceMemory, moved: Iterable[str], now: float) -> BalanceMemory:
    """The memory after a balancing run at ``now`` that moved ``moved``."""
    moved_at = dict(memory.moved_at)
    moved_at.update((vm, now) for vm in moved)
    return BalanceMemory(0, now, moved_at)


def pinned(policy: BalancePolicy, memory: BalanceMemory, now: float) -> frozenset[str]:
    """The VMs the balancer moved within the VM cool-down: the recommender leaves them."""
    return frozenset(vm for vm, at in memory.moved_at.items() if now - at < policy.vm_cooldown_s)
