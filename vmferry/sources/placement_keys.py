"""VMware's placement and performance keys -> :class:`PlacementSettings` (pure).

Two spellings reach vmferry in files: VMX keys (a ``.vmx``, and an OVF's
``vmw:ExtraConfig``, which holds VMX keys) and vSphere API names (an OVF's ``vmw:Config``).
Each table maps a key, lowercase as the parsers keep them, to the spelling shown in
findings, the :class:`PlacementSettings` field it fills and the test for the source's default, which
is recorded as nothing. A key read here is "used" for the caller's unmapped-key warnings
whatever its value, so a default value is neither a finding nor a warning.

VMX spellings are from VMware's documentation and KB articles (the resource-allocation and
latency-sensitivity settings of the vSphere Resource Management guide). ``sched.mem.minSize``
is taken as the memory reservation when ``sched.mem.min`` is absent: ESXi writes both with the
same value in the exports seen, but its exact meaning is not documented publicly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.sources.refusal import printable

__all__ = ["OVF_CONFIG_KEYS", "VMX_KEYS", "merge", "read_placement", "settle"]

IsDefault = Callable[[str], bool]


def _any_of(*values: str) -> IsDefault:
    return lambda value: value.strip().lower() in values


def _not_true(value: str) -> bool:
    return value.strip().lower() not in ("true", "yes", "1", "on")


_AFFINITY_ALL = _any_of("", "all")
_ZERO = _any_of("", "0")
_UNLIMITED = _any_of("", "-1", "unlimited")
_NORMAL = _any_of("", "normal")

KeyTable = Mapping[str, tuple[str, str, IsDefault]]

#: VMX key (lowercase) -> (spelling shown, PlacementSettings field, is the default).
VMX_KEYS: KeyTable = {
    "sched.cpu.affinity": ("sched.cpu.affinity", "cpu_affinity", _AFFINITY_ALL),
    "numa.nodeaffinity": ("numa.nodeAffinity", "numa_node_affinity", _AFFINITY_ALL),
    "numa.vcpu.maxpervirtualnode": (
        "numa.vcpu.maxPerVirtualNode", "numa_vcpus_per_node", _ZERO),
    "sched.cpu.min": ("sched.cpu.min", "cpu_reservation", _ZERO),
    "sched.cpu.max": ("sched.cpu.max", "cpu_limit", _UNLIMITED),
    "sched.cpu.shares": ("sched.cpu.shares", "cpu_shares", _NORMAL),
    "sched.mem.min": ("sched.mem.min", "memory_reservation", _ZERO),
    "sched.mem.minsize": ("sched.mem.minSize", "memory_reservation", _ZERO),
    "sched.mem.max": ("sched.mem.max", "memory_limit", _UNLIMITED),
    "sched.mem.shares": ("sched.mem.shares", "memory_shares", _NORMAL),
    "sched.mem.pin": ("sched.mem.pin", "memory_pinned", _not_true),
    "sched.cpu.latencysensitivity": (
        "sched.cpu.latencySensitivity", "latency_sensitivity", _NORMAL),
    "vcpu.hotadd": ("vcpu.hotadd", "cpu_hot_add", _not_true),
    "mem.hotadd": ("mem.hotadd", "memory_hot_add", _not_true),
}  # fmt: skip

#: An OVF's ``vmw:Config`` keys (vSphere's VirtualMachineConfigSpec names), lowercase.
OVF_CONFIG_KEYS: KeyTable = {
    "cpuhotaddenabled": ("cpuHotAddEnabled", "cpu_hot_add", _not_true),
    "memoryhotaddenabled": ("memoryHotAddEnabled", "memory_hot_add", _not_true),
    "latencysensitivity.level": ("latencySensitivity.level", "latency_sensitivity", _NORMAL),
    "memoryreservationlockedtomax": (
        "memoryReservationLockedToMax", "memory_pinned", _not_true),
}  # fmt: skip


def read_placement(
    entries: Mapping[str, str], table: KeyTable
) -> tuple[PlacementSettings, set[str]]:
    """The settings ``entries`` (lowercase keys) hold by ``table``, and the keys it read.
    When two keys fill the same field, the first in the table wins."""
    found: dict[str, SourceSetting] = {}
    read: set[str] = set()
    for key, (shown, name, is_default) in table.items():
        value = entries.get(key)
        if value is None:
            continue
        read.add(key)
        if not is_default(value) and name not in found:
            found[name] = SourceSetting(shown, printable(value.strip(), 60))
    return PlacementSettings(**found), read


def settle(placement: PlacementSettings, memory_mb: int) -> PlacementSettings:
    """``placement`` without the settings that add nothing: a memory limit at or above the
    VM's memory (exports carry ``sched.mem.max`` = ``memsize``), and the memory reservation
    of a VM whose memory is locked (``sched.mem.pin`` comes with ``sched.mem.min`` =
    ``memsize``): the lock carries that reservation over."""
    limit = placement.memory_limit
    if limit is not None and limit.value.isdigit() and int(limit.value) >= memory_mb:
        placement = dataclasses.replace(placement, memory_limit=None)
    if placement.memory_pinned is not None:
        placement = dataclasses.replace(placement, memory_reservation=None)
    return placement


def merge(first: PlacementSettings, *others: PlacementSettings) -> PlacementSettings:
    """``first`` with each field it leaves unset taken from the first of ``others`` that
    sets it."""
    merged = first
    for other in others:
        unset = {f.name: getattr(other, f.name) for f in dataclasses.fields(PlacementSettings)
                 if getattr(merged, f.name) is None}  # fmt: skip
        merged = dataclasses.replace(merged, **unset)
    return merged
