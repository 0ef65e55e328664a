"""The verified copy on real (small) images through real qemu-nbd: one read of the source, a
sparse qcow2, the same digest from the read-back; and a copy that differs is caught."""

from __future__ import annotations

import fcntl
import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support.digest_reference import reference_digest
from support.nbd_served import served_images

from vmferry.drivers import qemu_nbd, verified_copy
from vmferry.drivers.nbd_client import NbdClient
from vmferry.drivers.qcow2_writer import Qcow2Writer
from vmferry.errors import ToolError
from vmferry.model.disk_digest import LEAF, copy_failure, leaf_digests

MIB = 2**20


def _raw(path: Path, size: int = 64 * MIB) -> bytes:
    """A disk with data at a few places, a run of zeros written as data, and holes."""
    with open(path, "wb") as f:
        f.truncate(size)
        for at, chunk in ((0, os.urandom(4096)), (8 * MIB, os.urandom(3 * MIB + 512)),
                          (40 * MIB, bytes(2 * MIB)), (size - 4096, os.urandom(4096))):  # fmt: skip
            f.seek(at)
            f.write(chunk)
    return path.read_bytes()


def _bytes_read_past_the_cache(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """What each ``preadv`` of a file opened ``O_DIRECT`` returned, from now on."""
    counted: list[int] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
        got = real(fd, buffers, offset, *flags)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            counted.append(got)
        return got

    monkeypatch.setattr(os, "preadv", preadv)
    return counted


def _convert(raw: Path, fmt: str, out: Path, *options: str) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out)],
                   check=True, capture_output=True)  # fmt: skip
    return out


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("vmdk", ("-o", "subformat=monolithicSparse")),
        ("vmdk", ("-o", "subformat=streamOptimized")),
        ("qcow2", ()),
        ("vhdx", ()),
        ("vpc", ("-o", "subformat=dynamic")),
        ("raw", ()),
    ],
)
@pytest.mark.parametrize("read", ["qemu-nbd", "in place", "direct"])
def test_the_copy_proves_itself_and_is_sparse(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    options: tuple[str, ...],
    read: str,
) -> None:
    content = _raw(tmp_path / "disk.raw")
    source = _convert(tmp_path / "disk.raw", fmt, tmp_path / f"source.{fmt}", *options)
    target = tmp_path / "copy.qcow2"
    served = served_images(monkeypatch)
    past_cache = _bytes_read_past_the_cache(monkeypatch)
    in_place = read != "qemu-nbd"
    seen: list[float] = []
    copied = verified_copy.copy_with_digest(source, fmt, target, on_progress=seen.append,
                                            data_file=source if in_place else None,
                                            direct=read == "direct")  # fmt: skip
    copy_past_cache = sum(past_cache)
    with verified_copy.durable(target):
        problem = verified_copy.check_image(target)
        written = verified_copy.digest_image(target, "qcow2",
                                             data_file=target if in_place else None)  # fmt: skip
    # in place, only what QEMU's map does not place in the file is served: compressed
    # grains, and a VHDX (QEMU's driver maps all of it as data, without an offset)
    unplaced = "subformat=streamOptimized" in options or fmt == "vhdx"
    if in_place:
        assert served == ([source.name] if unplaced else [])
    else:
        assert served == [source.name, target.name]
    # direct: the data QEMU places 4 KiB-aligned in the file (all but vpc's and what is
    # served) is read with O_DIRECT; the copy is read back through the page cache
    if read == "direct" and not unplaced:
        assert copy_past_cache >= (2 * MIB if fmt == "vpc" else 3 * MIB)
    else:
        assert copy_past_cache == 0
    assert sum(past_cache) == copy_past_cache
    size = copied.digest.size  # vpc rounds the size up to its geometry
    assert size >= len(content)
    padded = content + bytes(size - len(content))
    assert copied.digest == reference_digest(padded)  # the source, zeros included
    assert copy_failure(copied.digest, written, problem) is None
    assert seen and seen[-1] == 100.0
    # sparse: the zeros (holes, and the 2 MiB of zeros stored as data) are not written
    data = 3 * MIB + 3 * LEAF  # the three pieces of data, rounded to whole clusters
    assert copied.bytes_sent <= data + LEAF
    assert target.stat().st_blocks * 512 <= data + 16 * LEAF  # plus the metadata


