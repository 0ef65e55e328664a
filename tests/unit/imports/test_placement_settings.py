"""Placement and performance settings of a VMX through the whole pure import: each one maps
to libvirt or is a finding naming its key and value, never dropped; defaults give nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest

from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.findings import evaluate
from vmferry.imports.mapping import ImportOptions, plan_import
from vmferry.imports.placement_settings import PLACEMENT_RULES, placement_findings
from vmferry.model.finding import Finding, Severity
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.source_vm import ImageFormat, SourceVm
from vmferry.sources.image import ImageFacts
from vmferry.sources.placement_keys import VMX_KEYS
from vmferry.sources.vmx import build_vm, parse_vmx_text

W, INFO = Severity.WARNING, Severity.INFO
BASE_VMX = (
    'memsize = "4096"\nnumvcpus = "4"\nguestOS = "debian12-64"\n'
    'scsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'
    'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "disk.vmdk"\n'
    'uuid.bios = "56 4d 9c 2b 5e 4f 0e 8b-1f 1d 3b 7e 8a 9e 2f 01"\n'
)
DEST = DestinationFacts(
    host="kvm1",
    networks=frozenset({"vmnet"}),
    pools={"default": PoolFacts("default", "/var/lib/libvirt/images", 2**40, reachable=True)},
    domain_names=frozenset(),
)

# (VMX line, finding id, severity, the setting as the message names it)
CASES = [
    ('sched.cpu.affinity = "0,1"', "cpu_affinity", W, "sched.cpu.affinity = 0,1"),
    ('numa.nodeAffinity = "1"', "numa_affinity", W, "numa.nodeAffinity = 1"),
    ('numa.vcpu.maxPerVirtualNode = "2"', "numa_vcpus_per_node", INFO,
     "numa.vcpu.maxPerVirtualNode = 2"),
    ('sched.cpu.min = "1500"', "cpu_reservation", INFO, "sched.cpu.min = 1500"),
    ('sched.cpu.max = "3000"', "cpu_limit", W, "sched.cpu.max = 3000"),
    ('sched.cpu.shares = "high"', "cpu_shares", INFO, "sched.cpu.shares = high"),
    ('sched.mem.min = "2048"', "memory_reservation", INFO, "sched.mem.min = 2048"),
    ('sched.mem.minSize = "1024"', "memory_reservation", INFO, "sched.mem.minSize = 1024"),
    ('sched.mem.max = "1024"', "memory_limit", W, "sched.mem.max = 1024"),
    ('sched.mem.shares = "40960"', "memory_shares", INFO, "sched.mem.shares = 40960"),
    ('sched.mem.pin = "TRUE"', "memory_locked", INFO, "sched.mem.pin = TRUE"),
    ('sched.cpu.latencySensitivity = "high"', "latency_sensitivity", W,
     "sched.cpu.latencySensitivity = high"),
    ('vcpu.hotadd = "TRUE"', "cpu_hot_add", INFO, "vcpu.hotadd = TRUE"),
    ('mem.hotadd = "TRUE"', "memory_hot_add", INFO, "mem.hotadd = TRUE"),
]  # fmt: skip
DEFAULTS = (
    'sched.cpu.affinity = "all"\nnuma.nodeAffinity = ""\nsched.cpu.min = "0"\n'
    'sched.cpu.max = "-1"\nsched.cpu.shares = "normal"\nsched.mem.min = "0"\n'
    'sched.mem.minSize = "0"\nsched.mem.max = "-1"\nsched.mem.shares = "normal"\n'
    'sched.mem.pin = "FALSE"\nsched.cpu.latencySensitivity = "normal"\n'
    'vcpu.hotadd = "FALSE"\nmem.hotadd = "FALSE"\nsched.cpu.units = "mhz"\n'
)


def vmx_vm(extra: str) -> SourceVm:
    def disk(name: str) -> ImageFacts:
        path = Path("/vm") / name
        return ImageFacts(path, ImageFormat.VMDK, 2**30, 4096, (path,), "monolithicSparse")

    vmx = parse_vmx_text(BASE_VMX + extra)
    return build_vm(vmx, default_name="t", resolve_disk=disk, resolve_media=lambda _n: None)


def imported(vm: SourceVm) -> tuple[list[Finding], str]:
    """The import's findings and domain XML for ``vm`` onto DEST."""
    plan = plan_import(vm, ImportOptions(network_map={"*": "vmnet"}), DEST)
    return evaluate(vm, plan, DEST), render_domain_xml(plan)


