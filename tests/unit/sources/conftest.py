"""Fixtures for the import source tests: sample descriptors and qemu-img made images."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "import"

MakeImage = Callable[..., Path]


@pytest.fixture
def make_image() -> MakeImage:
    """``make_image(path, fmt, size, subformat=None)``: ``qemu-img create`` an image."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        pytest.skip("qemu-img is not installed")

    def make(path: Path, fmt: str, size: str = "64M", subformat: str | None = None) -> Path:
        cmd = [qemu_img, "create", "-q", "-f", fmt]
        if subformat:
            cmd += ["-o", f"subformat={subformat}"]
        subprocess.run([*cmd, str(path), size], check=True)
        return path

    return make


@pytest.fixture
def import_data() -> Path:
    """``tests/data/import``."""
    return DATA


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir(mode=0o700)
    return path
