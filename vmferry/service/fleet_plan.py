"""Moves the fleet operations decided (an evacuation, a balancing), carried out as a plan:
`plan create` from the plan file they make, then `plan run` (the plan engine's limits,
pause, resume and record)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from vmferry.fleetops.model import HostLoad, Move, VmLoad
from vmferry.fleetops.plan_file import plan_yaml
from vmferry.service.plan import create_plan
from vmferry.service.plan_run import EventFn, run_plan
from vmferry.store.db import Store

__all__ = ["run_moves"]


def run_moves(
    moves: Sequence[Move],
    hosts: Sequence[HostLoad],
    vms: Sequence[VmLoad],
    *,
    link_bytes_s: float,
    name: str,
    on_event: EventFn,
    store: Store,
    strategies: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Make the plan ``name`` of ``moves`` and run it to its end: (plan id, its status).
    ``strategies``: a VM's way of moving other than live (warm, cold)."""
    with tempfile.TemporaryDirectory(prefix="vmferry-fleet-") as folder:
        path = Path(folder) / f"{name}.yaml"
        path.write_text(plan_yaml(moves, hosts, vms, link_bytes_s=link_bytes_s, name=name,
                                  strategies=strategies))  # fmt: skip
        plan_id = create_plan(path, store=store).id
    ran = run_plan(plan_id, on_event=on_event, store=store)
    return plan_id, str(ran.status)
