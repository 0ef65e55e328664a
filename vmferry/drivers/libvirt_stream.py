"""A running VM's disk pulled from its backing into its own image: libvirt's block pull
(QEMU's ``block-stream``), for a live import whose disks start as local qcow2 overlays over
a network backing.

``block-stream`` copies only what the overlay does not hold yet, so a pull started again
after a broken one goes on from where the last stopped, and the guest's own writes (already
in the overlay) are never overwritten. When the pull completes, libvirt drops the backing
from the running VM and from its persistent definition.
"""

from __future__ import annotations

import libvirt
from defusedxml.ElementTree import fromstring

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_pull_backup import checkpoint_xml

__all__ = [
    "AGENT_CHANNEL",
    "agent_channel_state",
    "backed_targets",
    "create_checkpoint",
    "io_error_paused",
    "set_pull_speed",
    "start_paused",
    "start_pull",
]


AGENT_CHANNEL = "org.qemu.guest_agent.0"


def agent_channel_state(xml: str) -> str | None:
    """Pure: the state libvirt gives the guest agent's channel in a running domain's XML
    (``connected`` once the guest's agent opened it, ``disconnected``), None without one."""
    root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    for channel in root.iter("channel"):
        target = channel.find("target")
        if target is not None and target.get("name") == AGENT_CHANNEL:
            return target.get("state") or "disconnected"
    return None


def start_paused(host: LibvirtHost, vm: str) -> None:
    """Start the defined ``vm`` with its vCPUs paused."""
    try:
        host._lookup(vm).createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"starting VM {vm!r}") from exc


def io_error_paused(host: LibvirtHost, vm: str) -> bool:
    """Whether QEMU paused ``vm`` on an I/O error (its disks' ``error_policy='stop'``)."""
    try:
        state, reason = host._lookup(vm).state()
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the state of {vm}") from exc
    return bool(state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR)


def create_checkpoint(host: LibvirtHost, vm: str, name: str, targets: list[str]) -> None:
    """Checkpoint ``name`` of ``vm``: a dirty bitmap on each of ``targets`` from now on."""
    try:
        host._lookup(vm).checkpointCreateXML(checkpoint_xml(name, targets, []), 0)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"taking the checkpoint of {vm}") from exc


def start_pull(host: LibvirtHost, vm: str, target: str, bytes_per_s: int = 0) -> None:
    """Start pulling disk ``target`` of ``vm`` from its backing at most ``bytes_per_s``
    (0: no cap)."""
    flags = libvirt.VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES if bytes_per_s else 0
    try:
        host._lookup(vm).blockPull(target, bytes_per_s, flags)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"starting the stream of disk {target} of {vm}") from exc


def set_pull_speed(host: LibvirtHost, vm: str, target: str, bytes_per_s: int) -> None:
    """Change the running pull of disk ``target`` to at most ``bytes_per_s``."""
    try:
        host._lookup(vm).blockJobSetSpeed(
            target, bytes_per_s, libvirt.VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES
        )
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"setting the speed of the stream of disk {target} of {vm}") from exc


def backed_targets(host: LibvirtHost, vm: str) -> set[str]:
    """The disks of running ``vm`` that still have a backing image."""
    xml = host.domain_xml(vm)
    root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    found = set()
    for disk in root.iter("disk"):
        backing = disk.find("backingStore")
        target = disk.find("target")
        if backing is not None and backing.find("source") is not None and target is not None:
            found.add(target.get("dev", ""))
    return found
