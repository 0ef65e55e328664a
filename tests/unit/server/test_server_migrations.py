"""POST /api/v1/migrations on SQLite and PostgreSQL: the move runs in a background thread
of the server (a fake of the service's migrate: it makes and runs the job in the store,
no libvirt), the request returns 202 with the job once it exists, Idempotency-Key gives
the same job again, the event stream follows the move to its end, and a cancel reaches it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Api, FakeMigrate, serving
from test_server_api import sse, trail

from vmferry.errors import AlreadyExistsError
from vmferry.model.migration import MigrationOptions
from vmferry.server.moves import MoveStarter
from vmferry.store.db import Store

MOVE = {"vm": "web1", "to": "kvm2", "strategy": "live", "max_downtime_ms": 200}


@pytest.fixture
def held(store: Store) -> Iterator[Api]:
    """The API whose moves run until ``api.migrate.release`` is set (or a cancel)."""
    with serving(store, hold=True) as api:
        yield api


def post(api: Api, who: str, body: dict[str, Any], key: str | None = None) -> Any:
    headers = api.as_(who) | ({"Idempotency-Key": key} if key else {})
    return api.client.post("/api/v1/migrations", headers=headers, json=body)


def test_a_move_starts_in_the_server_and_its_stream_follows_it_to_the_end(held: Api) -> None:
    done = post(held, "operator", MOVE)
    assert done.status_code == 202, done.text
    job = done.json()
    assert done.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["vm"], job["destination"]) == ("web1", "kvm2")
    assert job["status"] in ("pending", "running")  # made; the fake holds it running
    assert job["options"]["max_downtime_ms"] == 200
    assert held.migrate.calls == [("web1", "kvm2", "live")]
    held.migrate.release.set()
    events = sse(held.client.get(done.headers["location"] + "/events",
                                 headers=held.as_("viewer")).text)  # fmt: skip
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "completed"
    assert "progress" in [e["event"] for e in events]
    assert trail(held) == [("operator", "migrate", "web1", "ok")]


def test_a_cancel_through_the_api_reaches_the_running_move(held: Api) -> None:
    job_id = post(held, "operator", MOVE).json()["id"]
    cancel = held.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=held.as_("operator"))
    assert cancel.status_code == 202
    events = sse(held.client.get(f"/api/v1/jobs/{job_id}/events",
                                 headers=held.as_("viewer")).text)  # fmt: skip
    assert events[-1]["data"]["status"] == "cancelled"


def test_the_same_idempotency_key_gives_the_same_job_and_one_move(held: Api) -> None:
    first = post(held, "operator", MOVE, key="k-1")
    again = post(held, "operator", MOVE, key="k-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotency-replayed"] == "true"
    assert held.migrate.calls == [("web1", "kvm2", "live")]
    other = post(held, "operator", {**MOVE, "to": "kvm3"}, key="k-1")
    assert other.status_code == 409 and "another request" in other.json()["detail"]
    assert len(held.migrate.calls) == 1
    someone_else = post(held, "admin", {**MOVE, "vm": "db1"}, key="k-1")  # keys are per user
    assert someone_else.status_code == 202 and someone_else.json()["vm"] == "db1"


def test_a_move_that_fails_before_its_job_frees_its_key(held: Api) -> None:
    missing = post(held, "operator", {**MOVE, "vm": "ghost"}, key="k-2")
    assert missing.status_code == 404 and "ghost" in missing.json()["detail"]
    assert held.store.list_jobs() == []
    assert post(held, "operator", MOVE, key="k-2").status_code == 202


def test_a_move_blocked_by_its_checks_is_202_with_the_failed_job(api: Api) -> None:
    done = post(api, "admin", {**MOVE, "vm": "blocked"})
    assert done.status_code == 202
    assert (done.json()["status"], done.json()["reason"]) == ("failed", "blocked by checks")


@pytest.mark.parametrize(
    ("who", "vm", "rule"),
    [("viewer", "web1", "role.viewer.read-only"), ("planner", "web1", "role.planner"),
     ("selfweb", "db1", "self-service.project"), ("selfweb", "cache1", "self-service.project")],
)  # fmt: skip
def test_refused_moves_start_nothing(api: Api, who: str, vm: str, rule: str) -> None:
    done = post(api, who, {**MOVE, "vm": vm})
    assert done.status_code == 403 and done.json()["rule"] == rule
    assert api.migrate.calls == [] and api.store.list_jobs() == []
    assert trail(api) == [(who, "migrate", vm, "refused")]


def test_a_moves_stream_options_reach_the_job(held: Api) -> None:
    done = post(held, "operator", {**MOVE, "parallel": 4, "compression": "zstd"})
    assert done.status_code == 202, done.text
    assert (done.json()["options"]["parallel"], done.json()["options"]["compression"]) == (
        4, "zstd")  # fmt: skip
    held.migrate.release.set()


def test_self_service_moves_its_own_projects_vm(api: Api) -> None:
    done = post(api, "selfweb", MOVE)
    assert done.status_code == 202 and done.json()["vm"] == "web1"


@pytest.mark.parametrize(
    ("body", "path"),
    [({**MOVE, "strategy": "teleport"}, "body.strategy"), ({"vm": "web1"}, "body.to"),
     ({**MOVE, "max_downtime_ms": 0}, "body.max_downtime_ms"), ({**MOVE, "x": 1}, "body.x"),
     ({**MOVE, "parallel": 33}, "body.parallel"),
     ({**MOVE, "compression": "lz4"}, "body.compression"),
     ({**MOVE, "compression": "zstd"}, "body")],  # zstd without channels: the body as a whole
)  # fmt: skip
def test_a_malformed_move_is_422_and_starts_nothing(api: Api, body: dict[str, Any],
                                                    path: str) -> None:  # fmt: skip
    done = post(api, "operator", body)
    assert done.status_code == 422
    assert [e["path"] for e in done.json()["detail"]] == [path]
    assert api.migrate.calls == [] and api.store.list_jobs() == []


def test_one_start_per_vm_at_a_time_in_the_server(store: Store) -> None:
    fake = FakeMigrate(store)
    gate = threading.Event()

    def slow_checks(vm: str, to: str, options: MigrationOptions, *,
                    on_job: Callable[[str], None]) -> Any:  # fmt: skip
        fake.entered.set()
        gate.wait(30)  # the first start is still in its checks
        return fake(vm, to, options, on_job=on_job)

    starter = MoveStarter(store, slow_checks)
    first: list[str] = []
    thread = threading.Thread(target=lambda: first.append(
        starter.start("web1", "kvm2", MigrationOptions()).id))  # fmt: skip
    thread.start()
    assert fake.entered.wait(30)
    with pytest.raises(AlreadyExistsError, match="being started"):
        starter.start("web1", "kvm2", MigrationOptions())
    gate.set()
    thread.join(30)
    assert len(first) == 1 and store.get_job(first[0]).vm == "web1"
    assert [c[0] for c in fake.calls] == ["web1"]


def test_the_real_service_migrate_started_through_the_api(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """service.migrate.migrate itself, its host-touching steps replaced as
    tests/unit/test_offline_moves.py replaces them: its own job, made after its checks and
    owned by this process's lease, is the one the API answers with."""
    from vmferry.model.migration import JobStatus, MigrationResult, Strategy
    from vmferry.service import migrate as migrate_module
    from vmferry.service.check import CheckReport

    release = threading.Event()

    def run_offline(report: CheckReport, job_id: str, *args: Any) -> MigrationResult:
        store.set_status(job_id, JobStatus.RUNNING)
        store.add_event(job_id, "step", "saving")
        release.wait(30)
        result = MigrationResult(job_id, "web1", "kvm1", "kvm2", Strategy.WARM,
                                 JobStatus.COMPLETED, None, 5, 2, None, None)  # fmt: skip
        return store.finish(job_id, result).result or result

    checked = CheckReport("web1", "kvm1", "kvm2", (), False)
    monkeypatch.setattr(migrate_module, "reconcile_vm", lambda vm: [])
    monkeypatch.setattr(migrate_module, "check_offline", lambda vm, to, options: checked)
    monkeypatch.setattr(migrate_module, "run_offline", run_offline)
    monkeypatch.setattr(migrate_module, "open_store", lambda: store)
    with serving(store, service=True) as api:
        done = post(api, "operator", {**MOVE, "strategy": "warm"})
        assert done.status_code == 202, done.text
        job = done.json()
        assert (job["vm"], job["options"]["strategy"]) == ("web1", "warm")
        release.set()
        events = sse(api.client.get(f"/api/v1/jobs/{job['id']}/events",
                                    headers=api.as_("viewer")).text)  # fmt: skip
        assert [e["event"] for e in events][:2] == ["created", "checks"]
        assert "step" in [e["event"] for e in events]
        assert events[-1]["data"]["status"] == "completed"
        assert [j.id for j in store.list_jobs()] == [job["id"]]