def placement_ones(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.id.startswith("import.placement.")]


@pytest.mark.parametrize(("line", "tail", "severity", "named"), CASES,
                         ids=[c[1] + ":" + c[0].split()[0] for c in CASES])  # fmt: skip
def test_each_vmx_setting_is_mapped_or_a_finding_naming_it(
    line: str, tail: str, severity: Severity, named: str
) -> None:
    findings, xml = imported(vmx_vm(line + "\n"))
    [found] = placement_ones(findings)
    assert (found.id, found.severity) == (f"import.placement.{tail}", severity)
    assert found.message.startswith(f"{named} is ")
    assert found.remediation
    key = line.split()[0].lower()
    assert not [f for f in findings if f.id == "import.source.unmapped" and key in f.message]
    locked = SafeET.fromstring(xml).find("memoryBacking/locked") is not None
    assert locked is (tail == "memory_locked")


def test_the_cpu_affinity_finding_says_what_to_do_on_kvm() -> None:
    [found] = placement_ones(imported(vmx_vm('sched.cpu.affinity = "0,1"\n'))[0])
    assert found.message.startswith("sched.cpu.affinity = 0,1 is not carried over: the ESXi")
    assert "virsh vcpupin" in found.remediation


def test_defaults_give_no_finding_and_no_warning() -> None:
    plain_findings, plain_xml = imported(vmx_vm(""))
    findings, xml = imported(vmx_vm(DEFAULTS))
    assert placement_ones(findings) == []
    assert findings == plain_findings and xml == plain_xml
    assert vmx_vm(DEFAULTS).warnings == ()


def test_settings_that_add_nothing_give_no_finding() -> None:
    """A memory limit at the VM's memory limits nothing; a locked memory carries its full
    reservation (ESXi writes sched.mem.min and minSize = memsize beside sched.mem.pin)."""
    assert placement_ones(imported(vmx_vm('sched.mem.max = "4096"\n'))[0]) == []
    pinned = 'sched.mem.pin = "TRUE"\nsched.mem.min = "4096"\nsched.mem.minSize = "4096"\n'
    assert [f.id for f in placement_ones(imported(vmx_vm(pinned))[0])] == [
        "import.placement.memory_locked"
    ]


def test_other_sched_keys_are_still_reported_as_unmapped() -> None:
    findings, _xml = imported(vmx_vm('sched.cpu.htsharing = "none"\n'))
    assert [f.message for f in findings if f.id == "import.source.unmapped"] == [
        "VMX key sched.cpu.htsharing = 'none' is not imported"
    ]


def test_every_setting_has_a_rule_and_every_vmx_key_a_case() -> None:
    fields = [f.name for f in dataclasses.fields(PlacementSettings)]
    assert [rule.field for rule in PLACEMENT_RULES] == fields
    assert {line.split()[0].lower() for line, *_ in CASES} == set(VMX_KEYS)
    assert {name for _shown, name, _default in VMX_KEYS.values()} == set(fields)


def test_all_settings_at_once_give_one_finding_each_in_rule_order() -> None:
    everything = PlacementSettings(**{f.name: SourceSetting(f.name, "x")
                              for f in dataclasses.fields(PlacementSettings)})  # fmt: skip
    found = placement_findings(everything)
    assert [f.id for f in found] == [f"import.placement.{rule.id}" for rule in PLACEMENT_RULES]
    assert [f.message.split(" is ")[0] for f in found] == [
        f"{rule.field} = x" for rule in PLACEMENT_RULES
    ]
