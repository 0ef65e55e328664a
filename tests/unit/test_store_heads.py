"""Opening a store that is current needs no Alembic (its import was 0.4 s of every command's
start); the heads read from the migration files are Alembic's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from vmferry.store.db import alembic_config, open_store, shipped_heads


def test_the_heads_read_from_the_files_are_alembics() -> None:
    assert shipped_heads() == set(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_a_current_store_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'vmferry.db'}"
    open_store(url).close()  # made and migrated: Alembic runs here
    code = (
        "import sys\n"
        "from vmferry.store.db import open_store\n"
        f"open_store({url!r}).list_hosts()\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert done.stdout.strip() == "False"
