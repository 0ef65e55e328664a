"""`vmferry job cutover` and `--cutover-at`: what a warm import's job accepts, and the poll
the import runs between its rounds (cutover asked, time reached, cancel asked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.cli import vmferry

from vmferry.errors import BadInputError
from vmferry.model.migration import JobStatus, MigrationOptions
from vmferry.service.warm_cutover import WarmCancelledError, cutover_poll, parse_cutover_at
from vmferry.store.db import open_store


def make_job(db: Path, *, warm: bool, status: JobStatus = JobStatus.RUNNING) -> str:
    with open_store(f"sqlite:///{db}") as store:
        job = store.create_job("import", "db1", "vsphere://vc1/db1", "kvm1", MigrationOptions())
        if warm:
            store.add_event(job.id, "warm", "warm import", {})
        store.set_status(job.id, JobStatus.RUNNING)
        if status is not JobStatus.RUNNING:
            store.set_status(job.id, status)
        return job.id


def test_a_warm_imports_job_takes_a_cutover_once(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    job_id = make_job(db, warm=True)
    for _ in range(2):  # asking twice is harmless: one event
        done = vmferry("job", "cutover", job_id, "--json", db=db)
        assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout)["events"]
    assert [e["kind"] for e in events].count("cutover") == 1


@pytest.mark.parametrize(("warm", "status", "said"), [
    (False, JobStatus.RUNNING, "is no warm import (a cold import)"),
    (True, JobStatus.COMPLETED, "has finished (completed): nothing to cut over"),
])  # fmt: skip
def test_a_cutover_of_another_job_is_one_line_and_changes_nothing(
    tmp_path: Path, warm: bool, status: JobStatus, said: str
) -> None:
    db = tmp_path / "v.db"
    job_id = make_job(db, warm=warm, status=status)
    done = vmferry("job", "cutover", job_id, db=db)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and said in done.stderr
    with open_store(f"sqlite:///{db}") as store:
        assert not [e for e in store.get_job(job_id).events if e.kind == "cutover"]
    missing = vmferry("job", "cutover", "000000000000", db=db)
    assert missing.returncode == 2 and "000000000000" in missing.stderr


def test_the_poll_sees_the_time_the_request_and_a_cancel(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    job_id = make_job(db, warm=True)
    now = datetime(2026, 12, 24, 21, 0, tzinfo=UTC)
    clock = [now]
    with open_store(f"sqlite:///{db}") as store:
        due = cutover_poll(store, lambda: job_id, now + timedelta(hours=1), lambda: clock[0])
        assert due() is False
        clock[0] = now + timedelta(hours=1)
        assert due() is True  # --cutover-at reached
        by_job = cutover_poll(store, lambda: job_id, None)
        before = cutover_poll(store, lambda: None, None)  # the job is not made yet
        assert by_job() is False and before() is False
        assert vmferry("job", "cutover", job_id, db=db).returncode == 0
        assert by_job() is True
        store.request_cancel(job_id)
        with pytest.raises(WarmCancelledError, match="cancelled before its cutover"):
            by_job()


def test_cutover_at_is_an_iso_time_not_in_the_past() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_cutover_at("2026-12-24T22:00+00:00", now) == datetime(
        2026, 12, 24, 22, 0, tzinfo=UTC
    )
    assert parse_cutover_at("2026-12-24T22:00", now).tzinfo is not None  # local time
    for text, said in (("tomorrow", "expected an ISO date"), ("2026-12-01T00:00Z", "has passed")):
        with pytest.raises(BadInputError, match=said):
            parse_cutover_at(text, now)


def test_the_warm_options_are_for_vsphere_sources(tmp_path: Path) -> None:
    db = tmp_path / "v.db"
    image = tmp_path / "d.raw"
    image.write_bytes(bytes(1024 * 1024))
    done = vmferry("import", str(image), "--to", "t1", "--strategy", "warm", db=db)
    assert done.returncode == 2 and "are for vsphere:// sources" in done.stderr
