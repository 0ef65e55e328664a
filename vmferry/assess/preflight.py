"""Pre-flight checks for a live migration (vmferry's CheckMigrate): pure rules over facts.

:class:`PreflightFacts` holds everything the rules need, gathered by a driver
(:mod:`vmferry.drivers.libvirt_facts`) from the source and destination hosts; :func:`evaluate`
turns it into :class:`~vmferry.model.Finding` s. No I/O here: the same facts always give the
same findings, in the same order (blockers first, then warnings, then infos; within one
severity, in the order of :data:`RULES` and of the VM's devices).

Finding ids are stable and documented in docs/json.md (``vmferry check --json``).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from vmferry.model import Disk, Finding, HostInfo, Severity, VmRecord, VmState
from vmferry.model.finding import by_severity

__all__ = [
    "MEMORY_MARGIN_BYTES",
    "RULES",
    "TCG_DIRTY_TRACKING_FIXED",
    "CpuCheck",
    "CpuVerdict",
    "DiskPlacement",
    "DiskReach",
    "NetworkFacts",
    "PoolFacts",
    "PreflightFacts",
    "address_family",
    "evaluate",
    "version_of",
]

_MiB = 1024 * 1024

MEMORY_MARGIN_BYTES = 256 * _MiB
"""Free memory the destination must keep beyond the VM's own (QEMU overhead, page tables)."""

PASSTHROUGH_CPU_MODES = frozenset({"host-passthrough", "maximum"})


class CpuVerdict(enum.StrEnum):
    """What libvirt's hypervisor CPU comparison on the destination said."""

    IDENTICAL = "identical"
    SUPERSET = "superset"  # the destination provides everything the VM's CPU needs (and more)
    INCOMPATIBLE = "incompatible"
    UNKNOWN = "unknown"  # libvirt could not compare; ``message`` says why
    NOT_COMPARED = "not-compared"  # no CPU definition, or host-passthrough: nothing to compare


@dataclass(frozen=True)
class CpuCheck:
    verdict: CpuVerdict
    message: str = ""
    missing_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkFacts:
    """A libvirt network on the destination, with the names of its portgroups."""

    name: str
    active: bool
    bridge: str | None = None
    portgroups: tuple[str, ...] = ()


@dataclass(frozen=True)
class PoolFacts:
    """A storage pool on the destination; ``path`` is its target directory (dir/fs pools)."""

    name: str
    active: bool
    path: str | None = None
    available_bytes: int | None = None


class DiskReach(enum.StrEnum):
    SHARED = "shared"  # the destination resolves the same path (shared storage)
    LOCAL = "local"  # only the source has it: it must be copied, or it blocks
    NETWORK = "network"  # network storage (rbd, iscsi, nbd...): reached by URL, not verified


@dataclass(frozen=True)
class DiskPlacement:
    """Where one of the VM's disk sources lives, seen from the destination.

    ``path`` is the source path on the source host (a volume resolved to its path).
    ``copy_pool`` is the destination pool libvirt would create a copy in (the pool of the
    same name for a volume disk, the pool whose target directory holds the path for a file),
    or ``None`` when the destination has no such pool. ``destination_capacity_bytes`` is the
    size of what the destination has at that path, when it has something there.
    """

    target: str
    path: str | None
    reach: DiskReach
    copy_pool: str | None = None
    destination_capacity_bytes: int | None = None
    copy_path: str | None = None  # where the copy goes (--to-pool); None: the same path
    copy_path_taken: bool = False  # the destination has a file at copy_path already


