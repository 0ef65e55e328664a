"""The console's decisions as pure functions: the Move form's choices, the inventory's
query string, a job's pipeline and figures, the profile's series; and the live engine's
choice of which progress samples it records for the job page's chart."""

from __future__ import annotations

from urllib.parse import parse_qsl

from vmferry.console import views
from vmferry.engine.live import _worth_recording
from vmferry.model.account import Role
from vmferry.model.migration import (
    Job,
    JobEvent,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    ProgressSample,
    Strategy,
    Verification,
)
from vmferry.model.project_policy import make_policy
from vmferry.model.workload import ProfileSample

MIB = 2**20


def _job(status: JobStatus, events: list[JobEvent], result: MigrationResult | None = None,
         reason: str | None = None) -> Job:  # fmt: skip
    return Job("j1", "migrate", "web1", "kvm1", "kvm2", status, "2026-12-04T10:00:00Z",
               "2026-12-04T10:00:09Z", MigrationOptions(), reason, result,
               events=tuple(events))  # fmt: skip


def _ev(second: int, kind: str, message: str = "", **data: object) -> JobEvent:
    return JobEvent(f"2026-12-04T10:00:{second:02d}Z", kind, message, dict(data))


def _states(job: Job) -> dict[str, str]:
    return {s.name: s.state.value for s in views.pipeline(job)}


def test_pipeline_while_transferring_shows_the_future_steps() -> None:
    events = [_ev(0, "created"), _ev(1, "checks", "pre-flight: 0 findings, clear"),
              _ev(2, "status", "", **{"from": "pending", "to": "running"})]  # fmt: skip
    job = _job(JobStatus.RUNNING, events)
    assert _states(job) == {"checks": "done", "backup": "skipped", "transfer": "active",
                            "switchover": "pending", "verification": "pending",
                            "cleanup": "pending"}  # fmt: skip
    assert "no backup" in views.pipeline(job)[1].detail


def test_pipeline_of_a_blocked_and_of_a_verified_move() -> None:
    blocked = _job(JobStatus.FAILED, [_ev(1, "checks", "pre-flight: 2 findings, blocked")],
                   reason="blocked by pre-flight checks: cpu.model")  # fmt: skip
    assert _states(blocked)["checks"] == "failed"
    assert _states(blocked)["transfer"] == "skipped"
    verification = Verification(True, True)
    result = MigrationResult("j1", "web1", "kvm1", "kvm2", Strategy.LIVE, JobStatus.COMPLETED,
                             None, 1, 1, 1, 1, verification=verification)  # fmt: skip
    done = _job(JobStatus.COMPLETED, [_ev(1, "checks", "clear")], result)
    assert set(_states(done).values()) == {"done", "skipped"}
    failed = _job(JobStatus.FAILED, [_ev(2, "status", "", to="running")], reason="link down")
    steps = {s.name: s for s in views.pipeline(failed)}
    assert steps["transfer"].state is views.StepState.FAILED
    assert steps["transfer"].detail == "link down"


def test_figures_and_points_from_the_progress_samples() -> None:
    sample = {"iteration": 3, "memory_remaining_bytes": 300 * MIB, "dirty_rate_bytes_s": 20 * MIB,
              "throughput_bytes_s": 100 * MIB, "expected_downtime_ms": 120}  # fmt: skip
    job = _job(JobStatus.RUNNING, [_ev(0, "created"), _ev(4, "progress", "pass 3", **sample),
                                   _ev(5, "escalation", "throttle up to 20%")])  # fmt: skip
    live = views.job_live(job)
    assert (live.iteration, live.remaining_mib, live.rate_mib_s, live.dirty_mib_s) == (
        3, 300.0, 100.0, 20.0)  # fmt: skip
    assert live.eta_s == 3.8  # 300 MiB at 100 - 20 MiB/s
    assert live.projected_downtime_ms == 120
    assert live.escalations == ("throttle up to 20%",)
    assert views.progress_points(job) == [{"t": 4.0, "remaining_mib": 300.0, "dirty_mib_s": 20.0}]
    update = views.job_update(job, 1)
    assert update["point"] == {"t": 4.0, "remaining_mib": 300.0, "dirty_mib_s": 20.0}
    assert views.job_update(job, 2)["point"] is None
    hopeless = _job(
        JobStatus.RUNNING, [_ev(1, "progress", "", **{**sample, "dirty_rate_bytes_s": 200 * MIB})]
    )
    assert views.job_live(hopeless).eta_s is None  # dirtied faster than sent: no ETA


