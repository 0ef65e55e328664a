"""The throwaway PostgreSQL cluster of the store tests (tests/unit/conftest.py starts it)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PgCluster:
    bindir: Path
    socket_dir: Path
    run_as: str | None = None
    options: str = ""

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def pg_ctl(self, *args: str) -> None:
        """``pg_ctl -D DATA ARGS`` as the cluster's user (a store-fault test stops and
        starts the server with it)."""
        data, log = self.socket_dir / "data", self.socket_dir / "postgres.log"
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log), *args],
                       user=self.run_as, capture_output=True, text=True, check=True)  # fmt: skip

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self.pg_ctl("-o", self.options, "-w", "-t", "60", "start")
