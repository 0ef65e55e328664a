"""Shared fixtures. Lab tests (marker `lab`) need root and the packages `make install` adds."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Never touch the user's own vmferry database from a test."""
    db = tmp_path_factory.mktemp("store") / "vmferry.db"
    previous = os.environ.get("VMFERRY_DB")
    os.environ["VMFERRY_DB"] = f"sqlite:///{db}"
    yield
    if previous is None:
        os.environ.pop("VMFERRY_DB", None)
    else:
        os.environ["VMFERRY_DB"] = previous


LAB_LOCK = Path("/run/vmferry-lab.lock")


@pytest.fixture(scope="module")
def lab() -> Iterator[object]:
    """A 2-host lab for one test module, taken down afterwards.

    The lab's namespaces are machine-wide, so test runs on one machine take turns: the
    fixture holds an exclusive lock on /run/vmferry-lab.lock while its lab is up (use
    `flock /run/vmferry-lab.lock CMD` to hold it by hand).
    """
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (run `make test` as root)")
    from vmferry.lab import lifecycle

    with LAB_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = lifecycle.up(hosts=2, link_mbps=400)
        try:
            yield state
        finally:
            lifecycle.down()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
