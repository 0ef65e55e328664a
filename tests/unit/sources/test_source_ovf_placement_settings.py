"""An OVF's placement and performance settings: rasd Reservation/Limit/Weight of its CPU and
memory items, vmw:Config (vSphere API names) and vmw:ExtraConfig (VMX keys)."""

from __future__ import annotations

from pathlib import Path

from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.sources.ovf import parse_ovf

CPU_ITEM = '<vmw:CoresPerSocket ovf:required="false">4</vmw:CoresPerSocket>'
MEMORY_ITEM = "<rasd:VirtualQuantity>6144</rasd:VirtualQuantity>"
EXTRA_CONFIG = '<vmw:ExtraConfig ovf:required="false" vmw:key="svga.autodetect" vmw:value="TRUE"/>'


def vmware_ovf(import_data: Path, cpu: str = "", memory: str = "", config: str = "") -> bytes:
    """tests/data/import/ovf/vmware-ovf1.ovf (4 vCPUs, 6144 MB, ExtraConfig
    sched.cpu.latencySensitivity = high) with elements added after the CPU's and memory's
    quantities and after its first vmw:ExtraConfig."""
    text = (import_data / "ovf" / "vmware-ovf1.ovf").read_text()
    for anchor, added in ((CPU_ITEM, cpu), (MEMORY_ITEM, memory), (EXTRA_CONFIG, config)):
        assert text.count(anchor) == 1
        text = text.replace(anchor, anchor + added)
    return text.encode()


def test_allocations_config_and_extra_config_are_read(import_data: Path) -> None:
    desc = parse_ovf(vmware_ovf(
        import_data,
        cpu="<rasd:Reservation>1500</rasd:Reservation><rasd:Limit>3000</rasd:Limit>"
            "<rasd:Weight>8000</rasd:Weight>",
        memory="<rasd:Reservation>2048</rasd:Reservation><rasd:Limit>4096</rasd:Limit>"
               "<rasd:Weight>30720</rasd:Weight>",
        config='<vmw:Config ovf:required="false" vmw:key="memoryHotAddEnabled" vmw:value="true"/>'
               '<vmw:ExtraConfig ovf:required="false" vmw:key="numa.nodeAffinity" vmw:value="0"/>'
               '<vmw:ExtraConfig ovf:required="false" vmw:key="sched.cpu.affinity"'
               ' vmw:value="2,3"/>',
    ))  # fmt: skip
    assert desc.placement == PlacementSettings(
        cpu_affinity=SourceSetting("sched.cpu.affinity", "2,3"),
        numa_node_affinity=SourceSetting("numa.nodeAffinity", "0"),
        cpu_reservation=SourceSetting("rasd:Reservation of the CPU item", "1500"),
        cpu_limit=SourceSetting("rasd:Limit of the CPU item", "3000"),
        cpu_shares=SourceSetting("rasd:Weight of the CPU item", "8000"),
        memory_reservation=SourceSetting("rasd:Reservation of the memory item", "2048"),
        memory_limit=SourceSetting("rasd:Limit of the memory item", "4096"),
        memory_shares=SourceSetting("rasd:Weight of the memory item", "30720"),
        latency_sensitivity=SourceSetting("sched.cpu.latencySensitivity", "high"),
        memory_hot_add=SourceSetting("memoryHotAddEnabled", "true"),
    )
    assert not [w for w in desc.warnings if "memoryHotAddEnabled" in w or "numa." in w]


def test_vmware_defaults_give_no_setting(import_data: Path) -> None:
    """No reservation, unlimited (or limited to all the memory), normal weights (1000 per
    vCPU, 10 per MB), hot-add off: only the sample's own latency sensitivity remains."""
    desc = parse_ovf(vmware_ovf(
        import_data,
        cpu="<rasd:Reservation>0</rasd:Reservation><rasd:Limit>-1</rasd:Limit>"
            "<rasd:Weight>4000</rasd:Weight>",
        memory="<rasd:Reservation>0</rasd:Reservation><rasd:Limit>6144</rasd:Limit>"
               "<rasd:Weight>61440</rasd:Weight>",
        config='<vmw:Config ovf:required="false" vmw:key="cpuHotAddEnabled" vmw:value="false"/>'
               '<vmw:Config ovf:required="false" vmw:key="latencySensitivity.level"'
               ' vmw:value="normal"/>',
    ))  # fmt: skip
    assert desc.placement == PlacementSettings(
        latency_sensitivity=SourceSetting("sched.cpu.latencySensitivity", "high")
    )


def test_locked_memory_carries_its_reservation(import_data: Path) -> None:
    desc = parse_ovf(vmware_ovf(
        import_data,
        memory="<rasd:Reservation>6144</rasd:Reservation>",
        config='<vmw:Config ovf:required="false" vmw:key="memoryReservationLockedToMax"'
               ' vmw:value="true"/>',
    ))  # fmt: skip
    assert desc.placement == PlacementSettings(
        memory_pinned=SourceSetting("memoryReservationLockedToMax", "true"),
        latency_sensitivity=SourceSetting("sched.cpu.latencySensitivity", "high"),
    )