@dataclass(frozen=True)
class PreflightFacts:
    """Everything the pre-flight rules look at, in model types and plain values.

    URIs are the registered libvirt URIs; ``*_migration_uri`` are the hosts' migration URIs
    from the store (``None``: libvirt chooses, from the libvirt URI's host).
    ``destination_interfaces`` is ``None`` when the destination's interface API does not
    work, so plain bridges cannot be verified. ``vm_also_defined_on`` names other hosts
    where a (not running) VM of that name is defined; ``unsearched_hosts`` the registered
    hosts that did not answer while the VM was looked for.
    """

    vm: VmRecord
    source: HostInfo
    destination: HostInfo
    source_uri: str
    destination_uri: str
    source_host_uuid: str | None = None
    destination_host_uuid: str | None = None
    source_migration_uri: str | None = None
    destination_migration_uri: str | None = None
    destination_vm_names: frozenset[str] = frozenset()
    destination_vm_uuids: frozenset[str] = frozenset()
    destination_running_vcpus: int = 0
    cpu: CpuCheck = CpuCheck(CpuVerdict.NOT_COMPARED)
    destination_networks: tuple[NetworkFacts, ...] = ()
    destination_interfaces: tuple[str, ...] | None = None
    disks: tuple[DiskPlacement, ...] = ()
    destination_pools: tuple[PoolFacts, ...] = ()
    copy_storage: bool = False
    copy_to_pool: str | None = None  # --to-pool: the copies go into this pool
    vm_also_defined_on: tuple[str, ...] = ()
    unsearched_hosts: tuple[str, ...] = ()


Rule = Callable[[PreflightFacts], Iterable[Finding]]


def evaluate(facts: PreflightFacts) -> list[Finding]:
    """Every finding for migrating ``facts.vm`` live to ``facts.destination``.

    When the destination is the source host itself, only that blocker and the VM's state
    are reported: comparing a host with itself would only add noise (its own name "exists").
    """
    same = list(same_host(facts))
    rules: tuple[Rule, ...] = (vm_state,) if same else RULES
    findings = same + [f for rule in rules for f in rule(facts)]
    return by_severity(findings)


# -- rules ------------------------------------------------------------------------------


def same_host(f: PreflightFacts) -> Iterator[Finding]:
    why = None
    if f.source_host_uuid and f.source_host_uuid.lower() == (f.destination_host_uuid or "").lower():
        why = f"both have libvirt host UUID {f.source_host_uuid}"
    elif _normal_uri(f.source_uri) == _normal_uri(f.destination_uri):
        why = f"both are {f.source_uri}"
    elif f.source.name == f.destination.name:
        why = f"both are host {f.source.name!r}"
    if why:
        yield Finding(
            "destination.same-host",
            Severity.BLOCKER,
            f"VM {f.vm.spec.name!r} runs on {f.source.name}, and {f.destination.name} is the "
            f"same libvirt host ({why})",
            "choose another host with --to (`vmferry hosts list` shows them)",
        )


def vm_state(f: PreflightFacts) -> Iterator[Finding]:
    name = f.vm.spec.name
    if not f.vm.devices_read:
        yield Finding(
            "vm.held",
            Severity.BLOCKER,
            f"libvirt holds VM {name!r} on {f.source.name} for a migration job, so its "
            "devices could not be read",
            f"let that job end (`virsh -c {f.source_uri} domjobinfo {name}`); a post-copy "
            "that broke off needs libvirt's post-copy resume",
        )
        return
    if f.vm.state in (VmState.RUNNING, VmState.BLOCKED):  # blocked: running, waiting on I/O
        return
    if f.vm.state is VmState.PAUSED:
        yield Finding(
            "vm.paused",
            Severity.INFO,
            f"VM {name!r} is paused; it moves paused and stays paused on {f.destination.name}",
            f"resume it afterwards if needed (`virsh resume {name}`)",
        )
        return
    yield Finding(
        "vm.not-running",
        Severity.BLOCKER,
        f"VM {name!r} is {f.vm.state} on {f.source.name}; a live migration needs it running",
        f"start it (`virsh -c {f.source_uri} start {name}`) or move it cold (offline)",
    )


def vm_location(f: PreflightFacts) -> Iterator[Finding]:
    name = f.vm.spec.name
    if f.vm_also_defined_on:
        yield Finding(
            "vm.defined-elsewhere",
            Severity.INFO,
            f"a VM named {name!r} is also defined, not running, on "
            f"{', '.join(f.vm_also_defined_on)}; this checks the one on {f.source.name}",
        )
    if f.unsearched_hosts:
        yield Finding(
            "vm.hosts-unsearched",
            Severity.WARNING,
            f"hosts {', '.join(f.unsearched_hosts)} did not answer, so vmferry could not "
            f"make sure {name!r} runs nowhere else",
            "bring them back or remove them (`vmferry hosts remove NAME`)",
        )


