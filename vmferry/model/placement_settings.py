"""A source VM's placement and performance settings: where its vCPUs and memory may live and
how much of the host it is guaranteed, capped at or weighted for (docs/import.md,
"Placement and performance settings").

VMX files, OVF descriptors and vCenter all spell them differently; each parser records a
setting only when it differs from the source's default (affinity "all", no reservation, no
limit, normal shares, normal latency sensitivity, no hot-add), as a :class:`SourceSetting`
that keeps the source's own key and value so a finding can name them. The import either
maps each recorded setting to libvirt or reports it (``imports/placement_settings.py``):
none is dropped in silence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlacementSettings", "SourceSetting"]


@dataclass(frozen=True)
class SourceSetting:
    """One setting as the source wrote it: ``key`` in its own spelling
    (``sched.cpu.affinity``, ``config.cpuAffinity``) and ``value`` as text (``0,1``)."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"


@dataclass(frozen=True)
class PlacementSettings:
    """The non-default placement and performance settings of a source VM; ``None`` is the
    source's default. CPU amounts are in MHz and memory amounts in MB, as VMware has them."""

    cpu_affinity: SourceSetting | None = None  # host CPUs the vCPUs may run on
    numa_node_affinity: SourceSetting | None = None  # host NUMA nodes
    numa_vcpus_per_node: SourceSetting | None = None  # the guest's virtual NUMA nodes
    cpu_reservation: SourceSetting | None = None
    cpu_limit: SourceSetting | None = None
    cpu_shares: SourceSetting | None = None
    memory_reservation: SourceSetting | None = None
    memory_limit: SourceSetting | None = None
    memory_shares: SourceSetting | None = None
    memory_pinned: SourceSetting | None = None  # all memory reserved and never swapped
    latency_sensitivity: SourceSetting | None = None
    cpu_hot_add: SourceSetting | None = None
    memory_hot_add: SourceSetting | None = None
