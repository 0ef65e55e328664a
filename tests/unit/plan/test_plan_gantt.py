"""Gantt output: HTML with one bar per VM, PNG with a valid header and pixel data."""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from pathlib import Path

import pytest

from vmferry.errors import BadInputError
from vmferry.plan import Schedule, plan, render_html, render_png, write_gantt
from vmferry.plan.gantt import PNG_ONE_ROW_PER_VM_MAX, png_rows, png_size
from vmferry.plan.synthetic import synthetic_plan


def schedule(n: int, hosts: int) -> Schedule:
    return plan(synthetic_plan(n, hosts, seed=5, budget_gbps=50.0), method="heuristic")


def png_chunks(data: bytes) -> dict[bytes, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    return chunks


def test_html_has_one_bar_per_vm_and_actual_bars() -> None:
    s = schedule(40, 6)
    actual = {m.vm: (m.start_s + 3.0, m.end_s + 10.0) for m in s.migrations[:5]}
    page = render_html(s, actual)
    assert page.startswith("<!DOCTYPE html>") and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    bars = re.findall(r'class="bar predicted" data-vm="([^"]+)"', page)
    assert sorted(bars) == sorted(m.vm for m in s.migrations)
    assert len(re.findall(r'class="bar actual"', page)) == 5


def test_html_escapes_names() -> None:
    s = schedule(5, 3)
    m = s.migrations[0]
    odd = Schedule(**{**s.__dict__, "name": "<b>&", "migrations": s.migrations})
    assert "<b>&" not in render_html(odd) and "&lt;b&gt;&amp;" in render_html(odd)
    assert m.vm in render_html(s)


@pytest.mark.parametrize("n", [40, PNG_ONE_ROW_PER_VM_MAX + 100])
def test_png_header_size_and_pixels(n: int) -> None:
    s = schedule(n, max(6, n // 20))
    data = render_png(s, {s.migrations[0].vm: (0.0, 50.0)})
    chunks = png_chunks(data)
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (width, height) == png_size(s)
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + width * 3)
    assert b"IEND" in chunks
    rows = png_rows(s)
    assert len(rows) == n
    if n > PNG_ONE_ROW_PER_VM_MAX:  # packed lanes: bars in one lane never overlap
        lanes: dict[int, list[tuple[int, int]]] = {}
        for m in s.migrations:
            lanes.setdefault(rows[m.vm], []).append((m.start_s, m.end_s))
        for spans in lanes.values():
            spans.sort()
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_write_gantt_by_suffix(tmp_path: Path) -> None:
    s = schedule(10, 4)
    assert write_gantt(s, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in write_gantt(s, tmp_path / "g.HTML").read_text()
    with pytest.raises(BadInputError, match=r"should end in \.html or \.png"):
        write_gantt(s, tmp_path / "g.pdf")
    with pytest.raises(BadInputError, match="cannot write"):
        write_gantt(s, tmp_path / "missing" / "g.png")