def destination_conflicts(f: PreflightFacts) -> Iterator[Finding]:
    spec, dest = f.vm.spec, f.destination.name
    undefine = (
        f"if it is a stale copy, remove it (`virsh -c {f.destination_uri} undefine "
        f"{spec.name}`, after checking it is not needed); otherwise rename one of them"
    )
    if spec.name in f.destination_vm_names:
        also = " (with the same UUID)" if spec.uuid in f.destination_vm_uuids else ""
        yield Finding(
            "destination.name-exists",
            Severity.BLOCKER,
            f"a VM named {spec.name!r} is already defined on {dest}{also}",
            undefine,
        )
    elif spec.uuid and spec.uuid in f.destination_vm_uuids:
        yield Finding(
            "destination.uuid-exists",
            Severity.BLOCKER,
            f"a VM with UUID {spec.uuid} (under another name) is already defined on {dest}",
            f"find it with `virsh -c {f.destination_uri} list --all --uuid` and remove it "
            "if it is a stale copy",
        )


def cpu_compatibility(f: PreflightFacts) -> Iterator[Finding]:
    spec, dest = f.vm.spec, f.destination.name
    if spec.cpu_mode in PASSTHROUGH_CPU_MODES:
        src_model = f.source.cpu_model or "unknown"
        dst_model = f.destination.cpu_model or "unknown"
        differ = (
            f"; the host CPU models differ ({src_model} vs {dst_model}), so the migration "
            "will most likely fail or the guest will crash"
            if f.source.cpu_model and f.destination.cpu_model and src_model != dst_model
            else f" (source {src_model}, destination {dst_model})"
        )
        yield Finding(
            "cpu.host-passthrough",
            Severity.WARNING,
            f"VM {spec.name!r} uses CPU mode {spec.cpu_mode}: {f.source.name} and {dest} must "
            f"have identical CPUs, microcode and kernel CPU features{differ}",
            "use a named CPU model both hosts support (e.g. host-model or a custom model) "
            "for VMs that migrate between hosts that are not identical",
        )
        return
    check = f.cpu
    if check.verdict is CpuVerdict.INCOMPATIBLE:
        model = f" {spec.cpu_model}" if spec.cpu_model else ""
        missing = (
            f"; {dest} lacks: {', '.join(check.missing_features)}"
            if check.missing_features
            else (f": {check.message}" if check.message else "")
        )
        yield Finding(
            "cpu.incompatible",
            Severity.BLOCKER,
            f"the VM's CPU{model} cannot run on {dest}{missing}",
            "give the VM a CPU model both hosts support (the baseline of the two: "
            "`virsh hypervisor-cpu-baseline`), then restart it; or pick another destination",
        )
    elif check.verdict is CpuVerdict.UNKNOWN:
        yield Finding(
            "cpu.unverified",
            Severity.WARNING,
            f"could not compare the VM's CPU with {dest}: {check.message or 'no reason given'}",
            "check by hand with `virsh hypervisor-cpu-compare` on the destination",
        )
    elif check.verdict is CpuVerdict.NOT_COMPARED and spec.cpu_model is None:
        yield Finding(
            "cpu.default-model",
            Severity.INFO,
            f"the VM defines no CPU model; {dest} runs it with its hypervisor's default",
        )


TCG_DIRTY_TRACKING_FIXED = (9, 0)
"""The first QEMU whose TCG keeps every guest write in the migration's dirty bitmap."""


def version_of(text: str | None) -> tuple[int, ...] | None:
    """``"10.0.2"`` as ``(10, 0, 2)``; None for no version or one that is not numbers."""
    try:
        return tuple(int(part) for part in (text or "").split(".")) or None
    except ValueError:
        return None


