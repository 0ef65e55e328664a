"""Lab helpers for VMs that `vmferry import` made: wrap a raw disk the way VMware stores it,
and remove an imported VM with its volumes from a lab host (tests and bench/import.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import libvirt

from vmferry.drivers.process import run_tool
from vmferry.lab.lifecycle import host_uri
from vmferry.lab.state import lab_dir


def shared_pool_dir() -> Path:
    """The lab's shared pool directory (the same path on every lab host)."""
    return lab_dir() / "shared" / "pool"


def to_vmdk(raw: Path, vmdk: Path, subformat: str = "monolithicSparse") -> Path:
    """``qemu-img convert`` a raw disk into a VMDK of ``subformat`` (streamOptimized for
    OVAs)."""
    run_tool(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={subformat}",
              str(raw), str(vmdk)], timeout_s=600)  # fmt: skip
    return vmdk


def remove_imported(host: str, name: str) -> None:
    """Destroy and undefine ``name`` on ``host`` if it is there, and delete its volumes
    (``NAME-disk*``) from the shared pool."""
    conn = libvirt.open(host_uri(host))
    try:
        with contextlib.suppress(libvirt.libvirtError):
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    finally:
        conn.close()
    for vol in shared_pool_dir().glob(f"{name}-disk*"):
        vol.unlink()
