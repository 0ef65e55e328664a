"""Plans through the API on SQLite and PostgreSQL: created from the plan file's YAML (as
application/yaml or JSON), listed, shown, drawn, run in a thread of the server (its moves
by conftest's FakeMigrate, held for pause and cancel), paused, cancelled; bad plan files
are 422s that name the line and field, and write nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import Api, serving
from test_server_api import trail

from vmferry.service.plan import plan_json
from vmferry.store.db import Store

PLAN = """version: 1
name: api
defaults: {wave_slice_s: 30}
hosts:
  - {name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1, max_concurrent: 2}
  - {name: kvm2, cpus: 16, memory_mb: 8192, link_gbps: 1, max_concurrent: 2}
vms:
  - {name: web1, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1}
  - {name: web2, source: kvm1, destination: kvm2, memory_mb: 512, vcpus: 1}
"""
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def held(store: Store) -> Iterator[Api]:
    """The API whose plans' moves run until released (or cancelled)."""
    with serving(store, plan_hold=True) as api:
        yield api


def create(api: Api, who: str = "planner") -> Any:
    done = api.client.post("/api/v1/plans", headers=api.as_(who) | YAML, content=PLAN)
    assert done.status_code == 201, done.text
    return done.json()


def wait_for(api: Api, plan_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        doc: dict[str, Any] = api.client.get(f"/api/v1/plans/{plan_id}",
                                             headers=api.as_("viewer")).json()  # fmt: skip
        if doc["status"] in statuses or time.monotonic() > deadline:
            return doc
        time.sleep(0.02)


def test_a_plan_from_yaml_or_json_is_the_document_plan_show_json_prints(api: Api) -> None:
    made = create(api)
    assert made["name"] == "api" and made["status"] == "pending"
    assert sorted(i["vm"] for i in made["items"]) == ["web1", "web2"]
    assert made == plan_json(api.store.get_plan(made["id"]))
    assert api.actions.calls == [("measure", "web1,web2")]
    as_json = api.client.post("/api/v1/plans", headers=api.as_("operator"),
                              json={"yaml": PLAN, "method": "heuristic"})  # fmt: skip
    assert as_json.status_code == 201 and as_json.json()["method"] == "heuristic"
    listed = api.client.get("/api/v1/plans", headers=api.as_("selfweb")).json()
    assert [p["id"] for p in listed] == [as_json.json()["id"], made["id"]]
    assert listed[1]["vms"] == 2 and listed[1]["status"] == "pending"
    shown = api.client.get(f"/api/v1/plans/{made['id']}", headers=api.as_("viewer"))
    assert shown.json() == made
    assert trail(api) == [("planner", "plans.write", made["id"], "ok"),
                          ("operator", "plans.write", as_json.json()["id"], "ok")]  # fmt: skip


def test_a_bad_plan_file_is_422_with_its_lines_and_writes_nothing(api: Api) -> None:
    bad = PLAN.replace("memory_mb: 256", "memory_mb: -1").replace(
        "source: kvm1, dest", "source: kvm7, dest"
    )
    done = api.client.post("/api/v1/plans", headers=api.as_("planner") | YAML, content=bad)
    assert done.status_code == 422
    problems = done.json()["detail"]
    assert {p["path"] for p in problems} == {"body"}
    assert any(p["msg"].startswith("plan.yaml:8: vms[0].memory_mb") for p in problems), problems
    as_json = api.client.post("/api/v1/plans", headers=api.as_("planner"),
                              json={"yaml": "vms: [", "time_limit_s": 0})  # fmt: skip
    assert as_json.status_code == 422
    assert sorted(p["path"] for p in as_json.json()["detail"]) == ["body.time_limit_s"]
    not_yaml = api.client.post("/api/v1/plans", headers=api.as_("planner"), json={"yaml": "a: ["})
    assert not_yaml.status_code == 422
    assert not_yaml.json()["detail"][0]["path"] == "body.yaml"
    assert "not valid YAML" in not_yaml.json()["detail"][0]["msg"]
    other = api.client.post("/api/v1/plans", headers=api.as_("planner") |
                            {"Content-Type": "text/plain"}, content=PLAN)  # fmt: skip
    assert other.status_code == 415
    assert api.store.list_plans() == []
    assert api.client.get("/api/v1/plans/nope", headers=api.as_("viewer")).status_code == 404


def test_the_gantt_chart_as_html_png_and_json(api: Api) -> None:
    plan_id = create(api)["id"]
    html = api.client.get(f"/api/v1/plans/{plan_id}/gantt", headers=api.as_("viewer"))
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<svg" in html.text and "web1" in html.text
    png = api.client.get(f"/api/v1/plans/{plan_id}/gantt?format=png", headers=api.as_("viewer"))
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    bars = api.client.get(f"/api/v1/plans/{plan_id}/gantt?format=json",
                          headers=api.as_("viewer")).json()  # fmt: skip
    assert {b["vm"] for b in bars["bars"]} == {"web1", "web2"}
    assert all(b["predicted_end_s"] > b["predicted_start_s"] for b in bars["bars"])
    assert all(b["actual_start_s"] is None for b in bars["bars"])


def test_a_plan_runs_in_the_server_to_completion(api: Api) -> None:
    plan_id = create(api)["id"]
    started = api.client.post(f"/api/v1/plans/{plan_id}/run", headers=api.as_("operator"))
    assert started.status_code == 202, started.text
    assert started.headers["location"] == f"/api/v1/plans/{plan_id}"
    assert started.json()["status"] in ("running", "completed")
    done = wait_for(api, plan_id, "completed", "failed")
    assert done["status"] == "completed", done
    assert sorted(vm for vm, _, _ in api.plan_moves.calls) == ["web1", "web2"]
    assert all(api.store.get_job(i["job_id"]).status.value == "completed" for i in done["items"])
    again = api.client.post(f"/api/v1/plans/{plan_id}/run", headers=api.as_("operator"))
    assert again.status_code == 422 and "nothing to run" in again.json()["detail"][0]["msg"]


def test_pause_then_resume_then_cancel_a_running_plan(held: Api) -> None:
    one_at_a_time = PLAN.replace("max_concurrent: 2", "max_concurrent: 1")
    made = held.client.post("/api/v1/plans", headers=held.as_("planner") | YAML,
                            content=one_at_a_time)  # fmt: skip
    plan_id = made.json()["id"]
    assert held.client.post(f"/api/v1/plans/{plan_id}/run",
                            headers=held.as_("admin")).status_code == 202  # fmt: skip
    twice = held.client.post(f"/api/v1/plans/{plan_id}/run", headers=held.as_("admin"))
    assert twice.status_code in (409, 422)  # this server runs it already
    paused = held.client.post(f"/api/v1/plans/{plan_id}/pause", headers=held.as_("operator"))
    assert (paused.status_code, paused.json()["requested"]) == (202, "pause")
    held.plan_moves.release.set()  # the running move ends; the plan pauses, one VM left
    doc = wait_for(held, plan_id, "paused")
    assert doc["status"] == "paused", doc
    assert sorted(i["status"] for i in doc["items"]) == ["completed", "pending"]
    held.plan_moves.release.clear()
    resumed = held.client.post(f"/api/v1/plans/{plan_id}/resume", headers=held.as_("operator"))
    assert (resumed.status_code, resumed.json()["status"]) == (202, "running")
    deadline = time.monotonic() + 10
    while len(held.plan_moves.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancelled = held.client.post(f"/api/v1/plans/{plan_id}/cancel", headers=held.as_("operator"))
    assert (cancelled.status_code, cancelled.json()["requested"]) == (202, "cancel")
    final = wait_for(held, plan_id, "cancelled")
    assert final["status"] == "cancelled", final
    assert sorted(i["status"] for i in final["items"]) == ["cancelled", "completed"]
    stopped = held.client.post(f"/api/v1/plans/{plan_id}/pause", headers=held.as_("operator"))
    assert stopped.status_code == 422  # nothing to pause
    assert [a for _, a, _, _ in trail(held)] == [
        "plans.write", "plans.run", "plans.run", "plans.pause", "plans.resume", "plans.cancel",
        "plans.pause"]  # fmt: skip


def test_a_plan_nobody_runs_is_paused_and_cancelled_at_once(api: Api) -> None:
    plan_id = create(api)["id"]
    paused = api.client.post(f"/api/v1/plans/{plan_id}/pause", headers=api.as_("operator"))
    assert (paused.status_code, paused.json()["status"]) == (200, "paused")
    cancelled = api.client.post(f"/api/v1/plans/{plan_id}/cancel", headers=api.as_("admin"))
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert {i["status"] for i in cancelled.json()["items"]} == {"cancelled"}


def test_plan_roles(api: Api) -> None:
    plan_id = create(api, "operator")["id"]
    for who, rule in (("planner", "role.planner"), ("viewer", "role.viewer.read-only"),
                      ("selfweb", "self-service.fleet-wide")):  # fmt: skip
        run = api.client.post(f"/api/v1/plans/{plan_id}/run", headers=api.as_(who))
        assert (run.status_code, run.json()["rule"]) == (403, rule)
    made = api.client.post("/api/v1/plans", headers=api.as_("viewer") | YAML, content="x: [")
    assert (made.status_code, made.json()["rule"]) == (403, "role.viewer.read-only")
    assert api.plan_moves.calls == [] and len(api.store.list_plans()) == 1
    assert api.store.get_plan(plan_id).status.value == "pending"
