"""The hostile corpus (tests/data/import/hostile/cases.json): every case is refused with a
one-line BadInputError (exit 2) naming the reason, and nothing is written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from vmferry.errors import BadInputError
from vmferry.sources import open_source

HOSTILE = Path(__file__).resolve().parents[2] / "data" / "import" / "hostile"
CASES: list[dict[str, Any]] = json.loads((HOSTILE / "cases.json").read_text())


def _corpus_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", HOSTILE / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_is_small_and_complete() -> None:
    committed = {c["file"] for c in CASES if not c.get("generated")}
    assert len(CASES) >= 40
    for name in committed:
        assert (HOSTILE / name).stat().st_size < 64 * 1024, name
    on_disk = {p.name for p in HOSTILE.iterdir()} - {"cases.json", "make_corpus.py"}
    assert on_disk == committed


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_hostile_case_is_refused(case: dict[str, Any], tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir(mode=0o700)
    if case.get("generated"):
        path = _corpus_module().build_generated(case["file"], tmp_path)
    else:
        path = HOSTILE / case["file"]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(BadInputError) as caught:
        open_source(path, workdir=workdir)
    message = caught.value.message
    assert case["refused_because"] in message
    assert "\n" not in message and "\r" not in message
    assert caught.value.exit_code == 2
    assert list(workdir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_hostile_names_cannot_break_the_line(tmp_path: Path) -> None:
    import io
    import tarfile

    ova = tmp_path / "x.ova"
    with tarfile.open(ova, "w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("evil\nname\x1b[31m")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/shadow\nmore"
        tar.addfile(info, io.BytesIO(b""))
    workdir = tmp_path / "w"
    workdir.mkdir()
    with pytest.raises(BadInputError) as caught:
        open_source(ova, workdir=workdir)
    assert "\n" not in caught.value.message and "\x1b" not in caught.value.message
    assert "symlink" in caught.value.message