def tcg_dirty_tracking(f: PreflightFacts) -> Iterator[Finding]:
    """A VM emulated by TCG (domain type ``qemu``, no KVM) on a QEMU before 9.0 arrives from
    a live copy with some of its writes lost: that QEMU's TCG leaves a page's fast write path
    open after the migration's dirty bitmap was cleared, so later writes to the page are not
    sent again. Seen in the lab on Debian 12's QEMU 7.2 (guest kernel oops in its timer tree,
    broken connections, after about half the moves of a guest writing 12 MiB/s); QEMU 10.0
    ran the same moves clean. QEMU 9.0 fixed a bug of this kind ("physmem: Fix migration
    dirty bitmap coherency with TCG memory access"). Warm and cold moves copy no memory: they
    drop the ``migration.`` findings (:mod:`vmferry.service.offline_move`)."""
    version = version_of(f.source.hypervisor_version)
    if f.vm.spec.domain_type != "qemu" or version is None:
        return
    if version[:2] >= TCG_DIRTY_TRACKING_FIXED:
        return
    yield Finding(
        "migration.tcg-lost-writes",
        Severity.BLOCKER,
        f"VM {f.vm.spec.name!r} is emulated by TCG (no KVM) on QEMU "
        f"{f.source.hypervisor_version} on {f.source.name}: QEMU before 9.0 loses some of a "
        "TCG guest's memory writes during a live copy, so it would arrive corrupted",
        f"move it with --strategy warm or cold, or upgrade QEMU on {f.source.name} to 9.0 "
        "or later (Debian 12: bookworm-backports has 10.0)",
    )


def memory_capacity(f: PreflightFacts) -> Iterator[Finding]:
    need = f.vm.spec.memory_bytes + MEMORY_MARGIN_BYTES
    free = f.destination.free_memory_bytes
    if free < need:
        yield Finding(
            "capacity.memory",
            Severity.BLOCKER,
            f"{f.destination.name} has {_mib(free)} free; the VM needs "
            f"{_mib(f.vm.spec.memory_bytes)} plus a {_mib(MEMORY_MARGIN_BYTES)} margin",
            f"free memory on {f.destination.name} (stop or move VMs) or pick another destination",
        )


def vcpu_capacity(f: PreflightFacts) -> Iterator[Finding]:
    vcpus, cpus, dest = f.vm.spec.vcpus, f.destination.cpus, f.destination.name
    if vcpus > cpus:
        yield Finding(
            "capacity.vcpus",
            Severity.BLOCKER,
            f"the VM has {vcpus} vCPUs but {dest} has only {cpus} CPUs",
            f"reduce the VM's vCPUs to at most {cpus} or pick a larger destination",
        )
    elif f.destination_running_vcpus + vcpus > cpus:
        yield Finding(
            "capacity.vcpu-overcommit",
            Severity.WARNING,
            f"{dest} runs VMs with {f.destination_running_vcpus} vCPUs on {cpus} CPUs; with "
            f"this VM's {vcpus} it is overcommitted "
            f"({f.destination_running_vcpus + vcpus}:{cpus})",
            "fine for idle VMs; for busy ones pick a less loaded destination",
        )


def storage(f: PreflightFacts) -> Iterator[Finding]:
    placements = {p.target: p for p in f.disks}
    to_copy: list[tuple[Disk, DiskPlacement]] = []
    for disk in f.vm.spec.disks:
        if disk.removable or disk.source is None:
            continue  # removable media: see removable_media()
        where = placements.get(disk.target) or DiskPlacement(
            disk.target, disk.source, DiskReach.LOCAL
        )
        path = where.path or disk.source
        if where.reach is DiskReach.NETWORK:
            yield Finding(
                "storage.network-disk",
                Severity.INFO,
                f"disk {disk.target} is network storage ({disk.source}); assumed reachable "
                f"from {f.destination.name}",
            )
        elif where.reach is DiskReach.SHARED:
            yield from _shared_disk(f, disk, where, path)
        elif not f.copy_storage:
            yield Finding(
                "storage.not-shared",
                Severity.BLOCKER,
                f"disk {disk.target} ({path}) is on storage only {f.source.name} sees",
                "re-run with --copy-storage to copy it during the migration, or move it to "
                "storage both hosts see",
            )
        else:
            to_copy.append((disk, where))
    if to_copy:
        yield from _copy_space(f, to_copy)