def test_move_choices_follow_the_role_rules_and_the_project_policy() -> None:
    hosts = ["kvm1", "kvm2", "kvm3"]
    viewer = views.move_choices(Role.VIEWER, None, (), "kvm1", hosts, None)
    assert not viewer.allowed and "viewer only reads" in viewer.why
    assert not views.move_choices(Role.PLANNER, None, (), "kvm1", hosts, None).allowed
    operator = views.move_choices(Role.OPERATOR, None, (), "kvm1", hosts, None)
    assert operator.destinations == ("kvm2", "kvm3")
    assert operator.strategies == ("live", "postcopy", "warm", "cold", "warm-incremental")
    policy = make_policy("web", "cold,live", ["always"])
    mine = views.move_choices(Role.OPERATOR, "web", ("project:web",), "kvm1", hosts, policy)
    assert mine.allowed and mine.strategies == ("live", "cold")
    other = views.move_choices(Role.OPERATOR, "web", ("project:db",), "kvm1", hosts, policy)
    assert not other.allowed and "project:web" in other.why
    none = views.move_choices(Role.OPERATOR, "web", ("project:web",), "kvm1", hosts, None)
    assert not none.allowed and "no self-service policy" in none.why
    asked = views.parse_move({"to": "kvm3", "strategy": "live", "max_downtime_ms": "1000"}, mine)
    assert asked == views.MoveRequest("kvm3", Strategy.LIVE, 1000)
    assert "strategy among live, cold" in str(
        views.parse_move({"to": "kvm3", "strategy": "warm", "max_downtime_ms": "300"}, mine)
    )
    assert "may not move" in str(views.parse_move({}, viewer))


def test_inventory_query_string_round_trips() -> None:
    asked, problems = views.parse_inventory(
        {"q": " web  db ", "state": "running", "sort": "memory", "dir": "desc", "page": "3",
         "per_page": "25", "vcpus_min": "2"}, ["tier:1"])  # fmt: skip
    assert problems == []
    query = parse_qsl(asked.url().split("?", 1)[1])
    assert ("tag", "tier:1") in query
    again, _ = views.parse_inventory(dict(query), [v for k, v in query if k == "tag"])
    assert again == asked
    assert asked.url(page=1).count("page=") == 1  # per_page only
    _, bad = views.parse_inventory({"page": "two", "per_page": "7"}, [])
    assert bad == ["page must be a whole number, not 'two'"]


def test_profile_series_columns() -> None:
    samples = [ProfileSample("web1", "kvm1", "2026-12-04T10:00:00Z",
                             {"cpu_share": 0.25, "memory_used_bytes": 2**30,
                              "dirty_rate_bytes_s": 5 * MIB}),
               ProfileSample("web1", "kvm1", "2026-12-04T10:00:10Z",
                             {"cpu_share": 0.5})]  # fmt: skip
    series = views.profile_series(samples)
    assert series["t"][1] - series["t"][0] == 10
    assert series["cpu_pct"] == [25.0, 50.0]
    assert series["memory_used_gib"] == [1.0, None]
    assert series["dirty_mib_s"] == [5.0, None]


def test_live_engine_records_each_pass_and_a_sample_a_second() -> None:
    def sample(iteration: int) -> ProgressSample:
        return ProgressSample(0, iteration, 1, 1, 1, 1, 1)

    assert _worth_recording(sample(1), [], recorded_at=1e18)  # the first one
    assert _worth_recording(sample(2), [sample(1)], recorded_at=1e18)  # a new pass
    assert not _worth_recording(sample(2), [sample(2)], recorded_at=1e18)  # just recorded
    assert _worth_recording(sample(2), [sample(2)], recorded_at=0.0)  # long ago
    before = ProgressSample(0, 0, 0, 0, 0, 0, 0)  # libvirt's answer before the copy began
    assert not _worth_recording(before, [], recorded_at=0.0)


def test_status_after_a_status_event() -> None:
    running = _ev(1, "status", "pending -> running", **{"from": "pending", "to": "running"})
    assert views.status_after(JobStatus.PENDING, running) is JobStatus.RUNNING
    assert views.status_after(JobStatus.RUNNING, _ev(2, "status", "aborting")) is JobStatus.RUNNING
    assert views.status_after(JobStatus.RUNNING, _ev(3, "progress", "pass 1")) is JobStatus.RUNNING
