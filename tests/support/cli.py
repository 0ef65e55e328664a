"""Run the `vmferry` command as a user would, against a store of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path


def vmferry(
    *args: str, db: Path, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``vmferry ARGS`` with the SQLite store at ``db`` (and ``env`` on top), captured."""
    full = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip
