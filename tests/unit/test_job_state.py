"""The job state machine: every (current, new) pair of statuses."""

from __future__ import annotations

import itertools

import pytest

from vmferry.model.job_state import ALLOWED, IllegalTransitionError, transition
from vmferry.model.migration import JobStatus

P, R, C, F, X = (
    JobStatus.PENDING,
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
FINISHED = (C, F, X)

ALLOWED_CHANGES = {(P, R), (P, F), (P, X), (R, C), (R, F), (R, X)}
NO_OPS = {(C, C), (F, F), (X, X)}


@pytest.mark.parametrize(("current", "new"), sorted(ALLOWED_CHANGES))
def test_allowed_changes(current: JobStatus, new: JobStatus) -> None:
    assert transition(current, new) is new


@pytest.mark.parametrize("status", FINISHED)
def test_setting_a_finished_status_again_changes_nothing(status: JobStatus) -> None:
    assert transition(status, status) is status
    assert transition(transition(status, status), status) is status


@pytest.mark.parametrize(
    ("current", "new"),
    sorted(set(itertools.product(JobStatus, JobStatus)) - ALLOWED_CHANGES - NO_OPS),
)
def test_every_other_change_is_refused(current: JobStatus, new: JobStatus) -> None:
    with pytest.raises(IllegalTransitionError) as excinfo:
        transition(current, new)
    message = str(excinfo.value)
    assert str(current) in message
    assert str(new) in message


def test_the_table_covers_every_status_and_only_finished_ones_are_terminal() -> None:
    assert set(ALLOWED) == set(JobStatus)
    for status, targets in ALLOWED.items():
        assert (not targets) is status.finished


@pytest.mark.parametrize("status", FINISHED)
def test_a_finished_job_says_it_is_final(status: JobStatus) -> None:
    with pytest.raises(IllegalTransitionError, match="finished job is final"):
        transition(status, R)


def test_a_running_job_names_what_it_can_become() -> None:
    expected = "can only become cancelled or completed or failed"
    with pytest.raises(IllegalTransitionError, match=expected):
        transition(R, P)
    with pytest.raises(IllegalTransitionError, match="running job cannot become running"):
        transition(R, R)
    with pytest.raises(IllegalTransitionError, match="pending job cannot become completed"):
        transition(P, C)
