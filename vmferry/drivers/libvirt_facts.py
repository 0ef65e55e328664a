"""Gather :class:`~vmferry.assess.preflight.PreflightFacts` from two open libvirt hosts.

Driver code: it reads the source and the destination through their raw connections (the
:class:`~vmferry.drivers.libvirt_host.LibvirtHost` wraps them) and hands back only model
types and plain values; libvirt errors become :mod:`vmferry.errors`. It changes nothing on
either host, except that it refreshes a destination storage pool (a rescan, as
``virsh pool-refresh`` does) when a disk path is not yet in that pool's volume list.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import replace
from xml.etree.ElementTree import Element, ParseError, tostring

import libvirt
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from vmferry.assess.preflight import (
    CpuCheck,
    CpuVerdict,
    DiskPlacement,
    DiskReach,
    NetworkFacts,
    PoolFacts,
    PreflightFacts,
)
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import HostUnreachableError, NotFoundError, VmferryError
from vmferry.model import Disk, VmSpec

__all__ = [
    "compare_cpu",
    "cpu_xml_of",
    "gather_preflight_facts",
    "migratable_xml",
    "pool_facts",
]

log = logging.getLogger(__name__)

_COMPARE_VERDICTS: dict[int, CpuVerdict] = {
    libvirt.VIR_CPU_COMPARE_IDENTICAL: CpuVerdict.IDENTICAL,
    libvirt.VIR_CPU_COMPARE_SUPERSET: CpuVerdict.SUPERSET,
    libvirt.VIR_CPU_COMPARE_INCOMPATIBLE: CpuVerdict.INCOMPATIBLE,
}
_FEATURES = re.compile(r"features?:\s*([^;\n]+)", re.IGNORECASE)


def gather_preflight_facts(
    source: LibvirtHost,
    destination: LibvirtHost,
    vm: str,
    *,
    source_migration_uri: str | None = None,
    destination_migration_uri: str | None = None,
    copy_storage: bool = False,
    copy_to_pool: str | None = None,
) -> PreflightFacts:
    """Everything :func:`vmferry.assess.preflight.evaluate` needs to judge moving ``vm``
    (defined on ``source``) live to ``destination``; with ``copy_to_pool`` each disk to
    copy goes into that pool (its path there, and whether a file is there already).

    Raises :class:`NotFoundError` if ``source`` has no such VM and
    :class:`HostUnreachableError` if either host stops answering.
    """
    record = source.get_vm(vm)
    spec = record.spec
    pools = pool_facts(destination)
    names, uuids, running_vcpus = _destination_vms(destination)
    return PreflightFacts(
        vm=record,
        source=source.info(),
        destination=destination.info(),
        source_uri=source.uri,
        destination_uri=destination.uri,
        source_host_uuid=_host_uuid(source),
        destination_host_uuid=_host_uuid(destination),
        source_migration_uri=source_migration_uri,
        destination_migration_uri=destination_migration_uri,
        destination_vm_names=names,
        destination_vm_uuids=uuids,
        destination_running_vcpus=running_vcpus,
        cpu=_cpu_check(source, destination, spec),
        destination_networks=_networks(destination),
        destination_interfaces=_interfaces(destination),
        disks=tuple(
            _into_pool(
                destination, _placement(source, destination, disk, pools), pools, copy_to_pool
            )
            for disk in spec.disks
            if disk.source is not None and disk.source_kind != "none"
        ),
        destination_pools=pools,
        copy_storage=copy_storage,
        copy_to_pool=copy_to_pool,
    )


# -- CPU --------------------------------------------------------------------------------


def _cpu_check(source: LibvirtHost, destination: LibvirtHost, spec: VmSpec) -> CpuCheck:
    if spec.cpu_mode in ("host-passthrough", "maximum"):
        return CpuCheck(CpuVerdict.NOT_COMPARED, f"CPU mode {spec.cpu_mode} is not comparable")
    cpu_xml = cpu_xml_of(migratable_xml(source, spec.name))
    if cpu_xml is None:
        return CpuCheck(CpuVerdict.NOT_COMPARED, "the VM defines no CPU")
    return compare_cpu(
        destination, cpu_xml, domain_type=spec.domain_type, arch=spec.arch, machine=spec.machine
    )


def compare_cpu(
    host: LibvirtHost,
    cpu_xml: str,
    *,
    domain_type: str,
    arch: str | None,
    machine: str | None,
) -> CpuCheck:
    """Can ``host`` run a guest CPU defined by ``cpu_xml`` (a ``<cpu>`` element)?

    libvirt's hypervisor CPU comparison (``virsh hypervisor-cpu-compare``) for the domain's
    own virt type, arch and machine, with the host's default emulator for them: under TCG
    (``type='qemu'``) it compares with what QEMU can emulate, under KVM with the host CPU.
    A comparison libvirt cannot make gives :attr:`CpuVerdict.UNKNOWN` with its reason.
    """
    try:
        result = host._c.compareHypervisorCPU(
            None,
            arch,
            machine,
            domain_type,
            cpu_xml,
            libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE,
        )
    except libvirt.libvirtError as exc:
        error = host._error(exc, "comparing the VM's CPU")
        if isinstance(error, HostUnreachableError):
            raise error from exc
        message = str(exc.get_error_message() or exc).strip()
        if exc.get_error_code() == libvirt.VIR_ERR_CPU_INCOMPATIBLE:
            return CpuCheck(CpuVerdict.INCOMPATIBLE, message, _missing_features(message))
        return CpuCheck(CpuVerdict.UNKNOWN, message)
    verdict = _COMPARE_VERDICTS.get(int(result), CpuVerdict.UNKNOWN)
    return CpuCheck(verdict, "" if verdict is not CpuVerdict.UNKNOWN else f"result {result}")


def cpu_xml_of(domain_xml: str) -> str | None:
    """The ``<cpu>`` element of a domain XML document, as XML text (``None`` if it has none)."""
    cpu = _parse(domain_xml, "domain").find("cpu")
    if cpu is None or (cpu.get("mode") in (None, "custom") and cpu.find("model") is None):
        return None
    cpu.tail = None
    return tostring(cpu, encoding="unicode")


def _missing_features(message: str) -> tuple[str, ...]:
    match = _FEATURES.search(message)
    if not match:
        return ()
    return tuple(f.strip() for f in match.group(1).split(",") if f.strip())


def migratable_xml(host: LibvirtHost, name: str) -> str:
    """The VM's definition as libvirt would send it to a migration's destination."""
    dom = host._lookup(name)
    try:
        return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the migratable XML of VM {name!r}") from exc


# -- host -------------------------------------------------------------------------------


def _host_uuid(host: LibvirtHost) -> str | None:
    try:
        caps = str(host._c.getCapabilities())
    except libvirt.libvirtError as exc:
        raise host._error(exc, "reading the capabilities") from exc
    uuid = _parse(caps, "capabilities").findtext("host/uuid")
    return uuid.strip().lower() if uuid and uuid.strip() else None


def _destination_vms(host: LibvirtHost) -> tuple[frozenset[str], frozenset[str], int]:
    """Names and UUIDs of every VM on ``host``, and the vCPUs of those running."""
    try:
        domains = host._c.listAllDomains(0)
    except libvirt.libvirtError as exc:
        raise host._error(exc, "listing VMs") from exc
    names: set[str] = set()
    uuids: set[str] = set()
    vcpus = 0
    for dom in domains:
        try:
            names.add(str(dom.name()))
            uuids.add(str(dom.UUIDString()).lower())
            if dom.isActive():
                vcpus += int(dom.info()[3])
        except libvirt.libvirtError as exc:
            error = host._error(exc, "reading a VM")
            if not isinstance(error, NotFoundError):
                raise error from exc
            log.debug("a VM disappeared while listing host %s", host.name)
    return frozenset(names), frozenset(uuids), vcpus


def _networks(host: LibvirtHost) -> tuple[NetworkFacts, ...]:
    try:
        nets = [(str(n.name()), bool(n.isActive()), str(n.XMLDesc(0)))
                for n in host._c.listAllNetworks(0)]  # fmt: skip
    except libvirt.libvirtError as exc:
        raise host._error(exc, "listing networks") from exc
    facts = []
    for name, active, xml in sorted(nets):
        root = _parse(xml, "network")
        bridge = root.find("bridge")
        facts.append(
            NetworkFacts(
                name=name,
                active=active,
                bridge=(bridge.get("name") or None) if bridge is not None else None,
                portgroups=tuple(pg.get("name", "") for pg in root.findall("portgroup")),
            )
        )
    return tuple(facts)


def _interfaces(host: LibvirtHost) -> tuple[str, ...] | None:
    """Names of the host's network interfaces, or ``None`` when its interface API fails."""
    try:
        return tuple(sorted(str(i.name()) for i in host._c.listAllInterfaces(0)))
    except libvirt.libvirtError as exc:
        error = host._error(exc, "listing network interfaces")
        if isinstance(error, HostUnreachableError):
            raise error from exc
        log.debug("host %s cannot list interfaces: %s", host.name, error.message)
        return None