def _shared_disk(
    f: PreflightFacts, disk: Disk, where: DiskPlacement, path: str
) -> Iterator[Finding]:
    theirs = where.destination_capacity_bytes
    if theirs is not None and disk.capacity_bytes is not None and theirs != disk.capacity_bytes:
        yield Finding(
            "storage.path-conflict",
            Severity.BLOCKER,
            f"disk {disk.target}: {f.destination.name} has a different file at {path} "
            f"({_mib(theirs)}, the VM's is {_mib(disk.capacity_bytes)})",
            f"remove or rename the file on {f.destination.name} if it is stale, or keep the "
            "VM's disks on storage both hosts share",
        )


def _copy_space(f: PreflightFacts, to_copy: list[tuple[Disk, DiskPlacement]]) -> Iterator[Finding]:
    pools = {p.name: p for p in f.destination_pools}
    by_pool: dict[str, list[Disk]] = {}
    dest = f.destination.name
    for disk, where in to_copy:
        pool = pools.get(where.copy_pool) if where.copy_pool else None
        path = where.path or disk.source or ""
        if pool is None and f.copy_to_pool is not None:
            yield Finding(
                "storage.copy-target-missing",
                Severity.BLOCKER,
                f"disk {disk.target} ({path}) cannot be copied: {dest} has no storage pool "
                f"named {f.copy_to_pool!r}",
                f"name one of its pools with --to-pool (`virsh -c {f.destination_uri} "
                "pool-list --all`)",
            )
        elif pool is None:
            folder = path.rsplit("/", 1)[0] or "/"
            target = (
                f"a storage pool named {disk.pool!r}"
                if disk.source_kind == "volume" and disk.pool
                else f"a storage pool whose target directory is {folder}"
            )
            yield Finding(
                "storage.copy-target-missing",
                Severity.BLOCKER,
                f"disk {disk.target} ({path}) cannot be copied: {dest} has no {target}",
                f"define and start one on {dest} (`virsh pool-define-as NAME dir --target "
                f"{folder}`, `virsh pool-build NAME`, `virsh pool-start NAME`)",
            )
        elif not pool.active:
            yield Finding(
                "storage.copy-pool-inactive",
                Severity.BLOCKER,
                f"disk {disk.target} would be copied into pool {pool.name!r} on {dest}, "
                "which is not active",
                f"start it: `virsh -c {f.destination_uri} pool-start {pool.name}`",
            )
        elif where.copy_path_taken:
            yield Finding(
                "storage.copy-name-taken",
                Severity.BLOCKER,
                f"disk {disk.target} would be copied to {where.copy_path} on {dest}, where "
                "a file already is",
                f"remove it from pool {pool.name!r} if it is stale, or choose another --to-pool",
            )
        else:
            by_pool.setdefault(pool.name, []).append(disk)
    for name, disks in by_pool.items():
        yield from _pool_space(f, pools[name], disks)


