"""Every role against every endpoint, on SQLite and on PostgreSQL: allowed (the endpoint's
success status) or refused (403 naming the rule), self-service against its own and
another project's VM; every refused change is in the audit trail with its rule."""

from __future__ import annotations

import pytest
from conftest import Api

from vmferry.model.migration import JobStatus
from vmferry.service import audit as audit_service

OK = "ok"
ROLES = ["admin", "operator", "planner", "viewer", "selfweb", "selfdb"]

# (method, path, success status), then per role: OK or the rule that refuses.
# {web_job} and {db_job} are running jobs of web1 (project web) and db1 (project db).
MATRIX: list[tuple[str, str, int, dict[str, str]]] = [
    ("GET", "/api/v1/hosts", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/hosts/kvm1", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/vms", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/vms/web1", 200, dict.fromkeys(ROLES, OK)),
    ("PUT", "/api/v1/vms/web1/tags", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("GET", "/api/v1/jobs", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/jobs/{web_job}", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/jobs/{done_job}/events", 200, dict.fromkeys(ROLES, OK)),
    ("POST", "/api/v1/jobs/{web_job}/cancel", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": OK, "selfdb": "self-service.project"}),
    ("POST", "/api/v1/jobs/{db_job}/cancel", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.project", "selfdb": OK}),
    ("POST", "/api/v1/migrations", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": OK, "selfdb": "self-service.project"}),
    ("GET", "/api/v1/audit", 200, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": OK,
        "selfweb": "self-service.fleet-wide", "selfdb": "self-service.fleet-wide"}),
    ("GET", "/api/v1/users", 200, {
        "admin": OK, "operator": "admin-only", "planner": "admin-only", "viewer": "admin-only",
        "selfweb": "admin-only", "selfdb": "admin-only"}),
]  # fmt: skip


BODIES = {"tags": {"tags": ["project:web", "tier:1"]}, "migrations": {"vm": "web1", "to": "kvm2"}}


def test_the_matrix_names_every_route_of_the_api(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, operations in schema["paths"].items()
              for method in operations}  # fmt: skip
    covered = {(m, p.replace("{web_job}", "{job_id}").replace("{db_job}", "{job_id}")
                .replace("{done_job}", "{job_id}").replace("kvm1", "{name}")
                .replace("web1", "{vm_id}")) for m, p, _, _ in MATRIX}  # fmt: skip
    assert routes == covered


@pytest.mark.parametrize("role", ROLES)
def test_a_role_against_every_endpoint(api: Api, role: str) -> None:
    jobs = {
        "web_job": api.job("web1", JobStatus.RUNNING),
        "db_job": api.job("db1", JobStatus.RUNNING),
        "done_job": api.job("db2", JobStatus.COMPLETED),
    }
    wrong = []
    refused_changes = []
    for method, path, success, expected in MATRIX:
        url = path.format(**jobs)
        body = BODIES.get(url.rsplit("/", 1)[1])
        done = api.client.request(method, url, headers=api.as_(role), json=body)
        want = expected[role]
        got = OK if done.status_code == success else done.json().get("rule", done.status_code)
        if want != OK and done.status_code != 403:
            got = f"status {done.status_code}"
        if got != want:
            wrong.append((method, url, want, got, done.text[:200]))
        if method != "GET" and want != OK:
            target = "web1" if url.endswith("migrations") else url.split("/")[4]  # job or VM
            refused_changes.append((role, target, want))
    assert wrong == []
    trail = audit_service.entries(api.store)
    refusals = [(e.user, e.target, e.detail.get("rule")) for e in trail if e.result == "refused"]
    assert refusals == refused_changes
    assert all(e.user == role for e in trail)
    assert len(trail) == sum(1 for m, _, _, _ in MATRIX if m != "GET")