def test_a_reader_hashes_in_its_thread_only_the_reads_asked_with_digest(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    content = _raw(raw)
    with verified_copy.open_image(raw, "raw", raw) as reader:
        assert not isinstance(reader, NbdClient)  # read in place, by a ReadQueue
        buffers = [memoryview(bytearray(2 * LEAF)) for _ in range(2)]
        plain = reader.wait(reader.submit_read(0, buffers[0]))
        hashed = reader.wait(reader.submit_read(0, buffers[1], digest=True))
    assert plain is not None and plain.digests is None  # a download's reads: not hashed
    assert hashed is not None and hashed.digests == leaf_digests(content[: 2 * LEAF])


def test_a_read_the_device_cannot_take_directly_goes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer whose address O_DIRECT refuses (EINVAL) turns the direct reads off; a file
    whose end is not 4 KiB-aligned has its tail read through the page cache."""
    raw = tmp_path / "disk.raw"
    tail = os.urandom(512)
    content = _raw(raw) + tail
    with open(raw, "ab") as f:
        f.write(tail)  # 64 MiB + 512: its last range ends off the alignment
    past_cache = _bytes_read_past_the_cache(monkeypatch)
    with verified_copy.open_image(raw, "raw", raw, direct=True) as reader:
        assert not isinstance(reader, NbdClient)
        for at, length in ((len(content) - 4096 - 512, 4096), (len(content) - 512, 512)):
            buffer = memoryview(mmap.mmap(-1, length))
            got = reader.wait(reader.submit_read(at, buffer))
            assert got is not None and bytes(got.buffer) == content[at : at + length]
        assert past_cache == [4096]  # the aligned read direct, the 512 bytes at the end not
        askew = memoryview(mmap.mmap(-1, LEAF + 8))[8:]  # not even 512-aligned in memory
        got = reader.wait(reader.submit_read(8 * MIB, askew))
        assert got is not None and bytes(got.buffer) == content[8 * MIB : 8 * MIB + LEAF]
        after = memoryview(mmap.mmap(-1, LEAF))
        got = reader.wait(reader.submit_read(0, after))
        assert got is not None and bytes(got.buffer) == content[:LEAF]
    assert past_cache == [4096]  # after the refusal, none


def test_a_file_on_a_filesystem_without_a_block_device_is_read_through_the_page_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.major(os.stat(shm).st_dev) != 0:
        pytest.fail("this machine has no tmpfs at /dev/shm")
    with tempfile.TemporaryDirectory(dir=shm) as name:
        directory = Path(name)
        raw = directory / "disk.raw"
        content = _raw(raw)
        past_cache = _bytes_read_past_the_cache(monkeypatch)
        copied = verified_copy.copy_with_digest(raw, "raw", directory / "c.qcow2",
                                                data_file=raw, direct=True)  # fmt: skip
    assert copied.digest == reference_digest(content)
    assert past_cache == []


def test_an_image_in_too_many_pieces_is_read_through_qemu_nbd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = _raw(tmp_path / "disk.raw")
    source = _convert(tmp_path / "disk.raw", "vmdk", tmp_path / "disk.vmdk")
    monkeypatch.setattr(verified_copy.mapped_image, "MAX_MAP_BYTES", 200)  # two entries
    served = served_images(monkeypatch)
    copied = verified_copy.copy_with_digest(source, "vmdk", tmp_path / "copy.qcow2",
                                            data_file=source)  # fmt: skip
    assert served == [source.name]
    assert copied.digest == reference_digest(content)


@pytest.mark.parametrize("in_place", [False, True])
def test_a_copy_changed_after_it_was_written_is_caught(tmp_path: Path, in_place: bool) -> None:
    _raw(tmp_path / "disk.raw")
    source = _convert(tmp_path / "disk.raw", "vmdk", tmp_path / "disk.vmdk")
    target = tmp_path / "copy.qcow2"
    copied = verified_copy.copy_with_digest(source, "vmdk", target,
                                            data_file=source if in_place else None)  # fmt: skip
    # the fault: one byte of the copy changes between the write and the read-back
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 9M 512", str(target)],
                   check=True, capture_output=True)  # fmt: skip
    written = verified_copy.digest_image(target, "qcow2", data_file=target if in_place else None)
    failure = copy_failure(copied.digest, written, verified_copy.check_image(target))
    assert failure == "differs from it in the GiB at offset 0"


@pytest.mark.parametrize("in_place", [False, True])
def test_a_writer_that_drops_or_mangles_data_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool
) -> None:
    _raw(tmp_path / "disk.raw")
    source = _convert(tmp_path / "disk.raw", "qcow2", tmp_path / "disk.qcow2")
    original = Qcow2Writer.write

    def mangled(self: Qcow2Writer, offset: int, data: memoryview) -> None:
        copy = bytearray(data)
        copy[-1] ^= 0xFF  # the last byte of every write
        original(self, offset, memoryview(copy))

    monkeypatch.setattr(Qcow2Writer, "write", mangled)
    target = tmp_path / "copy.qcow2"
    copied = verified_copy.copy_with_digest(source, "qcow2", target,
                                            data_file=source if in_place else None)  # fmt: skip
    written = verified_copy.digest_image(target, "qcow2", data_file=target if in_place else None)
    assert copy_failure(copied.digest, written, None) is not None


def test_faulty_metadata_is_caught(tmp_path: Path) -> None:
    _raw(tmp_path / "disk.raw")
    target = tmp_path / "copy.qcow2"
    verified_copy.copy_with_digest(tmp_path / "disk.raw", "raw", target)
    assert verified_copy.check_image(target) is None
    with open(target, "r+b") as f:  # the header cluster's refcount, 1, becomes 0
        f.seek(48)
        f.seek(int.from_bytes(f.read(8), "big"))  # the refcount table
        f.seek(int.from_bytes(f.read(8), "big"))  # its first refcount block
        f.write(b"\0\0")
    assert "corruptions" in (verified_copy.check_image(target) or "")


def test_an_unreadable_source_fails_in_one_line(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    _raw(raw)
    with pytest.raises(ToolError, match=r"qemu-nbd could not serve disk\.raw"):
        verified_copy.copy_with_digest(raw, "qcow2", tmp_path / "copy.qcow2")  # not a qcow2
    assert not (tmp_path / "copy.qcow2").exists()


def test_a_connection_that_meets_qemu_nbd_exiting_says_why_it_exited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """qemu-nbd binds its socket before it opens the image: a connection can meet it while it
    exits on a bad image (seen in CI as "Connection refused"); the error is still qemu-nbd's."""
    raw = tmp_path / "disk.raw"
    _raw(raw)
    connect = NbdClient.connect
    connecting: list[bool] = []

    class Unnoticed(subprocess.Popen[bytes]):
        """Its exit is seen only once a connection was tried: the race, made certain."""

        def poll(self) -> int | None:
            return super().poll() if connecting else None

    def late(path: Path, export: str = "") -> NbdClient:
        while not path.exists():
            time.sleep(0.01)
        time.sleep(1.0)  # qemu-nbd has given up on the image by now
        connecting.append(True)
        return connect(path, export=export)

    monkeypatch.setattr(qemu_nbd.subprocess, "Popen", Unnoticed)
    monkeypatch.setattr(qemu_nbd.NbdClient, "connect", late)
    with (
        pytest.raises(ToolError, match=r"qemu-nbd could not serve disk\.raw: .*qcow2"),
        qemu_nbd.serve(raw, "qcow2"),
    ):
        pass


@pytest.mark.parametrize("read", ["qemu-nbd", "in place", "direct"])
def test_an_interrupted_copy_leaves_no_qemu_nbd_and_no_reading_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    raw = tmp_path / "disk.raw"
    _raw(raw)

    def interrupt(percent: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(verified_copy, "PROGRESS_EVERY_S", 0.0)
    with pytest.raises(KeyboardInterrupt):
        verified_copy.copy_with_digest(raw, "raw", tmp_path / "c.qcow2", on_progress=interrupt,
                                       data_file=None if read == "qemu-nbd" else raw,
                                       direct=read == "direct")  # fmt: skip
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "qemu-nbd"],
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert children.stdout == ""
    assert [t.name for t in threading.enumerate() if t.name.startswith("vmferry-pread")] == []


def test_a_source_cut_short_while_it_is_read_in_place_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "disk.raw"
    _raw(raw)

    def cut(percent: float) -> None:  # the source shrinks under the copy
        if percent < 100.0:
            os.truncate(raw, 4 * MIB)

    monkeypatch.setattr(verified_copy, "PROGRESS_EVERY_S", 0.0)
    with pytest.raises(ToolError, match=r"^disk\.raw ended early: it changed while it was read$"):
        verified_copy.copy_with_digest(raw, "raw", tmp_path / "c.qcow2", data_file=raw,
                                       on_progress=cut)  # fmt: skip


def test_the_nbd_client_reports_server_errors(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(4 * MIB))
    with qemu_nbd.serve(raw, "raw") as client:
        assert isinstance(client, NbdClient) and client.size == 4 * MIB and client.read_only
        buffer = memoryview(bytearray(LEAF))
        assert bytes(client.read(0, buffer).buffer[:4096]) == raw.read_bytes()[:4096]
        with pytest.raises(ToolError, match="NBD error"):
            client.read(4 * MIB, buffer)  # past the end
        with pytest.raises(ToolError, match="NBD error"):
            client.write(0, buffer)  # read-only export
        extents = client.block_status(0, 4 * MIB)
        assert sum(length for length, _ in extents) <= 4 * MIB


def test_qemu_nbd_runs_under_the_limits(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(4 * MIB))
    limits = verified_copy.qemu_img.ToolLimits(memory_bytes=16 * MIB)  # too small to start
    with pytest.raises(ToolError, match="qemu-nbd"):
        verified_copy.digest_image(raw, "raw", limits=limits)
    assert sys.platform == "linux"


def test_a_full_disk_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "disk.raw"
    _raw(raw)

    def no_space(self: Qcow2Writer, offset: int, data: memoryview) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Qcow2Writer, "write", no_space)
    with pytest.raises(ToolError, match=r"^writing copy\.qcow2 failed: No space left on device$"):
        verified_copy.copy_with_digest(raw, "raw", tmp_path / "copy.qcow2")
    with pytest.raises(ToolError, match=r"^cannot create"):
        verified_copy.copy_with_digest(raw, "raw", tmp_path / "copy.qcow2")  # it exists


@pytest.mark.parametrize("in_place", [False, True])
def test_the_wall_clock_limit_holds(tmp_path: Path, in_place: bool) -> None:
    raw = tmp_path / "disk.raw"
    _raw(raw)
    limits = verified_copy.qemu_img.ToolLimits(timeout_s=0.0)
    with pytest.raises(ToolError, match="did not finish within 0 s"):
        verified_copy.copy_with_digest(raw, "raw", tmp_path / "copy.qcow2", limits=limits,
                                       data_file=raw if in_place else None)  # fmt: skip
