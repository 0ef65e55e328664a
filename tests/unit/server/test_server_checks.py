"""POST /api/v1/checks and POST /api/v1/predictions on SQLite and PostgreSQL, with the
services faked (action_fakes.FakeActions: no libvirt): the documents `vmferry check --json`
and `vmferry predict --json` print, 404 for an unknown VM or host, 422 with the field's
path, refusals before the body is judged, and the audit rows."""

from __future__ import annotations

from typing import Any

from conftest import Api
from test_server_api import trail

from vmferry.cli.check_cmd import report_json
from vmferry.service.predict import prediction_json

MIB = 2**20


def post(api: Api, who: str, path: str, body: Any) -> Any:
    return api.client.post(f"/api/v1/{path}", headers=api.as_(who), json=body)


def test_a_check_answers_the_report_vmferry_check_json_prints(api: Api) -> None:
    done = post(api, "operator", "checks", {"vm": "web1", "to": "kvm2"})
    assert done.status_code == 200, done.text
    doc = done.json()
    assert doc == report_json(api.actions.check("web1", "kvm2", copy_storage=False))
    assert doc["blocked"] is False
    assert [f["id"] for f in doc["findings"]] == ["storage.shared"]
    assert api.actions.calls[0] == ("check", "web1")
    assert trail(api) == [("operator", "check", "web1", "ok")]


def test_a_blocked_check_is_a_report_with_its_blocker(api: Api) -> None:
    done = post(api, "admin", "checks", {"vm": "web1", "to": "kvm1", "copy_storage": True})
    assert done.status_code == 200
    doc = done.json()
    assert doc["blocked"] is True
    assert doc["findings"] == [{"id": "vm.already-there", "severity": "blocker",
                                "message": "web1 runs on kvm1 already",
                                "remediation": "choose another host"}]  # fmt: skip


def test_unknown_vm_or_host_is_404_and_a_malformed_body_422_with_its_path(api: Api) -> None:
    ghost = post(api, "operator", "checks", {"vm": "ghost", "to": "kvm2"})
    assert ghost.status_code == 404 and "ghost" in ghost.json()["detail"]
    nowhere = post(api, "operator", "checks", {"vm": "web1", "to": "kvm9"})
    assert nowhere.status_code == 404
    api.actions.calls.clear()
    bad = post(api, "operator", "checks", {"vm": "web1", "copy_storage": "maybe", "x": 1})
    assert bad.status_code == 422
    paths = sorted(p["path"] for p in bad.json()["detail"])
    assert paths == ["body.copy_storage", "body.to", "body.x"]
    assert api.actions.calls == []
    assert [r[3] for r in trail(api)] == ["rejected", "rejected", "rejected"]


def test_roles_on_checks_and_another_projects_vm(api: Api) -> None:
    body = {"vm": "web1", "to": "kvm2"}
    assert post(api, "selfweb", "checks", body).status_code == 200
    other = post(api, "selfdb", "checks", body)
    assert (other.status_code, other.json()["rule"]) == (403, "self-service.project")
    untagged = post(api, "selfweb", "checks", {"vm": "cache1", "to": "kvm1"})
    assert (untagged.status_code, untagged.json()["rule"]) == (403, "self-service.project")
    viewer = post(api, "viewer", "checks", {"vm": 3})  # refused before the body is judged
    assert (viewer.status_code, viewer.json()["rule"]) == (403, "role.viewer.read-only")
    assert post(api, "planner", "checks", body).status_code == 200
    assert [c for c in api.actions.calls if c[0] == "check"] == [("check", "web1")] * 2
    refused = [(u, t, r) for u, a, t, r in trail(api) if r == "refused"]
    assert refused == [("selfdb", "web1", "refused"), ("selfweb", "cache1", "refused"),
                       ("viewer", None, "refused")]  # fmt: skip


def test_a_prediction_answers_what_vmferry_predict_json_prints(api: Api) -> None:
    body = {"vm": "db1", "to": "kvm1", "max_downtime_ms": 200, "bandwidth_mib_s": 50}
    done = post(api, "planner", "predictions", body)
    assert done.status_code == 200, done.text
    doc = done.json()
    report = api.actions.predict("db1", "kvm1", max_downtime_ms=200, bandwidth_mib_s=50,
                                 store=api.store)  # fmt: skip
    assert doc == prediction_json(report)
    assert doc["inputs"]["downtime_limit_ms"] == 200
    assert doc["inputs"]["link_bytes_s"] == 50 * MIB
    assert doc["inputs"]["memory_bytes"] == 16 * 2**30
    assert isinstance(doc["converges"], bool) and doc["total_time_ms"] > 0
    assert trail(api) == [("planner", "predict", "db1", "ok")]


def test_prediction_refusals_and_bad_input(api: Api) -> None:
    paused = post(api, "operator", "predictions", {"vm": "db2", "to": "kvm1"})
    assert paused.status_code == 422
    assert "only a running VM" in paused.json()["detail"][0]["msg"]
    assert post(api, "operator", "predictions", {"vm": "ghost", "to": "kvm1"}).status_code == 404
    low = post(api, "operator", "predictions", {"vm": "db1", "to": "kvm1", "max_downtime_ms": 5})
    assert low.status_code == 422
    assert [p["path"] for p in low.json()["detail"]] == ["body.max_downtime_ms"]
    unchannelled = post(api, "operator", "predictions",
                        {"vm": "db1", "to": "kvm1", "compression": "zstd"})  # fmt: skip
    assert unchannelled.status_code == 422
    assert "give --parallel 2 or more" in unchannelled.json()["detail"][0]["msg"]
    zstd = post(api, "operator", "predictions",
                {"vm": "db1", "to": "kvm1", "parallel": 4, "compression": "zstd"})  # fmt: skip
    assert zstd.status_code == 200, zstd.text
    assert (zstd.json()["inputs"]["channels"], zstd.json()["inputs"]["compression_ratio"]) == (
        4, 0.5)  # the fake's ratio for zstd  # fmt: skip
    mine = post(api, "selfdb", "predictions", {"vm": "db1", "to": "kvm1"})
    assert mine.status_code == 200
    theirs = post(api, "selfweb", "predictions", {"vm": "db1", "to": "kvm1"})
    assert (theirs.status_code, theirs.json()["rule"]) == (403, "self-service.project")
    viewer = post(api, "viewer", "predictions", {"vm": "db1", "to": "kvm1"})
    assert (viewer.status_code, viewer.json()["rule"]) == (403, "role.viewer.read-only")