def _pool_space(f: PreflightFacts, pool: PoolFacts, disks: list[Disk]) -> Iterator[Finding]:
    dest, targets = f.destination.name, ", ".join(d.target for d in disks)
    unknown = [d.target for d in disks if d.allocation_bytes is None and d.capacity_bytes is None]
    used = sum(d.allocation_bytes or d.capacity_bytes or 0 for d in disks)
    full = sum(d.capacity_bytes or d.allocation_bytes or 0 for d in disks)
    free = pool.available_bytes
    if free is None or unknown:
        what = f"the size of disk(s) {', '.join(unknown)}" if unknown else "its free space"
        yield Finding(
            "storage.copy-space-unverified",
            Severity.WARNING,
            f"disks {targets} will be copied into pool {pool.name!r} on {dest}, but "
            f"{what} is unknown",
            f"check the free space with `virsh -c {f.destination_uri} pool-info {pool.name}`",
        )
    if free is not None and free < used:
        yield Finding(
            "storage.copy-space",
            Severity.BLOCKER,
            f"pool {pool.name!r} on {dest} has {_mib(free)} free; copying disks {targets} "
            f"needs {_mib(used)}",
            f"free space in pool {pool.name!r} on {dest} or pick another destination",
        )
        return
    if free is not None and free < full:
        yield Finding(
            "storage.copy-space-thin",
            Severity.WARNING,
            f"pool {pool.name!r} on {dest} holds the {_mib(used)} the disks {targets} use "
            f"now, but not the {_mib(full)} they may grow to",
            f"watch the pool's free space on {dest} after the move",
        )
    yield Finding(
        "storage.copy",
        Severity.INFO,
        f"disks {targets} ({_mib(used)} in use) will be copied into pool {pool.name!r} on "
        f"{dest} during the migration; only these disks are copied",
    )


def removable_media(f: PreflightFacts) -> Iterator[Finding]:
    placements = {p.target: p for p in f.disks}
    name = f.vm.spec.name
    for disk in f.vm.spec.removable_media:
        if disk.source is None:
            continue  # an empty drive migrates fine
        where = placements.get(disk.target)
        if where is not None and where.reach is not DiskReach.LOCAL:
            continue
        yield Finding(
            "devices.removable-media-local",
            Severity.BLOCKER,
            f"{disk.device} {disk.target} holds {disk.source}, which {f.destination.name} "
            "cannot see",
            f"eject the media (`virsh change-media {name} {disk.target} --eject`) or put the "
            "image on storage both hosts see",
        )


def host_devices(f: PreflightFacts) -> Iterator[Finding]:
    name = f.vm.spec.name
    for dev in f.vm.spec.host_devices:
        address = f" {dev.address}" if dev.address else ""
        yield Finding(
            "devices.hostdev",
            Severity.BLOCKER,
            f"host {dev.kind.upper()} device{address} is passed through to the VM; QEMU "
            "cannot migrate a VM with host devices",
            f"detach it live (`virsh detach-device {name} DEVICE.xml --live`), migrate, and "
            "attach the destination's equivalent device afterwards",
        )


def vcpu_pinning(f: PreflightFacts) -> Iterator[Finding]:
    pins = f.vm.spec.vcpu_pins
    if pins:
        listed = ", ".join(f"vCPU {p.vcpu}->{p.cpuset}" for p in pins)
        yield Finding(
            "devices.vcpu-pinning",
            Severity.BLOCKER,
            f"the VM pins vCPUs to host CPUs of {f.source.name} ({listed}); those CPUs may "
            f"not exist or be busy on {f.destination.name}",
            "drop the pinning (remove <cputune><vcpupin> with `virsh edit "
            f"{f.vm.spec.name}` and restart, or unpin live with `virsh vcpupin "
            f"{f.vm.spec.name} VCPU 0-{max(f.source.cpus - 1, 0)} --live`)",
        )


