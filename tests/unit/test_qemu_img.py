"""The qemu-img driver on real (small) images: sparse copy, limits, progress."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vmferry.drivers import qemu_img
from vmferry.errors import ToolError

MIB = 2**20


def _raw_with_data(path: Path, size_mb: int = 64) -> None:
    with open(path, "wb") as f:
        f.truncate(size_mb * MIB)
        f.seek(8 * MIB)
        f.write(b"vmferry" * (MIB // 7))


def test_parse_progress_takes_the_last_figure() -> None:
    assert qemu_img.parse_progress(b"    (0.00/100%)\r    (12.50/100%)\r") == 12.5
    assert qemu_img.parse_progress(b"no figure") is None


def test_convert_is_sparse(tmp_path: Path) -> None:
    raw, vmdk, out = tmp_path / "a.raw", tmp_path / "a.vmdk", tmp_path / "a.qcow2"
    _raw_with_data(raw)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)],
                   check=True)  # fmt: skip
    seen: list[float] = []
    qemu_img.convert(vmdk, "vmdk", out, on_progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert qemu_img.allocated_bytes(out) < 4 * MIB  # 1 MiB of data, not 64 MiB


def test_failing_convert_says_why_and_stated_format_is_not_probed(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    _raw_with_data(raw)
    with pytest.raises(ToolError, match="convert failed"):
        qemu_img.convert(raw, "qcow2", tmp_path / "out.qcow2")  # a raw file is no qcow2


def test_cpu_limit_kills_a_runaway_tool() -> None:
    limits = qemu_img.ToolLimits(cpu_seconds=1, timeout_s=30)
    with pytest.raises(ToolError, match="killed by signal"):
        qemu_img.run_limited([sys.executable, "-c", "while True: pass"], limits)


def test_memory_limit_stops_a_greedy_tool() -> None:
    limits = qemu_img.ToolLimits(memory_bytes=256 * MIB, timeout_s=30)
    with pytest.raises(ToolError, match="failed"):
        qemu_img.run_limited([sys.executable, "-c", "x = bytearray(1 << 30)"], limits)


def test_wall_clock_limit() -> None:
    limits = qemu_img.ToolLimits(timeout_s=0.5)
    with pytest.raises(ToolError, match="did not finish"):
        qemu_img.run_limited(
            [
                sys.executable,
                "-c",
                "import time\nwhile True: print(1, flush=True); time.sleep(0.1)",
            ],
            limits,
        )
