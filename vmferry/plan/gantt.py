"""Draw a schedule as a Gantt chart: a self-contained HTML page (inline SVG, no network)
or a PNG written by a small pure-Python rasteriser (zlib + struct; no imaging library).

One bar per VM from its predicted start to its predicted end, coloured by wave. When
``actual`` times are given (VM name -> (start_s, end_s) from the plan's start), a thinner
dark bar per VM shows what really happened. The HTML has one row per VM with its name and a
tooltip; the PNG has no text (axis ticks are lines every ``tick`` seconds, the step is in
the HTML legend) and, above 600 VMs, packs bars into lanes so the image stays small.
"""

from __future__ import annotations

import heapq
import html
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

from vmferry.errors import BadInputError
from vmferry.plan.model import Schedule

PALETTE = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)
ACTUAL = (20, 20, 20)
PNG_WIDTH = 1200
PNG_MARGIN = 20
PNG_TOP = 30
PNG_ONE_ROW_PER_VM_MAX = 600

Actual = Mapping[str, tuple[float, float]]


def wave_colour(wave: int) -> tuple[int, int, int]:
    return PALETTE[(wave - 1) % len(PALETTE)]


def tick_step(span_s: float) -> int:
    """A round step giving 4 to 12 ticks over ``span_s`` seconds."""
    for step in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400):
        if span_s / step <= 12:
            return step
    return 86400 * max(1, round(span_s / 86400 / 10))


def _span(schedule: Schedule, actual: Actual | None) -> float:
    ends = [float(schedule.makespan_s), 1.0]
    if actual:
        ends.extend(end for _, end in actual.values())
    return max(ends)


