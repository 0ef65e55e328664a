"""`vmferry demo`: the lab, a guest with a memory workload, and what vmferry sees of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmferry.lab import guests, lifecycle
from vmferry.lab.observe import GuestObservation, observe_guest
from vmferry.lab.state import GuestRecord, load_state
from vmferry.model import VmRecord
from vmferry.service.hosts import inventory

DEMO_GUEST = "demo-vm"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoReport:
    lab: lifecycle.LabStatus
    guest: GuestRecord
    observation: GuestObservation
    inventory: tuple[VmRecord, ...]


def run_demo(progress: Progress, *, watch_s: float = 10.0, dirty_mb_s: int = 12) -> DemoReport:
    """Bring the lab up if needed, start (or reuse) the demo guest, watch it, read inventory."""
    state = load_state()
    if state is None or not lifecycle.is_running(state):
        progress("starting the lab (2 hosts, 400 Mbit/s migration link)")
        state = lifecycle.up(2, 400, progress=progress)
    else:
        progress("reusing the lab that is up")
    guest = state.guests.get(DEMO_GUEST)
    if guest is None:
        progress(f"creating {DEMO_GUEST}: 512 MiB, 256 MiB working set rewritten at "
                 f"{dirty_mb_s} MiB/s")  # fmt: skip
        guest = guests.create_guest(DEMO_GUEST, "kvm1", memory_mb=512, working_set_mb=256,
                                    dirty_mb_s=dirty_mb_s, progress=progress)  # fmt: skip
    progress(f"watching {DEMO_GUEST} for {watch_s:g} s (console on the host clock, echo probe)")
    observation = observe_guest(guest, watch_s)
    progress("reading the inventory of every host")
    return DemoReport(lifecycle.status(), guest, observation, tuple(inventory()))
