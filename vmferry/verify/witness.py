"""Witnesses watch a VM from outside while it moves and say what its users saw.

A site offers a witness for the VMs it knows (:mod:`vmferry.verify.sites`; the lab's reads
its guest's serial console and echo service, :mod:`vmferry.lab.witness`). VMs without a
witness get :class:`NoWitness` and report ``None`` for what one would show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from vmferry.model.agent import AgentCheck
from vmferry.model.migration import Verification
from vmferry.model.probe import ProbeResult

# What a witness proves, strongest first (`verification.level`); a VM with none is
# "liveness-only": running on the destination and gone from the source, nothing more.
LEVELS = ("agent", "probes", "lab")
LIVENESS_ONLY = "liveness-only"
_T = TypeVar("_T")


@dataclass(frozen=True)
class WitnessReport:
    heartbeat_max_gap_ms: int | None
    memory_integrity: str | None  # ok | fail | None
    network_max_gap_ms: int | None
    tcp_connection_kept: bool | None
    problems: tuple[str, ...] = ()  # the move went wrong: the job fails
    probes: tuple[ProbeResult, ...] = ()
    warnings: tuple[str, ...] = ()  # a check that could not prove the service: the job
    # fails on them only with --require-verification
    level: str | None = None  # one of LEVELS, None for no witness
    agent: AgentCheck | None = None  # the guest agent's verdict, when the VM has one


class Witness(Protocol):
    """``finish(moved, running=...)``: ``running`` False when the move failed and left the VM
    running on neither host (its QEMU died): there is nothing to wait for, and a witness
    reports at once what it saw."""

    def start(self) -> None: ...

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport: ...


class NoWitness:
    """For VMs vmferry cannot observe from outside."""

    def start(self) -> None:
        return None

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        return WitnessReport(None, None, None, None)


class Witnesses:
    """Several witnesses of one VM (a site's and the VM's probes) as one."""

    def __init__(self, parts: Sequence[Witness]) -> None:
        self.parts = tuple(parts)

    def start(self) -> None:
        for part in self.parts:
            part.start()

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        return merge([part.finish(moved, running=running) for part in self.parts])


def merge(reports: Sequence[WitnessReport]) -> WitnessReport:
    """Pure: one report from several: the first figure each gives, every probe, problem
    and warning, and the strongest level."""
    merged = WitnessReport(None, None, None, None)
    for report in reports:
        merged = replace(
            merged,
            heartbeat_max_gap_ms=_first(merged.heartbeat_max_gap_ms, report.heartbeat_max_gap_ms),
            memory_integrity=_first(merged.memory_integrity, report.memory_integrity),
            network_max_gap_ms=_first(merged.network_max_gap_ms, report.network_max_gap_ms),
            tcp_connection_kept=_first(merged.tcp_connection_kept, report.tcp_connection_kept),
            problems=merged.problems + report.problems,
            probes=merged.probes + report.probes,
            warnings=merged.warnings + report.warnings,
            agent=_first(merged.agent, report.agent),
        )
    levels = [r.level for r in reports if r.level in LEVELS]
    return replace(merged, level=min(levels, key=LEVELS.index) if levels else None)


def _first(kept: _T | None, other: _T | None) -> _T | None:
    return kept if kept is not None else other


def verification(
    report: WitnessReport,
    *,
    running_on_destination: bool,
    absent_on_source: bool,
    problems: Sequence[str],
    require: bool,
    left_off: bool = False,
) -> Verification:
    """Pure: the job's verification from where the VM runs, the host problems found and what
    the witnesses saw. With ``require`` (``--require-verification``), a move proved by
    liveness alone, or a probe that did not answer again, is a problem (the job fails).
    ``left_off``: a VM that was off, moved cold and defined off on the destination (nothing
    runs to witness; its definition and disk copies are what is proved)."""
    level = report.level or LIVENESS_ONLY
    warnings = list(report.warnings)
    if left_off:
        warnings.append(
            "it was off and stays off: proved by its definition and disk copies on the "
            "destination and its absence from the source; nothing ran to prove more"
        )
    elif level == LIVENESS_ONLY:
        warnings.append(
            "verified by liveness only (running on the destination, gone from the source): "
            "declare a probe with `vmferry vm set VM --probe SPEC`"
        )
    found = [*report.problems, *problems]
    if require and level == LIVENESS_ONLY:
        found.append("nothing beyond liveness proves the move (--require-verification)")
    if require and running_on_destination:
        found += [f"probe {p.spec} did not answer after the move (--require-verification)"
                  for p in report.probes if p.baseline and not p.ok]  # fmt: skip
        if report.agent is not None and not report.agent.passed:
            found += [f"{n} (--require-verification)" for n in report.agent.notes]
    return Verification(
        running_on_destination=running_on_destination,
        absent_on_source=absent_on_source,
        heartbeat_max_gap_ms=report.heartbeat_max_gap_ms,
        memory_integrity=report.memory_integrity,
        network_max_gap_ms=report.network_max_gap_ms,
        problems=tuple(found),
        level=level,
        probes=report.probes,
        warnings=tuple(warnings),
        agent=report.agent,
        left_off=left_off,
    )
