"""Right-sizing from a workload profile: p95 of CPU and memory in use, with headroom (pure).

vCPUs: enough for the p95 CPU use (in vCPUs) plus ``cpu_headroom``, rounded up, at least
one. Memory: the p95 of memory in use (the balloon's view: what the guest does not report
as unused) plus ``memory_headroom``, rounded up to 256 MiB, at least 256 MiB. A VM is
``oversized`` when both would shrink by at least half of what it has (or the vCPUs by at
least 2 and the memory by a quarter), and ``overutilised`` when its p95 CPU is above
``hot_share`` of its vCPUs or its p95 memory in use above ``hot_share`` of its memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.predict.model import percentile

MIB = 2**20
MEMORY_STEP = 256 * MIB


@dataclass(frozen=True)
class RightSizing:
    vcpus: int
    memory_bytes: int
    recommended_vcpus: int
    recommended_memory_bytes: int
    cpu_p95: float  # share of the VM's vCPUs in use at the 95th percentile (0..1)
    memory_used_p95_bytes: int | None
    oversized: bool
    overutilised: bool
    reason: str


def recommend(
    vcpus: int,
    memory_bytes: int,
    cpu_shares: Sequence[float],
    memory_used: Sequence[int],
    *,
    cpu_headroom: float = 0.25,
    memory_headroom: float = 0.20,
    hot_share: float = 0.85,
) -> RightSizing:
    """``cpu_shares``: per-sample CPU use as a share of all the VM's vCPUs (0..1);
    ``memory_used``: per-sample memory in use in bytes (may be empty: no balloon stats)."""
    vcpus = max(1, vcpus)
    cpu95 = percentile(cpu_shares, 0.95) if cpu_shares else 0.0
    used_vcpus = cpu95 * vcpus
    rec_vcpus = max(1, math.ceil(used_vcpus * (1 + cpu_headroom) - 1e-9))
    mem95: int | None = None
    rec_mem = memory_bytes
    if memory_used:
        mem95 = round(percentile([float(m) for m in memory_used], 0.95))
        want = mem95 * (1 + memory_headroom)
        rec_mem = max(MEMORY_STEP, math.ceil(want / MEMORY_STEP) * MEMORY_STEP)
    hot_cpu = cpu95 > hot_share
    hot_mem = mem95 is not None and mem95 > hot_share * memory_bytes
    overutilised = hot_cpu or hot_mem
    if overutilised:  # never recommend shrinking a hot resource
        rec_vcpus = max(rec_vcpus, vcpus + 1 if hot_cpu else vcpus)
        if hot_mem:
            rec_mem = max(rec_mem, memory_bytes + MEMORY_STEP)
    cpu_small = rec_vcpus <= vcpus / 2 or rec_vcpus <= vcpus - 2
    mem_small = mem95 is not None and (
        rec_mem <= memory_bytes / 2 or rec_mem <= 0.75 * memory_bytes
    )
    oversized = not overutilised and cpu_small and (mem_small or mem95 is None)
    facts = f"p95 CPU {cpu95:.0%} of {vcpus} vCPU{'s' if vcpus != 1 else ''}"
    if mem95 is not None:
        facts += f", p95 memory in use {mem95 / MIB:.0f} of {memory_bytes / MIB:.0f} MiB"
    if overutilised:
        hot = " and ".join(n for n, h in (("CPU", hot_cpu), ("memory", hot_mem)) if h)
        verdict = f"overutilised ({hot} above {hot_share:.0%})"
    elif oversized:
        verdict = "oversized"
    else:
        verdict = "sized about right"
    reason = f"{facts}: {verdict}; recommend {rec_vcpus} vCPUs and {rec_mem / MIB:.0f} MiB"
    return RightSizing(
        vcpus=vcpus,
        memory_bytes=memory_bytes,
        recommended_vcpus=rec_vcpus,
        recommended_memory_bytes=rec_mem,
        cpu_p95=cpu95,
        memory_used_p95_bytes=mem95,
        oversized=oversized,
        overutilised=overutilised,
        reason=reason,
    )
