"""When to wake hosts in standby and when consolidation may run: DPM's demand windows with
hysteresis (pure).

The band: hosts should run at ``target`` utilisation, give or take ``tolerance`` (VMware
DPM's defaults: 63 % +/- 18 %, so between 45 % and 81 %). Two windows of demand samples:

- **power-on** reads the last ``on_window_s`` (default 300 s): when the powered hosts'
  utilisation over it (the sum of each host's mean demand over the sum of their capacity)
  is above ``target + tolerance``, it wakes standby hosts, largest first, the fewest that
  bring that utilisation to ``target`` or under (all of them if even that is not enough);
- **power-off** reads the last ``off_window_s`` (default 2,400 s): consolidation may run
  only when nothing is to be woken, every powered host has samples in that window, the
  window is covered (its oldest sample is within a tenth of the window of its start), and
  the utilisation over it is below ``target - tolerance``.

Why it does not flap: consolidation (:mod:`vmferry.fleetops.consolidate`) frees a host only
when the hosts that stay are at ``target`` or under afterwards, which is below the wake
point by ``tolerance``; waking brings the fleet to ``target`` or under with the fewest
hosts, and consolidating needs ``target - tolerance`` over forty minutes. Each action lands
the fleet outside the other's trigger, by the tolerance.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.errors import BadInputError

__all__ = ["DPM_BAND", "DemandSample", "DpmBand", "PowerDecision", "PowerHost", "power_decision"]

DEFAULT_TARGET = 0.63
DEFAULT_TOLERANCE = 0.18
ON_WINDOW_S = 300.0  # DPM decides power-on from the last 5 minutes of demand
OFF_WINDOW_S = 2400.0  # and power-off from the last 40
COVERAGE = 0.1  # the long window is covered when its oldest sample is this close to its start


@dataclass(frozen=True)
class DpmBand:
    """The utilisation band: ``target`` +/- ``tolerance``, within [0, 1]."""

    target: float = DEFAULT_TARGET
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise BadInputError(f"target utilisation must be in (0, 1) (got {self.target:g})")
        if self.tolerance < 0 or self.low < 0 or self.high > 1:
            raise BadInputError(
                f"tolerance must keep target +/- tolerance within [0, 1] "
                f"(got {self.target:g} +/- {self.tolerance:g})"
            )

    @property
    def low(self) -> float:
        return self.target - self.tolerance

    @property
    def high(self) -> float:
        return self.target + self.tolerance


DPM_BAND = DpmBand()  # 63 % +/- 18 %


@dataclass(frozen=True)
class PowerHost:
    """A host as the power decision sees it: its capacity, in the samples' unit (cores,
    bytes, or 1.0 per host), and whether it is in standby."""

    name: str
    capacity: float
    standby: bool = False

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise BadInputError(f"host {self.name}: capacity must be > 0 (got {self.capacity})")


@dataclass(frozen=True)
class DemandSample:
    """One host's demand at ``at`` (seconds, on one clock for every sample)."""

    at: float
    host: str
    demand: float


@dataclass(frozen=True)
class PowerDecision:
    """Which standby hosts to wake, whether consolidation may run, the utilisation over each
    window (None: no sample of a powered host in it) and why, in words."""

    wake: tuple[str, ...]
    may_consolidate: bool
    utilisation_short: float | None
    utilisation_long: float | None
    why: str


def power_decision(
    hosts: Sequence[PowerHost],
    samples: Sequence[DemandSample],
    *,
    now: float,
    band: DpmBand = DPM_BAND,
    on_window_s: float = ON_WINDOW_S,
    off_window_s: float = OFF_WINDOW_S,
) -> PowerDecision:
    """Wake standby hosts, or allow consolidation, from the demand samples (see the module's
    text). ``BadInputError`` for windows that are not ``0 < on <= off``."""
    if not 0 < on_window_s <= off_window_s:
        raise BadInputError(
            f"windows must be 0 < power-on <= power-off (got {on_window_s:g} s, {off_window_s:g} s)"
        )
    powered = {h.name: h for h in hosts if not h.standby}
    standby = sorted((h for h in hosts if h.standby), key=lambda h: (-h.capacity, h.name))
    short = _window(powered, samples, now - on_window_s, now)
    long = _window(powered, samples, now - off_window_s, now)
    u_short = _utilisation(powered, short)
    u_long = _utilisation(powered, long)
    if u_short is not None and u_short > band.high:
        wake, after = _to_wake(powered, standby, short, band.target)
        above = f"{u_short:.0%} over {on_window_s:g} s is above {band.high:.0%}"
        woken = (f"{above}: waking {len(wake)} brings it to {after:.0%}" if standby
                 else f"{above}; no host is in standby")  # fmt: skip
        return PowerDecision(wake, False, u_short, u_long, woken)
    why = _why_not_off(powered, samples, long, now, off_window_s)
    if why is None and u_long is not None and u_long < band.low:
        why = f"{u_long:.0%} over {off_window_s:g} s is below {band.low:.0%}: consolidation may run"
        return PowerDecision((), True, u_short, u_long, why)
    if why is None:
        why = f"within the band ({band.low:.0%}-{band.high:.0%}): nothing to do"
    return PowerDecision((), False, u_short, u_long, why)


def _to_wake(
    powered: dict[str, PowerHost],
    standby: Sequence[PowerHost],
    short: dict[str, list[float]],
    target: float,
) -> tuple[tuple[str, ...], float]:
    """The fewest standby hosts, largest first, that bring the utilisation to ``target`` or
    under (all of them when that is not enough), and the utilisation then."""
    demand = math.fsum(_means(short).values())
    capacity = math.fsum(powered[h].capacity for h in short)
    wake: list[str] = []
    for host in standby:
        if demand / capacity <= target:
            break
        wake.append(host.name)
        capacity += host.capacity
    return tuple(wake), demand / capacity


def _why_not_off(
    powered: dict[str, PowerHost],
    samples: Sequence[DemandSample],
    long: dict[str, list[float]],
    now: float,
    off_window_s: float,
) -> str | None:
    """Why the power-off window cannot be judged (None: it can)."""
    missing = sorted(set(powered) - set(long))
    if missing:
        return f"no samples over {off_window_s:g} s for {', '.join(missing)}"
    start = now - off_window_s
    oldest = min((s.at for s in samples if s.host in powered and start <= s.at <= now),
                 default=now)  # fmt: skip
    if oldest > start + off_window_s * COVERAGE:
        return (f"samples cover only the last {now - oldest:g} s of the {off_window_s:g} s "
                "power-off window")  # fmt: skip
    return None


def _window(
    powered: dict[str, PowerHost], samples: Sequence[DemandSample], start: float, end: float
) -> dict[str, list[float]]:
    """Each powered host's demands sampled in [start, end]."""
    found: defaultdict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.host in powered and start <= s.at <= end:
            found[s.host].append(s.demand)
    return dict(found)


def _means(window: dict[str, list[float]]) -> dict[str, float]:
    return {h: math.fsum(d) / len(d) for h, d in window.items()}


def _utilisation(powered: dict[str, PowerHost], window: dict[str, list[float]]) -> float | None:
    """The sum of the hosts' mean demands over the sum of their capacities (None: none)."""
    if not window:
        return None
    means = _means(window)
    return math.fsum(means.values()) / math.fsum(powered[h].capacity for h in means)
