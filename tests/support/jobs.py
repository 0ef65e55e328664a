"""A job as the store hands it to the reconcile decisions: web1 moving kvm1 -> kvm2, running,
owned by a process (pid 4242) that may be gone."""

from __future__ import annotations

from vmferry.model.migration import Job, JobEvent, JobStatus, MigrationOptions, Strategy


def running_job(
    strategy: Strategy = Strategy.LIVE, *, vm: str = "web1", events: tuple[JobEvent, ...] = ()
) -> Job:
    return Job(
        id="0123456789ab",
        kind="migrate",
        vm=vm,
        source="kvm1",
        destination="kvm2",
        status=JobStatus.RUNNING,
        created_at="2026-11-22T10:00:00.000Z",
        updated_at="2026-11-22T10:00:01.000Z",
        options=MigrationOptions(strategy=strategy),
        owner_pid=4242,
        owner_start_ticks=99,
        events=events,
    )
