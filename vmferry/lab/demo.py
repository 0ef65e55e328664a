"""`vmferry demo`: the lab, a guest with a memory workload, and what vmferry sees of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmferry.engine.live import ProgressFn
from vmferry.lab import guests, lifecycle
from vmferry.lab.guests import get_guest
from vmferry.lab.observe import GuestObservation, observe_guest
from vmferry.lab.state import GuestRecord, load_state
from vmferry.model import Severity, VmRecord
from vmferry.model.migration import MigrationOptions, MigrationResult, Strategy
from vmferry.service.check import CheckReport
from vmferry.service.hosts import inventory
from vmferry.service.migrate import migrate

DEMO_GUEST = "demo-vm"


def _quiet_progress(*_args: object) -> None:
    return None


Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoReport:
    lab: lifecycle.LabStatus
    guest: GuestRecord
    observation: GuestObservation
    check: CheckReport
    migration: MigrationResult
    inventory: tuple[VmRecord, ...]


def run_demo(
    progress: Progress,
    *,
    watch_s: float = 10.0,
    dirty_mb_s: int = 12,
    on_progress: ProgressFn = _quiet_progress,
) -> DemoReport:
    """Bring the lab up if needed, start (or reuse) the demo guest, watch it, read inventory."""
    state = load_state()
    if state is None or not lifecycle.is_running(state):
        progress("starting the lab (2 hosts, 400 Mbit/s migration link)")
        state = lifecycle.up(2, 400, progress=progress)
    else:
        progress("reusing the lab that is up")
    guest = state.guests.get(DEMO_GUEST)
    if guest is None:
        progress(f"creating {DEMO_GUEST}: 512 MiB, 128 MiB working set rewritten at "
                 f"{dirty_mb_s} MiB/s")  # fmt: skip
        guest = guests.create_guest(DEMO_GUEST, "kvm1", memory_mb=512, working_set_mb=128,
                                    dirty_mb_s=dirty_mb_s, progress=progress)  # fmt: skip
    progress(f"watching {DEMO_GUEST} for {watch_s:g} s (console on the host clock, echo probe)")
    observation = observe_guest(guest, watch_s)
    target = "kvm2" if guest.host == "kvm1" else "kvm1"
    progress(f"moving {DEMO_GUEST} live from {guest.host} to {target}")
    outcome = migrate(DEMO_GUEST, target, MigrationOptions(), on_progress=on_progress,
                      note=progress)  # fmt: skip
    blockers = {f.id for f in outcome.check.findings if f.severity is Severity.BLOCKER}
    if outcome.check.blocked and blockers == {"migration.tcg-lost-writes"}:
        progress("this lab's QEMU cannot move a TCG guest live without losing its writes; "
                 f"moving {DEMO_GUEST} warm instead (saved, moved, restored)")  # fmt: skip
        outcome = migrate(DEMO_GUEST, target, MigrationOptions(strategy=Strategy.WARM),
                          on_progress=on_progress, note=progress)  # fmt: skip
    progress("reading the inventory of every host")
    return DemoReport(lifecycle.status(), get_guest(DEMO_GUEST), observation, outcome.check,
                      outcome.result, tuple(inventory()))  # fmt: skip
