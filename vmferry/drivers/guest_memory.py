"""Read a sample of a running VM's memory, to measure how well it compresses.

libvirt's ``virDomainMemoryPeek`` (``VIR_MEMORY_PHYSICAL``) reads guest-physical memory
through QEMU (``pmemsave``) without pausing the guest; a remote connection carries at most
64 KiB per call. QEMU reads an address that is not RAM without complaint, so the chunks are
spread only over addresses that are RAM on every x86 machine type: the guest's first 2 GiB
(q35 maps at least that much below the PCI hole, i440fx more), and from 4 GiB on what the
guest has beyond 3.5 GiB (the most any of them maps below the hole). A read libvirt refuses
(the VM stopped meanwhile) is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError

__all__ = ["CHUNK_BYTES", "sample_addresses", "sample_memory"]

CHUNK_BYTES = 64 * 1024  # the most one remote memoryPeek call carries
LOW_RAM = 2 * 2**30  # RAM below the PCI hole that every x86 machine type maps (q35's least)
MOST_LOW_RAM = 3584 * 2**20  # the most any of them maps below it (i440fx: 3.5 GiB)
HIGH_RAM = 4 * 2**30  # where the rest of a larger guest's RAM begins


def sample_addresses(memory_bytes: int, chunks: int) -> list[int]:
    """``chunks`` guest-physical addresses spread evenly over RAM of ``memory_bytes``
    (pure), each aligned to :data:`CHUNK_BYTES`."""
    if memory_bytes < CHUNK_BYTES or chunks < 1:
        return []
    low = min(memory_bytes, LOW_RAM)
    high = max(0, memory_bytes - MOST_LOW_RAM)
    spans = [(0, low)] + ([(HIGH_RAM, high)] if high >= CHUNK_BYTES else [])
    stride = (low + high) / chunks
    found = []
    for i in range(chunks):
        offset = int(i * stride + stride / 2)
        for start, size in spans:
            if offset < size:
                found.append(start + min(offset, size - CHUNK_BYTES) // CHUNK_BYTES * CHUNK_BYTES)
                break
            offset -= size
    return found


def sample_memory(
    host: LibvirtHost, vm: str, memory_bytes: int, chunks: int = 128
) -> Iterator[bytes]:
    """Read ``chunks`` chunks of the running VM's memory (64 KiB each); addresses QEMU
    refuses are skipped. Raises :class:`VmferryError` when none could be read."""
    dom = host._lookup(vm)
    read = 0
    last_error = ""
    for address in sample_addresses(memory_bytes, chunks):
        try:
            data = dom.memoryPeek(address, CHUNK_BYTES, libvirt.VIR_MEMORY_PHYSICAL)
        except libvirt.libvirtError as exc:
            last_error = exc.get_error_message()
            continue
        read += 1
        yield bytes(data)
    if read == 0:
        raise VmferryError(f"could not read {vm}'s memory: {last_error or 'no RAM to sample'}")