def _fmt_s(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- HTML ----------------------------------------------------------------------------------


def render_html(schedule: Schedule, actual: Actual | None = None) -> str:
    """A standalone HTML page with the chart as inline SVG."""
    migs = schedule.migrations
    label_w, chart_w, top = 170, 1000, 30
    row_h = 16 if len(migs) <= 2000 else 4
    span = _span(schedule, actual)
    scale = chart_w / span
    height = top + row_h * len(migs) + 10
    step = tick_step(span)
    parts: list[str] = []
    for k in range(int(span // step) + 1):
        x = label_w + k * step * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 5}" x2="{x:.1f}" y2="{height}" class="tick"/>'
            f'<text x="{x + 2:.1f}" y="{top - 10}" class="axis">{_fmt_s(k * step)}</text>'
        )
    for a, b in schedule.windows:
        if a < span:
            parts.append(
                f'<rect class="window" x="{label_w + a * scale:.1f}" y="{top}" '
                f'width="{(min(b, span) - a) * scale:.1f}" height="{height - top}"/>'
            )
    for row, m in enumerate(migs):
        y = top + row * row_h
        name = html.escape(m.vm)
        r, g, b = wave_colour(m.wave)
        tip = html.escape(
            f"{m.vm}: {m.source} -> {m.destination}, wave {m.wave}, "
            f"{_fmt_s(m.start_s)}-{_fmt_s(m.end_s)} ({m.predicted_s} s predicted)"
            + (f", group {m.group}" if m.group else "")
        )
        if row_h >= 10:
            parts.append(f'<text x="4" y="{y + row_h - 4}" class="label">{name}</text>')
        parts.append(
            f'<rect class="bar predicted" data-vm="{name}" data-wave="{m.wave}" '
            f'x="{label_w + m.start_s * scale:.2f}" y="{y + 1}" '
            f'width="{max(1.0, m.predicted_s * scale):.2f}" height="{max(1, row_h - 2)}" '
            f'fill="rgb({r},{g},{b})"><title>{tip}</title></rect>'
        )
        if actual and m.vm in actual:
            a0, a1 = actual[m.vm]
            parts.append(
                f'<rect class="bar actual" data-vm="{name}" x="{label_w + a0 * scale:.2f}" '
                f'y="{y + row_h / 2 - row_h / 6:.1f}" width="{max(1.0, (a1 - a0) * scale):.2f}" '
                f'height="{max(1.0, row_h / 3):.1f}"><title>{name}: actual '
                f"{_fmt_s(a0)}-{_fmt_s(a1)}</title></rect>"
            )
    title = html.escape(schedule.name or "migration plan")
    summary = html.escape(
        f"{len(migs)} VMs in {len(schedule.waves)} waves; makespan {_fmt_s(schedule.makespan_s)}"
        f" ({schedule.makespan_s} s), lower bound {schedule.lower_bound_s} s, "
        f"solver {schedule.method}; ticks every {step} s"
        + (f"; plan start {schedule.start_at}" if schedule.start_at else "")
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{title}</title><style>"
        "body{font-family:sans-serif;margin:16px}"
        ".label,.axis{font-size:11px;fill:#333}.tick{stroke:#ddd}"
        ".window{fill:#e8f4e8;opacity:.6}.actual{fill:rgb(20,20,20)}"
        "</style></head><body>"
        f"<h1>{title}</h1><p>{summary}</p>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 20}" '
        f'height="{height}">' + "".join(parts) + "</svg></body></html>\n"
    )


# -- PNG -----------------------------------------------------------------------------------


def png_rows(schedule: Schedule) -> dict[str, int]:
    """Row of every VM in the PNG: one per VM up to 600 VMs, else packed lanes (a bar goes
    to the lowest lane free at its start)."""
    migs = schedule.migrations
    if len(migs) <= PNG_ONE_ROW_PER_VM_MAX:
        return {m.vm: k for k, m in enumerate(migs)}
    rows: dict[str, int] = {}
    free: list[int] = []  # lanes free now
    busy: list[tuple[int, int]] = []  # (end, lane)
    lanes = 0
    for m in migs:  # ordered by start
        while busy and busy[0][0] <= m.start_s:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane, lanes = lanes, lanes + 1
        rows[m.vm] = lane
        heapq.heappush(busy, (m.end_s, lane))
    return rows


def png_row_height(n_rows: int) -> int:
    return max(2, min(14, 1800 // max(1, n_rows)))


def png_size(schedule: Schedule) -> tuple[int, int]:
    """(width, height) of ``render_png``'s image."""
    rows = png_rows(schedule)
    n_rows = max(rows.values(), default=0) + 1
    return PNG_WIDTH, PNG_TOP + n_rows * png_row_height(n_rows) + PNG_MARGIN


def render_png(schedule: Schedule, actual: Actual | None = None) -> bytes:
    """The chart as PNG bytes (8-bit RGB)."""
    width, height = png_size(schedule)
    rows = png_rows(schedule)
    n_rows = max(rows.values(), default=0) + 1
    row_h = png_row_height(n_rows)
    pixels = bytearray(b"\xff" * (width * height * 3))
    chart_w = width - 2 * PNG_MARGIN
    span = _span(schedule, actual)
    scale = chart_w / span

    def fill(x0: float, y0: int, x1: float, y1: int, colour: tuple[int, int, int]) -> None:
        a = max(0, min(width, int(x0)))
        b = max(a + 1, min(width, round(x1)))
        run = bytes(colour) * (b - a)
        for y in range(max(0, y0), min(height, y1)):
            off = (y * width + a) * 3
            pixels[off : off + len(run)] = run

    for a, b in schedule.windows:
        fill(PNG_MARGIN + a * scale, PNG_TOP, PNG_MARGIN + min(b, span) * scale, height - 10,
             (232, 244, 232))  # fmt: skip
    step = tick_step(span)
    for k in range(int(span // step) + 1):
        x = PNG_MARGIN + k * step * scale
        fill(x, PNG_TOP - 8, x + 1, height - 10, (210, 210, 210))
    fill(PNG_MARGIN, PNG_TOP - 2, PNG_MARGIN + chart_w, PNG_TOP - 1, (60, 60, 60))
    gap = 1 if row_h >= 3 else 0
    for m in schedule.migrations:
        y = PNG_TOP + rows[m.vm] * row_h
        x0 = PNG_MARGIN + m.start_s * scale
        fill(x0, y + gap, x0 + max(1.0, m.predicted_s * scale), y + row_h - gap,
             wave_colour(m.wave))  # fmt: skip
        if actual and m.vm in actual:
            a0, a1 = actual[m.vm]
            third = max(1, row_h // 3)
            mid = y + (row_h - third) // 2
            fill(PNG_MARGIN + a0 * scale, mid, PNG_MARGIN + max(a1, a0 + 1 / scale) * scale,
                 mid + third, ACTUAL)  # fmt: skip
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(pixels[y * stride : (y + 1) * stride]) for y in range(height))
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_gantt(schedule: Schedule, path: str | Path, actual: Actual | None = None) -> Path:
    """Write ``out.html`` / ``out.htm`` or ``out.png``; the suffix chooses the format."""
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix in (".html", ".htm"):
            p.write_text(render_html(schedule, actual), encoding="utf-8")
        elif suffix == ".png":
            p.write_bytes(render_png(schedule, actual))
        else:
            raise BadInputError(f"--gantt {p}: the file should end in .html or .png")
    except OSError as e:
        raise BadInputError(f"cannot write {p}: {e.strerror or e}") from e
    return p
