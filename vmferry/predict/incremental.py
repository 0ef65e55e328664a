"""Warm-incremental moves: when their rounds stop, and what one would take (pure).

:func:`precopy_done` is the rule the engine (:mod:`vmferry.engine.incremental`) applies
after each round; :func:`predict_incremental` runs the same rule on modelled rounds: the
first copies the disks' allocated bytes at the link's rate, each next one what the guest
wrote meanwhile (its disk write rate times the round before's seconds: an upper bound, as
a block written twice is copied once), until the rule says stop; then the VM is paused for
the last round. The guest is stopped for that last round and the cutover, then it boots on
the destination.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CUTOVER_MS",
    "MAX_ROUNDS",
    "DiskLoad",
    "IncrementalPrediction",
    "Round",
    "cold_copy_ms",
    "precopy_done",
    "predict_incremental",
]

MAX_ROUNDS = 10
# freezing the guest's filesystems, pausing it, ending the backup, defining and starting it
# on the destination: about what the lab measured around a last round of 1 MiB (427 ms)
CUTOVER_MS = 400


@dataclass(frozen=True)
class Round:
    number: int
    copied_bytes: int
    seconds: float


@dataclass(frozen=True)
class DiskLoad:
    """The disks a move copies: their allocated bytes, and how fast the guest writes to
    them (bytes/s, what libvirt's block statistics or the VM's profile say)."""

    allocated_bytes: int
    write_bytes_s: float


@dataclass(frozen=True)
class IncrementalPrediction:
    rounds: tuple[Round, ...]  # while the VM runs; the first copies the whole disks
    last: Round  # with the VM paused
    why: str  # why the rounds stop there (precopy_done's words)
    stop_ms: int  # the last round and the cutover; the boot comes on top
    total_ms: int

    @property
    def copied_bytes(self) -> int:
        return sum(r.copied_bytes for r in self.rounds) + self.last.copied_bytes


def precopy_done(rounds: Sequence[Round], max_downtime_ms: int,
                 max_rounds: int = MAX_ROUNDS) -> str | None:  # fmt: skip
    """Why the rounds while the VM runs may stop now, or None for another one.

    Stop when the last round copied nothing, or copied so little that a round like it fits
    within ``max_downtime_ms``, or did not shrink the work by a quarter against the round
    before (the guest writes as fast as the copy goes: more rounds gain nothing), or after
    ``max_rounds``. The first round (the whole disks) is never the last."""
    if len(rounds) < 2:
        return None
    last, before = rounds[-1], rounds[-2]
    if last.copied_bytes == 0:
        return f"round {last.number} found nothing changed"
    if last.seconds * 1000 <= max_downtime_ms:
        return (f"round {last.number} copied {_mib(last.copied_bytes)} in {last.seconds:.2f} s, "
                f"within --max-downtime-ms {max_downtime_ms}")  # fmt: skip
    if last.copied_bytes > 0.75 * before.copied_bytes:
        return (f"round {last.number} copied {_mib(last.copied_bytes)}, not a quarter less than "
                f"round {before.number}'s {_mib(before.copied_bytes)}: the guest writes as "
                "fast as the copy goes")  # fmt: skip
    if len(rounds) >= max_rounds:
        return f"{max_rounds} rounds"
    return None


def predict_incremental(load: DiskLoad, copy_bytes_s: float,
                        max_downtime_ms: int) -> IncrementalPrediction:  # fmt: skip
    """The rounds a warm-incremental move of ``load`` would run at ``copy_bytes_s``, the
    last one paused, and the stop."""
    if copy_bytes_s <= 0:
        raise ValueError("the copy rate must be positive")
    rounds: list[Round] = []
    size = max(0, load.allocated_bytes)
    while True:
        rounds.append(Round(len(rounds), size, size / copy_bytes_s))
        why = precopy_done(rounds, max_downtime_ms)
        if why is not None:
            break
        size = _written(load, rounds[-1].seconds)
    final = _written(load, rounds[-1].seconds)
    last = Round(len(rounds), final, final / copy_bytes_s)
    stop_ms = round(last.seconds * 1000) + CUTOVER_MS
    running_ms = round(sum(r.seconds for r in rounds) * 1000)
    return IncrementalPrediction(tuple(rounds), last, why, stop_ms, running_ms + stop_ms)


def cold_copy_ms(load: DiskLoad, copy_bytes_s: float) -> int:
    """A cold move's stop before the boot: the whole allocated disks copied."""
    return round(max(0, load.allocated_bytes) / copy_bytes_s * 1000) + CUTOVER_MS


def _written(load: DiskLoad, seconds: float) -> int:
    """What the guest writes in ``seconds``, at most the disks' allocation."""
    return min(max(0, load.allocated_bytes), round(max(0.0, load.write_bytes_s) * seconds))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
