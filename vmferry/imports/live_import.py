"""The decisions of a live import (pure): what blocks it, when a broken stream is tried
again, and which bytes of a streamed disk must equal the source's.

A live import starts the VM on KVM at once over its source disks (read-only, over NBD)
with its writes in local overlays, and streams the disks in while it runs. So:

- its disks are ESXi's flat ones (the raw extent is what is served), and its guest is not
  converted (virt-v2v needs the whole disk before the first boot);
- a broken stream is started again after a delay doubling from ``FIRST_DELAY_S`` to
  ``MAX_DELAY_S``, until the stream has been broken for ``budget_s`` in a row;
- once streamed, every byte the guest did not write since it started (the dirty bitmap of
  the checkpoint taken before it ran) must equal the source's.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmferry.model.finding import Finding, Severity

__all__ = [
    "FIRST_DELAY_S",
    "MAX_DELAY_S",
    "clean_ranges",
    "convert_blocker",
    "resume_delay",
    "stream_share",
]

FIRST_DELAY_S = 2.0
MAX_DELAY_S = 30.0
COMPARE_BYTES = 4 * 2**20  # one read of each side in the proof


def convert_blocker(vm_name: str) -> Finding:
    """A live import of a guest that needs conversion: refused before anything changes."""
    return Finding(
        "import.live.convert", Severity.BLOCKER,
        f"{vm_name}: the guest needs virt-v2v's conversion, which reads its whole disk before "
        "its first boot; a live import boots it before its disk is local",
        "Import it with --strategy cold or warm, or with --convert-guest never when the "
        "guest already has virtio drivers (most Linux guests do).",
    )  # fmt: skip


def stream_share(bandwidth_mib_s: int, disks: int) -> int:
    """Bytes per second each of ``disks`` streams may take of the import's cap (0: none);
    at least 1 MiB/s."""
    if bandwidth_mib_s <= 0:
        return 0
    return max(2**20, bandwidth_mib_s * 2**20 // max(1, disks))


def resume_delay(attempt: int) -> float:
    """Seconds to wait before starting a broken stream again, the ``attempt``-th time (1..)."""
    if attempt < 1:
        raise ValueError(f"attempt {attempt}: counted from 1")
    return min(MAX_DELAY_S, FIRST_DELAY_S * float(2 ** (attempt - 1)))


def clean_ranges(size: int, dirty: Iterable[tuple[int, int]],
                 chunk: int = COMPARE_BYTES) -> list[tuple[int, int]]:  # fmt: skip
    """The (offset, length) pieces of ``[0, size)`` outside the ``dirty`` ranges (sorted or
    not, overlapping or not), each at most ``chunk`` long: what is compared with the source."""
    if chunk <= 0:
        raise ValueError(f"chunk {chunk}: expected > 0")
    pieces: list[tuple[int, int]] = []
    at = 0
    for start, length in sorted(dirty):
        end = min(size, start + length)
        pieces += _split(at, max(at, min(start, size)), chunk)
        at = max(at, end)
    pieces += _split(at, size, chunk)
    return pieces


def _split(start: int, end: int, chunk: int) -> list[tuple[int, int]]:
    return [(at, min(chunk, end - at)) for at in range(start, end, chunk)]
