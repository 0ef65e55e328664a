"""Whether an image may be read where QEMU maps it (pure), and the map of real images."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmferry.drivers.mapped_image import image_map
from vmferry.drivers.qemu_img import ToolLimits
from vmferry.errors import ToolError
from vmferry.model.disk_map import MapRange, in_place_refusal, parse_map

MIB = 2**20


def _data(start: int, length: int, offset: int | None, **kw: object) -> MapRange:
    return MapRange(start, length, zero=False, data=True, offset=offset, **kw)  # type: ignore[arg-type]


def _zeros(start: int, length: int) -> MapRange:
    return MapRange(start, length, zero=True, data=False, offset=None)


def test_stored_and_zero_ranges_that_cover_the_disk_are_read_in_place() -> None:
    ranges = [_zeros(0, MIB), _data(MIB, 2 * MIB, 4096), _zeros(3 * MIB, MIB)]
    assert in_place_refusal(ranges, 4 * MIB, file_size=4096 + 2 * MIB) is None
    # allocated zeros (data and zero, with an offset) read as zeros: nothing to check there
    zero_data = MapRange(0, MIB, zero=True, data=True, offset=10 * MIB)
    assert in_place_refusal([zero_data], MIB, file_size=0) is None
    assert in_place_refusal([], 0, file_size=0) is None


@pytest.mark.parametrize(
    ("ranges", "reason"),
    [
        ([_data(0, MIB, None, compressed=True)], "not stored as they are"),
        ([_data(0, MIB, None)], "not stored as they are"),  # encrypted: no offset
        ([_data(0, MIB, 0, depth=1)], "backing file"),
        ([MapRange(0, MIB, zero=False, data=False, offset=None)], "neither data nor zeros"),
        ([_data(0, MIB, 8 * MIB)], "past the end of the file"),
        ([_zeros(0, MIB // 2)], "covers 524288 bytes of 1048576"),
        ([_zeros(0, MIB // 2), _zeros(MIB // 2 + 512, MIB // 2 - 512)], "does not continue"),
        ([_zeros(0, MIB), _zeros(MIB // 2, MIB // 2)], "does not continue at byte 1048576"),
    ],
)
def test_what_cannot_be_read_in_place_says_why(ranges: list[MapRange], reason: str) -> None:
    refusal = in_place_refusal(ranges, MIB, file_size=8 * MIB)
    assert refusal is not None and reason in refusal


def test_the_json_of_qemu_img_map_is_read() -> None:
    text = (
        '[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false,'
        ' "data": true, "compressed": false, "offset": 327680},\n'
        '{ "start": 65536, "length": 983040, "depth": 0, "present": false, "zero": true,'
        ' "data": false, "compressed": false}]'
    )
    assert parse_map(text) == [_data(0, 65536, 327680), _zeros(65536, 983040)]
    with pytest.raises(ValueError):
        parse_map('{"start": 0}')


def test_a_real_map_places_the_data_where_the_file_holds_it(tmp_path: Path) -> None:
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(16 * MIB)
        f.seek(5 * MIB)
        f.write(b"\xab" * MIB)
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)],
                   check=True, capture_output=True)  # fmt: skip
    ranges = image_map(vmdk, "vmdk")
    assert in_place_refusal(ranges, 16 * MIB, vmdk.stat().st_size) is None
    stored = [r for r in ranges if not r.zero]
    assert [(r.start, r.length) for r in stored] == [(5 * MIB, MIB)]
    with open(vmdk, "rb") as f:
        assert stored[0].offset is not None
        f.seek(stored[0].offset)
        assert f.read(MIB) == b"\xab" * MIB
    with pytest.raises(ToolError, match=r"qemu-img map of disk\.raw failed"):
        image_map(raw, "qcow2")  # not a qcow2
    # a map longer than the bound is not read (the image goes through qemu-nbd)
    assert image_map(vmdk, "vmdk", max_bytes=100) is None
    with pytest.raises(ToolError, match="did not finish within 0 s"):
        image_map(vmdk, "vmdk", limits=ToolLimits(timeout_s=0.0))
