"""vSphere as a source (`vmferry sources`, docs/vsphere.md): a registered vCenter or ESXi,
and its VMs as the inventory shows them.

A :class:`VsphereSource` is what the store keeps: never the password, which comes from
``VMFERRY_VSPHERE_PASSWORD`` or a prompt each time vmferry connects. The field order of
:class:`VsphereVm`, :class:`VsphereDisk` and :class:`VsphereNic` is the `inventory --source
--json` schema: the contract's keys first, then the extra ones. The ``Raw*`` types are
what the driver read, before :mod:`vmferry.sources.vsphere_inventory` decides what it means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vmferry.model.finding import Finding
from vmferry.model.placement_settings import PlacementSettings

__all__ = [
    "PASSWORD_ENV",
    "RawAllocation",
    "RawDisk",
    "RawNic",
    "RawPerf",
    "RawVm",
    "VsphereDisk",
    "VsphereNic",
    "VsphereSource",
    "VsphereVm",
    "VsphereVmRef",
]

PASSWORD_ENV = "VMFERRY_VSPHERE_PASSWORD"


@dataclass(frozen=True)
class VsphereSource:
    """A vCenter or ESXi vmferry reads VMs from: how to reach it and which certificate to
    trust (``ca_file``, or none at all when ``insecure``; else the system's CAs)."""

    name: str
    host: str
    port: int
    user: str
    datacenter: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    @property
    def url(self) -> str:
        """``vsphere://USER@HOST:PORT``, as `sources add` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"vsphere://{self.user}@{host}:{self.port}"


@dataclass(frozen=True)
class VsphereVmRef:
    """An import's source when it is a VM of a registered vSphere source
    (``vsphere://SOURCE/VM``): the password (never stored, never shown), whether it may be
    powered off without its guest (``force``), powered on again when the import fails
    (``rollback``), how many range requests read a disk at once (``connections``), how
    long its guest may take to shut down, and whether it is read while it runs (``warm``,
    its changes copied every ``precopy_interval_s`` until the cutover) or run on KVM at once
    while its disks stream in (``live-import``)."""

    source: str
    vm: str
    password: str = field(repr=False)
    force: bool = False
    rollback: bool = False
    connections: int = 4
    shutdown_timeout_s: float = 600.0
    # cold: stopped, then read; warm: read while it runs (CBT); live-import: stopped, then
    # run on KVM at once over its datastore disks while they stream in
    strategy: str = "cold"
    precopy_interval_s: float = 3600.0  # warm: how often the changes are copied
    serve_address: str | None = None  # live-import: where nbdkit listens (None: the route's)
    # the datastore read at most this fast, all disks together (a live import's streams
    # share it); 0: no cap
    bandwidth_mib_s: int = 0

    def __str__(self) -> str:
        return f"vsphere://{self.source}/{self.vm}"


@dataclass(frozen=True)
class VsphereDisk:
    """A virtual disk: its datastore path (``[DS] dir/file.vmdk``) and its size."""

    path: str
    capacity_bytes: int


@dataclass(frozen=True)
class VsphereNic:
    """A virtual NIC: its MAC and the network (port group) it is connected to."""

    mac: str
    network: str | None


@dataclass(frozen=True)
class VsphereGuestNic:
    """A NIC as VMware Tools see it in the guest: its MAC and addresses (``IP/PREFIX``)."""

    mac: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class VsphereVm:
    """A VM of a vSphere source. ``guest_os`` is the configured guest's full name;
    ``firmware`` is bios or efi; ``cbt_enabled`` is changed block tracking;
    ``tools_state`` is VMware Tools' running status as vSphere says it; ``placement`` its
    non-default placement and performance settings and ``placement_findings`` what an
    import makes of them (the same findings a VMX with those settings gives)."""

    name: str
    uuid: str
    power_state: str
    vcpus: int
    memory_mb: int
    guest_os: str | None
    disks: tuple[VsphereDisk, ...]
    nics: tuple[VsphereNic, ...]
    guest_id: str | None = None
    firmware: str | None = None
    cbt_enabled: bool = False
    tools_state: str | None = None
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    placement_findings: tuple[Finding, ...] = ()
    # what VMware Tools report of the guest's network (empty when they do not run)
    guest_addresses: tuple[VsphereGuestNic, ...] = ()
    guest_gateway: str | None = None
    guest_dns: tuple[str, ...] = ()
    # the bytes its files take on the datastores (``summary.storage.committed``)
    committed_bytes: int | None = None


@dataclass(frozen=True)
class RawDisk:
    """A ``VirtualDisk``: its backing's ``fileName`` and both sizes vSphere may give; for an
    import also its backing's kind (``flat``: ``FlatVer2BackingInfo``, ``sparse``:
    ``SparseVer2BackingInfo``/``SeSparseBackingInfo``, ``rdm``:
    ``RawDiskMappingVer1BackingInfo``, else the backing's class name), its ``diskMode``
    (``persistent``, ``independent_persistent``, ...), the controller it hangs on (``bus``:
    ``pvscsi``, ``lsilogic``, ``lsisas1068``, ``buslogic``, ``sata``, ``ide``, ``nvme``;
    ``bus_number``) and its ``unitNumber``."""

    file_name: str
    capacity_in_bytes: int | None
    capacity_in_kb: int | None
    backing: str = "flat"
    disk_mode: str = "persistent"
    bus: str = "unknown"
    bus_number: int = 0
    unit: int = 0
    has_parent: bool = False  # a snapshot's delta disk: the backing has a parent
    key: int = 0  # the device's key (what QueryChangedDiskAreas names a disk by)


@dataclass(frozen=True)
class RawNic:
    """A ``VirtualEthernetCard``: its MAC and what its backing names: a standard network's
    managed object id (``network``), a distributed port group's key (``portgroup_key``),
    or only a device name (``device_name``, for opaque networks)."""

    mac: str | None
    network: str | None = None
    portgroup_key: str | None = None
    device_name: str | None = None
    model: str = "unknown"  # vmxnet3 | vmxnet2 | e1000 | e1000e | vlance | unknown
    connected: bool = True  # connectable.startConnected


@dataclass(frozen=True)
class RawAllocation:
    """A ``ResourceAllocationInfo`` (``config.cpuAllocation`` in MHz,
    ``config.memoryAllocation`` in MB): ``limit`` -1 is unlimited; ``shares_level`` is
    ``low``, ``normal``, ``high`` or ``custom`` (then ``shares`` counts)."""

    reservation: int | None = None
    limit: int | None = None
    shares_level: str | None = None
    shares: int | None = None


@dataclass(frozen=True)
class RawVm:
    """A VM's properties by their vSphere paths (``name``, ``config.uuid``,
    ``runtime.powerState``, ...: see :data:`vmferry.drivers.vsphere.VM_PROPERTIES`) and
    its disks and NICs. Plain values only: the driver turns ``config.cpuAffinity`` and
    ``config.memoryAffinity`` into tuples of ints, the allocations into
    :class:`RawAllocation` and ``config.latencySensitivity`` into its level."""

    properties: Mapping[str, object]
    disks: Sequence[RawDisk]
    nics: Sequence[RawNic]


@dataclass(frozen=True)
class RawPerf:
    """A VM's performance statistics as vCenter keeps them (``QueryPerf``): the samples'
    times (ISO 8601 UTC, oldest first), their interval (20 s: the realtime statistics),
    and per counter (``cpu.usage.average``, ...) one value per sample (None: vCenter had
    none, -1 on the wire); a counter vCenter does not offer for the VM is absent."""

    interval_s: int
    taken_at: tuple[str, ...]
    series: dict[str, tuple[int | None, ...]]
