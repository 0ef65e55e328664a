"""What becomes of a source VM's placement and performance settings on KVM (pure).

One rule for VMX, OVF and vCenter alike: every setting the source recorded
(:class:`PlacementSettings`, non-defaults only) is either mapped to libvirt or reported,
one finding per setting naming the source's key and value. Only a fully locked memory
(``sched.mem.pin``, ``memoryReservationLockedToMax``) has a faithful libvirt equivalent,
``<memoryBacking><locked/>`` (:func:`locks_memory`); it is reported too, as an info,
because libvirt advises a hard limit beside it. The rest does not carry over as is:

- host CPU and NUMA node numbers are the ESXi host's and mean nothing on the KVM host;
- reservations, limits and shares weigh the VM against the other VMs of one ESXi host, in
  MHz and MB; their KVM counterparts (cgroup weights and quotas) depend on the destination's
  CPUs and on its other VMs, which the source cannot know;
- hot-add: libvirt fixes the maximum vCPUs (``<vcpu current=...>``) and memory
  (``<maxMemory slots=...>``, which also needs guest NUMA cells) when the VM is defined, and
  VMware records no maximum to take them from; inventing one would change the hardware the
  guest sees (offline CPUs, a NUMA node), so the VM keeps exactly its current size.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.model.finding import Finding, Severity
from vmferry.model.placement_settings import PlacementSettings, SourceSetting

__all__ = ["PLACEMENT_RULES", "locks_memory", "placement_findings"]

W, INFO = Severity.WARNING, Severity.INFO


@dataclass(frozen=True)
class _Rule:
    """The finding for one :class:`PlacementSettings` field: its id's tail, its severity,
    why it does not carry over (or how it does) and what the user can do."""

    field: str
    id: str
    severity: Severity
    outcome: str
    remediation: str


#: One rule per :class:`PlacementSettings` field, in the field's order.
PLACEMENT_RULES = (
    _Rule("cpu_affinity", "cpu_affinity", W,
          "is not carried over: the ESXi host's CPU numbers mean nothing on the KVM host",
          "Pin the vCPUs on the destination if needed: virsh vcpupin NAME VCPU HOSTCPUS "
          "--config."),
    _Rule("numa_node_affinity", "numa_affinity", W,
          "is not carried over: the ESXi host's NUMA node numbers mean nothing on the KVM host",
          "Bind the memory to a node on the destination if needed: virsh numatune NAME "
          "--nodeset NODES --config."),
    _Rule("numa_vcpus_per_node", "numa_vcpus_per_node", INFO,
          "is not carried over: the guest's virtual NUMA layout is not recreated, the VM "
          "gets one NUMA node",
          "Add <numa> cells under <cpu> in the domain XML if the guest's workload relies "
          "on them."),
    _Rule("cpu_reservation", "cpu_reservation", INFO,
          "is not carried over: KVM reserves no CPU time for a VM",
          "Leave CPU headroom on the destination host, or pin the vCPUs to host CPUs no "
          "other VM uses."),
    _Rule("cpu_limit", "cpu_limit", W,
          "is not carried over: the VM is no longer capped and may use all its vCPUs",
          "Cap it on the destination if needed: virsh schedinfo NAME --config "
          "vcpu_period=100000 vcpu_quota=Q (Q/100000 of one host CPU per vCPU)."),
    _Rule("cpu_shares", "cpu_shares", INFO,
          "is not carried over: shares weigh the VM against the other VMs of its ESXi host",
          "Set a weight against the destination's other VMs if needed: virsh schedinfo "
          "NAME --config cpu_shares=N."),
    _Rule("memory_reservation", "memory_reservation", INFO,
          "is not carried over: KVM reserves no memory for a VM short of locking all of it",
          "Keep that much memory free on the destination host, or lock the VM's memory "
          "(<memoryBacking><locked/>) for a full reservation."),
    _Rule("memory_limit", "memory_limit", W,
          "is not carried over: the guest may use all its memory on KVM",
          "Limit it on the destination if needed: virsh memtune NAME --soft-limit KIB "
          "--config."),
    _Rule("memory_shares", "memory_shares", INFO,
          "is not carried over: KVM has no memory shares",
          "Do not overcommit memory on the destination host."),
    _Rule("memory_pinned", "memory_locked", INFO,
          "is carried over: the VM's memory is locked in host RAM (<memoryBacking><locked/>)",
          "libvirt advises a hard limit with locked memory: virsh memtune NAME "
          "--hard-limit KIB --config, above the VM's memory plus QEMU's overhead."),
    _Rule("latency_sensitivity", "latency_sensitivity", W,
          "is not carried over: libvirt has no single equivalent (ESXi gives such a VM "
          "host CPUs of its own and reserves its memory)",
          "For a latency-sensitive guest, pin each vCPU to its own isolated host CPU "
          "(virsh vcpupin) and lock its memory."),
    _Rule("cpu_hot_add", "cpu_hot_add", INFO,
          "is not carried over: the VM is defined with its current vCPUs as its maximum",
          "Raise the maximum while the VM is off to hot-add later: virsh setvcpus NAME "
          "MAX --maximum --config."),
    _Rule("memory_hot_add", "memory_hot_add", INFO,
          "is not carried over: the VM is defined with its current memory as its maximum",
          "To hot-add memory, add <maxMemory slots='N'> and a <numa> cell under <cpu> to "
          "the domain XML, then attach DIMMs with virsh attach-device."),
)  # fmt: skip


def placement_findings(placement: PlacementSettings) -> list[Finding]:
    """One finding per recorded setting, in :data:`PLACEMENT_RULES`' order, its message
    naming the setting (``sched.cpu.affinity = 0,1 is not carried over: ...``); none for a
    VM whose settings are all the source's defaults."""
    out: list[Finding] = []
    for rule in PLACEMENT_RULES:
        setting: SourceSetting | None = getattr(placement, rule.field)
        if setting is not None:
            out.append(Finding(f"import.placement.{rule.id}", rule.severity,
                               f"{setting} {rule.outcome}", rule.remediation))  # fmt: skip
    return out


def locks_memory(placement: PlacementSettings) -> bool:
    """Whether the domain gets ``<memoryBacking><locked/>``: the source locked all of the
    VM's memory in host RAM."""
    return placement.memory_pinned is not None
