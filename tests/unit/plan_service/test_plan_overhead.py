"""The per-VM overhead a plan adds to each measured VM's predicted transfer."""

from __future__ import annotations

from vmferry.model.migration import Job, JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service.plan import DEFAULT_OVERHEAD_S, per_vm_overhead_s


def _job(status: JobStatus, created: str, updated: str, total_ms: int | None) -> Job:
    result = MigrationResult("j", "vm", "a", "b", Strategy.LIVE, status, None, total_ms, 200,
                             None, None)  # fmt: skip
    return Job("j", "migrate", "vm", "a", "b", status, created, updated, MigrationOptions(),
               result=result)  # fmt: skip


def test_median_of_lifetime_beyond_qemu_total() -> None:
    jobs = [
        _job(JobStatus.COMPLETED, "2026-11-22T03:00:00+00:00", "2026-11-22T03:00:19+00:00", 6000),
        _job(JobStatus.COMPLETED, "2026-11-22T03:01:00+00:00", "2026-11-22T03:01:15+00:00", 5000),
        _job(JobStatus.COMPLETED, "2026-11-22T03:02:00+00:00", "2026-11-22T03:02:30+00:00", 4000),
        # not completed, or without figures: ignored
        _job(JobStatus.FAILED, "2026-11-22T03:03:00+00:00", "2026-11-22T03:09:00+00:00", 4000),
        _job(JobStatus.COMPLETED, "2026-11-22T03:04:00+00:00", "2026-11-22T03:09:00+00:00", None),
    ]
    assert per_vm_overhead_s(jobs) == 13.0  # median of 13, 10, 26


def test_default_without_completed_jobs() -> None:
    assert per_vm_overhead_s([]) == DEFAULT_OVERHEAD_S
