"""POST /api/v1/imports on SQLite and PostgreSQL: only paths inside the directories of
``server.import_dirs`` (symlinks and .. resolved; a VMX's disks too), else 403
``import.path`` with nothing written; an import runs as a job in a thread of the server (the
importer faked: the real source parser and mapping, no copy), a dry run answers at once,
and a cancel stops a copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import Api
from test_server_api import sse, trail

from vmferry.model.settings import IMPORT_DIRS_SETTING


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    allowed, outside = tmp_path / "imports", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    for folder in (allowed, outside):
        (folder / "disk.raw").write_bytes(bytes(1 << 20))
    return {"allowed": allowed, "outside": outside}


def allow(api: Api, *folders: Path) -> None:
    api.store.set_setting(IMPORT_DIRS_SETTING, ":".join(str(f) for f in folders))


def post(api: Api, body: dict[str, Any], who: str = "operator") -> Any:
    return api.client.post("/api/v1/imports", headers=api.as_(who), json=body)


def refused_with_nothing_written(api: Api, done: Any, words: str) -> None:
    assert done.status_code == 403, done.text
    assert done.json()["rule"] == "import.path" and words in done.json()["detail"]
    assert api.store.list_jobs() == [] and api.actions.calls == []
    assert trail(api)[-1][3] == "refused"


def test_imports_are_refused_until_the_dirs_are_set(api: Api, dirs: dict[str, Path]) -> None:
    done = post(api, {"source": str(dirs["allowed"] / "disk.raw"), "to": "kvm2"})
    refused_with_nothing_written(api, done, "server.import_dirs")


@pytest.mark.parametrize("escape", ["outside", "dotdot", "symlink", "workdir", "vmx"])
def test_a_path_outside_the_import_directories_is_refused(api: Api, dirs: dict[str, Path],
                                                          escape: str) -> None:  # fmt: skip
    allow(api, dirs["allowed"])
    allowed, outside = dirs["allowed"], dirs["outside"]
    body = {"source": str(allowed / "disk.raw"), "to": "kvm2"}
    if escape == "outside":
        body["source"] = str(outside / "disk.raw")
    elif escape == "dotdot":
        body["source"] = f"{allowed}/../elsewhere/disk.raw"
    elif escape == "symlink":
        os.symlink(outside / "disk.raw", allowed / "link.raw")
        body["source"] = str(allowed / "link.raw")
    elif escape == "workdir":
        body["workdir"] = str(outside)
    else:
        (allowed / "vm.vmx").write_text(f'displayName = "vm"\nscsi0.present = "TRUE"\n'
                                        f'scsi0:0.present = "TRUE"\n'
                                        f'scsi0:0.fileName = "{outside}/disk.vmdk"\n')  # fmt: skip
        body["source"] = str(allowed / "vm.vmx")
    refused_with_nothing_written(api, post(api, body), "not inside the import directories")


def test_an_import_runs_as_a_job_to_the_end(api: Api, dirs: dict[str, Path]) -> None:
    allow(api, dirs["outside"], dirs["allowed"])
    link = dirs["allowed"] / "inside.raw"
    os.symlink(dirs["allowed"] / "disk.raw", link)  # a symlink that stays inside is fine
    done = post(api, {"source": str(link), "to": "kvm2", "name": "imported1", "vcpus": 4})
    assert done.status_code == 202, done.text
    job = done.json()
    assert (job["kind"], job["vm"], job["destination"]) == ("import", "imported1", "kvm2")
    assert done.headers["location"] == f"/api/v1/jobs/{job['id']}"
    events = sse(api.client.get(f"/api/v1/jobs/{job['id']}/events",
                                headers=api.as_("viewer")).text)  # fmt: skip
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "completed"
    kinds = [e["event"] for e in events]
    assert "progress" in kinds and "note" in kinds
    result = [e["data"]["data"] for e in events if e["event"] == "import"][-1]
    assert (result["vm"], result["status"]) == ("imported1", "completed")
    assert result["spec"]["vcpus"] == 4
    assert result["disks"][0]["checksum_match"] is True
    assert api.actions.calls == [("import", str(link))]
    assert trail(api) == [("operator", "import", str(link), "ok")]


def test_a_dry_run_answers_at_once_and_makes_no_job(api: Api, dirs: dict[str, Path]) -> None:
    allow(api, dirs["allowed"])
    done = post(api, {"source": str(dirs["allowed"] / "disk.raw"), "to": "kvm1",
                      "dry_run": True})  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "dry-run" and "<domain" in done.json()["domain_xml"]
    assert api.store.list_jobs() == []


def test_a_cancel_stops_an_import_while_it_copies(api: Api, dirs: dict[str, Path]) -> None:
    allow(api, dirs["allowed"])
    api.actions.hold = True
    job_id = post(api, {"source": str(dirs["allowed"] / "disk.raw"), "to": "kvm2"}).json()["id"]
    cancel = api.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=api.as_("operator"))
    assert cancel.status_code == 202
    api.actions.release.set()
    events = sse(api.client.get(f"/api/v1/jobs/{job_id}/events",
                                headers=api.as_("viewer")).text)  # fmt: skip
    assert events[-1]["data"]["status"] == "cancelled"
    assert "cancelled" in events[-1]["data"]["reason"]


def test_bad_import_bodies_and_roles(api: Api, dirs: dict[str, Path]) -> None:
    allow(api, dirs["allowed"])
    source = str(dirs["allowed"] / "disk.raw")
    relative = post(api, {"source": "disk.raw", "to": "kvm2", "disk_bus": "scsi"})
    assert relative.status_code == 422
    assert sorted(p["path"] for p in relative.json()["detail"]) == ["body.disk_bus",
                                                                    "body.source"]  # fmt: skip
    bad_map = post(api, {"source": source, "to": "kvm2", "network_map": ["novalue"]})
    assert bad_map.status_code == 422 and bad_map.json()["detail"][0]["path"] == "body.network_map"
    assert post(api, {"source": source, "to": "kvm9"}).status_code == 404
    for who, rule in (("planner", "role.planner"), ("viewer", "role.viewer.read-only"),
                      ("selfweb", "self-service.fleet-wide")):  # fmt: skip
        done = post(api, {"source": source, "to": "kvm2"}, who)
        assert (done.status_code, done.json()["rule"]) == (403, rule)
    assert api.store.list_jobs() == [] and api.actions.calls == []
