"""The pre-flight rule for a destination in maintenance (pure): nothing is placed on a host
that is being emptied or is in maintenance (`vmferry host maintenance`)."""

from __future__ import annotations

from vmferry.model import Finding
from vmferry.model.finding import Severity
from vmferry.model.maintenance import HostMaintenance

__all__ = ["maintenance_finding"]


def maintenance_finding(maintenance: HostMaintenance | None) -> Finding | None:
    """A blocker when the destination is in maintenance (``maintenance`` is its state)."""
    if maintenance is None:
        return None
    states = {"entering": "being emptied for maintenance", "standby": "in standby (consolidated)"}
    state = states.get(maintenance.state, "in maintenance")
    back = (f"`vmferry host wake {maintenance.host}`" if maintenance.state == "standby"
            else f"`vmferry host maintenance exit {maintenance.host}`")  # fmt: skip
    return Finding(
        "host.maintenance",
        Severity.BLOCKER,
        f"{maintenance.host} is {state} since {maintenance.since}: nothing is placed on it",
        f"choose another host, or {back} first",
    )
