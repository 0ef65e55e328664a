"""`vmferry move-storage`: whether a running VM's disk can move to another pool of its host,
and the volume it moves into. Pure: from the VM's disk and the host's pools."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from vmferry.assess.preflight import PoolFacts
from vmferry.model.vm import Disk, DiskDevice

__all__ = ["FORMATS", "StorageMove", "StorageMoveRefused", "plan_storage_move"]

FORMATS = ("qcow2", "raw")


@dataclass(frozen=True)
class StorageMove:
    """Copy disk ``target`` (``source_path``, in ``source_pool`` when a pool holds it) into a
    new volume ``volume`` of ``pool`` (``fmt``, ``capacity_bytes``)."""

    target: str
    source_path: str
    source_pool: str | None
    pool: str
    volume: str
    fmt: str
    capacity_bytes: int
    needed_bytes: int  # what the copy may take: all of it for raw, the used part for qcow2


class StorageMoveRefused(Exception):
    """Why the disk cannot move as asked; ``blocked``: the request is sound but the host
    cannot take it now (exit 3), else it is bad input (exit 2)."""

    def __init__(self, message: str, *, blocked: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.blocked = blocked


def plan_storage_move(
    vm: str,
    disks: Sequence[Disk],
    source_path: str | None,
    target: str,
    pools: Sequence[PoolFacts],
    to_pool: str,
    fmt: str | None,
    existing_volumes: Sequence[str],
) -> StorageMove:
    """The move of ``vm``'s disk ``target`` (resolved on its host to ``source_path``) into
    pool ``to_pool`` as ``fmt`` (None: the disk's own format); :class:`StorageMoveRefused`
    when it cannot be. ``existing_volumes``: the names ``to_pool`` holds already."""
    found = {d.target: d for d in disks}
    disk = found.get(target)
    if disk is None:
        names = ", ".join(sorted(t for t, d in found.items() if d.device is DiskDevice.DISK))
        raise StorageMoveRefused(f"{vm} has no disk {target!r} (its disks: {names or 'none'})")
    if disk.device is not DiskDevice.DISK or disk.source_kind not in ("file", "volume"):
        kind = f"a {disk.device} of kind {disk.source_kind}"
        raise StorageMoveRefused(f"disk {target} of {vm} is {kind}: only file and volume "
                                 "disks move")  # fmt: skip
    if source_path is None or disk.capacity_bytes is None:
        raise StorageMoveRefused(f"disk {target} of {vm} is no volume its host's libvirt knows "
                                 "(refresh the pool that holds it)", blocked=True)  # fmt: skip
    fmt = fmt or disk.format or "raw"
    if fmt not in FORMATS:
        raise StorageMoveRefused(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    by_name = {p.name: p for p in pools}
    pool = by_name.get(to_pool)
    if pool is None:
        raise StorageMoveRefused(f"the host of {vm} has no storage pool {to_pool!r} (it has: "
                                 f"{', '.join(sorted(by_name)) or 'none'})")  # fmt: skip
    holder = _pool_of(source_path, pools)
    if holder == to_pool:
        raise StorageMoveRefused(f"disk {target} of {vm} is in pool {to_pool} already")
    if not pool.active:
        raise StorageMoveRefused(f"storage pool {to_pool} is not active; `virsh pool-start "
                                 f"{to_pool}` on the host first", blocked=True)  # fmt: skip
    stem = PurePosixPath(source_path).name
    if fmt != disk.format:  # a file named for its format: web1.qcow2 as raw is web1.raw
        stem = f"{PurePosixPath(stem).stem}.{fmt}"
    volume = stem if stem not in existing_volumes else f"{vm}-{target}.{fmt}"
    if volume in existing_volumes:
        raise StorageMoveRefused(f"pool {to_pool} holds {stem} and {volume} already: remove "
                                 "one, or move to another pool", blocked=True)  # fmt: skip
    used = disk.allocation_bytes if disk.allocation_bytes is not None else disk.capacity_bytes
    needed = disk.capacity_bytes if fmt == "raw" else used
    if pool.available_bytes is not None and pool.available_bytes < needed:
        free = _mib(pool.available_bytes)
        raise StorageMoveRefused(f"pool {to_pool} has {free} free; the copy of {target} "
                                 f"needs {_mib(needed)}", blocked=True)  # fmt: skip
    return StorageMove(target, source_path, holder, to_pool, volume, fmt, disk.capacity_bytes,
                       needed)  # fmt: skip


def _pool_of(path: str, pools: Sequence[PoolFacts]) -> str | None:
    parent = str(PurePosixPath(path).parent)
    for pool in pools:
        if pool.path is not None and pool.path.rstrip("/") == parent:
            return pool.name
    return None


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"
