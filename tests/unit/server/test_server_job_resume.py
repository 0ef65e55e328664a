"""POST /api/v1/jobs/{id}/resume on SQLite and PostgreSQL: what `vmferry job resume` does
(service.jobs.reconcile_job), faked for the roles and refusals, and the real service for
jobs it returns as they are (a finished one, one whose owner still drives it)."""

from __future__ import annotations

import pytest
from conftest import Api, FakeInventory, FakeMigrate
from fastapi.testclient import TestClient
from test_server_api import trail

from vmferry.model.migration import JobStatus, MigrationOptions
from vmferry.server.app import create_app
from vmferry.service.lease import process_lease
from vmferry.store.db import Store


def test_resume_calls_the_service_and_answers_the_job(api: Api) -> None:
    job_id = api.job("web1", JobStatus.RUNNING)
    done = api.client.post(f"/api/v1/jobs/{job_id}/resume", headers=api.as_("operator"))
    assert done.status_code == 200, done.text
    assert (done.json()["id"], done.json()["status"]) == (job_id, "running")
    assert api.actions.resumed == [job_id]
    assert trail(api) == [("operator", "jobs.resume", job_id, "ok")]


def test_resume_roles_and_unknown_jobs(api: Api) -> None:
    web, db = api.job("web1", JobStatus.RUNNING), api.job("db1", JobStatus.RUNNING)
    assert api.client.post(f"/api/v1/jobs/{web}/resume",
                           headers=api.as_("selfweb")).status_code == 200  # fmt: skip
    for who, job_id, rule in (("selfweb", db, "self-service.project"),
                              ("selfdb", web, "self-service.project"),
                              ("planner", web, "role.planner"),
                              ("viewer", web, "role.viewer.read-only")):  # fmt: skip
        done = api.client.post(f"/api/v1/jobs/{job_id}/resume", headers=api.as_(who))
        assert (done.status_code, done.json()["rule"]) == (403, rule)
    missing = api.client.post("/api/v1/jobs/nope/resume", headers=api.as_("admin"))
    assert missing.status_code == 404
    assert api.actions.resumed == [web]


def test_the_real_service_returns_a_finished_or_driven_job_as_it_is(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMFERRY_DB", db_url)  # the store the service opens, as the server's
    from vmferry.service import users

    token = users.add_user(store, "ops", "operator", None)[1]
    app = create_app(store, inventory=FakeInventory(), migrate=FakeMigrate(store))
    finished = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    store.set_status(finished.id, JobStatus.RUNNING)
    store.set_status(finished.id, JobStatus.FAILED, "test")
    driven = store.create_job("migrate", "db1", "kvm1", "kvm2", MigrationOptions())
    store.set_owner(driven.id, process_lease(store))  # this process drives it
    before = {j: len(store.get_job(j).events) for j in (finished.id, driven.id)}
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, raise_server_exceptions=False) as client:
        for job_id, status in ((finished.id, "failed"), (driven.id, "pending")):
            done = client.post(f"/api/v1/jobs/{job_id}/resume", headers=headers)
            assert (done.status_code, done.json()["status"]) == (200, status), done.text
    assert {j: len(store.get_job(j).events) for j in before} == before  # nothing changed
