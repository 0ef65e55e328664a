"""The console's Import page (TestClient on SQLite, the import service faked by the real
parser and planner with nothing copied): the sources under the admin's import
directories, a check's findings and domain XML, the API's path rule, and who may import."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.console_fakes import Console, console

from vmferry.service.settings import IMPORT_DIRS_SETTING
from vmferry.store.db import Store


@pytest.fixture
def ui(sqlite_store: Store, tmp_path: Path) -> Iterator[Console]:
    allowed, outside = tmp_path / "imports", tmp_path / "elsewhere"
    for folder in (allowed, outside):
        folder.mkdir()
        (folder / "disk.raw").write_bytes(bytes(1 << 20))
    (allowed / "notes.txt").write_text("not a VM")
    with console(sqlite_store) as served:
        sqlite_store.set_setting(IMPORT_DIRS_SETTING, str(allowed))
        yield served


def test_import_lists_sources_and_checks_one(ui: Console, tmp_path: Path) -> None:
    ui.login("operator")
    page = ui.client.get("/import")
    assert f"<option>{tmp_path / 'imports' / 'disk.raw'}</option>" in page.text
    assert "notes.txt" not in page.text and str(tmp_path / "elsewhere") not in page.text
    token = page.text.split('name="csrf_token" value="')[2].split('"')[0]
    checked = ui.client.post("/import", data={
        "csrf_token": token, "source": str(tmp_path / "imports" / "disk.raw"), "to": "kvm2",
        "name": "imported1", "network_map": "*=default", "what": "check"})  # fmt: skip
    assert checked.status_code == 200, checked.text
    assert 'id="import-outcome"' in checked.text
    heading = checked.text.split('id="outcome-h">')[1].split("</h2>")[0]
    assert heading == "imported1 from image: dry-run", heading
    assert (
        "&lt;domain type=" in checked.text and "&lt;name&gt;imported1&lt;/name&gt;" in checked.text
    )


def test_a_source_outside_the_import_dirs_is_refused_in_words(ui: Console,
                                                              tmp_path: Path) -> None:  # fmt: skip
    ui.login("operator")
    token = ui.client.get("/import").text.split('name="csrf_token" value="')[2].split('"')[0]
    refused = ui.client.post("/import", data={
        "csrf_token": token, "source": str(tmp_path / "elsewhere" / "disk.raw"), "to": "kvm2",
        "what": "check"})  # fmt: skip
    assert refused.status_code == 403
    assert "is not inside the import directories" in refused.text and "import.path" in refused.text
    relative = ui.client.post("/import", data={"csrf_token": token, "source": "disk.raw",
                                               "to": "kvm2", "what": "check"})  # fmt: skip
    assert relative.status_code == 422 and 'id="import-error"' in relative.text


def test_viewer_and_self_service_may_not_import(ui: Console) -> None:
    ui.login("viewer")
    assert ui.client.get("/import").status_code == 403
    ui.client.cookies.clear()
    ui.login("selfweb")
    refused = ui.client.get("/import")
    assert refused.status_code == 403 and "self-service.fleet-wide" in refused.text


def test_an_import_run_becomes_a_job(ui: Console, tmp_path: Path) -> None:
    ui.login("operator")
    token = ui.client.get("/import").text.split('name="csrf_token" value="')[2].split('"')[0]
    started = ui.client.post("/import", data={
        "csrf_token": token, "source": str(tmp_path / "imports" / "disk.raw"), "to": "kvm2",
        "name": "imported2", "what": "run"}, follow_redirects=False)  # fmt: skip
    assert started.status_code == 303, started.text
    job_id = started.headers["location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while not (job := ui.store.get_job(job_id)).status.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (job.kind, job.vm, job.destination, job.status.value) == (
        "import", "imported2", "kvm2", "completed")  # fmt: skip
    assert "import completed: imported2 on kvm2" in ui.client.get(f"/jobs/{job_id}").text
