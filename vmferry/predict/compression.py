"""How well a guest's memory compresses the way QEMU's multifd zstd compresses it (pure).

QEMU sends a zero page as a header only (multifd finds them before compressing) and
compresses the other pages of each multifd packet with zstd at ``multifd-zstd-level``
(default 1). So the ratio that matters for the stream is zstd's over the non-zero pages:
the bytes on the wire over the non-zero bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import zstandard

__all__ = ["PAGE_BYTES", "CompressionSample", "zstd_sample"]

PAGE_BYTES = 4096
ZSTD_LEVEL = 1  # QEMU's default multifd-zstd-level (libvirt passes it unless told otherwise)
_ZERO_PAGE = bytes(PAGE_BYTES)


@dataclass(frozen=True)
class CompressionSample:
    sampled_bytes: int  # every byte read
    nonzero_bytes: int  # of which in pages that are not all zero
    compressed_bytes: int  # those pages after zstd

    @property
    def ratio(self) -> float:
        """Compressed over non-zero bytes; 1.0 when nothing non-zero was sampled."""
        return self.compressed_bytes / self.nonzero_bytes if self.nonzero_bytes else 1.0


def zstd_sample(chunks: Iterable[bytes], level: int = ZSTD_LEVEL) -> CompressionSample:
    """Compress the non-zero pages of each chunk (a run of guest memory) with zstd."""
    compressor = zstandard.ZstdCompressor(level=level)
    sampled = nonzero = compressed = 0
    for chunk in chunks:
        sampled += len(chunk)
        pages = [chunk[i : i + PAGE_BYTES] for i in range(0, len(chunk), PAGE_BYTES)]
        data = b"".join(p for p in pages if p != _ZERO_PAGE[: len(p)])
        if data:
            nonzero += len(data)
            compressed += len(compressor.compress(data))
    return CompressionSample(sampled, nonzero, compressed)