# -- storage ----------------------------------------------------------------------------


def pool_facts(host: LibvirtHost) -> tuple[PoolFacts, ...]:
    """Every storage pool of ``host``: active or not, its directory, its free bytes."""
    try:
        raw = [(str(p.name()), bool(p.isActive()), p.info(), str(p.XMLDesc(0)))
               for p in host._c.listAllStoragePools(0)]  # fmt: skip
    except libvirt.libvirtError as exc:
        raise host._error(exc, "listing storage pools") from exc
    facts = []
    for name, active, info, xml in sorted(raw, key=lambda r: r[0]):
        path = _parse(xml, "pool").findtext("target/path")
        facts.append(
            PoolFacts(
                name=name,
                active=active,
                path=_dir(path) if path and path.strip() else None,
                available_bytes=int(info[3]) if active else None,
            )
        )
    return tuple(facts)


def _placement(
    source: LibvirtHost, destination: LibvirtHost, disk: Disk, pools: tuple[PoolFacts, ...]
) -> DiskPlacement:
    if disk.source_kind == "network":
        return DiskPlacement(disk.target, disk.source, DiskReach.NETWORK)
    if disk.source_kind == "volume":
        path = _volume_path(source, disk)
        copy_pool = disk.pool if any(p.name == disk.pool for p in pools) else None
    else:
        path = disk.source
        folder = _dir(posixpath.dirname(path or "")) if path else ""
        copy_pool = next((p.name for p in pools if p.path == folder), None)
    if path is None:
        return DiskPlacement(disk.target, None, DiskReach.LOCAL, copy_pool)
    capacity = _capacity_at(destination, path, pools)
    if capacity is None:
        return DiskPlacement(disk.target, path, DiskReach.LOCAL, copy_pool)
    return DiskPlacement(disk.target, path, DiskReach.SHARED, copy_pool, capacity)


