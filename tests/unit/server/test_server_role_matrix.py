"""Every role against every endpoint, on SQLite and on PostgreSQL: allowed (the endpoint's
success status) or refused (403 naming the rule), self-service against its own and
another project's VM; every refused change is in the audit trail with its rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Api

from vmferry.model.migration import JobStatus
from vmferry.model.settings import IMPORT_DIRS_SETTING
from vmferry.model.workload import ProfileSample
from vmferry.netprofile.spec import make_profile
from vmferry.service import audit as audit_service
from vmferry.service import netprofile
from vmferry.service.plan import create_plan

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
    # actions started through the API (checks, predictions, profiles, plans, port
    # profiles, imports, job resume)
    ("POST", "/api/v1/checks", 200, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": "role.viewer.read-only",
        "selfweb": OK, "selfdb": "self-service.project"}),
    ("POST", "/api/v1/predictions", 200, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": "role.viewer.read-only",
        "selfweb": OK, "selfdb": "self-service.project"}),
    ("POST", "/api/v1/profiles", 202, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": "role.viewer.read-only",
        "selfweb": OK, "selfdb": "self-service.project"}),
    ("GET", "/api/v1/vms/web1/profile", 200, dict.fromkeys(ROLES, OK)),
    ("POST", "/api/v1/plans", 201, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": "role.viewer.read-only",
        "selfweb": "self-service.fleet-wide", "selfdb": "self-service.fleet-wide"}),
    ("GET", "/api/v1/plans", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/plans/{plan_run}", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/plans/{plan_run}/gantt", 200, dict.fromkeys(ROLES, OK)),
    ("POST", "/api/v1/plans/{plan_run}/run", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/plans/{plan_resume}/resume", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/plans/{plan_pause}/pause", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/plans/{plan_cancel}/cancel", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("GET", "/api/v1/netprofiles", 200, dict.fromkeys(ROLES, OK)),
    ("GET", "/api/v1/netprofiles/web", 200, dict.fromkeys(ROLES, OK)),
    ("PUT", "/api/v1/netprofiles/web", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("DELETE", "/api/v1/netprofiles/old", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("PUT", "/api/v1/hosts/kvm1/netprofiles/web", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("DELETE", "/api/v1/hosts/kvm1/netprofiles/web", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/vms/web1/netprofiles/capture", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/hosts/kvm1/profiles", 202, {
        "admin": OK, "operator": OK, "planner": OK, "viewer": "role.viewer.read-only",
        "selfweb": "self-service.project", "selfdb": "self-service.project"}),
    ("POST", "/api/v1/imports", 202, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("POST", "/api/v1/jobs/{web_job}/resume", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": OK, "selfdb": "self-service.project"}),
    ("POST", "/api/v1/jobs/{db_job}/resume", 200, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.project", "selfdb": OK}),
    ("POST", "/api/v1/hosts", 201, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
    ("DELETE", "/api/v1/hosts/kvm3", 204, {
        "admin": OK, "operator": OK, "planner": "role.planner",
        "viewer": "role.viewer.read-only", "selfweb": "self-service.fleet-wide",
        "selfdb": "self-service.fleet-wide"}),
]  # fmt: skip

PLAN = """version: 1
hosts:
  - {name: kvm1, cpus: 16, memory_mb: 8192}
  - {name: kvm2, cpus: 16, memory_mb: 8192}
vms:
  - {name: p1, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1}
