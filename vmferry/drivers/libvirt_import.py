"""What an import needs from the destination host, and the pool operations it makes.

Reads: networks, storage pools (directory, free space), defined domains, whether KVM and
OVMF are there. Changes: pool refreshes, and a probe file that tells whether a pool's
directory where vmferry runs is the directory the host reads.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.model.import_target import DestinationFacts, PoolFacts


def _pool_facts(pool: Any) -> PoolFacts:
    root = SafeET.fromstring(pool.XMLDesc(0))
    kind = root.get("type", "")
    path = root.findtext("target/path") if kind in ("dir", "fs", "netfs") else None
    active = bool(pool.isActive())
    available = int(pool.info()[3]) if active else 0
    return PoolFacts(str(pool.name()), path, available, active)


def _virt_types(conn: Any) -> set[str]:
    caps = SafeET.fromstring(conn.getCapabilities())
    return {
        str(d.get("type"))
        for guest in caps.findall("guest")
        if guest.find("arch") is not None and guest.find("arch").get("name") == "x86_64"  # type: ignore[union-attr]
        for d in guest.findall("arch/domain")
    }


def _efi(conn: Any, virt_type: str) -> tuple[bool, bool]:
    """(an EFI loader exists, a secure-boot one exists) from the domain capabilities."""
    try:
        caps = SafeET.fromstring(conn.getDomainCapabilities(None, "x86_64", "q35", virt_type, 0))
    except libvirt.libvirtError:
        return False, False
    firmware = {v.text for v in caps.findall("os/enum[@name='firmware']/value")}
    loaders = [v.text or "" for v in caps.findall("os/loader/value")]
    secure = {v.text for v in caps.findall("os/loader/enum[@name='secure']/value")}
    has_efi = "efi" in firmware or any("OVMF" in p or "edk2" in p for p in loaders)
    return has_efi, has_efi and "yes" in secure


def destination_facts(host: LibvirtHost, virt_type: str = "auto") -> DestinationFacts:
    """Read what ``host`` offers. ``virt_type`` ``auto`` picks kvm when libvirt offers it."""
    conn = host._c
    try:
        pools = {}
        for pool in conn.listAllStoragePools(0):
            facts = _pool_facts(pool)
            pools[facts.name] = facts
        domains = conn.listAllDomains(0)
        names = frozenset(str(d.name()) for d in domains)
        uuids = frozenset(str(d.UUIDString()) for d in domains)
        types = _virt_types(conn)
        chosen = virt_type if virt_type != "auto" else ("kvm" if "kvm" in types else "qemu")
        efi, secure = _efi(conn, chosen)
    except libvirt.libvirtError as exc:
        raise host._error(exc, "reading what the destination offers") from exc
    return DestinationFacts(
        host=host.name,
        networks=frozenset(host.networks()),
        pools=pools,
        domain_names=names,
        domain_uuids=uuids,
        domain_type=chosen,
        efi_loader=efi,
        secure_boot_loader=secure,
    )


def volume_names(host: LibvirtHost, pool: str) -> set[str]:
    try:
        return {str(v) for v in host._c.storagePoolLookupByName(pool).listVolumes()}
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"listing volumes of pool {pool!r}") from exc


def volume_capacity(host: LibvirtHost, pool: str, volume: str) -> int | None:
    """The capacity libvirt reports for ``volume`` (None when it does not see it)."""
    try:
        vol = host._c.storagePoolLookupByName(pool).storageVolLookupByName(volume)
        return int(vol.info()[1])
    except libvirt.libvirtError:
        return None


def pool_reachable(host: LibvirtHost, facts: PoolFacts) -> bool:
    """Whether a file written here into ``facts.path`` shows up in the host's pool."""
    if facts.path is None or not facts.active or not Path(facts.path).is_dir():
        return False
    probe = Path(facts.path) / f"vmferry-probe-{uuid.uuid4().hex}.img"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError:
        return False
    os.close(fd)
    try:
        host.refresh_pool(facts.name)
        return probe.name in volume_names(host, facts.name)
    finally:
        probe.unlink(missing_ok=True)
        host.refresh_pool(facts.name)
