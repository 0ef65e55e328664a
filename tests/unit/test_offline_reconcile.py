"""What a warm or cold move whose vmferry died becomes: engine.offline_reconcile."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.jobs import running_job

from vmferry.engine.offline_reconcile import (
    OfflineDecision,
    Repair,
    copies_of,
    decide_offline,
    recorded_steps,
    state_path_of,
)
from vmferry.model.domain_view import ABSENT, DomainView
from vmferry.model.migration import JobEvent, JobStatus, MigrationOptions, Strategy

WARM = running_job(Strategy.WARM)
COLD = replace(WARM, options=MigrationOptions(strategy=Strategy.COLD))

OFF = DomainView(exists=True, persistent=True)
RUN = DomainView(exists=True, running=True, persistent=True)
RUN_TRANSIENT = DomainView(exists=True, running=True)
PAUSED = DomainView(exists=True, paused=True, persistent=True)
SAVING = replace(RUN, job_active=True)

R = Repair


def warm(steps: list[str], src: DomainView | None, dst: DomainView | None,
         state_file: bool | None = True) -> OfflineDecision:  # fmt: skip
    return decide_offline(WARM, False, steps, src, dst, state_file)


def cold(steps: list[str], src: DomainView | None, dst: DomainView | None) -> OfflineDecision:
    return decide_offline(COLD, False, steps, src, dst, None)


def test_killed_during_the_save_the_vm_is_restored_on_its_source() -> None:
    d = warm([], OFF, ABSENT)
    assert (d.action, d.status) == ("fail", JobStatus.FAILED)
    assert d.repairs == (R.RESTORE_ON_SOURCE, R.REMOVE_STATE_FILE)
    assert "restored web1 on kvm1" in d.reason
    # a leftover stopped definition on the destination goes first
    d = warm(["saved"], OFF, OFF)
    assert d.repairs == (R.UNDEFINE_ON_DESTINATION, R.RESTORE_ON_SOURCE, R.REMOVE_STATE_FILE)
    # a cancel that was asked for ends cancelled
    asked = decide_offline(replace(WARM, cancel_requested=True), False, [], OFF, ABSENT, True)
    assert asked.status is JobStatus.CANCELLED


def test_while_libvirt_still_saves_or_restores_it_waits() -> None:
    assert warm([], SAVING, ABSENT).action == "wait"
    assert warm(["saved"], OFF, replace(RUN_TRANSIENT, job_active=True)).action == "wait"
    assert warm([], SAVING, ABSENT).status is None


def test_restored_on_the_destination_the_move_is_finished_there() -> None:
    d = warm(["saved"], OFF, RUN_TRANSIENT)
    assert (d.action, d.status) == ("complete", JobStatus.COMPLETED)
    assert d.repairs == (R.DEFINE_ON_DESTINATION, R.UNDEFINE_ON_SOURCE, R.REMOVE_STATE_FILE)
    d = warm(["saved", "restored", "defined"], OFF, RUN, state_file=False)
    assert d.repairs == (R.UNDEFINE_ON_SOURCE,)
    committed = warm(["saved", "restored", "defined", "source-undefined"], ABSENT, RUN)
    assert committed.action == "complete" and committed.repairs == (R.REMOVE_STATE_FILE,)


def test_the_source_still_runs_the_vm_nothing_moved() -> None:
    d = warm([], RUN, ABSENT, state_file=False)
    assert (d.action, d.status, d.repairs) == ("fail", JobStatus.FAILED, ())
    d = warm([], RUN, OFF)  # a save that failed, a file left, a stray definition
    assert d.repairs == (R.UNDEFINE_ON_DESTINATION, R.REMOVE_STATE_FILE)


def test_it_touches_nothing_it_cannot_vouch_for() -> None:
    for d in (
        warm([], None, ABSENT),  # a host did not answer
        warm([], OFF, None),
        warm([], RUN, RUN_TRANSIENT),  # two copies active
        warm(["saved"], OFF, ABSENT, state_file=False),  # no file to restore from
        warm(["saved"], OFF, ABSENT, state_file=None),
        warm(["saved", "restored"], OFF, OFF),  # ran on the destination: the file is stale
        warm(["saved"], ABSENT, ABSENT),  # the source no longer defines it
        cold(["shut-down", "disks-copied", "defined", "started"], OFF, OFF),
    ):
        assert d.action == "unknown" and d.repairs == (), d
    assert warm([], None, ABSENT).status is None  # record untouched until the host answers
    paused = warm([], PAUSED, ABSENT)  # a save that just ended: the VM stops a moment later
    assert (paused.action, paused.status, paused.repairs) == ("wait", None, ())
    assert warm(["saved"], OFF, ABSENT, state_file=False).status is JobStatus.FAILED


def test_cold_moves_start_again_on_the_source_or_finish_on_the_destination() -> None:
    d = cold(["shut-down"], OFF, ABSENT)
    assert (d.action, d.repairs) == ("fail", (R.START_ON_SOURCE,))
    d = cold(["shut-down", "disks-copied", "defined"], OFF, OFF)
    assert d.repairs == (R.UNDEFINE_ON_DESTINATION, R.START_ON_SOURCE)
    assert "disk copies made on the destination were kept" in d.reason
    d = cold(["shut-down", "disks-copied", "defined", "started"], OFF, RUN)
    assert (d.action, d.repairs) == ("complete", (R.UNDEFINE_ON_SOURCE,))
    assert cold([], RUN, ABSENT).action == "fail"  # the shutdown never happened


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED])
def test_a_finished_job_or_a_live_owner_is_left_alone(status: JobStatus) -> None:
    assert decide_offline(replace(WARM, status=status), False, [], OFF, ABSENT, True).action == (
        "leave"
    )
    assert decide_offline(WARM, True, [], OFF, ABSENT, True).action == "leave"


def test_steps_and_state_path_are_read_from_the_events() -> None:
    events = (
        JobEvent("t0", "status", "saving", {"path": "/pool/vmferry-web1-01234567.save"}),
        JobEvent("t1", "progress", "saved", {"step": "saved"}),
        JobEvent("t2", "note", "something", {}),
        JobEvent("t3", "progress", "restored", {"step": "restored"}),
    )
    job = replace(WARM, events=events)
    assert recorded_steps(job) == ["saved", "restored"]
    assert state_path_of(job) == "/pool/vmferry-web1-01234567.save"
    assert state_path_of(WARM) is None


INCREMENTAL = replace(WARM, options=MigrationOptions(strategy=Strategy.WARM_INCREMENTAL))
COPYING = replace(RUN, job_active=True)  # the move's pull backup still serves its disks


def incremental(steps: list[str], src: DomainView | None,
                dst: DomainView | None) -> OfflineDecision:  # fmt: skip
    return decide_offline(INCREMENTAL, False, steps, src, dst, None)


def test_warm_incremental_killed_mid_round_ends_the_backup_and_cleans_the_destination() -> None:
    d = incremental([], COPYING, ABSENT)
    assert (d.action, d.status) == ("fail", JobStatus.FAILED)
    assert d.repairs == (R.END_BACKUP_ON_SOURCE, R.RESUME_ON_SOURCE, R.DELETE_COPIES,
                         R.DELETE_CHECKPOINTS)  # fmt: skip
    assert "stopped before web1 ran on kvm2" in d.reason


def test_warm_incremental_killed_at_the_cutover_resumes_the_paused_source() -> None:
    d = incremental([], replace(PAUSED, job_active=True), OFF)  # defined there, not started
    assert d.repairs == (R.END_BACKUP_ON_SOURCE, R.RESUME_ON_SOURCE,
                         R.UNDEFINE_ON_DESTINATION, R.DELETE_COPIES,
                         R.DELETE_CHECKPOINTS)  # fmt: skip


def test_warm_incremental_started_on_the_destination_is_finished_there() -> None:
    d = incremental(["started"], PAUSED, RUN)
    assert (d.action, d.status) == ("complete", JobStatus.COMPLETED)
    assert d.repairs == (R.DELETE_CHECKPOINTS, R.DESTROY_ON_SOURCE, R.UNDEFINE_ON_SOURCE)
    d = incremental(["started"], ABSENT, RUN)  # undefined there already: nothing to do
    assert (d.action, d.repairs) == ("complete", ())
    gone = incremental(["started"], OFF, OFF)  # it ran there and runs nowhere: hands off
    assert (gone.action, gone.repairs) == ("unknown", ())


def test_warm_incremental_waits_for_a_busy_destination_and_touches_no_lost_vm() -> None:
    assert incremental([], RUN, replace(OFF, job_active=True)).action == "wait"
    assert incremental([], ABSENT, ABSENT).action == "unknown"


def test_the_copies_are_read_from_the_events() -> None:
    events = (JobEvent("t0", "status", "copying", {"copies": {"vda": "/pool/web1-data.raw"}}),)
    assert copies_of(replace(INCREMENTAL, events=events)) == ["/pool/web1-data.raw"]
    assert copies_of(INCREMENTAL) == []