"""
VM_BODY = {"vm": "web1", "to": "kvm2"}


BODIES: dict[str, Any] = {
    "tags": {"tags": ["project:web", "tier:1"]},
    "migrations": {"vm": "web2", "to": "kvm2"},  # web1 has a running job already
    "checks": VM_BODY,
    "predictions": VM_BODY, "profiles": {"vm": "web1", "duration_s": 1, "interval_s": 1},
    "/api/v1/hosts/kvm1/profiles": {"duration_s": 1, "interval_s": 1},
    "plans": {"yaml": PLAN}, "web": {"network": "default"},
    "hosts": {"name": "kvm9", "uri": "test:///default"},
}  # fmt: skip


def test_the_matrix_names_every_route_of_the_api(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, operations in schema["paths"].items()
              for method in operations}  # fmt: skip
    covered = {(m, p.replace("/hosts/kvm1/netprofiles/web", "/hosts/{host}/netprofiles/{name}")
                .replace("{web_job}", "{job_id}").replace("{db_job}", "{job_id}")
                .replace("{done_job}", "{job_id}").replace("kvm1", "{name}")
                .replace("web1", "{vm_id}").replace("/netprofiles/web", "/netprofiles/{name}")
                .replace("/netprofiles/old", "/netprofiles/{name}")
                .replace("{plan_run}", "{plan_id}").replace("{plan_resume}", "{plan_id}")
                .replace("{plan_pause}", "{plan_id}").replace("{plan_cancel}", "{plan_id}")
                .replace("/hosts/kvm3", "/hosts/{name}"))
               for m, p, _, _ in MATRIX}  # fmt: skip
    assert routes == covered


def expected_target(url: str, rule: str) -> str | None:
    """What the refused request's audit row names: the VM (for a VM action refused on the
    VM's tags), nothing (refused by the role before the body is read), or the path's id."""
    last = url.rsplit("/", 1)[1]
    if url.startswith("/api/v1/hosts/kvm1/"):  # a port profile on the host, or its VMs
        return "web" if "/netprofiles/" in url else "kvm1"
    if last == "migrations":
        return "web2"
    if last in ("checks", "predictions", "profiles") and rule == "self-service.project":
        return "web1"
    if last in ("checks", "predictions", "profiles", "plans", "imports", "hosts"):
        return None
    return url.split("/")[4]  # job, plan or port profile


@pytest.fixture
def seeded(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Plans, port profiles, a profile sample and an import directory, made without the API
    (no audit rows); the ids to put in the matrix's paths."""
    monkeypatch.setenv("VMFERRY_NETPROFILES", str(tmp_path / "netprofiles"))
    for name in ("web", "old"):
        netprofile.save_profile(make_profile(name, "default"))
    (tmp_path / "plan.yaml").write_text(PLAN)
    plans = {key: create_plan(tmp_path / "plan.yaml", store=api.store,
                              measure=api.actions.measure).id
             for key in ("plan_run", "plan_resume", "plan_pause", "plan_cancel")}  # fmt: skip
    api.store.add_profile_samples([ProfileSample("web1", "kvm1", "2026-01-01T00:00:00.000Z",
                                                 {"cpu_share": 0.5, "vcpus": 2})])  # fmt: skip
    (tmp_path / "imports").mkdir()
    (tmp_path / "imports" / "disk.raw").write_bytes(bytes(1 << 20))
    api.store.set_setting(IMPORT_DIRS_SETTING, str(tmp_path / "imports"))
    BODIES["imports"] = {"source": str(tmp_path / "imports" / "disk.raw"), "to": "kvm2"}
    return plans


@pytest.mark.parametrize("role", ROLES)
def test_a_role_against_every_endpoint(api: Api, role: str, seeded: dict[str, str]) -> None:
    jobs = {
        "web_job": api.job("web1", JobStatus.RUNNING),
        "db_job": api.job("db1", JobStatus.RUNNING),
        "done_job": api.job("db2", JobStatus.COMPLETED),
        **seeded,
    }
    wrong = []
    refused_changes = []
    for method, path, success, expected in MATRIX:
        url = path.format(**jobs)
        body = BODIES.get(url, BODIES.get(url.rsplit("/", 1)[1]))
        done = api.client.request(method, url, headers=api.as_(role), json=body)
        want = expected[role]
        got = OK if done.status_code == success else done.json().get("rule", done.status_code)
        if want != OK and done.status_code != 403:
            got = f"status {done.status_code}"
        if got != want:
            wrong.append((method, url, want, got, done.text[:200]))
        if method != "GET" and want != OK:
            refused_changes.append((role, expected_target(url, want), want))
    assert wrong == []
    trail = [e for e in audit_service.entries(api.store) if not e.action.startswith("job.")]
    refusals = [(e.user, e.target, e.detail.get("rule")) for e in trail if e.result == "refused"]
    assert refusals == refused_changes
    assert all(e.user == role for e in trail)
    assert len(trail) == sum(1 for m, _, _, _ in MATRIX if m != "GET")
