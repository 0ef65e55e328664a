"""``--strategy warm-incremental``: the disks only the source sees copied to the destination
while the VM runs, then only what changed, round after round; a short stop for the last
changes; the VM boots on the destination.

Each round is a libvirt pull-mode backup of the VM's copied disks
(:mod:`vmferry.drivers.libvirt_pull_backup`): the first serves the whole disks and starts
checkpoint 0, each next one serves what changed since the last checkpoint and starts the
next. vmferry reads what a round serves over NBD and writes it into sparse raw volumes of
the destination at the same offsets (libvirt's upload streams).
:func:`vmferry.predict.incremental.precopy_done` (pure) says when the rounds stop shrinking
the work enough; then the cutover: the guest's filesystems frozen through its agent (when it
has one), the VM paused, the last changes copied, the checkpoints deleted, the VM powered
off on the source, defined with the raw copies and started on the destination.
The stop is the last round, not the disks' size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

from vmferry.drivers.libvirt_blockcopy import create_volume
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import volume_capacity
from vmferry.drivers.libvirt_pull_backup import (
    begin_pull,
    changed_extents,
    end_pull,
    meta_context,
    upload_range,
)
from vmferry.drivers.nbd_client import NbdClient

__all__ = ["CHUNK", "copy_round", "make_copies"]

CHUNK = 4 * 2**20  # bytes read and written at a time


def make_copies(src: LibvirtHost, dst: LibvirtHost,
                copies: Sequence[tuple[str, str, str]]) -> dict[str, str]:  # fmt: skip
    """For each (target, source path, destination pool): a sparse raw volume of the disk's
    capacity in that pool, named for the disk's file; target -> its path there."""
    made: dict[str, str] = {}
    for target, path, pool in copies:
        name = f"{PurePosixPath(path).stem}.raw"
        made[target] = create_volume(dst, pool, name, volume_capacity(src, path), "raw",
                                     allocation=0)  # fmt: skip
    return made


def copy_round(src: LibvirtHost, dst: LibvirtHost, vm: str, destinations: dict[str, str],
               others: list[str], *, checkpoint: str | None, since: str | None,
               check: Callable[[], None], rate_bytes_s: float | None = None) -> int:  # fmt: skip
    """One round: serve ``destinations``' disks of ``vm`` (whole, or what changed since
    checkpoint ``since``), starting ``checkpoint``; copy it into the destination volumes, at
    most ``rate_bytes_s`` on average (None: as fast as it goes); the bytes copied. ``check``
    is called between chunks (it raises to stop the round)."""
    targets = list(destinations)
    backup = begin_pull(src, vm, targets, others, checkpoint=checkpoint, incremental=since)
    copied, began = 0, time.monotonic()
    try:
        for target, path in destinations.items():
            client = NbdClient.connect_tcp(backup.address, backup.port,
                                           export=backup.exports[target],
                                           meta_context=meta_context(backup, target))  # fmt: skip
            try:
                for offset, length in list(changed_extents(client, dirty_bitmap=since is not None)):
                    end = offset + length
                    while offset < end:
                        check()
                        buffer = memoryview(bytearray(min(CHUNK, end - offset)))
                        client.read(offset, buffer)  # holes stay zeros
                        upload_range(dst, path, offset, buffer)
                        offset += len(buffer)
                        copied += len(buffer)
                        if rate_bytes_s is not None:  # ahead of the rate: wait for it
                            time.sleep(max(0.0, copied / rate_bytes_s
                                           - (time.monotonic() - began)))  # fmt: skip
            finally:
                client.abandon()
    finally:
        end_pull(src, vm)
    return copied
