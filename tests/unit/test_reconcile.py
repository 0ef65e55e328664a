"""What an interrupted job becomes: the whole decision table of engine.reconcile.decide."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from support.jobs import running_job

from vmferry.engine.reconcile import Decision, decide, describe
from vmferry.model.domain_view import ABSENT, DomainView
from vmferry.model.migration import JobStatus

JOB = running_job()

OFF = DomainView(exists=True, persistent=True)  # defined, shut off
RUN = DomainView(exists=True, running=True, persistent=True)
PAUSED = DomainView(exists=True, paused=True)  # a transient incoming copy
RUN_JOB = replace(RUN, job_active=True)
PAUSED_JOB = replace(PAUSED, job_active=True)
RUN_TRANSIENT = DomainView(exists=True, running=True)
PAUSED_PERSISTENT = DomainView(exists=True, paused=True, persistent=True)

# Rows: the source's view; columns: the destination's, in this order. None: no answer.
VIEWS: tuple[DomainView | None, ...] = (None, ABSENT, OFF, RUN, PAUSED, RUN_JOB, PAUSED_JOB)
NAMES = ("none", "absent", "off", "run", "paused", "run+job", "paused+job")
# W wait, C complete, R complete-undefine-source (the source's stopped definition goes: the
# destination's is persistent), F fail, D fail-destroy-orphan, U unknown (record failed),
# ? unknown (record untouched: a host that matters did not answer)
TABLE = {
    "none":       "? ? ? ? ? W W",
    "absent":     "? U U C U W W",
    "off":        "? U U R U W W",
    "run":        "F F F D D W W",
    "paused":     "? U U C U W W",
    "run+job":    "W W W W W W W",
    "paused+job": "W W W W W W W",
}  # fmt: skip
ACTIONS = {
    "W": "wait",
    "C": "complete",
    "R": "complete-undefine-source",
    "F": "fail",
    "D": "fail-destroy-orphan",
    "U": "unknown",
    "?": "unknown",
}
STATUS = {
    "W": None,
    "?": None,
    "C": JobStatus.COMPLETED,
    "R": JobStatus.COMPLETED,
    "F": JobStatus.FAILED,
    "D": JobStatus.FAILED,
    "U": JobStatus.FAILED,
}
CELLS = [
    (src_name, dst_name, code)
    for src_name, row in TABLE.items()
    for dst_name, code in zip(NAMES, row.split(), strict=True)
]
ALL_VIEWS = (*VIEWS, RUN_TRANSIENT, PAUSED_PERSISTENT)
PAIRS = list(itertools.product(ALL_VIEWS, repeat=2))


def view(name: str) -> DomainView | None:
    return VIEWS[NAMES.index(name)]


def test_the_table_covers_every_pair() -> None:
    assert len(CELLS) == len(VIEWS) ** 2


@pytest.mark.parametrize(("src", "dst", "code"), CELLS)
@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING])
def test_dead_owner(src: str, dst: str, code: str, status: JobStatus) -> None:
    decision = decide(replace(JOB, status=status), False, view(src), view(dst))
    assert decision.action == ACTIONS[code], decision.reason
    assert decision.status is STATUS[code], decision.reason
    assert decision.destroys_orphan is (code == "D")
    assert decision.undefines_source is (code == "R")
    assert decision.reason


@pytest.mark.parametrize(("src", "dst", "code"), CELLS)
def test_a_requested_cancel_ends_cancelled_when_the_source_still_runs(
    src: str, dst: str, code: str
) -> None:
    decision = decide(replace(JOB, cancel_requested=True), False, view(src), view(dst))
    assert decision.action == ACTIONS[code]
    expected = JobStatus.CANCELLED if code in "FD" else STATUS[code]
    assert decision.status is expected


@pytest.mark.parametrize(("source", "destination"), PAIRS)
@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_finished_job_is_left_alone(
    source: DomainView | None, destination: DomainView | None, status: JobStatus
) -> None:
    for owner_alive in (False, True):
        decision = decide(replace(JOB, status=status), owner_alive, source, destination)
        assert decision == Decision("leave", f"the job already finished as {status}")


@pytest.mark.parametrize(("source", "destination"), PAIRS)
@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING])
def test_a_live_owner_is_left_alone(
    source: DomainView | None, destination: DomainView | None, status: JobStatus
) -> None:
    decision = decide(replace(JOB, status=status), True, source, destination)
    assert decision.action == "leave"
    assert decision.status is None
    assert "pid 4242" in decision.reason


@pytest.mark.parametrize(("source", "destination"), PAIRS)
@pytest.mark.parametrize("cancel", [False, True])
def test_safety_rules_hold_everywhere(
    source: DomainView | None, destination: DomainView | None, cancel: bool
) -> None:
    decision = decide(replace(JOB, cancel_requested=cancel), False, source, destination)
    if decision.destroys_orphan:
        # only with both hosts answering, the source running the VM (so the copy destroyed
        # is never the only one) and an active copy on the destination
        assert source is not None and source.running and not source.job_active
        assert destination is not None and destination.active
    if source is None or destination is None:
        assert not decision.destroys_orphan
    if decision.action == "complete":
        assert source is not None and not source.running
        assert destination is not None and destination.running
        assert decision.status is JobStatus.COMPLETED
    if decision.action in ("fail", "fail-destroy-orphan"):
        assert source is not None and source.running
    if (source is not None and source.job_active) or (
        destination is not None and destination.job_active
    ):
        assert decision.action == "wait"
    if decision.action in ("leave", "wait"):
        assert decision.status is None
    if decision.status is not None:
        assert decision.status.finished


@pytest.mark.parametrize(
    ("destination", "copy"),
    [
        (PAUSED, "paused"),
        (PAUSED_PERSISTENT, "paused"),
        (RUN_TRANSIENT, "running"),
        (RUN, "running"),
    ],
)
def test_an_incoming_copy_beside_a_running_source_is_destroyed(
    destination: DomainView, copy: str
) -> None:
    decision = decide(JOB, False, RUN, destination)
    assert decision == Decision(
        "fail-destroy-orphan",
        "vmferry was interrupted; the migration did not complete: web1 still runs on kvm1; "
        f"destroyed the {copy} incoming copy left on kvm2",
        JobStatus.FAILED,
    )


def test_reasons_say_what_happened() -> None:
    assert decide(JOB, False, ABSENT, RUN).reason == (
        "vmferry was interrupted; the migration completed: found running on kvm2"
    )
    assert decide(JOB, False, OFF, RUN).reason.endswith(
        "; removed the stopped definition left on kvm1"
    )
    assert decide(JOB, False, OFF, RUN_TRANSIENT).reason.endswith(
        "; a stopped definition remains on kvm1 (kept: kvm2's is not persistent)"
    )
    assert "a paused copy remains on kvm1" in decide(JOB, False, PAUSED, RUN).reason
    assert decide(JOB, False, RUN, ABSENT).reason == (
        "vmferry was interrupted; the migration did not complete: web1 still runs on kvm1"
    )
    unanswered = decide(JOB, False, RUN, None).reason
    assert "kvm2 did not answer" in unanswered
    assert "leftover incoming copy" in unanswered
    neither = decide(JOB, False, OFF, ABSENT).reason
    assert neither == (
        "vmferry was interrupted; web1 runs on neither host (kvm1: shut off, kvm2: absent); "
        "nothing was touched: check the VM and start it where it belongs"
    )
    assert "kvm1 did not answer" in decide(JOB, False, None, RUN).reason
    assert "resume the job again when kvm2 answers" in decide(JOB, False, ABSENT, None).reason
    waiting = decide(JOB, False, RUN_JOB, PAUSED_JOB).reason
    assert waiting == "libvirt is still migrating web1 (a job is active on kvm1 and kvm2)"
    assert "on kvm2)" in decide(JOB, False, None, PAUSED_JOB).reason


@pytest.mark.parametrize(
    ("seen", "words"),
    [
        (None, "did not answer"),
        (ABSENT, "absent"),
        (OFF, "shut off"),
        (RUN, "running"),
        (RUN_TRANSIENT, "running, transient"),
        (PAUSED, "paused, transient"),
        (PAUSED_PERSISTENT, "paused"),
        (RUN_JOB, "running, migrating"),
    ],
)
def test_describe(seen: DomainView | None, words: str) -> None:
    assert describe(seen) == words


def test_decide_is_pure_and_repeatable() -> None:
    first = decide(JOB, False, RUN, PAUSED)
    assert all(decide(JOB, False, RUN, PAUSED) == first for _ in range(3))
    assert JOB.status is JobStatus.RUNNING  # the job is not changed


def test_an_incoming_migration_counts_as_a_job_in_progress() -> None:
    import libvirt

    from vmferry.drivers.libvirt_domains import _job_active

    class Incoming:
        def jobInfo(self) -> list[int]:
            err = libvirt.libvirtError("x")
            err.err = (libvirt.VIR_ERR_OPERATION_INVALID, 0,
                       "migration statistics are available only on the source host",
                       0, None, None, None, 0, 0)  # fmt: skip
            raise err

    assert _job_active(Incoming()) is True


SPLIT_SOURCE = DomainView(exists=True, paused=True, persistent=True, job_active=True,
                          postcopy_failed=True)  # fmt: skip
SPLIT_DESTINATION = DomainView(exists=True, running=True, persistent=True, job_active=True,
                               postcopy_failed=True)  # fmt: skip


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        (SPLIT_SOURCE, SPLIT_DESTINATION),
        (SPLIT_SOURCE, None),  # the destination did not answer: the source says enough
        (None, SPLIT_DESTINATION),
        (SPLIT_SOURCE, RUN_JOB),
    ],
)
def test_a_post_copy_that_broke_off_ends_failed_as_split_touching_nothing(
    source: DomainView | None, destination: DomainView | None
) -> None:
    """Interrupted after the switch to post-copy, then the move broke off: libvirt keeps
    its job on both hosts for a resume, so "wait" would wait for ever; neither copy can run
    alone, so nothing is destroyed or undefined."""
    decision = decide(JOB, False, source, destination)
    assert (decision.action, decision.status) == ("split", JobStatus.FAILED)
    assert not decision.destroys_orphan and not decision.undefines_source
    assert decision.reason.startswith(
        "vmferry was interrupted; post-copy broke off: web1's memory is split between kvm1 and kvm2"
    ), decision.reason
    assert "where kvm2's libvirt does not crash on it (libvirt 11.3.0 does)" in decision.reason
    assert decide(JOB, True, source, destination).action == "leave"  # its owner still runs


def test_describe_says_a_post_copy_broke_off() -> None:
    assert describe(SPLIT_SOURCE) == "paused, post-copy broke off"
    assert describe(SPLIT_DESTINATION) == "running, post-copy broke off"


@pytest.mark.parametrize(
    ("state", "split"),
    [
        (("RUNNING", "RUNNING_POSTCOPY_FAILED"), True),  # the destination's copy
        (("PAUSED", "PAUSED_POSTCOPY_FAILED"), True),  # the source's
        (("RUNNING", "RUNNING_POSTCOPY"), False),  # post-copy still under way
        (("PAUSED", "PAUSED_MIGRATION"), False),
    ],
)
def test_the_domain_view_reads_a_post_copy_that_broke_off_from_the_state_reason(
    state: tuple[str, str], split: bool
) -> None:
    import libvirt

    from vmferry.drivers.libvirt_domains import domain_view

    class Dom:
        def state(self, _flags: int) -> tuple[int, int]:
            return getattr(libvirt, f"VIR_DOMAIN_{state[0]}"), getattr(
                libvirt, f"VIR_DOMAIN_{state[1]}")  # fmt: skip

        def isPersistent(self) -> int:
            return 1

        def isActive(self) -> int:
            return 1

        def jobInfo(self) -> list[int]:
            return [libvirt.VIR_DOMAIN_JOB_UNBOUNDED, *[0] * 11]

    class Host:
        def _lookup(self, _name: str) -> Dom:
            return Dom()

    seen = domain_view(Host(), "web1")  # type: ignore[arg-type]
    assert seen.postcopy_failed is split
    assert seen.job_active and seen.exists
