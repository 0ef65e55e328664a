"""A bootable disk with known content, for import tests: the lab guest on a FAT "superfloppy".

The whole disk is one FAT file system with SYSLINUX in its boot sector (BIOS boots it as a
hard disk), the lab guest's kernel and initramfs, a SYSLINUX configuration with the guest's
kernel command line, and a file of seeded pseudo-random data so the disk holds real content.
Booted, the guest prints ``DISK sha256=<hash of its whole first disk>`` on its console and
then its heartbeats (see lab/guest/init), so a test can prove that what the guest reads is,
bit for bit, the disk it was given.

Needs dosfstools, mtools and syslinux (the Makefile installs them).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import tempfile
from pathlib import Path

from vmferry.errors import LabError
from vmferry.lab.guest_image import GuestImage, guest_cmdline

MIB = 2**20


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed; run `make install`") from exc
    except subprocess.CalledProcessError as exc:
        raise LabError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from exc


def build_boot_disk(
    path: Path,
    image: GuestImage,
    *,
    size_mb: int = 64,
    data_mb: int = 8,
    ip: str | None = None,
    ws_mb: int = 16,
    seed: int = 1,
) -> str:
    """Write the raw disk at ``path`` and return the SHA-256 of its whole content."""
    if data_mb + 40 > size_mb:
        raise LabError(f"a {size_mb} MiB disk cannot hold {data_mb} MiB of data and the guest")
    path.unlink(missing_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_mb * MIB)
    _run(["mkfs.vfat", "-n", "VMFERRY", str(path)])
    with tempfile.TemporaryDirectory(prefix="vmferry-bootdisk-") as tmp:
        cfg = Path(tmp) / "syslinux.cfg"
        cfg.write_text(
            "DEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  KERNEL vmlinuz\n"
            f"  INITRD initrd.img\n  APPEND {guest_cmdline(ws_mb=ws_mb, ip=ip)}\n"
        )
        data = Path(tmp) / "data.bin"
        data.write_bytes(random.Random(seed).randbytes(data_mb * MIB))
        for src, name in ((image.kernel, "vmlinuz"), (image.initrd, "initrd.img"),
                          (cfg, "syslinux.cfg"), (data, "data.bin")):  # fmt: skip
            _run(["mcopy", "-i", str(path), str(src), f"::{name}"])
    _run(["syslinux", "--install", str(path)])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()
