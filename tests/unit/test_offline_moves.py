"""Warm and cold moves without a lab: the pure undo decisions, the state directory and disk
copy choices, the reboot witness's outage, and migrate's dispatch on the strategy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from vmferry.assess.preflight import DiskPlacement, DiskReach, PreflightFacts
from vmferry.engine.offline import (
    COLD_STEPS,
    WARM_STEPS,
    DiskCopy,
    Step,
    Undo,
    committed,
    undo_plan,
)
from vmferry.errors import BadInputError
from vmferry.lab.console import StampedLine
from vmferry.lab.reboot_witness import outage_ms
from vmferry.model import (
    Disk,
    DiskDevice,
    Finding,
    Host,
    HostInfo,
    Severity,
    VmRecord,
    VmSpec,
    VmState,
)
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.service import migrate as migrate_module
from vmferry.service.check import CheckReport
from vmferry.service.offline_move import copies_for, state_dir_candidates

WARM, COLD = Strategy.WARM, Strategy.COLD
RESTORE_TAIL = (Undo.RESTORE_ON_SOURCE, Undo.REMOVE_STATE_FILE)


def prefix(steps: tuple[Step, ...], n: int) -> list[Step]:
    return list(steps[:n])


# -- warm -------------------------------------------------------------------------------


@pytest.mark.parametrize("running", [True, False])
def test_warm_before_the_save_completed_needs_no_undo(running: bool) -> None:
    # libvirt resumes the VM itself after a failed or aborted save
    assert undo_plan(WARM, [], source_running=running) == ()


@pytest.mark.parametrize("running", [True, False])
def test_warm_after_the_save_restores_on_the_source(running: bool) -> None:
    assert undo_plan(WARM, [Step.SAVED], source_running=running) == RESTORE_TAIL


def test_warm_after_the_restore_saves_the_newer_state_back_first() -> None:
    # the guest ran on the destination: its state is newer than the file's
    assert undo_plan(WARM, prefix(WARM_STEPS, 2), source_running=False) == (
        Undo.SAVE_ON_DESTINATION,
        *RESTORE_TAIL,
    )


def test_warm_after_the_define_undefines_before_saving_back() -> None:
    assert undo_plan(WARM, prefix(WARM_STEPS, 3), source_running=False) == (
        Undo.UNDEFINE_ON_DESTINATION,
        Undo.SAVE_ON_DESTINATION,
        *RESTORE_TAIL,
    )


@pytest.mark.parametrize("n", [4, 5])
@pytest.mark.parametrize("strategy", [WARM, COLD])
def test_nothing_is_undone_once_the_source_is_undefined(strategy: Strategy, n: int) -> None:
    steps = WARM_STEPS if strategy is WARM else COLD_STEPS
    done = prefix(steps, n if strategy is WARM else n + 1)
    assert committed(done)
    assert undo_plan(strategy, done, source_running=False) == ()


@pytest.mark.parametrize("n", range(len(WARM_STEPS) + 1))
def test_every_warm_undo_ends_with_the_vm_on_the_source(n: int) -> None:
    undos = undo_plan(WARM, prefix(WARM_STEPS, n), source_running=False)
    if n == 0 or committed(prefix(WARM_STEPS, n)):
        assert undos == ()
    else:  # the state file is always removed last, after the VM runs from it
        assert undos[-2:] == RESTORE_TAIL
        assert Undo.START_ON_SOURCE not in undos  # a warm VM keeps its memory


# -- cold -------------------------------------------------------------------------------


def test_cold_before_the_shutdown_leaves_a_running_vm_alone() -> None:
    assert undo_plan(COLD, [], source_running=True) == ()


def test_cold_guest_that_powered_off_late_is_started_again() -> None:
    # the ACPI shutdown timed out without --force, and the guest went down afterwards
    assert undo_plan(COLD, [], source_running=False) == (Undo.START_ON_SOURCE,)


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, (Undo.START_ON_SOURCE,)),
        (2, (Undo.DELETE_DISK_COPIES, Undo.START_ON_SOURCE)),
        (3, (Undo.UNDEFINE_ON_DESTINATION, Undo.DELETE_DISK_COPIES, Undo.START_ON_SOURCE)),
        (
            4,
            (
                Undo.DESTROY_ON_DESTINATION,
                Undo.UNDEFINE_ON_DESTINATION,
                Undo.DELETE_DISK_COPIES,
                Undo.START_ON_SOURCE,
            ),
        ),
    ],
)
@pytest.mark.parametrize("running", [True, False])
def test_cold_undo_for_each_step(n: int, expected: tuple[Undo, ...], running: bool) -> None:
    assert undo_plan(COLD, prefix(COLD_STEPS, n), source_running=running) == expected


def test_cold_destination_copy_is_stopped_before_the_source_starts() -> None:
    undos = undo_plan(COLD, prefix(COLD_STEPS, 4), source_running=False)
    assert undos.index(Undo.DESTROY_ON_DESTINATION) < undos.index(Undo.START_ON_SOURCE)


@pytest.mark.parametrize("strategy", [Strategy.LIVE, Strategy.POSTCOPY])
def test_undo_plan_is_only_for_offline_moves(strategy: Strategy) -> None:
    with pytest.raises(ValueError, match="not a warm or cold"):
        undo_plan(strategy, [], source_running=True)


def test_offline_strategies() -> None:
    assert [s for s in Strategy if s.offline] == [WARM, COLD, Strategy.WARM_INCREMENTAL]
    assert [s for s in Strategy if s.boots] == [COLD, Strategy.WARM_INCREMENTAL]
    assert MigrationOptions().strategy is Strategy.LIVE


# -- state directory and disk copies ------------------------------------------------------

SHARED_DIR = "/var/lib/vmferry-lab/shared/pool"
HOST = HostInfo(name="kvm1", hostname="kvm1", uri="qemu+tcp://kvm1/system", hypervisor="QEMU",
                libvirt_version="9.0.0", cpu_model=None, cpu_arch="x86_64", cpus=2,
                memory_bytes=2**33, free_memory_bytes=2**32)  # fmt: skip


def facts(disks: tuple[Disk, ...], placements: tuple[DiskPlacement, ...]) -> PreflightFacts:
    spec = VmSpec(name="web1", uuid="u", memory_bytes=2**28, vcpus=1, disks=disks)
    vm = VmRecord(host="kvm1", state=VmState.RUNNING, persistent=True, spec=spec)
    return PreflightFacts(vm=vm, source=HOST, destination=HOST, source_uri="a",
                          destination_uri="b", disks=placements)  # fmt: skip


def disk(target: str, fmt: str | None = "qcow2", device: DiskDevice = DiskDevice.DISK) -> Disk:
    return Disk(target=target, bus="virtio", format=fmt, source=f"/d/{target}", device=device)


def test_state_dir_prefers_the_pool_of_the_shared_disks() -> None:
    f = facts((disk("vda"),), (DiskPlacement("vda", f"{SHARED_DIR}/a.qcow2", DiskReach.SHARED),))
    src = {"default": "/var/lib/libvirt/images", "lab-shared": SHARED_DIR, "iso": "/iso"}
    dst = {"default": "/var/lib/libvirt/images", "lab-shared": SHARED_DIR}
    assert state_dir_candidates(f, src, dst) == [SHARED_DIR, "/var/lib/libvirt/images"]


def test_state_dir_candidates_are_only_directories_both_hosts_have() -> None:
    f = facts((), ())
    assert state_dir_candidates(f, {"a": "/x"}, {"b": "/y"}) == []
    assert state_dir_candidates(f, {"a": "/x", "b": "/z"}, {"c": "/z"}) == ["/z"]


def test_cold_copies_only_the_disks_the_source_alone_sees() -> None:
    f = facts(
        (disk("vda"), disk("vdb", "raw"), disk("vdc")),
        (
            DiskPlacement("vda", "/shared/a", DiskReach.SHARED),
            DiskPlacement("vdb", "/local/b.img", DiskReach.LOCAL, copy_pool="default"),
            DiskPlacement("vdc", "rbd://x", DiskReach.NETWORK),
        ),
    )
    assert copies_for(f) == (DiskCopy("vdb", "/local/b.img", "raw", "default"),)


def test_cold_refuses_to_guess_a_disk_format() -> None:
    f = facts((disk("vda", None),), (DiskPlacement("vda", "/l/a", DiskReach.LOCAL, "default"),))
    with pytest.raises(BadInputError, match="no stated format"):
        copies_for(f)


def test_cold_needs_a_destination_pool_for_a_copy() -> None:
    f = facts((disk("vda"),), (DiskPlacement("vda", "/l/a", DiskReach.LOCAL),))
    with pytest.raises(BadInputError, match="no pool"):
        copies_for(f)


# -- the reboot witness -------------------------------------------------------------------


def beat(seq: int, at: float) -> StampedLine:
    return StampedLine(f"HB {seq}", at, at)


def test_outage_spans_the_reboot_although_the_sequence_starts_again() -> None:
    lines = [beat(100, 1.0), beat(101, 1.05), beat(1, 4.05), beat(2, 4.1)]
    assert outage_ms(lines, start=0.5) == 3000


def test_outage_needs_two_heartbeats_after_the_start() -> None:
    assert outage_ms([beat(1, 1.0), beat(2, 1.05)], start=1.01) is None


# -- migrate dispatches on the strategy -----------------------------------------------------


@dataclass
class FakeStore:
    finished: list[MigrationResult] = field(default_factory=list)

    def get_host(self, name: str) -> Host:
        return Host(name, f"qemu+tcp://{name}/system")

    def create_job(self, *args: Any) -> Any:
        return type("J", (), {"id": "job-1"})()

    def set_owner(self, *args: Any) -> None:
        return None

    def add_event(self, *args: Any) -> None:
        return None

    def finish(self, job_id: str, result: MigrationResult) -> None:
        self.finished.append(result)


def report(blocked: bool) -> CheckReport:
    findings = (Finding("x.y", Severity.BLOCKER, "no"),) if blocked else ()
    return CheckReport("web1", "kvm1", "kvm2", findings, blocked)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"store": FakeStore()}

    def check_offline(vm: str, to: str, options: MigrationOptions) -> CheckReport:
        seen["checked"] = ("offline", options.strategy)
        return report(blocked=False)

    def check_migration(vm: str, to: str, *, copy_storage: bool, tls: object = None,
                        parallel: int = 0, compression: object = None,
                        to_pool: object = None, postcopy: bool = False) -> CheckReport:  # fmt: skip
        seen["checked"] = ("live", copy_storage)
        seen["postcopy"] = postcopy
        return report(blocked=True)  # stops the live path before any host is touched

    def run_offline(rep: CheckReport, job_id: str, *args: Any) -> MigrationResult:
        seen["ran"] = job_id
        return MigrationResult(job_id, "web1", "kvm1", "kvm2", Strategy.WARM,
                               JobStatus.COMPLETED, None, 5, 2, None, None)  # fmt: skip

    monkeypatch.setattr(migrate_module, "reconcile_vm", lambda vm: None)
    monkeypatch.setattr(migrate_module, "check_offline", check_offline)
    monkeypatch.setattr(migrate_module, "check_migration", check_migration)
    monkeypatch.setattr(migrate_module, "run_offline", run_offline)
    monkeypatch.setattr(migrate_module, "open_store", lambda: seen["store"])
    monkeypatch.setattr(migrate_module, "process_lease", lambda store: None)
    monkeypatch.setattr(migrate_module, "hooks_for", lambda store, vm, plan_hooks: ())
    return seen


@pytest.mark.parametrize("strategy", [WARM, COLD])
def test_warm_and_cold_go_to_the_offline_engine(calls: dict[str, Any], strategy: Strategy) -> None:
    outcome = migrate_module.migrate("web1", "kvm2", MigrationOptions(strategy=strategy))
    assert calls["checked"] == ("offline", strategy)
    assert calls["ran"] == "job-1"
    assert outcome.result.status is JobStatus.COMPLETED


@pytest.mark.parametrize("strategy", [Strategy.LIVE, Strategy.POSTCOPY])
def test_live_and_postcopy_keep_the_live_checks(calls: dict[str, Any], strategy: Strategy) -> None:
    options = MigrationOptions(strategy=strategy, copy_storage=True)
    outcome = migrate_module.migrate("web1", "kvm2", options)
    assert calls["checked"] == ("live", True)
    assert calls["postcopy"] is (strategy is Strategy.POSTCOPY)  # judged with its channels
    assert "ran" not in calls
    assert outcome.result.status is JobStatus.FAILED
    assert calls["store"].finished == [outcome.result]


def test_warm_with_copy_storage_is_bad_input() -> None:
    from vmferry.service.offline_move import check_offline

    options = MigrationOptions(strategy=WARM, copy_storage=True)
    with pytest.raises(BadInputError, match="warm move needs"):
        check_offline("web1", "kvm2", options)
