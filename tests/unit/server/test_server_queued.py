"""The API on PostgreSQL with workers: POST /migrations, /imports and /plans/{id}/run queue
their work (procrastinate, in the store's database) and answer at once; a worker (here in
this process, its services faked as the other server tests fake them; the lab runs real
ones) runs it to the end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from action_fakes import plan_migrate_of
from conftest import Api, serving

from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.model.settings import IMPORT_DIRS_SETTING
from vmferry.server.routers.imports import RUN_IMPORT, run_queued_import
from vmferry.service import queue as job_queue
from vmferry.store.db import Store, open_store

PLAN = """version: 1
name: queued
hosts:
  - {name: kvm1, cpus: 16, memory_mb: 65536, link_gbps: 10}
  - {name: kvm2, cpus: 16, memory_mb: 65536, link_gbps: 10}
vms:
  - {name: web1, source: kvm1, destination: kvm2, memory_mb: 2048, vcpus: 2}
"""


@pytest.fixture
def queued(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("VMFERRY_DB", pg_url)  # what the worker's tasks open
    with open_store(pg_url) as store, serving(store, queued=True) as api:
        monkeypatch.setattr("vmferry.server.actions.default_services", api.actions.services)
        yield api


def work(store: Store) -> None:
    """A worker takes everything queued on ``vmferry``, then stops."""
    url = job_queue.store_url(store)
    app = job_queue.build_app(url, worker=True, tasks={RUN_IMPORT: run_queued_import})

    async def run() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=["vmferry"], wait=False,
                                       install_signal_handlers=False, name="w1")  # fmt: skip

    asyncio.run(run())


def test_a_move_is_queued_and_a_second_one_is_409(
    queued: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def migrate(vm: str, to: str, options: MigrationOptions, *, job_id: str, **_: Any) -> Any:
        ran.append(job_id)
        with open_store(job_queue.store_url(queued.store)) as store:
            job = store.set_status(job_id, JobStatus.RUNNING)
            result = MigrationResult(job_id, vm, job.source, to, options.strategy,
                                     JobStatus.COMPLETED, None, 5, 1, 10, 1)  # fmt: skip
            store.finish(job_id, result)
        return type("Outcome", (), {"result": result})()

    monkeypatch.setattr("vmferry.service.migrate.migrate", migrate)
    headers = queued.as_("operator")
    first = queued.client.post("/api/v1/migrations", headers=headers,
                               json={"vm": "web1", "to": "kvm2"})  # fmt: skip
    assert first.status_code == 202, first.text
    job = first.json()
    assert (job["status"], job["source"]) == ("pending", "kvm1")
    assert [e["kind"] for e in job["events"]][-1] == "queued"
    second = queued.client.post("/api/v1/migrations", headers=headers,
                                json={"vm": "web1", "to": "kvm3"})  # fmt: skip
    assert second.status_code == 409
    assert f"unfinished job already: {job['id']}" in second.json()["detail"]
    assert queued.migrate.calls == []  # nothing ran in the server
    work(queued.store)
    assert ran == [job["id"]]
    assert queued.store.get_job(job["id"]).status is JobStatus.COMPLETED


def test_an_import_is_queued_and_a_worker_runs_it(queued: Api, tmp_path: Path) -> None:
    (tmp_path / "disk.raw").write_bytes(bytes(1 << 20))
    queued.store.set_setting(IMPORT_DIRS_SETTING, str(tmp_path))
    done = queued.client.post("/api/v1/imports", headers=queued.as_("operator"),
                              json={"source": str(tmp_path / "disk.raw"), "to": "kvm2",
                                    "name": "imp1"})  # fmt: skip
    assert done.status_code == 202, done.text
    job_id = done.json()["id"]
    assert queued.store.get_job(job_id).status is JobStatus.PENDING
    assert queued.actions.calls == []  # queued, not run in the server
    work(queued.store)
    job = queued.store.get_job(job_id)
    assert job.status is JobStatus.COMPLETED, job.reason
    kinds = [e.kind for e in job.events]
    assert kinds.index("queued") < kinds.index("worker") < kinds.index("progress")
    assert job.events[-2].kind == "import" and job.events[-2].data["status"] == "completed"
    assert queued.actions.calls == [("import", str(tmp_path / "disk.raw"))]


def test_a_plan_run_is_queued_and_a_worker_runs_it(
    queued: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vmferry.service.migrate.migrate", plan_migrate_of(queued.plan_moves))
    headers = queued.as_("operator")
    made = queued.client.post("/api/v1/plans", headers=headers, json={"yaml": PLAN})
    assert made.status_code == 201, made.text
    plan_id = made.json()["id"]
    started = queued.client.post(f"/api/v1/plans/{plan_id}/run", headers=headers)
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "pending"  # until a worker takes it
    again = queued.client.post(f"/api/v1/plans/{plan_id}/run", headers=headers)
    assert again.status_code == 409 and "waits for a worker" in again.json()["detail"]
    work(queued.store)
    plan = queued.client.get(f"/api/v1/plans/{plan_id}", headers=headers).json()
    assert plan["status"] == "completed", plan
    assert [(i["vm"], i["status"]) for i in plan["items"]] == [("web1", "completed")]
    assert [c[0] for c in queued.plan_moves.calls] == ["web1"]


def test_auto_queues_the_chosen_strategy_and_its_reason(
    queued: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from vmferry.predict.strategy import MoveStrategy, StrategyChoice

    context = queued.client.app.state.vmferry  # type: ignore[attr-defined]
    queued.client.app.state.vmferry = replace(  # type: ignore[attr-defined]
        context, choose=lambda vm, to, options: StrategyChoice(MoveStrategy.WARM, "fake", 90)
    )
    seen: list[tuple[str, str | None]] = []

    def migrate(vm: str, to: str, options: MigrationOptions, *, job_id: str,
                strategy_reason: str | None = None, **_: Any) -> Any:  # fmt: skip
        seen.append((options.strategy.value, strategy_reason))
        with open_store(job_queue.store_url(queued.store)) as store:
            job = store.set_status(job_id, JobStatus.RUNNING)
            result = MigrationResult(job_id, vm, job.source, to, options.strategy,
                                     JobStatus.COMPLETED, None, 5, 1, 10, 1)  # fmt: skip
            store.finish(job_id, result)
        return type("Outcome", (), {"result": result})()

    monkeypatch.setattr("vmferry.service.migrate.migrate", migrate)
    done = queued.client.post("/api/v1/migrations", headers=queued.as_("operator"),
                              json={"vm": "web1", "to": "kvm2", "strategy": "auto"})  # fmt: skip
    assert done.status_code == 202, done.text
    assert done.json()["options"]["strategy"] == "warm"
    work(queued.store)
    assert seen == [("warm", "fake")]