def networks(f: PreflightFacts) -> Iterator[Finding]:
    nets = {n.name: n for n in f.destination_networks}
    bridges = {n.bridge for n in f.destination_networks if n.bridge}
    dest, uri = f.destination.name, f.destination_uri
    for nic in f.vm.spec.nics:
        if nic.network:
            net = nets.get(nic.network)
            if net is None:
                yield Finding(
                    "network.missing",
                    Severity.BLOCKER,
                    f"NIC {nic.mac} uses network {nic.network!r}, which {dest} does not have",
                    f"define it on {dest} like on {f.source.name} (`virsh net-dumpxml "
                    f"{nic.network}` there, then `virsh -c {uri} net-define FILE` and "
                    f"`net-start {nic.network}`)",
                )
            elif not net.active:
                yield Finding(
                    "network.inactive",
                    Severity.BLOCKER,
                    f"NIC {nic.mac} uses network {nic.network!r}, which is not active on {dest}",
                    f"start it: `virsh -c {uri} net-start {nic.network}` (and `net-autostart`)",
                )
            elif nic.portgroup and nic.portgroup not in net.portgroups:
                yield Finding(
                    "network.portgroup-missing",
                    Severity.BLOCKER,
                    f"NIC {nic.mac} uses portgroup {nic.portgroup!r} of network "
                    f"{nic.network!r}, which has no such portgroup on {dest}",
                    f"add the portgroup to {nic.network!r} on {dest} (`virsh -c {uri} "
                    f"net-edit {nic.network}`)",
                )
        elif nic.kind == "bridge" and nic.bridge:
            if nic.bridge in bridges or (
                f.destination_interfaces is not None and nic.bridge in f.destination_interfaces
            ):
                continue
            if f.destination_interfaces is None:
                yield Finding(
                    "network.bridge-unverified",
                    Severity.WARNING,
                    f"NIC {nic.mac} uses bridge {nic.bridge!r}; {dest}'s libvirt cannot list "
                    "its interfaces, so it could not be verified",
                    f"check that {dest} has bridge {nic.bridge!r} (`ip link show "
                    f"{nic.bridge}` there)",
                )
            else:
                yield Finding(
                    "network.bridge-missing",
                    Severity.BLOCKER,
                    f"NIC {nic.mac} uses bridge {nic.bridge!r}, which {dest} does not have",
                    f"create bridge {nic.bridge!r} on {dest} with the same uplink, or "
                    "attach the NIC to a libvirt network both hosts define",
                )
        elif nic.kind == "direct":
            yield Finding(
                "network.direct-unverified",
                Severity.WARNING,
                f"NIC {nic.mac} is a macvtap (direct) link to a host device; the same device "
                f"on {dest} could not be verified",
                f"check that {dest} has the same uplink device name",
            )


def migration_address_family(f: PreflightFacts) -> Iterator[Finding]:
    src_uri = f.source_migration_uri or f.source_uri
    dst_uri = f.destination_migration_uri or f.destination_uri
    src, dst = address_family(src_uri), address_family(dst_uri)
    if src is None or dst is None:
        unclear = ", ".join(u for u, fam in ((src_uri, src), (dst_uri, dst)) if fam is None)
        yield Finding(
            "migration.address-family-unverified",
            Severity.INFO,
            f"the migration address family could not be told from {unclear} (a host name "
            "or no host); it depends on name resolution",
            "register migration URIs with IP addresses (`vmferry hosts add ... "
            "--migration-uri tcp://ADDRESS`) to have it checked",
        )
    elif src != dst:
        yield Finding(
            "migration.address-family",
            Severity.BLOCKER,
            f"{f.source.name} migrates over {src} ({src_uri}) but {f.destination.name} over "
            f"{dst} ({dst_uri}); the stream cannot connect across families",
            "register both hosts with migration URIs of the same family (`vmferry hosts "
            "remove`, then `hosts add ... --migration-uri tcp://ADDRESS`)",
        )


RULES: tuple[Rule, ...] = (
    vm_state,
    vm_location,
    destination_conflicts,
    cpu_compatibility,
    tcg_dirty_tracking,
    memory_capacity,
    vcpu_capacity,
    storage,
    removable_media,
    host_devices,
    vcpu_pinning,
    networks,
    migration_address_family,
)
"""The rules :func:`evaluate` runs after the same-host check, in order."""


# -- helpers ----------------------------------------------------------------------------


def address_family(uri: str) -> str | None:
    """``"IPv4"`` or ``"IPv6"`` for a URI whose host is an IP literal, else ``None``."""
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        return f"IPv{ipaddress.ip_address(host.split('%', 1)[0]).version}"
    except ValueError:
        return None


def _normal_uri(uri: str) -> str:
    parts = urlsplit(uri.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}?{parts.query}"


def _mib(value: int) -> str:
    if value >= 10 * 1024 * _MiB:
        return f"{value / (1024 * _MiB):.1f} GiB"
    return f"{value / _MiB:.0f} MiB"
