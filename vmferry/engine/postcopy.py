"""A post-copy move whose stream stalls or breaks off: what vmferry says, and does not do
(pure).

From the switch to post-copy the destination runs the guest, and each page still on the
source is fetched when the guest touches it. Neither copy is whole until the move ends, so
vmferry never aborts it (:func:`vmferry.engine.live._abort`) and never destroys either copy.

- **A stall** (no data moved for ``stall_timeout_s``): the guest waits on the destination
  for the pages it touches. TCP keeps resending what was lost, so a link that comes back in
  time lets the move go on by itself (measured: 12, 15 and 20 s cuts of the lab's migration
  link, the move completed and the guest's memory checked clean). :class:`StallWatch` turns the
  samples into an event when a stall begins and when data moves again, and keeps the
  longest, which the move's result reports as a warning.
- **A break** (the migrate call fails after the switch): the VM is split between the two
  hosts (libvirt shows the source's copy paused and the destination's "running (post-copy
  failed)", its vCPUs waiting for pages that cannot come). :func:`split_reason` says so,
  and what recovers it: libvirt's post-copy resume, unless the destination's libvirt is one
  that crashes on it (:data:`vmferry.assess.stream_features.POSTCOPY_RESUME_CRASHES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.assess.stream_features import POSTCOPY_RESUME_CRASHES
from vmferry.engine.convergence import seconds_without_progress
from vmferry.model.migration import ProgressSample

__all__ = ["StallWatch", "split_reason", "stall_warning"]

MIB = 2**20


@dataclass
class StallWatch:
    """Stalls of a post-copy stream, from the samples taken after the switch."""

    source: str
    destination: str
    stall_timeout_s: float
    stalled_since_ms: int | None = None  # the sample after which no data moved
    longest_s: float = 0.0

    def observe(self, samples: Sequence[ProgressSample]) -> tuple[str, float] | None:
        """What to record now, with the stall's seconds so far: a stall that began, or one
        that ended (None: neither)."""
        now = samples[-1]
        idle_s = seconds_without_progress(samples)
        if self.stalled_since_ms is None:
            if idle_s < self.stall_timeout_s:
                return None
            self.stalled_since_ms = now.elapsed_ms - round(idle_s * 1000)
            return (f"post-copy stream stalled: no data moved for {idle_s:.0f} s; the guest "
                    f"waits on {self.destination} for the pages it touches of the "
                    f"{now.memory_remaining_bytes / MIB:.0f} MiB still on {self.source}. A "
                    "post-copy move cannot be aborted: vmferry waits for the link, as TCP "
                    "does", idle_s)  # fmt: skip
        if idle_s > 0:
            return None
        lasted_s = (now.elapsed_ms - self.stalled_since_ms) / 1000
        self.longest_s = max(self.longest_s, lasted_s)
        self.stalled_since_ms = None
        return f"post-copy stream moving again after {lasted_s:.0f} s", lasted_s

    def ongoing_s(self, samples: Sequence[ProgressSample]) -> float:
        """How long the stall still going on at the last sample has lasted (0: none)."""
        if self.stalled_since_ms is None or not samples:
            return 0.0
        return (samples[-1].elapsed_ms - self.stalled_since_ms) / 1000


def stall_warning(watch: StallWatch, samples: Sequence[ProgressSample]) -> str | None:
    """The move's warning for its longest stall, or None when the stream never stalled."""
    longest = max(watch.longest_s, watch.ongoing_s(samples))
    if longest <= 0:
        return None
    return (f"the post-copy stream stalled for up to {longest:.0f} s: the guest waited on "
            f"{watch.destination} that long for memory still on {watch.source}")  # fmt: skip


def split_reason(vm: str, source: str, destination: str, error: str | None,
                 destination_libvirt: str | None, resume_crashes: bool | None) -> str:  # fmt: skip
    """Why a move that broke off in post-copy failed, and what recovers it (``resume_crashes``
    None: whether the destination's libvirt crashes on the resume is not known)."""
    said = f" ({error})" if error else ""
    text = (f"post-copy broke off{said}: {vm}'s memory is split between {source} and "
            f"{destination}, which each hold part of it; neither copy can run alone, so "
            "vmferry destroys neither")  # fmt: skip
    if resume_crashes:
        return (f"{text}. libvirt's post-copy resume would finish the move, but libvirt "
                f"{destination_libvirt} on {destination} crashes on it (its daemon, not the "
                "guests): the move can be resumed only with another libvirt there")  # fmt: skip
    where = ""
    if resume_crashes is None:
        crashing = ", ".join(sorted(POSTCOPY_RESUME_CRASHES))
        where = f" where {destination}'s libvirt does not crash on it (libvirt {crashing} does)"
    return (f"{text}. Once the migration link works, libvirt's post-copy resume finishes "
            f"the move{where} (`virsh migrate --postcopy --postcopy-resume` on {source}, with "
            "the move's options)")  # fmt: skip
