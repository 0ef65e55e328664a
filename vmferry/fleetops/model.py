"""What the balancing recommender reads and returns: hosts, VMs, moves (pure dataclasses).

Demands are what the VM uses (its profile's p95 CPU in cores and its memory in use), not
what it was given; ``vcpus`` and ``memory_bytes`` are what it was given. A VM's
``cpu_key`` names the CPU model (or family) it needs: it may run only on a host whose
``cpu_key`` is the same (None: any host).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.errors import BadInputError


@dataclass(frozen=True)
class HostLoad:
    """A host's capacity. A host ``in_maintenance`` takes no VM and is outside the metric."""

    name: str
    cpus: int
    memory_bytes: int
    cpu_key: str
    in_maintenance: bool = False

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.memory_bytes <= 0:
            raise BadInputError(
                f"host {self.name}: cpus and memory must be > 0 "
                f"(got {self.cpus} cpus, {self.memory_bytes} bytes)"
            )


@dataclass(frozen=True)
class VmLoad:
    """A VM where it runs now and what it uses there (``cpu_demand`` in cores)."""

    name: str
    host: str
    vcpus: int
    memory_bytes: int
    cpu_demand: float
    memory_demand_bytes: int
    dirty_rate_bytes_s: float = 0.0
    anti_affinity: str | None = None  # two VMs of one group never share a host
    cpu_key: str | None = None

    def __post_init__(self) -> None:
        figures = {
            "vcpus": self.vcpus,
            "memory_bytes": self.memory_bytes,
            "cpu_demand": self.cpu_demand,
            "memory_demand_bytes": self.memory_demand_bytes,
            "dirty_rate_bytes_s": self.dirty_rate_bytes_s,
        }
        negative = [f"{key} {value}" for key, value in figures.items() if value < 0]
        if negative:
            raise BadInputError(f"vm {self.name}: negative {', '.join(negative)}")


@dataclass(frozen=True)
class Move:
    """One recommended live move and its predicted cost (:func:`vmferry.predict.model.predict`)."""

    vm: str
    source: str
    destination: str
    predicted_bytes: int
    predicted_seconds: float


@dataclass(frozen=True)
class Recommendation:
    """The moves, in order, and the imbalance before and after them. ``stop`` says why the
    recommender stopped; ``unmoved`` has a line per VM of the most loaded host saying why it
    was not moved, when the imbalance is still above the threshold."""

    moves: tuple[Move, ...]
    imbalance_before: float
    imbalance_after: float
    threshold: float
    metric: str
    stop: str
    unmoved: tuple[str, ...] = ()


def check_fleet(hosts: Sequence[HostLoad], vms: Sequence[VmLoad]) -> None:
    """Raise ``BadInputError`` (one line) for duplicate names or a VM on an unknown host."""
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise BadInputError(f"duplicate host names: {', '.join(_duplicates(names))}")
    vm_names = [v.name for v in vms]
    if len(set(vm_names)) != len(vm_names):
        raise BadInputError(f"duplicate VM names: {', '.join(_duplicates(vm_names))}")
    known = set(names)
    for vm in vms:
        if vm.host not in known:
            raise BadInputError(f"vm {vm.name}: host {vm.host} does not exist")


def _duplicates(names: Sequence[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)
