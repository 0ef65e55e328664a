"""The console's unit tests: each a SQLite store of its own, copied from one migrated once
per session (running the store's migrations for every test costs most of its setup)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmferry.store.db import Store, open_store


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("console-template") / "vmferry.db"
    with open_store(f"sqlite:///{path}"):
        pass
    return path


@pytest.fixture
def sqlite_store(migrated_db: Path, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "vmferry.db"
    shutil.copyfile(migrated_db, path)
    with open_store(f"sqlite:///{path}") as opened:
        yield opened
