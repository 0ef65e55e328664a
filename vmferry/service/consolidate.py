"""`vmferry consolidate`: which hosts the fleet could run without, and the moves that empty
them, from what the hosts say now and the VMs' stored profiles (docs/operations.md).

The data flow is balance's: :func:`vmferry.service.balance.gather_loads` (every registered
host's capacity and running VMs, each VM's stored profile and tags; hosts in maintenance
marked; a host that does not answer left out and named) ─► the pure planner
(:func:`vmferry.fleetops.consolidate.consolidate`). Nothing moves and no host is powered
off: the recommendation is returned (a power driver will act on it later).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmferry.errors import BadInputError
from vmferry.fleetops.consolidate import Consolidation, consolidate
from vmferry.fleetops.imbalance import check_metric
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.power import DPM_BAND, DpmBand
from vmferry.service.balance import DEFAULT_LINK_BYTES_S, gather_loads
from vmferry.store.db import Store, open_store

__all__ = ["MAX_HEADROOM", "ConsolidationReport", "consolidate_fleet"]

MAX_HEADROOM = 0.9


@dataclass(frozen=True)
class ConsolidationReport:
    consolidation: Consolidation
    hosts: tuple[HostLoad, ...]
    vms: tuple[VmLoad, ...]
    counted_at_size: tuple[str, ...]  # running VMs without a stored profile
    unreachable: dict[str, str] = field(default_factory=dict)
    link_bytes_s: float = DEFAULT_LINK_BYTES_S


def consolidate_fleet(
    *,
    metric: str = "both",
    headroom: float = 0.2,
    max_moves: int | None = None,
    band: DpmBand = DPM_BAND,
    store: Store | None = None,
) -> ConsolidationReport:
    """The hosts to free and the moves, for the registered hosts now (nothing moves).
    ``BadInputError`` for a headroom outside [0, 0.9], an unknown metric, a negative
    ``max_moves``, or no host answering."""
    if not 0 <= headroom <= MAX_HEADROOM:
        raise BadInputError(f"--headroom must be in 0-90 % (got {headroom * 100:g})")
    check_metric(metric)
    if max_moves is not None and max_moves < 0:
        raise BadInputError(f"--max-moves must be >= 0 (got {max_moves})")
    store = store or open_store()
    hosts, vms, at_size, unreachable, link = gather_loads(store)
    if not hosts:
        raise BadInputError("no registered host answered; `vmferry hosts list` shows them")
    found = consolidate(hosts, vms, metric=metric, headroom=headroom, band=band,
                        max_moves=max_moves, link_bytes_s=link)  # fmt: skip
    return ConsolidationReport(found, tuple(hosts), tuple(vms), tuple(at_size), unreachable,
                               link)  # fmt: skip
