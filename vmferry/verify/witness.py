"""Witnesses watch a VM from outside while it moves and say what its users saw.

A site offers a witness for the VMs it knows (:mod:`vmferry.verify.sites`; the lab's reads
its guest's serial console and echo service, :mod:`vmferry.lab.witness`). VMs without a
witness get :class:`NoWitness` and report ``None`` for what one would show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class WitnessReport:
    heartbeat_max_gap_ms: int | None
    memory_integrity: str | None  # ok | fail | None
    network_max_gap_ms: int | None
    tcp_connection_kept: bool | None
    problems: tuple[str, ...] = ()


class Witness(Protocol):
    def start(self) -> None: ...

    def finish(self, moved: bool) -> WitnessReport: ...


class NoWitness:
    """For VMs vmferry cannot observe from outside."""

    def start(self) -> None:
        return None

    def finish(self, moved: bool) -> WitnessReport:
        return WitnessReport(None, None, None, None)
