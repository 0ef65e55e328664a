"""A cold move of a VM that is off (it stays off) without a lab: the pre-flight findings,
the undo, what a killed move becomes, the verification and the rollback's choice."""

from __future__ import annotations

from dataclasses import replace

import pytest
from support.jobs import running_job

from vmferry.engine.offline import COLD_STEPS, Step, Undo, undo_plan
from vmferry.engine.offline_reconcile import Repair, decide_offline, started_off
from vmferry.model import Finding, Severity, VmState, is_blocked
from vmferry.model.domain_view import ABSENT, DomainView
from vmferry.model.migration import (
    JobEvent,
    JobStatus,
    MigrationResult,
    Strategy,
    Verification,
)
from vmferry.service.offline_move import offline_findings
from vmferry.service.rollback import needs_rollback
from vmferry.verify.witness import WitnessReport, verification

COLD = Strategy.COLD
NOT_RUNNING = Finding("vm.not-running", Severity.BLOCKER, "VM 'db1' is shut-off on kvm1")
STREAM = Finding("migration.tcg-lost-writes", Severity.BLOCKER, "a live move loses writes")
POOL = Finding("storage.pool-missing", Severity.BLOCKER, "kvm2 has no pool for vda")


def findings(strategy: Strategy, state: VmState, *extra: Finding) -> tuple[Finding, ...]:
    return offline_findings((NOT_RUNNING, STREAM, *extra), strategy, "db1", state, "kvm1", "kvm2")


def test_a_cold_move_of_a_vm_that_is_off_is_not_blocked_by_its_state() -> None:
    found = findings(COLD, VmState.SHUT_OFF)
    assert [f.id for f in found] == ["vm.off"]  # the stream's findings go too
    assert found[0].severity is Severity.INFO and not is_blocked(found)
    assert found[0].message == ("VM 'db1' is shut off on kvm1: a cold move copies its disks "
                                "and defines it on kvm2, where it stays off")  # fmt: skip
    assert is_blocked(findings(COLD, VmState.SHUT_OFF, POOL))  # other blockers stay


@pytest.mark.parametrize(
    ("strategy", "state"),
    [(Strategy.WARM, VmState.SHUT_OFF), (Strategy.WARM_INCREMENTAL, VmState.SHUT_OFF),
     (COLD, VmState.CRASHED), (COLD, VmState.PAUSED)],
)  # fmt: skip
def test_only_cold_moves_a_vm_that_is_shut_off(strategy: Strategy, state: VmState) -> None:
    assert [f.id for f in findings(strategy, state)] == ["vm.not-running"]


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, (Undo.DELETE_DISK_COPIES,)),  # a copy may be made before the failure
        (1, (Undo.DELETE_DISK_COPIES,)),
        (2, (Undo.UNDEFINE_ON_DESTINATION, Undo.DELETE_DISK_COPIES)),
    ],
)
@pytest.mark.parametrize("running", [True, False])
def test_the_undo_of_a_vm_that_was_off_never_starts_it(
    n: int, expected: tuple[Undo, ...], running: bool
) -> None:
    steps = [s for s in COLD_STEPS if s not in (Step.SHUT_DOWN, Step.STARTED)][:n]
    assert undo_plan(COLD, steps, source_running=running, started_off=True) == expected
    committed = [Step.DISKS_COPIED, Step.DEFINED, Step.SOURCE_UNDEFINED]
    assert undo_plan(COLD, committed, source_running=False, started_off=True) == ()


JOB = running_job(COLD, vm="db1", events=(
    JobEvent("2026-12-05T10:00:00.500Z", "status", "db1 is off on kvm1", {"started_off": True}),
))  # fmt: skip
OFF = DomainView(exists=True, persistent=True)


def test_a_killed_cold_move_of_a_vm_that_was_off_is_finished_or_left_off() -> None:
    assert started_off(JOB) and not started_off(replace(JOB, events=()))
    done = decide_offline(JOB, False, ["disks-copied", "defined"], OFF, OFF, None)
    assert (done.action, done.status, done.repairs) == (
        "complete", JobStatus.COMPLETED, (Repair.UNDEFINE_ON_SOURCE,))  # fmt: skip
    assert "it stays off" in done.reason
    copying = decide_offline(JOB, False, ["disks-copied"], OFF, ABSENT, None)
    assert (copying.action, copying.status, copying.repairs) == ("fail", JobStatus.FAILED, ())
    assert "it stays off on kvm1" in copying.reason
    # a VM that ran before the move is started again on its source, as before
    ran = decide_offline(replace(JOB, events=()), False, ["shut-down"], OFF, ABSENT, None)
    assert ran.repairs == (Repair.START_ON_SOURCE,)


def test_a_vm_left_off_passes_its_verification_without_running() -> None:
    report = WitnessReport(None, None, None, None)
    left = verification(report, running_on_destination=False, absent_on_source=True,
                        problems=[], require=False, left_off=True)  # fmt: skip
    assert left.passed and left.on_destination and not left.running_on_destination
    assert any("it was off and stays off" in w for w in left.warnings)
    assert not any("liveness" in w for w in left.warnings)
    gone = verification(report, running_on_destination=False, absent_on_source=True,
                        problems=[], require=False)  # fmt: skip
    assert not gone.passed and not gone.on_destination


def test_a_failed_verification_of_a_vm_left_off_is_rolled_back() -> None:
    left = Verification(False, True, problems=("x",), left_off=True)
    failed = MigrationResult("j", "db1", "kvm1", "kvm2", COLD, JobStatus.FAILED, "no", 1, None,
                             None, None, verification=left)  # fmt: skip
    assert needs_rollback(failed)
    elsewhere = replace(failed, verification=Verification(False, True, problems=("x",)))
    assert not needs_rollback(elsewhere)
