"""A fleet as the recommender reads it, from what the hosts and the store say (pure).

A host's capacity is libvirt's (logical CPUs, memory); its CPU key its CPU model. A running
VM's demand is its stored profile's p95 (CPU share of its vCPUs times its vCPUs, memory in
use, dirty rate); a VM never profiled counts at its size (all its vCPUs busy, all its memory
in use), which over-states it and is said so. A VM whose CPU is the host's own
(``host-passthrough``) may move only to a host of the same CPU model; the others take the
pre-flight's CPU check when they move. A VM tagged ``anti-affinity:GROUP`` never shares a
host with another VM of that group.
"""

from __future__ import annotations

from collections.abc import Sequence

from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.model import HostInfo, VmRecord
from vmferry.predict.profile import ProfileSummary

__all__ = ["ANTI_AFFINITY_TAG", "anti_affinity_group", "host_load", "vm_load"]

ANTI_AFFINITY_TAG = "anti-affinity:"
UNKNOWN_CPU = "unknown"


def host_load(info: HostInfo, *, in_maintenance: bool = False) -> HostLoad:
    return HostLoad(info.name, info.cpus, info.memory_bytes, info.cpu_model or UNKNOWN_CPU,
                    in_maintenance)  # fmt: skip


def anti_affinity_group(tags: Sequence[str]) -> str | None:
    """The VM's anti-affinity group from its tags (``anti-affinity:GROUP``; of several, the
    first by name), or None."""
    groups = sorted(t.removeprefix(ANTI_AFFINITY_TAG) for t in tags
                    if t.startswith(ANTI_AFFINITY_TAG))  # fmt: skip
    return groups[0] if groups else None


def vm_load(
    record: VmRecord, summary: ProfileSummary | None, host_cpu: str, tags: Sequence[str] = ()
) -> VmLoad:
    """The load of running VM ``record`` (its profile ``summary``, None: never profiled)."""
    spec = record.spec
    cpu, memory, dirty = float(spec.vcpus), spec.memory_bytes, 0.0
    if summary is not None:
        stats = summary.stats
        if "cpu_share" in stats:
            cpu = stats["cpu_share"].p95 * spec.vcpus
        if "memory_used_bytes" in stats:
            memory = min(spec.memory_bytes, int(stats["memory_used_bytes"].p95))
        if "dirty_rate_bytes_s" in stats:
            dirty = stats["dirty_rate_bytes_s"].p95
    return VmLoad(
        name=spec.name,
        host=record.host,
        vcpus=spec.vcpus,
        memory_bytes=spec.memory_bytes,
        cpu_demand=cpu,
        memory_demand_bytes=memory,
        dirty_rate_bytes_s=dirty,
        anti_affinity=anti_affinity_group(tags),
        cpu_key=host_cpu if spec.cpu_mode == "host-passthrough" else None,
    )