def _into_pool(destination: LibvirtHost, placement: DiskPlacement,
               pools: tuple[PoolFacts, ...], pool_name: str | None) -> DiskPlacement:  # fmt: skip
    """A local disk's placement when its copy goes into pool ``pool_name`` (``--to-pool``):
    that pool, the copy's path there (the disk's file name), whether that path is taken."""
    if pool_name is None or placement.reach is not DiskReach.LOCAL:
        return placement
    pool = next((p for p in pools if p.name == pool_name), None)
    if pool is None or not pool.path or placement.path is None:
        return replace(placement, copy_pool=None if pool is None else pool.name)
    path = f"{pool.path.rstrip('/')}/{posixpath.basename(placement.path)}"
    taken = _capacity_at(destination, path, pools) is not None
    return replace(placement, copy_pool=pool.name, copy_path=path, copy_path_taken=taken)


def _volume_path(host: LibvirtHost, disk: Disk) -> str | None:
    pool = disk.pool or ""
    volume = (disk.source or "").removeprefix(f"{pool}/")
    try:
        return str(host._c.storagePoolLookupByName(pool).storageVolLookupByName(volume).path())
    except libvirt.libvirtError as exc:
        error = host._error(exc, f"resolving volume {disk.source}")
        if isinstance(error, HostUnreachableError):
            raise error from exc
        log.debug("cannot resolve %s on %s: %s", disk.source, host.name, error.message)
        return None


def _capacity_at(host: LibvirtHost, path: str, pools: tuple[PoolFacts, ...]) -> int | None:
    """Capacity of the volume ``host`` has at ``path``, or ``None`` if it has none.

    A pool only knows the files it saw at its last refresh, so when the first lookup misses,
    the active pools whose directory holds ``path`` are refreshed and it is looked up again.
    """
    found = _lookup_path(host, path)
    if found is None:
        holders = [p.name for p in pools if p.active and p.path and _inside(path, p.path)]
        for name in holders:
            try:
                host._c.storagePoolLookupByName(name).refresh(0)
            except libvirt.libvirtError as exc:
                log.debug("cannot refresh pool %s on %s: %s", name, host.name, exc)
        if holders:
            found = _lookup_path(host, path)
    return found


def _lookup_path(host: LibvirtHost, path: str) -> int | None:
    try:
        return int(host._c.storageVolLookupByPath(path).info()[1])
    except libvirt.libvirtError as exc:
        error = host._error(exc, f"looking up {path}")
        if isinstance(error, HostUnreachableError):
            raise error from exc
        return None


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _dir(path: str) -> str:
    return posixpath.normpath(path.strip())


# -- XML --------------------------------------------------------------------------------


def _parse(xml: str, what: str) -> Element:
    try:
        root: Element = fromstring(xml, forbid_dtd=True, forbid_entities=True,
                                   forbid_external=True)  # fmt: skip
    except (ParseError, DefusedXmlException) as exc:
        raise VmferryError(f"libvirt gave unreadable {what} XML: {exc}", cause=exc) from exc
    return root
