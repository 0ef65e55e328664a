"""A VM's workload profile: the summary of its samples (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.model.workload import ProfileSample
from vmferry.predict.model import percentile
from vmferry.predict.rightsize import RightSizing, recommend

__all__ = ["METRICS", "ProfileSample", "ProfileSummary", "Stat", "summarise"]

#: The metrics of one sample, as stored (``metrics`` JSON of a profile sample). Rates are
#: per second over the interval before ``taken_at``; memory figures are the balloon's.
METRICS = (
    "cpu_share",  # share of all the VM's vCPUs in use (0..1)
    "vcpus",
    "memory_bytes",  # the memory the VM has (balloon current)
    "memory_used_bytes",  # available - unused, per the guest's balloon driver
    "memory_unused_bytes",
    "disk_read_bytes_s",
    "disk_write_bytes_s",
    "disk_read_ops_s",
    "disk_write_ops_s",
    "net_rx_bytes_s",
    "net_tx_bytes_s",
    "net_rx_packets_s",
    "net_tx_packets_s",
    "dirty_rate_bytes_s",  # QEMU calc-dirty-rate over the interval (None: not measured)
)


@dataclass(frozen=True)
class Stat:
    mean: float
    p95: float
    max: float


@dataclass(frozen=True)
class ProfileSummary:
    vm: str
    host: str
    samples: int
    first_at: str | None
    last_at: str | None
    stats: dict[str, Stat]  # per metric that had values
    zero_fraction: float | None  # unused / memory, the latest sample with balloon stats
    rightsizing: RightSizing


def _stat(values: Sequence[float]) -> Stat:
    return Stat(mean=sum(values) / len(values), p95=percentile(values, 0.95), max=max(values))


def summarise(
    vm: str, host: str, samples: Sequence[ProfileSample], vcpus: int, memory_bytes: int
) -> ProfileSummary:
    """Mean, p95 and maximum of every metric, the zero-page estimate and the right-sizing."""
    stats: dict[str, Stat] = {}
    for key in METRICS:
        values = [v for s in samples if (v := s.get(key)) is not None]
        if values:
            stats[key] = _stat(values)
    zero = None
    for s in reversed(samples):
        unused, total = s.get("memory_unused_bytes"), s.get("memory_bytes")
        if unused is not None and total:
            zero = max(0.0, min(1.0, unused / total))
            break
    cpu = [v for s in samples if (v := s.get("cpu_share")) is not None]
    used = [round(v) for s in samples if (v := s.get("memory_used_bytes")) is not None]
    return ProfileSummary(
        vm=vm,
        host=host,
        samples=len(samples),
        first_at=samples[0].taken_at if samples else None,
        last_at=samples[-1].taken_at if samples else None,
        stats=stats,
        zero_fraction=zero,
        rightsizing=recommend(vcpus, memory_bytes, cpu, used),
    )
